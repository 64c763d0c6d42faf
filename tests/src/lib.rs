//! End-to-end test kit for tokend: a fake OAuth provider ([`fake`]) and a harness that runs the
//! real `tokend` and `tokenctl` binaries in a private directory ([`Tokend`]).
//!
//! The binaries are looked up next to the test executable (`target/debug/`), where
//! `cargo test --workspace` builds them, or at `$TOKEND_BIN` and `$TOKENCTL_BIN`.

pub mod browser;
pub mod dbus;
pub mod fake;
pub mod http;
pub mod impostor;
pub mod movemint;
pub mod needs;
pub mod oidc;
pub mod openapi;
pub mod systemd;
pub mod wire;
pub mod xdg;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tokend_proto::{ProfileState, ProfileStatus};
use tokio::process::{Child, Command};

/// A running program's output, line by line.
pub type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

pub use fake::FakeProvider;
pub use movemint::Movemint;
pub use needs::Need;

/// The path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // Tests live in target/debug/deps/, tools such as tokend-soak in target/debug/.
    let dir = exe.parent().expect("target directory");
    let path = [dir.join(name), dir.parent().map(|d| d.join(name)).unwrap_or_default()]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join(name));
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace` (or set {}_BIN)",
        path.display(),
        name.to_uppercase()
    );
    path
}

/// Raises this process's open-file limit to its hard limit, for tests with many connections.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls with valid pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(1 << 20);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// A running `tokend` with its own config, socket and state directory.
pub struct Tokend {
    child: Option<Child>,
    /// The private directory holding everything.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// The HTTP API's socket (beside the socket, unless the test moved or turned it off).
    pub http_socket: PathBuf,
    /// The state directory.
    pub state: PathBuf,
    log: PathBuf,
    extra_env: Vec<(String, String)>,
}

/// How to start a daemon.
#[derive(Default, Clone)]
pub struct Options {
    /// Environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// Extra arguments.
    pub args: Vec<String>,
}

impl Tokend {
    /// Starts tokend with `config` and waits until it answers.
    pub async fn start(config: &str) -> Tokend {
        Tokend::start_with(config, Options::default()).await
    }

    /// Starts tokend with `config` and `options` and waits until it answers.
    pub async fn start_with(config: &str, options: Options) -> Tokend {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("config.toml");
        write_private(&config_path, config);
        let mut tokend = Tokend {
            child: None,
            socket: dir.path().join("run").join("tokend.sock"),
            http_socket: dir.path().join("run").join("http.sock"),
            state: dir.path().join("state"),
            log: dir.path().join("tokend.log"),
            config: config_path,
            dir,
            extra_env: options.env.clone(),
        };
        tokend.spawn(&options.args).await;
        tokend
    }

    /// Starts the daemon process again (after [`Tokend::stop`] or [`Tokend::kill`]) with the same
    /// files, and waits until it answers.
    pub async fn restart(&mut self) {
        self.spawn(&[]).await;
    }

    async fn spawn(&mut self, args: &[String]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut command = Command::new(bin("tokend"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env("RUST_LOG", "tokend=debug")
            .env_remove("TOKEND_SOCKET")
            .env_remove("TOKEND_HTTP_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("JOURNAL_STREAM")
            // No desktop notifications on the developer's own session bus.
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("xdg-run"))
            .env("XDG_STATE_HOME", self.dir.path().join("xdg-state"))
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(command.spawn().expect("spawn tokend"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let ready = wait_for(Duration::from_secs(15), async || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("poll tokend") {
                panic!("tokend exited during start-up ({status}):\n{}", self.log());
            }
            (self.socket.exists() && self.tokenctl(&["ping"]).await.status.success()).then_some(())
        })
        .await;
        assert!(ready.is_some(), "tokend did not come up within 15s:\n{}", self.log());
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("tokend is running")
    }

    /// `tokenctl ARGS` against this daemon, with no config file of the user's in its way.
    fn tokenctl_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(bin("tokenctl"));
        command
            .args(args)
            .env("TOKEND_SOCKET", &self.socket)
            .env_remove("TOKEND_CONFIG")
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"));
        command
    }

    /// Starts `tokenctl ARGS` for a command that keeps printing (`watch`): returns the process,
    /// killed when dropped, and its standard output, line by line.
    pub fn tokenctl_lines(&self, args: &[&str]) -> (Child, Lines) {
        use tokio::io::AsyncBufReadExt;
        let mut child = Command::from(self.tokenctl_command(args))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tokenctl");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("tokenctl's output")).lines();
        (child, lines)
    }

    /// Runs `tokenctl` against this daemon.
    pub async fn tokenctl(&self, args: &[&str]) -> Output {
        self.tokenctl_with_stdin(args, None).await
    }

    /// Runs `tokenctl` with `stdin` as its standard input.
    pub async fn tokenctl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut command = Command::from(self.tokenctl_command(args));
        command
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn tokenctl");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).await.unwrap();
            drop(pipe);
        }
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("tokenctl finished within 2 minutes")
            .expect("tokenctl ran")
    }

    /// Runs `tokenctl` with its stdout and stderr on a pseudo-terminal, as when a person runs it
    /// (at most 60 s); returns its exit status and everything it showed, with the terminal's
    /// `\r\n` line ends turned back into `\n`.
    pub async fn tokenctl_in_terminal(&self, args: &[&str]) -> (ExitStatus, String) {
        use std::io::Read;
        use std::os::fd::{FromRawFd, OwnedFd};
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors it opened, which are then owned here.
        let (master, slave) = unsafe {
            let opened =
                libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null());
            assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
            (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
        };
        let mut command = self.tokenctl_command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(slave.try_clone().expect("dup the terminal")))
            .stderr(Stdio::from(slave));
        let mut child = command.spawn().expect("spawn tokenctl");
        // The child holds the only copies of the terminal's slave side now, so reading the
        // master ends (with EIO) when the child exits.
        drop(command);
        let reader = std::thread::spawn(move || {
            let mut master = std::fs::File::from(master);
            let mut shown = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                shown.extend_from_slice(&buf[..n]);
            }
            shown
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll tokenctl") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("tokenctl {args:?} did not finish within 60s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let shown = tokio::task::spawn_blocking(move || reader.join().expect("terminal reader")).await.unwrap();
        (status, String::from_utf8_lossy(&shown).replace("\r\n", "\n"))
    }

    /// Runs `tokenctl` with its stdout on a pipe whose reader has already gone, as in
    /// `tokenctl … | head -0`; stderr is captured.
    pub async fn tokenctl_into_closed_pipe(&self, args: &[&str]) -> Output {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut fds = [-1; 2];
        // SAFETY: pipe writes two descriptors it opened, which are then owned here.
        let write_end = unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe: {}", std::io::Error::last_os_error());
            drop(OwnedFd::from_raw_fd(fds[0]));
            OwnedFd::from_raw_fd(fds[1])
        };
        let mut command = Command::from(self.tokenctl_command(args));
        command.stdin(Stdio::null()).stdout(Stdio::from(write_end)).stderr(Stdio::piped()).kill_on_drop(true);
        let child = command.spawn().expect("spawn tokenctl");
        drop(command);
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("tokenctl finished within 2 minutes")
            .expect("tokenctl ran")
    }

    /// Runs `tokenctl` and returns its stdout, failing the test on a non-zero exit.
    pub async fn tokenctl_ok(&self, args: &[&str]) -> String {
        let out = self.tokenctl(args).await;
        assert!(
            out.status.success(),
            "tokenctl {args:?} failed ({}):\nstdout: {}\nstderr: {}\ntokend log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// An async client connected to this daemon.
    pub async fn client(&self) -> tokend_client::Client {
        tokend_client::Client::connect_to(tokend_client::Endpoint::new(&self.socket)).await.expect("connect to tokend")
    }

    /// A kept-alive connection to the HTTP API.
    pub async fn http(&self) -> http::Connection {
        http::Connection::unix(&self.http_socket).await
    }

    /// Replaces the config file (keeping it private).
    pub fn write_config(&self, config: &str) {
        write_private(&self.config, config);
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a PID of our own child.
        unsafe {
            libc::kill(libc::pid_t::try_from(self.pid()).expect("a PID fits in pid_t"), signal);
        }
    }

    /// Sends SIGTERM and waits (at most 20 s) for the daemon to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit().await
    }

    /// Waits (at most 20 s) for the daemon to exit by itself.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("tokend is running");
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap_or_else(|_| panic!("tokend did not exit within 20s:\n{}", self.log()))
            .expect("wait for tokend")
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("tokend is running");
        child.start_kill().expect("kill tokend");
        let _ = child.wait().await;
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTP client builder for the tests' own requests (a browser's side of a login, calls to a
/// provider). reqwest has no TLS crypto provider of its own in this workspace, so this installs
/// tokend's first, as tokend does before building its client.
pub fn http() -> reqwest::ClientBuilder {
    tokend::install_crypto_provider();
    #[allow(clippy::disallowed_methods, reason = "the provider is installed just above")]
    reqwest::Client::builder()
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a login redirect URI.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `tokenctl` process left running, for `login`, whose output is read as it comes.
pub struct Running {
    /// The process.
    pub child: Child,
    stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    stdout: Option<tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>>,
    /// Everything read from stderr so far.
    pub seen: String,
}

impl Running {
    /// Starts `command` with stdin, stdout and stderr piped, and no way to open a browser.
    pub fn spawn(command: Command) -> Running {
        Running::spawn_with_env(command, &[])
    }

    /// Like [`Running::spawn`], then sets `env` (a `BROWSER`, say).
    pub fn spawn_with_env(mut command: Command, env: &[(String, String)]) -> Running {
        use tokio::io::AsyncBufReadExt;
        command.env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY").env_remove("BROWSER");
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tokenctl");
        let stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        Running { child, stderr, stdout: None, seen: String::new() }
    }

    /// Reads stderr until a line contains `needle` (at most 20 s); returns that line.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stderr.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(_) => panic!("tokenctl ended before printing {needle:?}:\n{}", self.seen),
                Err(_) => panic!("tokenctl did not print {needle:?} within 20s:\n{}", self.seen),
            }
        }
    }

    /// The authorization URL `tokenctl login` printed.
    pub async fn login_url(&mut self) -> String {
        self.wait_for_line("http").await.trim().to_owned()
    }

    /// Reads the next line from stdout (at most 30 s), as `--json` output.
    pub async fn stdout_line(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        if self.stdout.is_none() {
            let stdout = self.child.stdout.take().expect("stdout is piped");
            self.stdout = Some(tokio::io::BufReader::new(stdout).lines());
        }
        let lines = self.stdout.as_mut().expect("set above");
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(Some(line)) = self.stderr.next_line().await {
                        self.seen.push_str(&line);
                        self.seen.push('\n');
                    }
                })
                .await;
                panic!("tokenctl closed stdout; its stderr:\n{}", self.seen)
            }
            Err(_) => panic!("tokenctl printed no line on stdout within 30s; stderr so far:\n{}", self.seen),
        }
    }

    /// Writes a line to the process's stdin.
    pub async fn type_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits (at most 30 s) for the process to exit; returns its status and the rest of stderr.
    pub async fn finish(mut self) -> (ExitStatus, String) {
        drop(self.child.stdin.take());
        let rest = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = self.stderr.next_line().await {
                self.seen.push_str(&line);
                self.seen.push('\n');
            }
            self.child.wait().await
        })
        .await
        .expect("tokenctl exited within 30s")
        .expect("wait for tokenctl");
        (rest, self.seen)
    }
}

impl Tokend {
    /// Starts `tokenctl ARGS` and leaves it running, with stdin and stderr piped.
    pub fn spawn_tokenctl(&self, args: &[&str]) -> Running {
        self.spawn_tokenctl_with_env(args, &[])
    }

    /// Like [`Tokend::spawn_tokenctl`], with `env` added (a `BROWSER`, say).
    pub fn spawn_tokenctl_with_env(&self, args: &[&str], env: &[(String, String)]) -> Running {
        let mut command = Command::new(bin("tokenctl"));
        command.args(args).env("TOKEND_SOCKET", &self.socket);
        Running::spawn_with_env(command, env)
    }

    /// Logs `profile` in against the fake provider, which approves at once: runs `tokenctl login
    /// --no-browser`, visits the URL it prints and follows the redirect, as a browser would.
    pub async fn log_in(&self, profile: &str) {
        let mut login = self.spawn_tokenctl(&["login", profile, "--no-browser"]);
        let url = login.login_url().await;
        let http = crate::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let approved = http.get(&url).send().await.expect("visit the authorization URL");
        let location = approved.headers()["location"].to_str().unwrap().to_owned();
        let page = http.get(&location).send().await.expect("follow the redirect to tokend");
        assert_eq!(page.status(), 200, "tokend's page after the redirect\n{}", self.log());
        let (exit, output) = login.finish().await;
        assert!(exit.success(), "{output}\n{}", self.log());
    }

    /// The refresh token saved for `profile`, read from the state file. While tokend may be
    /// refreshing, it can be one the server has already retired: compare it with the server
    /// only through [`Tokend::at_rest`].
    pub fn saved_refresh_token(&self, profile: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.state.join(format!("{profile}.json"))).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["refresh_token"].as_str().map(str::to_owned)
    }

    /// The status of `profile`, as the daemon reports it.
    pub async fn status(&self, profile: &str) -> ProfileStatus {
        let mut statuses = self.client().await.status(Some(profile)).await.expect("tokend answers a status request");
        assert_eq!(statuses.len(), 1, "one status for {profile}: {statuses:?}");
        statuses.remove(0)
    }

    /// Polls the status of `profile` (at most 20 s) until `condition` holds; returns that status.
    pub async fn status_until(&self, profile: &str, condition: impl Fn(&ProfileStatus) -> bool) -> ProfileStatus {
        let mut last = None;
        let reached = wait_for(Duration::from_secs(20), async || {
            let status = self.status(profile).await;
            last = Some(status.clone());
            condition(&status).then_some(status)
        })
        .await;
        reached.unwrap_or_else(|| panic!("{profile} never reached the state wanted; last: {last:?}\n{}", self.log()))
    }

    /// Runs `check` with the refresh token saved for `profile`, at a moment when tokend provably
    /// sent no token request for it: the status read before `check` shows no request in flight
    /// or about to be sent (not `refreshing`, not `quiet`), and the status read after it shows no
    /// request started since. tokend saves new tokens before it shows them, so the saved tokens
    /// are the current ones throughout. While tokend is busy, or if it started a request
    /// meanwhile, this waits and tries again (for at most 30 s).
    ///
    /// This is how a test compares what tokend saved with what the server holds: a refresh
    /// token read while tokend may be rotating it can be one the server has just retired. Assert
    /// on what `check` returns rather than inside it, since a result from a moment when tokend
    /// turned out to be busy is thrown away.
    pub async fn at_rest<T>(&self, profile: &str, mut check: impl AsyncFnMut(Option<String>) -> T) -> T {
        let busy = |s: &ProfileStatus| matches!(s.state, ProfileState::Refreshing | ProfileState::Quiet);
        let mut last = None;
        let found = wait_for(Duration::from_secs(30), async || {
            let before = self.status(profile).await;
            let result = if busy(&before) {
                None
            } else {
                let result = check(self.saved_refresh_token(profile)).await;
                let after = self.status(profile).await;
                (!busy(&after) && after.upstream_requests == before.upstream_requests).then_some(result)
            };
            last = Some(before);
            result
        })
        .await;
        found.unwrap_or_else(|| panic!("{profile} was never at rest for 30s: {last:?}\n{}", self.log()))
    }

    /// The processes tokend started that have not been reaped yet (notify commands, secret
    /// commands). Empty once every command it ran has finished.
    pub fn child_processes(&self) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else { return Vec::new() };
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|list| list.split_whitespace().filter_map(|pid| pid.parse().ok()).collect::<Vec<u32>>())
            .collect()
    }

    /// Waits (at most 20 s) until every process tokend started has finished.
    pub async fn commands_finished(&self) {
        assert!(
            eventually(Duration::from_secs(20), || self.child_processes().is_empty()).await,
            "tokend's commands still run after 20s: {:?}\n{}",
            self.child_processes(),
            self.log()
        );
    }
}

/// Creates (once) an unprivileged user for tests that need a second UID; returns its UID and
/// GID. The tests that use it run as root, as CI does.
pub fn other_user() -> (u32, u32) {
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = CREATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let name = "tokend-test-other";
    let id = |flag: &str| {
        std::process::Command::new("id")
            .args([flag, name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| stdout(&o).trim().parse::<u32>().unwrap())
    };
    if id("-u").is_none() {
        let out = std::process::Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .expect("useradd (these tests run as root)");
        assert!(out.status.success() || id("-u").is_some(), "useradd failed: {}", stderr(&out));
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// Writes a file with mode 0600.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    wait_for(limit, async || condition().then_some(())).await.is_some()
}

/// Polls `probe` every 20 ms until it returns `Some` or `limit` passes; returns what it found,
/// or `None` if time ran out. For conditions that need to ask something (a daemon, a server).
pub async fn wait_for<T>(limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the wall clock has passed `instant` (at most a minute away), for tests whose
/// subject is a token's expiry: an instant of wall-clock time, with no event to wait for
/// instead.
pub async fn until_past(instant: SystemTime) {
    let left = instant.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(left <= Duration::from_secs(60), "{left:?} is too long to wait for in a test");
    loop {
        match instant.duration_since(SystemTime::now()) {
            Ok(left) => tokio::time::sleep(left + Duration::from_millis(1)).await,
            Err(_) => return,
        }
    }
}

/// The text of a process's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The text of a process's stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
