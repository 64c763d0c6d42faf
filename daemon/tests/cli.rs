//! The `tokend` command line: config checking and start-up failures, without a network.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn tokend() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokend"));
    command.env_remove("TOKEND_SOCKET").env_remove("TOKEND_CONFIG").env_remove("RUST_LOG");
    command
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

#[test]
fn a_bad_log_level_is_a_usage_error() {
    let out = tokend().args(["--log-level", "verbose=="]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_describes_every_option() {
    let out = tokend().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for option in ["--config", "--socket", "--state-dir", "--log-level", "--check-config"] {
        assert!(text.contains(option), "{option} missing from --help:\n{text}");
    }
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
