//! A real `systemd --user` manager for tests of the user units, started the way
//! `systemd-user-manager` does on machines whose PID 1 is not systemd: root's user instance,
//! with `/run/systemd/system` present (the marker systemd checks) while it runs.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running user manager; stopped (if this started it) when dropped.
pub struct UserManager {
    /// `$XDG_RUNTIME_DIR` of the manager.
    pub runtime_dir: PathBuf,
    started: Option<std::process::Child>,
    made_marker: bool,
}

impl UserManager {
    /// Uses the running manager, or starts one. Needs root and Debian's `systemd` package.
    pub fn start() -> UserManager {
        assert_eq!(unsafe { libc::geteuid() }, 0, "the systemd tests run root's user manager and need root");
        let runtime_dir = PathBuf::from("/run/user/0");
        let mut manager = UserManager { runtime_dir, started: None, made_marker: false };
        if manager.systemctl(&["is-system-running"]).status.success() {
            return manager;
        }
        assert!(
            std::path::Path::new("/lib/systemd/systemd").exists(),
            "install systemd to run these tests (apt-get install systemd)"
        );
        if !std::path::Path::new("/run/systemd/system").exists() {
            std::fs::create_dir_all("/run/systemd/system").unwrap();
            manager.made_marker = true;
        }
        std::fs::create_dir_all(&manager.runtime_dir).unwrap();
        std::fs::set_permissions(&manager.runtime_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let child = Command::new("setsid")
            .arg("/lib/systemd/systemd")
            .arg("--user")
            .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd --user");
        manager.started = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = manager.systemctl(&["is-system-running"]);
            let text = String::from_utf8_lossy(&state.stdout);
            if state.status.success() || text.trim() == "degraded" {
                return manager;
            }
            assert!(Instant::now() < deadline, "systemd --user did not come up: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `systemctl --user ARGS`.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut command = Command::new("systemctl");
        command.arg("--user").args(args).env("XDG_RUNTIME_DIR", &self.runtime_dir);
        let bus = self.runtime_dir.join("bus");
        if bus.exists() {
            command.env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}", bus.display()));
        }
        command.stdin(Stdio::null()).output().expect("systemctl")
    }

    /// One property of a unit, as `systemctl --user show -p NAME --value` prints it.
    pub fn property(&self, unit: &str, name: &str) -> String {
        let out = self.systemctl(&["show", "-p", name, "--value", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Where runtime user units go (`$XDG_RUNTIME_DIR/systemd/user`).
    pub fn unit_dir(&self) -> PathBuf {
        self.runtime_dir.join("systemd/user")
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        if let Some(mut child) = self.started.take() {
            let _ = self.systemctl(&["exit"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.made_marker {
            let _ = std::fs::remove_dir("/run/systemd/system");
        }
    }
}
