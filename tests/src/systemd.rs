//! A real `systemd --user` manager for tests of the user units, started the way
//! `systemd-user-manager` does on machines whose PID 1 is not systemd: root's user instance,
//! with `/run/systemd/system` present (the marker systemd checks) while it runs.
//!
//! Such a machine also lacks two things systemd's PID 1 sets up at boot, which the sandboxing
//! options of a unit rely on; so that a unit behaves as it would on a booted machine, they are
//! provided for as long as the manager is in use:
//!
//! - a file system on `/run`. Where `/run` is a plain directory, systemd mounts an empty tmpfs
//!   over it in the sandbox of a service with `ProtectProc=`, `ProcSubset=` or
//!   `ProtectControlGroups=` (its rule for API file systems), hiding `$XDG_RUNTIME_DIR` and the
//!   notify socket. `/run` is bind-mounted onto itself.
//! - `/run/systemd/inaccessible/`, the empty, mode-0 file, directory, socket, FIFO and device
//!   nodes that root's managers mount over what a service may not see (`ProtectHome=yes`,
//!   `InaccessiblePaths=`). Without them such a service fails to start at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running user manager; stopped (if this started it) when dropped.
pub struct UserManager {
    /// `$XDG_RUNTIME_DIR` of the manager.
    pub runtime_dir: PathBuf,
    started: Option<std::process::Child>,
    made_marker: bool,
    /// Whether this bind-mounted `/run` onto itself, to undo when dropped.
    mounted_run: bool,
    /// Whether this made [`INACCESSIBLE`], to remove when dropped.
    made_inaccessible: bool,
}

/// Where root's managers find the nodes they mount over inaccessible paths.
const INACCESSIBLE: &str = "/run/systemd/inaccessible";

impl UserManager {
    /// Uses the running manager, or starts one. Needs root and Debian's `systemd` package.
    pub fn start() -> UserManager {
        assert_eq!(unsafe { libc::geteuid() }, 0, "the systemd tests run root's user manager and need root");
        let runtime_dir = PathBuf::from("/run/user/0");
        let mut manager = UserManager {
            runtime_dir,
            started: None,
            made_marker: false,
            mounted_run: false,
            made_inaccessible: false,
        };
        if !Path::new(INACCESSIBLE).exists() {
            manager.made_inaccessible = true;
            make_inaccessible_nodes(Path::new(INACCESSIBLE))
                .unwrap_or_else(|e| panic!("cannot make the nodes in {INACCESSIBLE}: {e}"));
        }
        if !is_mount_point("/run") {
            // SAFETY: the paths are valid C strings, and the other arguments may be null for a
            // bind mount.
            let bound = unsafe {
                libc::mount(c"/run".as_ptr(), c"/run".as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
            };
            assert_eq!(bound, 0, "bind-mount /run onto itself: {}", std::io::Error::last_os_error());
            manager.mounted_run = true;
        }
        if manager.systemctl(&["is-system-running"]).status.success() {
            return manager;
        }
        assert!(
            Path::new("/lib/systemd/systemd").exists(),
            "install systemd to run these tests (apt-get install systemd)"
        );
        if !Path::new("/run/systemd/system").exists() {
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

    /// The home directory the manager gives its services (`%h`): its `$HOME`, else root's
    /// entry in the user database.
    pub fn home(&self) -> PathBuf {
        let out = self.systemctl(&["show-environment"]);
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(home) = text.lines().find_map(|line| line.strip_prefix("HOME=")) {
            return PathBuf::from(home);
        }
        // SAFETY: getpwuid returns null or a pointer to a static entry, read at once.
        let dir = unsafe {
            let entry = libc::getpwuid(0);
            assert!(!entry.is_null(), "root has no entry in the user database");
            std::ffi::CStr::from_ptr((*entry).pw_dir).to_owned()
        };
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(dir.into_bytes()))
    }
}

/// Makes the nodes PID 1 makes in [`INACCESSIBLE`]: one of each file type, all mode 0.
fn make_inaccessible_nodes(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir(dir.join("dir"))?;
    std::fs::File::create(dir.join("reg"))?;
    drop(std::os::unix::net::UnixListener::bind(dir.join("sock"))?);
    for (name, kind) in [("fifo", libc::S_IFIFO), ("chr", libc::S_IFCHR), ("blk", libc::S_IFBLK)] {
        let path = std::ffi::CString::new(dir.join(name).as_os_str().as_bytes())?;
        // SAFETY: a valid C string; device 0:0, as systemd makes them.
        if unsafe { libc::mknod(path.as_ptr(), kind, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for name in ["dir", "reg", "sock", "fifo", "chr", "blk"] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o000))?;
    }
    Ok(())
}

/// Whether `path` is where a file system is mounted (`/proc/self/mountinfo`'s fifth field).
fn is_mount_point(path: &str) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    mounts.lines().any(|line| line.split(' ').nth(4) == Some(path))
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
        if self.mounted_run {
            // Detached rather than unmounted: sockets under /run keep it busy, and the bind
            // mount shows the very directory beneath it.
            // SAFETY: a valid C string and plain flags.
            unsafe { libc::umount2(c"/run".as_ptr(), libc::MNT_DETACH) };
        }
        if self.made_inaccessible {
            let _ = std::fs::remove_dir_all(INACCESSIBLE);
        }
    }
}
