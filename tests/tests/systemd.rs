//! The user units under a real `systemd --user`: the service (Type=notify, reload, clean stop)
//! and socket activation (the first `tokenctl token` starts tokend); the sandbox the service
//! runs in, as `systemd-analyze security` rates it; and everything tokend needs from inside
//! that sandbox — secret files and commands under the home directory, a Unix socket of the
//! user's session, its state directory across a restart, a notify command, the login listener
//! on loopback.
//!
//! Needs root and Debian's systemd package, as CI has. The manager is root's user instance, so
//! tokend runs with root's home directory, and nothing real in it is touched: the units go in
//! the manager's runtime unit directory; the binaries, config and secrets in a temporary
//! directory under the home directory (read-only to tokend, as a user's files are); the state
//! in a fresh directory inside tokend's default state directory, which is the one the unit
//! makes writable. All of it is removed afterwards. There is one manager, so the tests take
//! turns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokend_e2e::fake::{Client, ClientAuth, Style};
use tokend_e2e::systemd::UserManager;
use tokend_e2e::{FakeProvider, Need, Running, bin, eventually, free_port, require, stderr, stdout, write_private};

/// The highest exposure `systemd-analyze security` may give the unit: "OK" ends at 3.0.
const HIGHEST_EXPOSURE: f64 = 3.0;

/// One test at a time in the one user manager.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The shipped units, installed in the user manager; uninstalled, with everything the test
/// wrote, when dropped.
struct Units {
    manager: UserManager,
    /// This build's binaries, the config, the secrets and tokend's log: a temporary directory
    /// under the home directory.
    files: tempfile::TempDir,
    /// tokend's state directory: a fresh one inside the default `~/.local/state/tokend`.
    state: PathBuf,
    /// Directories of the default state path that the unit's `mkdir` creates for this test.
    made: Vec<PathBuf>,
}

impl Units {
    /// Installs `tokend.service` and `tokend.socket` as shipped.
    fn install() -> Units {
        let manager = UserManager::start();
        uninstall(&manager);
        let home = manager.home();
        let files = tempfile::Builder::new().prefix(".tokend-systemd-test-").tempdir_in(&home).unwrap();
        let default_state = home.join(".local/state/tokend");
        let made = [home.join(".local"), home.join(".local/state"), default_state.clone()];
        let made = made.into_iter().filter(|dir| !dir.exists()).collect();
        let state = default_state.join(files.path().file_name().unwrap());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for unit in ["tokend.service", "tokend.socket"] {
            std::fs::copy(root.join("systemd").join(unit), manager.unit_dir().join(unit)).unwrap();
        }
        assert_ok("daemon-reload", &manager.systemctl(&["daemon-reload"]));
        Units { manager, files, state, made }
    }

    /// Points the service at this build and `config` with a drop-in, as a user would to run
    /// binaries from elsewhere. The binaries are linked into the home directory: where a clone
    /// lives under /tmp, the service's private /tmp would hide them.
    fn use_this_build(&self, config: &Path) {
        let bin_dir = self.files.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        for name in ["tokend", "tokenctl"] {
            if std::fs::hard_link(bin(name), bin_dir.join(name)).is_err() {
                std::fs::copy(bin(name), bin_dir.join(name)).unwrap();
            }
        }
        let drop_in = self.manager.unit_dir().join("tokend.service.d");
        std::fs::create_dir_all(&drop_in).unwrap();
        std::fs::write(
            drop_in.join("test.conf"),
            format!(
                "[Service]\nExecStart=\nExecStart={bin}/tokend --config {config} --state-dir {state}\n\
                 ExecReload=\nExecReload={bin}/tokenctl reload\nStandardError=append:{log}\n",
                bin = bin_dir.display(),
                config = config.display(),
                state = self.state.display(),
                log = self.log_file().display(),
            ),
        )
        .unwrap();
        assert_ok("daemon-reload", &self.manager.systemctl(&["daemon-reload"]));
    }

    /// Where the drop-in sends tokend's stderr (the test machine may have no journal).
    fn log_file(&self) -> PathBuf {
        self.files.path().join("tokend.log")
    }

    /// What tokend logged and what systemd says about the service, for failure messages.
    fn log(&self) -> String {
        let status = self.manager.systemctl(&["status", "--no-pager", "tokend.service"]);
        format!(
            "tokend's log:\n{}\nsystemctl --user status tokend.service:\n{}",
            std::fs::read_to_string(self.log_file()).unwrap_or_default(),
            stdout(&status)
        )
    }

    /// Runs `systemctl --user ARGS` and insists that it succeeds.
    fn systemctl_ok(&self, args: &[&str]) {
        let out = self.manager.systemctl(args);
        assert!(out.status.success(), "systemctl --user {args:?} failed: {}\n{}", stderr(&out), self.log());
    }

    /// `tokenctl ARGS`, talking to the default socket of the manager's runtime directory.
    fn tokenctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("tokenctl"));
        command
            .args(args)
            .env_remove("TOKEND_SOCKET")
            .env_remove("TOKEND_CONFIG")
            .env("XDG_RUNTIME_DIR", &self.manager.runtime_dir);
        command
    }

    /// Runs `tokenctl ARGS` to the end.
    async fn tokenctl(&self, args: &[&str]) -> Output {
        tokio::process::Command::from(self.tokenctl_command(args)).output().await.unwrap()
    }

    /// `tokenctl token PROFILE`, which must succeed.
    async fn token(&self, profile: &str) -> String {
        let out = self.tokenctl(&["token", profile]).await;
        assert!(out.status.success(), "tokenctl token {profile}: {}\n{}", stderr(&out), self.log());
        stdout(&out).trim().to_owned()
    }

    /// A name for files the test puts in the manager's runtime directory.
    fn runtime_name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.files.path().file_name().unwrap().to_string_lossy())
    }
}

impl Drop for Units {
    fn drop(&mut self) {
        uninstall(&self.manager);
        let _ = std::fs::remove_dir_all(&self.state);
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_file(self.manager.runtime_dir.join(self.runtime_name("agent")));
        for suffix in ["notified", "notified.tmp"] {
            let _ = std::fs::remove_file(self.manager.runtime_dir.join("tokend").join(self.runtime_name(suffix)));
        }
    }
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

fn assert_ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed ({}): {}{}", out.status, stdout(out), stderr(out));
}

/// The number in `systemd-analyze security`'s last line:
/// `→ Overall exposure level for tokend.service: 1.5 OK 🙂`.
fn overall_exposure(report: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.contains("Overall exposure level for tokend.service:"))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_is_rated_ok_by_systemd_analyze_security() {
    require!(Need::SystemdUserManager, Need::Program("systemd-analyze"));
    let _turn = ONE_AT_A_TIME.lock().await;
    let units = Units::install();
    let out = Command::new("systemd-analyze")
        .args(["security", "--user", "--no-pager", "tokend.service"])
        .env("XDG_RUNTIME_DIR", &units.manager.runtime_dir)
        .output()
        .unwrap();
    assert_ok("systemd-analyze security", &out);
    let report = stdout(&out);
    let exposure = overall_exposure(&report).unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"));
    assert!(exposure <= HIGHEST_EXPOSURE, "tokend.service is rated {exposure}, above {HIGHEST_EXPOSURE}:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_units_work_under_a_real_systemd() {
    require!(Need::SystemdUserManager);
    let _turn = ONE_AT_A_TIME.lock().await;
    let units = Units::install();
    let manager = &units.manager;
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    fake.client("d", "s", ClientAuth::Basic);
    let profile = |name: &str| {
        format!(
            "[profiles.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"{name}\"\nclient_secret = \"s\"\n",
            fake.url("/oauth/token")
        )
    };
    let config = units.files.path().join("config.toml");
    write_private(&config, &profile("c"));
    units.use_this_build(&config);

    // The service: Type=notify, so `start` returns once tokend is ready.
    units.systemctl_ok(&["start", "tokend.service"]);
    assert_eq!(manager.property("tokend.service", "ActiveState"), "active");
    assert_eq!(manager.property("tokend.service", "StatusText"), "serving 1 profile");
    assert!(fake.accepts(&units.token("c").await));
    let socket = manager.runtime_dir.join("tokend/tokend.sock");
    assert!(socket.exists(), "the default socket path");
    let http_socket = manager.runtime_dir.join("tokend/http.sock");
    assert!(fake.accepts(&http_token(&http_socket, "c").await), "the HTTP API beside it");

    // Reload through systemd: applied, and reported by STATUS.
    write_private(&config, &(profile("c") + &profile("d")));
    units.systemctl_ok(&["reload", "tokend.service"]);
    assert_eq!(manager.property("tokend.service", "StatusText"), "serving 2 profiles");
    assert!(fake.accepts(&units.token("d").await));
    // An invalid config fails the reload, and the service keeps running the old one.
    write_private(&config, "[profiles.x\n");
    let failed = manager.systemctl(&["reload", "tokend.service"]);
    assert!(!failed.status.success(), "a rejected config fails `systemctl reload`");
    assert_eq!(manager.property("tokend.service", "ActiveState"), "active");
    assert!(fake.accepts(&units.token("d").await), "tokens after a rejected reload");
    write_private(&config, &profile("c"));

    // A clean stop: exit status 0, socket removed.
    units.systemctl_ok(&["stop", "tokend.service"]);
    assert_eq!(manager.property("tokend.service", "Result"), "success");
    assert_eq!(manager.property("tokend.service", "ExecMainStatus"), "0");
    assert!(!socket.exists());
    assert!(!http_socket.exists());

    // Socket activation: only the socket unit runs, and the first request starts tokend.
    units.systemctl_ok(&["start", "tokend.socket"]);
    assert_eq!(manager.property("tokend.service", "ActiveState"), "inactive");
    assert!(socket.exists(), "systemd listens on tokend's default socket");
    assert!(http_socket.exists(), "and on the HTTP API's");
    // The first request, on the HTTP socket, starts tokend, which takes both sockets.
    assert!(fake.accepts(&http_token(&http_socket, "c").await), "a token through socket activation");
    assert_eq!(manager.property("tokend.service", "ActiveState"), "active");
    assert!(fake.accepts(&units.token("c").await), "and on the protocol socket");
    // tokend adopted the passed sockets: stopping the service leaves systemd's sockets in
    // place, and the next request starts tokend again.
    units.systemctl_ok(&["stop", "tokend.service"]);
    assert!(socket.exists() && http_socket.exists());
    let mut ping = units.tokenctl_command(&["ping"]);
    assert!(eventually(Duration::from_secs(5), || ping.output().is_ok_and(|o| o.status.success())).await);
    drop(units);
    assert!(!socket.exists(), "RemoveOnStop cleans up the socket");
    assert!(!http_socket.exists());
}

/// A token of `profile` from the HTTP API at `socket`.
async fn http_token(socket: &std::path::Path, profile: &str) -> String {
    let answer = tokend_e2e::http::Connection::unix(socket).await.get(&format!("/v1/token/{profile}")).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    answer.json()["access_token"].as_str().unwrap().to_owned()
}

/// A secret agent of the user's session, such as gpg-agent: a Unix socket in
/// `$XDG_RUNTIME_DIR` that hands `secret` to whoever connects.
fn serve_secret_agent(path: &Path, secret: &'static str) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(secret.as_bytes()).await;
        }
    });
}

/// The browser's part of a login: visit the authorization URL (the fake provider approves at
/// once), then follow the redirect to tokend's login listener; returns the listener's status.
async fn browse(authorization_url: &str) -> u16 {
    let http = tokend_e2e::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let approved = http.get(authorization_url).send().await.unwrap();
    assert_eq!(approved.status(), 302, "the authorization endpoint redirects");
    let redirect = approved.headers()["location"].to_str().unwrap().to_owned();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    let landed = http.get(&redirect).send().await.unwrap_or_else(|e| panic!("tokend's login listener: {e}"));
    landed.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokend_has_what_it_needs_inside_the_units_sandbox() {
    require!(Need::SystemdUserManager, Need::Program("python3"));
    let _turn = ONE_AT_A_TIME.lock().await;
    let units = Units::install();
    let files = units.files.path();
    let fake = FakeProvider::start().await;
    fake.client("file", "from-a-file", ClientAuth::Basic);
    fake.client("command", "from-the-agent", ClientAuth::Basic);
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    fake.register(
        "mm",
        Client {
            secret: Some("mm-secret".into()),
            auth: ClientAuth::Post,
            required_params: vec![],
            redirect_uri: Some(redirect.clone()),
        },
    );
    fake.set_style(Style::Movemint);

    // A secret file, and a secret command that asks an agent over a socket in
    // $XDG_RUNTIME_DIR, as `pass` asks gpg-agent: both under the home directory.
    let secret_file = files.join("secret");
    write_private(&secret_file, "from-a-file\n");
    let agent = units.manager.runtime_dir.join(units.runtime_name("agent"));
    serve_secret_agent(&agent, "from-the-agent");
    let secret_command = files.join("secret-command");
    write_private(
        &secret_command,
        &format!(
            "#!/bin/sh\nexec python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
             sys.stdout.write(s.makefile().read())' \"$XDG_RUNTIME_DIR/{}\"\n",
            units.runtime_name("agent")
        ),
    );
    std::fs::set_permissions(&secret_command, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // The notify command writes into the service's runtime directory, one of the places the
    // sandbox lets it write (a rename, so that the file appears complete).
    let note = units.runtime_name("notified");
    let notified = units.manager.runtime_dir.join("tokend").join(&note);
    let config = files.join("config.toml");
    write_private(
        &config,
        &format!(
            r#"
[profiles.file]
grant = "client_credentials"
token_url = "{token_url}"
client_id = "file"
client_secret_file = "{secret_file}"

[profiles.command]
grant = "client_credentials"
token_url = "{token_url}"
client_id = "command"
client_secret_command = "{secret_command}"

[profiles.mm]
grant = "authorization_code"
token_url = "{token_url}"
authorize_url = "{authorize_url}"
redirect_uri = "{redirect}"
client_id = "mm"
client_secret = "mm-secret"
client_auth = "post"
notify_command = 'env | grep ^TOKEND_ | sort > "$RUNTIME_DIRECTORY/{note}.tmp" && mv "$RUNTIME_DIRECTORY/{note}.tmp" "$RUNTIME_DIRECTORY/{note}"'
"#,
            token_url = fake.url("/oauth/token"),
            authorize_url = fake.url("/oauth/authorize"),
            secret_file = secret_file.display(),
            secret_command = secret_command.display(),
        ),
    );
    units.use_this_build(&config);
    units.systemctl_ok(&["start", "tokend.service"]);

    // The secrets were read and the command ran: the server issued tokens for them.
    assert!(fake.accepts(&units.token("file").await));
    assert!(fake.accepts(&units.token("command").await));

    // A login: tokend binds the redirect listener on 127.0.0.1 inside the sandbox.
    let mut login = Running::spawn(units.tokenctl_command(&["login", "mm", "--no-browser"]).into());
    let url = login.login_url().await;
    assert_eq!(browse(&url).await, 200, "{}", units.log());
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", units.log());
    let token = units.token("mm").await;
    assert!(fake.accepts(&token));

    // The grant was written to the state directory, and a restarted tokend serves from it
    // without asking the server.
    assert!(units.state.join("mm.json").exists(), "the state file in {}\n{}", units.state.display(), units.log());
    let requests = fake.token_requests();
    units.systemctl_ok(&["restart", "tokend.service"]);
    assert_eq!(units.token("mm").await, token, "the saved token, after a restart");
    assert_eq!(fake.token_requests(), requests, "no request to the server after the restart");

    // The grant dies at the server: the refresh fails, tokend starts a login and runs the
    // notify command with its URL, and the login completes through the listener.
    fake.revoke_everything();
    let refresh = units.tokenctl(&["refresh", "mm"]).await;
    assert!(!refresh.status.success(), "a refresh with a revoked grant fails");
    assert!(
        eventually(Duration::from_secs(10), || notified.exists()).await,
        "the notify command wrote {}\n{}",
        notified.display(),
        units.log()
    );
    let env = std::fs::read_to_string(&notified).unwrap();
    assert!(env.contains("TOKEND_PROFILE=mm"), "{env}");
    let url = env.lines().find_map(|l| l.strip_prefix("TOKEND_URL=")).unwrap_or_else(|| panic!("no URL in {env}"));
    assert_eq!(browse(url).await, 200, "{}", units.log());
    assert!(fake.accepts(&units.token("mm").await));
}
