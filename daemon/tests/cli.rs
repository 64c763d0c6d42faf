//! The `tokend` command line: `--help`, `--version`, usage errors, config checking and
//! start-up failures, without a network.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn tokend() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokend"));
    command.env_remove("TOKEND_SOCKET").env_remove("TOKEND_CONFIG").env_remove("RUST_LOG");
    command
}

/// Runs tokend with `args`, and `XDG_CONFIG_HOME` if given, for at most 20 s: a command line
/// taken for one that starts the daemon would otherwise never end.
async fn run(args: &[OsString], xdg_config_home: Option<&Path>) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokend"));
    command
        .args(args)
        .env_remove("TOKEND_SOCKET")
        .env_remove("TOKEND_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = xdg_config_home {
        command.env("XDG_CONFIG_HOME", dir);
    }
    let child = command.spawn().expect("run tokend");
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("tokend {args:?} still running after 20 s"))
        .unwrap()
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

const VALID: &str = r#"
[profiles.minut]
grant = "client_credentials"
token_url = "https://api.minut.com/v8/oauth/token"
client_id = "id"
client_secret = "super-secret-value"
token_params = { response_type = "token" }
"#;

#[test]
fn check_config_accepts_a_valid_file_and_names_its_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "config.toml", VALID);
    let out = tokend().arg("--check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("valid, 1 profile: minut"), "{text}");
    assert!(!text.contains("super-secret-value"));
}

#[test]
fn check_config_rejects_a_broken_file_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config.toml",
        &VALID.replace("client_id = \"id\"", "client_id = \"id\"\ncleint_secret = \"x\""),
    );
    let out = tokend().arg("--check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&format!("{}:6", path.display())), "{text}");
    assert!(text.contains("cleint_secret"), "{text}");
}

#[test]
fn check_config_uses_the_config_flag_when_given_no_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.toml", VALID);
    let out = tokend().arg("--config").arg(&path).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_missing_config_file_stops_the_daemon_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokend().arg("--config").arg(dir.path().join("absent.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no such file") && text.contains("--config"), "{text}");
}

#[tokio::test]
async fn help_describes_every_option_within_100_columns() {
    for flag in ["--help", "-h"] {
        let out = run(&os(&[flag]), None).await;
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{flag}");
        let help = stdout(&out);
        assert!(help.starts_with("tokend: a per-user daemon that owns OAuth 2.0 access tokens"), "{help}");
        assert!(help.contains("\nUsage: tokend [OPTIONS]\n"), "{help}");
        for option in [
            "-c, --config <PATH>",
            "--socket <PATH>",
            "--http-socket <PATH>",
            "--state-dir <DIR>",
            "--log-level <LEVEL>",
            "--check-config [<PATH>]",
            "-h, --help",
            "-V, --version",
        ] {
            assert!(help.contains(option), "{flag} does not mention {option}:\n{help}");
        }
        for line in help.lines() {
            assert!(line.chars().count() <= 100, "{flag}: a line over 100 columns: {line}");
        }
    }
}

#[tokio::test]
async fn version_is_the_package_version() {
    for flag in ["--version", "-V"] {
        let out = run(&os(&[flag]), None).await;
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("tokend {}\n", env!("CARGO_PKG_VERSION")), "{flag}");
    }
}

#[tokio::test]
async fn a_usage_error_exits_2_naming_the_argument_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    // Its token URL is on loopback, should a broken parser start the daemon.
    let config = write(dir.path(), "config.toml", &VALID.replace("https://api.minut.com/v8", "http://127.0.0.1:9"));
    let socket = dir.path().join("run/tokend.sock");
    let state = dir.path().join("state");
    for (extra, named) in [
        (&["--bogus"][..], "'--bogus'"),
        (&["-x"], "'-x'"),
        (&["stray"], "'stray'"),
        (&["--log-level", "verbose=="], "verbose=="),
        (&["--http-socket"], "'--http-socket <PATH>'"),
        (&["--config", "/elsewhere.toml"], "'--config <PATH>' cannot be used multiple times"),
    ] {
        let mut args = vec!["--config".into(), config.clone().into_os_string(), "--socket".into()];
        args.extend([socket.clone().into_os_string(), "--state-dir".into(), state.clone().into_os_string()]);
        args.extend(os(extra));
        let out = run(&args, None).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(named), "{extra:?}: {err}");
        assert!(err.contains("Usage: tokend [OPTIONS]") && err.contains("try '--help'"), "{err}");
        assert_eq!(stdout(&out), "", "{extra:?}");
    }
    assert!(!socket.parent().unwrap().exists(), "nothing was bound");
    assert!(!state.exists(), "no state directory was made");
}

#[tokio::test]
async fn check_config_takes_a_path_only_when_one_follows() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", VALID);
    let bad = write(dir.path(), "bad.toml", "[profiles.minut\n");
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("tokend")).unwrap();
    let default = write(&xdg.join("tokend"), "config.toml", VALID);
    let (good, bad, default) = (good.to_str().unwrap(), bad.to_str().unwrap(), default.to_str().unwrap());
    let joined = format!("--check-config={good}");
    for (args, checked) in [
        (&["--check-config", good][..], good),
        (&[joined.as_str()], good),
        (&["--check-config", "--config", good], good),
        (&["--config", bad, "--check-config", good], good),
        (&["--check-config", "--log-level", "info"], default),
    ] {
        let out = run(&os(args), Some(&xdg)).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).starts_with(&format!("{checked}: valid")), "{args:?}: {}", stdout(&out));
    }
    for args in [&["--check-config", bad][..], &["--check-config", "--config", bad]] {
        let out = run(&os(args), Some(&xdg)).await;
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(bad), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn a_config_path_need_not_be_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let mut name = dir.path().as_os_str().to_owned().into_vec();
    name.extend(b"/conf\xff.toml");
    let config = OsString::from_vec(name);
    std::fs::write(&config, VALID).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["--check-config".into(), config], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(": valid, 1 profile: minut"), "{}", stdout(&out));
}

#[test]
fn a_socket_directory_others_can_enter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", VALID);
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tokend()
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(shared.join("tokend.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("chmod 700"), "{text}");
}

#[test]
fn the_example_configs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "minut.secret", "s3cret\n");
    for example in ["minut.toml", "movemint.toml"] {
        let text = std::fs::read_to_string(root.join("examples").join(example)).unwrap();
        let text = text.replace("~/.config/tokend/minut.secret", secret.to_str().unwrap());
        let path = write(dir.path(), example, &text);
        let out = tokend().arg("--check-config").arg(&path).env("MOVEMINT_CLIENT_SECRET", "x").output().unwrap();
        assert!(out.status.success(), "{example}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
