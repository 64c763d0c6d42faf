//! tokend and tokenctl with no `--config`, `--socket` or `--state-dir` and no `TOKEND_SOCKET` or
//! `TOKEND_CONFIG`: everything comes from the XDG base directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::{FakeProvider, eventually, stderr, stdout, write_private};
use tokio::process::{Child, Command};

/// A fresh home with its own XDG directories.
struct Xdg {
    home: tempfile::TempDir,
}

impl Xdg {
    fn new() -> Xdg {
        let home = tempfile::tempdir().expect("temporary directory");
        let xdg = Xdg { home };
        for dir in [xdg.config_home(), xdg.state_home()] {
            std::fs::create_dir(&dir).unwrap();
        }
        std::fs::create_dir(xdg.runtime_dir()).unwrap();
        std::fs::set_permissions(xdg.runtime_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        xdg
    }

    fn config_home(&self) -> PathBuf {
        self.home.path().join("config")
    }

    fn state_home(&self) -> PathBuf {
        self.home.path().join("state")
    }

    fn runtime_dir(&self) -> PathBuf {
        self.home.path().join("run")
    }

    fn socket(&self) -> PathBuf {
        self.runtime_dir().join("tokend").join("tokend.sock")
    }

    fn state_dir(&self) -> PathBuf {
        self.state_home().join("tokend")
    }

    fn log(&self) -> PathBuf {
        self.home.path().join("tokend.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// A command with the environment pointing at these directories only.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(tokend_e2e::bin(program));
        command
            .env_remove("TOKEND_SOCKET")
            .env_remove("TOKEND_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_STATE_HOME", self.state_home())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Starts tokend and waits (at most 15 s) for its socket to appear.
    async fn start_tokend(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        let mut child = self
            .command("tokend")
            .env("RUST_LOG", "tokend=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tokend");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.socket().exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tokend exited during start-up ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no socket at {} within 15s:\n{}",
                self.socket().display(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// Runs tokenctl (at most 60 s).
    async fn tokenctl(&self, args: &[&str]) -> Output {
        let child = self
            .command("tokenctl")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenctl");
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("tokenctl finished within 60s")
            .expect("tokenctl ran")
    }

    /// `tokenctl token p`, which must succeed; returns the token.
    async fn token(&self) -> String {
        let out = self.tokenctl(&["token", "p"]).await;
        assert!(
            out.status.success(),
            "tokenctl token p failed ({}):\nstdout: {}\nstderr: {}\ntokend log:\n{}",
            out.status,
            stdout(&out),
            stderr(&out),
            self.log_text()
        );
        stdout(&out).trim().to_owned()
    }

    /// Sends SIGTERM and waits (at most 20 s) for tokend to exit.
    async fn stop(&self, mut child: Child) -> ExitStatus {
        let pid = child.id().expect("tokend is running");
        // SAFETY: kill(2) with the PID of our own, not yet reaped, child.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap_or_else(|_| panic!("tokend did not exit within 20s of SIGTERM:\n{}", self.log_text()))
            .expect("wait for tokend")
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flags_tokend_and_tokenctl_use_the_xdg_directories() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let xdg = Xdg::new();
    let config_dir = xdg.config_home().join("tokend");
    std::fs::create_dir(&config_dir).unwrap();
    write_private(
        &config_dir.join("config.toml"),
        &format!(
            r#"
[profiles.p]
grant = "client_credentials"
token_url = "{}"
client_id = "c"
client_secret = "s"
"#,
            fake.url("/oauth/token")
        ),
    );

    let tokend = xdg.start_tokend().await;
    let token = xdg.token().await;
    assert!(fake.accepts(&token), "the served token is one the server issued: {token:?}");
    assert_eq!(fake.token_requests(), 1);

    let socket = xdg.socket();
    assert_eq!(mode(&socket), 0o600, "the socket is private");
    assert_eq!(mode(socket.parent().unwrap()), 0o700, "the socket directory is private");

    let state = xdg.state_dir().join("p.json");
    assert!(
        eventually(Duration::from_secs(5), || state.exists()).await,
        "the tokens are kept in {}:\n{}",
        state.display(),
        xdg.log_text()
    );
    assert_eq!(mode(&state), 0o600, "the state file is private");
    assert_eq!(mode(&xdg.state_dir()), 0o700, "the state directory is private");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains(&token), "the state file holds the served token");

    let status = xdg.stop(tokend).await;
    assert_eq!(status.code(), Some(0), "tokend exits 0 on SIGTERM:\n{}", xdg.log_text());
    assert!(!socket.exists(), "tokend removed its socket on the way out");

    // Started again the same way, it finds its state where it left it.
    let requests = fake.token_requests();
    let tokend = xdg.start_tokend().await;
    assert_eq!(xdg.token().await, token, "the same token, read back from the default state directory");
    assert_eq!(fake.token_requests(), requests, "no upstream request after the restart");
    assert_eq!(xdg.stop(tokend).await.code(), Some(0), "{}", xdg.log_text());
}
