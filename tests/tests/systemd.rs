//! The user units under a real `systemd --user`: the service (Type=notify, reload, clean stop,
//! the hardening options) and socket activation (the first `tokenctl token` starts tokend).
//!
//! Needs root and Debian's systemd package, as CI has; the manager is root's user instance, and
//! the units go in its runtime unit directory, removed afterwards.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::systemd::UserManager;
use tokend_e2e::{FakeProvider, Need, bin, eventually, require, stderr, stdout, write_private};

fn tokenctl(manager: &UserManager, args: &[&str]) -> Output {
    Command::new(bin("tokenctl"))
        .args(args)
        .env_remove("TOKEND_SOCKET")
        .env_remove("TOKEND_CONFIG")
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .output()
        .unwrap()
}

fn assert_ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed ({}): {}{}", out.status, stdout(out), stderr(out));
}

/// Installs the shipped units, pointing them at this build and a test config.
fn install(manager: &UserManager, config: &Path, state: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let units = manager.unit_dir();
    std::fs::create_dir_all(units.join("tokend.service.d")).unwrap();
    for unit in ["tokend.service", "tokend.socket"] {
        std::fs::copy(root.join("systemd").join(unit), units.join(unit)).unwrap();
    }
    std::fs::write(
        units.join("tokend.service.d/test.conf"),
        format!(
            "[Service]\nExecStart=\nExecStart={} --config {} --state-dir {}\nExecReload=\nExecReload={} reload\n",
            bin("tokend").display(),
            config.display(),
            state.display(),
            bin("tokenctl").display()
        ),
    )
    .unwrap();
    assert_ok("daemon-reload", &manager.systemctl(&["daemon-reload"]));
}

fn uninstall(manager: &UserManager) {
    let _ = manager.systemctl(&["stop", "tokend.socket", "tokend.service"]);
    let units = manager.unit_dir();
    let _ = std::fs::remove_dir_all(units.join("tokend.service.d"));
    let _ = std::fs::remove_file(units.join("tokend.service"));
    let _ = std::fs::remove_file(units.join("tokend.socket"));
    let _ = manager.systemctl(&["daemon-reload"]);
    let _ = manager.systemctl(&["reset-failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_units_work_under_a_real_systemd() {
    require!(Need::SystemdUserManager);
    let manager = UserManager::start();
    uninstall(&manager);
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    fake.client("d", "s", ClientAuth::Basic);
    let dir = tempfile::tempdir().unwrap();
    let profile = |name: &str| {
        format!(
            "[profiles.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"{name}\"\nclient_secret = \"s\"\n",
            fake.url("/oauth/token")
        )
    };
    let config = dir.path().join("config.toml");
    write_private(&config, &profile("c"));
    let state = dir.path().join("state");
    install(&manager, &config, &state);

    // The service: Type=notify, so `start` returns once tokend is ready.
    assert_ok("start tokend.service", &manager.systemctl(&["start", "tokend.service"]));
    assert_eq!(manager.property("tokend.service", "ActiveState"), "active");
    assert_eq!(manager.property("tokend.service", "StatusText"), "serving 1 profile");
    let token = tokenctl(&manager, &["token", "c"]);
    assert_ok("tokenctl token", &token);
    assert!(fake.accepts(stdout(&token).trim()));
    let socket = manager.runtime_dir.join("tokend/tokend.sock");
    assert!(socket.exists(), "the default socket path");

    // Reload through systemd: applied, and reported by STATUS.
    write_private(&config, &(profile("c") + &profile("d")));
    assert_ok("systemctl reload", &manager.systemctl(&["reload", "tokend.service"]));
    assert_eq!(manager.property("tokend.service", "StatusText"), "serving 2 profiles");
    assert_ok("token after reload", &tokenctl(&manager, &["token", "d"]));
    // An invalid config fails the reload, and the service keeps running the old one.
    write_private(&config, "[profiles.x\n");
    let failed = manager.systemctl(&["reload", "tokend.service"]);
    assert!(!failed.status.success(), "a rejected config fails `systemctl reload`");
    assert_eq!(manager.property("tokend.service", "ActiveState"), "active");
    assert_ok("token after a rejected reload", &tokenctl(&manager, &["token", "d"]));
    write_private(&config, &profile("c"));

    // A clean stop: exit status 0, socket removed.
    assert_ok("stop", &manager.systemctl(&["stop", "tokend.service"]));
    assert_eq!(manager.property("tokend.service", "Result"), "success");
    assert_eq!(manager.property("tokend.service", "ExecMainStatus"), "0");
    assert!(!socket.exists());

    // Socket activation: only the socket unit runs, and the first request starts tokend.
    assert_ok("start tokend.socket", &manager.systemctl(&["start", "tokend.socket"]));
    assert_eq!(manager.property("tokend.service", "ActiveState"), "inactive");
    assert!(socket.exists(), "systemd listens on tokend's default socket");
    let token = tokenctl(&manager, &["token", "c"]);
    assert_ok("tokenctl token through socket activation", &token);
    assert!(fake.accepts(stdout(&token).trim()));
    assert_eq!(manager.property("tokend.service", "ActiveState"), "active");
    // tokend adopted the passed socket: stopping the service leaves systemd's socket in place,
    // and the next request starts tokend again.
    assert_ok("stop the activated service", &manager.systemctl(&["stop", "tokend.service"]));
    assert!(socket.exists());
    assert!(eventually(Duration::from_secs(5), || tokenctl(&manager, &["ping"]).status.success()).await);
    uninstall(&manager);
    assert!(!socket.exists(), "RemoveOnStop cleans up the socket");
}
