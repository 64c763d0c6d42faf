//! Where the config and the client secrets come from: files that another user owns, or that
//! group or others can change, are refused before anything in them runs; and a
//! `client_secret_command` is bounded in time (its whole process group) and in output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::{FakeProvider, Need, Tokend, bin, eventually, other_user, require, stderr, stdout, write_private};

/// A profile whose secret comes from `source` (a `client_secret…` line). Its token URL is never
/// contacted by these tests.
fn config_with(source: &str) -> String {
    format!(
        "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"http://127.0.0.1:9/token\"\nclient_id = \"c\"\n{source}\n"
    )
}

/// A command that leaves a mark when it runs, then prints a secret.
fn marking_command(marker: &Path) -> String {
    format!("client_secret_command = \"touch {}; echo s\"", marker.display())
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `command` for at most 20 s (then kills it and returns `None`).
async fn run(mut command: tokio::process::Command) -> Option<Output> {
    command
        .env_remove("TOKEND_SOCKET")
        .env_remove("TOKEND_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("run tokend");
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.ok().map(Result::unwrap)
}

async fn check_config(config: &Path) -> Option<Output> {
    let mut command = tokio::process::Command::new(bin("tokend"));
    command.arg("--check-config").arg(config);
    run(command).await
}

/// Starts tokend with `config`, in `dir`, expecting it to stop at once.
async fn start(config: &Path, dir: &Path) -> Option<Output> {
    let mut command = tokio::process::Command::new(bin("tokend"));
    command
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(dir.join("run/tokend.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    run(command).await
}

/// Asserts that `out` is a refused config, exit status 78, whose message contains every one of
/// `needles`.
fn assert_refused(out: Option<Output>, needles: &[&str]) {
    let out = out.expect("tokend stopped within 20s instead of running with the file");
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{message}{}", stdout(&out));
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }
}

struct Files {
    dir: tempfile::TempDir,
    config: PathBuf,
    marker: PathBuf,
}

/// A private directory with a config (mode 0600) whose secret command leaves a mark.
fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let marker = dir.path().join("the-command-ran");
    write_private(&config, &config_with(&marking_command(&marker)));
    Files { dir, config, marker }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_others_can_write_is_refused_before_its_secret_command_runs() {
    let f = files();
    let path = f.config.display().to_string();
    for mode in [0o666, 0o620, 0o602] {
        chmod(&f.config, mode);
        let changeable = format!("can be changed by other users (mode {mode:04o})");
        assert_refused(check_config(&f.config).await, &[&path, &changeable, &format!("chmod go-w {path}")]);
        assert_refused(start(&f.config, f.dir.path()).await, &[&path, &changeable]);
        assert!(!f.marker.exists(), "the secret command of a mode {mode:04o} config ran");
    }
    // A control: the same file, private again, runs its command.
    chmod(&f.config, 0o600);
    let out = check_config(&f.config).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(f.marker.exists(), "the command runs once the file is private");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_owned_by_another_user_is_refused_before_its_secret_command_runs() {
    require!(Need::OtherUser);
    let (uid, gid) = other_user();
    let f = files();
    std::os::unix::fs::chown(&f.config, Some(uid), Some(gid)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner = format!("belongs to uid {uid}, not to uid {me}");
    assert_refused(check_config(&f.config).await, &[&f.config.display().to_string(), &owner]);
    assert_refused(start(&f.config, f.dir.path()).await, &[&owner]);
    assert!(!f.marker.exists(), "the secret command of another user's config ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_and_key_files_others_can_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client.secret");
    write_private(&secret, "s\n");
    // Group-writable, but readable only by its owner.
    chmod(&secret, 0o620);
    let config = dir.path().join("config.toml");
    write_private(&config, &config_with(&format!("client_secret_file = {secret:?}")));
    let changeable = "can be changed by other users (mode 0620)";
    assert_refused(check_config(&config).await, &[&secret.display().to_string(), changeable]);

    chmod(&secret, 0o600);
    let key = dir.path().join("state.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    chmod(&key, 0o602);
    write_private(
        &config,
        &format!(
            "[daemon]\nencryption_key_file = {key:?}\n\n{}",
            config_with(&format!("client_secret_file = {secret:?}"))
        ),
    );
    assert_refused(start(&config, dir.path()).await, &[&key.display().to_string(), "mode 0602"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_and_key_files_owned_by_another_user_are_refused() {
    require!(Need::OtherUser);
    let (uid, gid) = other_user();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client.secret");
    write_private(&secret, "s\n");
    std::os::unix::fs::chown(&secret, Some(uid), Some(gid)).unwrap();
    let config = dir.path().join("config.toml");
    write_private(&config, &config_with(&format!("client_secret_file = {secret:?}")));
    let owner = format!("belongs to uid {uid}");
    assert_refused(check_config(&config).await, &[&secret.display().to_string(), &owner]);

    let mine = dir.path().join("mine.secret");
    write_private(&mine, "s\n");
    let key = dir.path().join("state.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    chmod(&key, 0o600);
    std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
    write_private(
        &config,
        &format!(
            "[daemon]\nencryption_key_file = {key:?}\n\n{}",
            config_with(&format!("client_secret_file = {mine:?}"))
        ),
    );
    assert_refused(start(&config, dir.path()).await, &[&key.display().to_string(), &owner]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_user_may_use_files_of_its_own_and_of_root() {
    require!(Need::OtherUser);
    let (uid, gid) = other_user();
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let as_other_user = |config: &Path| {
        let mut command = tokio::process::Command::new("setpriv");
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(bin("tokend"))
            .arg("--check-config")
            .arg(config);
        command
    };
    // Its own, private: fine.
    let own = dir.path().join("own.toml");
    write_private(&own, &config_with("client_secret = \"s\""));
    std::os::unix::fs::chown(&own, Some(uid), Some(gid)).unwrap();
    let out = run(as_other_user(&own)).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Root's, that only root can change: fine too (a system-wide config without secrets).
    let roots = dir.path().join("roots.toml");
    std::fs::write(&roots, config_with("client_secret_env = \"TOKEND_TEST_SECRET\"")).unwrap();
    chmod(&roots, 0o644);
    let mut command = as_other_user(&roots);
    command.env("TOKEND_TEST_SECRET", "s");
    let out = run(command).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Its own, but writable by its group: refused, with the fix.
    chmod(&own, 0o620);
    let out = run(as_other_user(&own)).await;
    assert_refused(out, &["can be changed by other users (mode 0620)", "chmod go-w"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_a_config_others_can_write_and_keeps_the_old_one() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let cc = |source: &str| {
        format!(
            "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\n{source}\n",
            fake.url("/oauth/token")
        )
    };
    let tokend = Tokend::start(&cc("client_secret_command = \"echo s\"")).await;
    let token = tokend.tokenctl_ok(&["token", "p"]).await;
    let marker = tokend.dir.path().join("the-command-ran");
    tokend.write_config(&cc(&marking_command(&marker)));
    chmod(&tokend.config, 0o666);
    let out = tokend.tokenctl(&["reload"]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("can be changed by other users"), "{}", stderr(&out));
    assert!(!marker.exists(), "the secret command of a world-writable config ran on reload");
    assert_eq!(tokend.tokenctl_ok(&["token", "p"]).await, token, "the old config keeps serving");
}

/// Whether process `pid` is gone (or dead, waiting to be reaped).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_command_that_leaves_a_child_holding_its_output_is_stopped_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let config = dir.path().join("config.toml");
    let command = format!("sleep 45 & echo $! > {}; echo s", pid_file.display());
    write_private(
        &config,
        &config_with(&format!("client_secret_command = {command:?}\nclient_secret_command_timeout = \"1s\"")),
    );
    assert_refused(check_config(&config).await, &["`profiles.p.client_secret_command`", "did not finish within 1s"]);
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(eventually(Duration::from_secs(10), || gone(pid)).await, "the background child {pid} was killed too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stops_a_secret_command_at_its_limit_and_keeps_serving() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let cc = |source: &str| {
        format!(
            "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\n{source}\n",
            fake.url("/oauth/token")
        )
    };
    let tokend = Tokend::start(&cc("client_secret = \"s\"")).await;
    let token = tokend.tokenctl_ok(&["token", "p"]).await;
    tokend.write_config(&cc("client_secret_command = \"sleep 45 & echo s\"\nclient_secret_command_timeout = \"1s\""));
    let out = tokend.tokenctl(&["reload"]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not finish within 1s"), "{}", stderr(&out));
    assert_eq!(tokend.tokenctl_ok(&["token", "p"]).await, token, "the old config keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_command_s_output_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // 100,000 bytes, then it ends; and output without end, which is cut off rather than awaited.
    for command in ["head -c 100000 /dev/zero | tr '\\\\0' a", "yes"] {
        write_private(&config, &config_with(&format!("client_secret_command = \"{command}\"")));
        assert_refused(check_config(&config).await, &["`profiles.p.client_secret_command`", "more than 64 KiB"]);
    }
}
