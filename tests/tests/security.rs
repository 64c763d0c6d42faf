//! tokend's defences, each with a test that fails without it: a process that cannot be
//! inspected, secrets that never reach a log or an error, directories others cannot enter,
//! certificates always verified, state encrypted at rest, and a login listener with bounds.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::impostor::{Impostor, PLANTED_TOKEN};
use tokend_e2e::{
    FakeProvider, Movemint, Need, Options, Tokend, bin, eventually, free_port, other_user, require, stderr, stdout,
    write_private,
};

fn cc_config(fake: &FakeProvider, secret: &str) -> String {
    format!(
        "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\nclient_secret = \"{secret}\"\n",
        fake.url("/oauth/token")
    )
}

/// Kills a child process when dropped, so a failing assertion does not leave it running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setpriv(uid: u32, gid: u32) -> std::process::Command {
    let mut command = std::process::Command::new("setpriv");
    command.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokend_run_by_an_ordinary_user_cannot_be_inspected_by_that_user() {
    require!(Need::OtherUser);
    let (uid, gid) = other_user();
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let config = home.join("config.toml");
    write_private(&config, &cc_config(&fake, "s"));
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(&config, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = home.join("run/tokend.sock");
    let daemon = setpriv(uid, gid)
        .arg(bin("tokend"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(home.join("state"))
        .env("HOME", &home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let daemon = KillOnDrop(daemon);
    // A control: another process of the same user, which that user *can* inspect.
    let control =
        KillOnDrop(setpriv(uid, gid).args(["sleep", "60"]).stdout(std::process::Stdio::null()).spawn().unwrap());
    let (daemon_pid, control_pid) = (daemon.0.id(), control.0.id());
    assert!(eventually(Duration::from_secs(10), || socket.exists()).await, "tokend started as uid {uid}");
    let can_read = |pid: u32, file: &str| {
        setpriv(uid, gid).args(["cat", &format!("/proc/{pid}/{file}")]).output().unwrap().status.success()
    };
    assert!(can_read(control_pid, "environ"), "control: a user reads its own processes' memory-backed files");
    assert!(!can_read(daemon_pid, "environ"), "tokend's environment is hidden from its own user");
    assert!(!can_read(daemon_pid, "mem"), "tokend's memory is hidden from its own user");
    assert_eq!(
        std::fs::metadata(format!("/proc/{daemon_pid}/mem")).unwrap().uid(),
        0,
        "not dumpable: /proc files belong to root"
    );
    let limits = std::fs::read_to_string(format!("/proc/{daemon_pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(), ["0", "0"], "{core}");
    assert_eq!(ptrace_attach_as(uid, gid, control_pid), 0, "control: a user may ptrace its own processes");
    assert_eq!(ptrace_attach_as(uid, gid, daemon_pid), libc::EPERM, "PTRACE_ATTACH on tokend by the same user fails");
}

/// Tries PTRACE_ATTACH on `pid` from a child process running as `uid`; returns 0 or the errno.
fn ptrace_attach_as(uid: u32, gid: u32, pid: u32) -> i32 {
    let pid = libc::pid_t::try_from(pid).expect("a PID fits in pid_t");
    // SAFETY: the child calls only async-signal-safe system calls before `_exit`.
    unsafe {
        let child = libc::fork();
        assert!(child >= 0, "fork");
        if child == 0 {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                libc::_exit(100);
            }
            let attached = libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
            libc::_exit(if attached == 0 { 0 } else { *libc::__errno_location() });
        }
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        libc::WEXITSTATUS(status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_trace_logs_or_error_output() {
    let fake = Movemint::with_client("mm", "SECRET-mm-9a2e").await;
    fake.client("c", "SECRET-cc-4f1d", ClientAuth::Basic);
    fake.set_lifetime(Duration::from_secs(2));
    let config = format!(
        r#"{cc}
[profiles.wrong]
grant = "client_credentials"
token_url = "{base}/oauth/token"
client_id = "c"
client_secret = "SECRET-wrong-77c3"
{mm}"#,
        cc = cc_config(&fake, "SECRET-cc-4f1d"),
        base = fake.base,
        mm = fake.config(),
    );
    let mut tokend =
        Tokend::start_with(&config, Options { env: vec![("RUST_LOG".into(), "trace".into())], ..Default::default() })
            .await;
    let mut outputs = String::new();
    let run = |outputs: &mut String, out: std::process::Output| outputs.push_str(&stderr(&out));
    // client_credentials, refreshes, a permanent failure, a transient one.
    run(&mut outputs, tokend.tokenctl(&["token", "p"]).await);
    run(&mut outputs, tokend.tokenctl(&["token", "wrong"]).await);
    run(&mut outputs, tokend.tokenctl(&["status", "wrong"]).await);
    fake.fail_next([tokend_e2e::fake::Fault::Garbage]);
    run(&mut outputs, tokend.tokenctl(&["refresh", "p"]).await);
    // A login, pasted as over SSH, with a wrong paste first; refreshes; info; logout.
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    let http = tokend_e2e::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let location = http.get(&url).send().await.unwrap().headers()["location"].to_str().unwrap().to_owned();
    login.type_line(&location.replace("state=", "state=x")).await;
    login.wait_for_line("does not match").await;
    login.type_line(&location).await;
    let (_, login_output) = login.finish().await;
    outputs.push_str(&login_output);
    // Two-second tokens: a few refreshes, traced, with rotated refresh tokens.
    let refreshes = || fake.requests().iter().filter(|r| r.form["grant_type"] == "refresh_token").count();
    assert!(eventually(Duration::from_secs(20), || refreshes() >= 2).await, "{}", tokend.log());
    run(&mut outputs, tokend.tokenctl(&["info", "mm"]).await);
    run(&mut outputs, tokend.tokenctl(&["token", "mm", "--min-valid", "1h"]).await);
    run(&mut outputs, tokend.tokenctl(&["logout", "mm"]).await);
    run(&mut outputs, tokend.tokenctl(&["token", "mm"]).await);
    tokend.stop().await;

    let log = tokend.log();
    assert!(log.contains("TRACE") || log.contains("trace"), "tracing was on");
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("c:SECRET-cc-4f1d")
    };
    let mut secrets: Vec<String> =
        ["SECRET-cc-4f1d", "SECRET-mm-9a2e", "SECRET-wrong-77c3", &basic].into_iter().map(str::to_owned).collect();
    secrets.extend(fake.every_secret_issued());
    assert!(secrets.len() > 8, "the flow issued tokens, refresh tokens and a code");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "tokend's log contains a secret ({}…)", &secret[..6]);
        assert!(!outputs.contains(secret.as_str()), "tokenctl's error output contains a secret ({}…)", &secret[..6]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_directory_owned_by_another_user_is_refused() {
    require!(Need::OtherUser);
    let (uid, gid) = other_user();
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_private(&config, &cc_config(&fake, "s"));
    let planted = dir.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&planted, Some(uid), Some(gid)).unwrap();
    let out = std::process::Command::new(bin("tokend"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(planted.join("tokend.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains(&format!("belongs to uid {uid}")) && message.contains("remove it"), "{message}");
}

/// The authorization code in the redirect URL the tests paste into `tokenctl login`.
const PASTED_CODE: &str = "code-meant-for-the-real-tokend";

/// Runs `command` (a `tokenctl login … --no-browser`) and pastes a redirect URL carrying an
/// authorization code at once, as a user logging in over SSH would. Returns the exit code and
/// stderr; `None` if it was still waiting after 20 s (then it is killed).
async fn login_with_paste(mut command: tokio::process::Command) -> (Option<i32>, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let paste = format!("http://127.0.0.1:8976/callback?code={PASTED_CODE}&state=s\n");
    let _ = child.stdin.as_mut().unwrap().write_all(paste.as_bytes()).await;
    match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            (out.status.code(), stderr(&out))
        }
        Err(_) => (None, String::new()),
    }
}

/// Whether a transcript of the impostor shows connections that carried nothing at all.
fn nothing_was_sent(transcript: &[String]) -> bool {
    transcript.iter().all(|line| line.ends_with(" accepted") || line.ends_with(" closed after 0 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenctl_refuses_a_socket_directory_another_user_planted_and_sends_it_nothing() {
    require!(Need::OtherUser);
    let (uid, gid) = other_user();
    // Without XDG_RUNTIME_DIR the default socket is $TMPDIR/tokend-UID/tokend.sock, and in a
    // shared temporary directory another user can create tokend-UID first and listen there.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let planted = shared.path().join(format!("tokend-{me}"));
    let mut impostor = Impostor::start_as(uid, gid, &planted.join("tokend.sock")).await;
    let home = tempfile::tempdir().unwrap();
    let tokenctl = |args: &[&str]| {
        let mut command = tokio::process::Command::new(bin("tokenctl"));
        command
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("TOKEND_SOCKET")
            .env_remove("TOKEND_CONFIG")
            .env("TMPDIR", shared.path())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"));
        command
    };

    let out = tokenctl(&["token", "p"]).output().await.unwrap();
    assert!(!stdout(&out).contains(PLANTED_TOKEN), "tokenctl printed the other user's token");
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&planted.display().to_string()) && message.contains(&format!("belongs to uid {uid}")),
        "{message}"
    );

    let (code, message) = login_with_paste(tokenctl(&["login", "p", "--no-browser"])).await;
    let transcript = impostor.transcript().await;
    assert!(
        !transcript.iter().any(|line| line.contains(PASTED_CODE)),
        "the authorization code reached the other user: {transcript:?}"
    );
    assert!(nothing_was_sent(&transcript), "{transcript:?}");
    assert_eq!(code, Some(9), "tokenctl login refused at once: {message}");
    assert!(message.contains(&format!("belongs to uid {uid}")), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_refuse_a_daemon_run_by_another_user_before_sending_anything() {
    require!(Need::OtherUser);
    let (uid, gid) = other_user();
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut impostor = Impostor::start_as(uid, gid, &shared.path().join("impostor/tokend.sock")).await;
    // Moved into a private directory of this user's, the socket passes the directory check:
    // only the credentials of the process behind it give the impostor away.
    let private = tempfile::tempdir().unwrap();
    let socket = private.path().join("tokend.sock");
    impostor.move_socket(&socket);

    let tokenctl = |args: &[&str]| {
        let mut command = tokio::process::Command::new(bin("tokenctl"));
        command.args(args).env("TOKEND_SOCKET", &socket).env_remove("TOKEND_CONFIG");
        command
    };
    let out = tokenctl(&["token", "p"]).output().await.unwrap();
    assert!(!stdout(&out).contains(PLANTED_TOKEN), "tokenctl printed the other user's token");
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("runs as uid {uid}")), "{}", stderr(&out));
    let (code, message) = login_with_paste(tokenctl(&["login", "p", "--no-browser"])).await;
    assert_eq!(code, Some(9), "tokenctl login refused at once: {message}");

    // The library, blocking and async alike.
    let endpoint = tokend_client::Endpoint::new(&socket);
    let blocking = std::thread::spawn({
        let endpoint = endpoint.clone();
        move || tokend_client::blocking::Client::connect_to(endpoint).and_then(|mut c| c.token("p")).map(|t| t.profile)
    })
    .join()
    .unwrap();
    let error = blocking.expect_err("the blocking client refused the impostor");
    assert_eq!(error.class(), tokend_client::ErrorClass::Untrusted, "{error}");
    let error = match tokend_client::Client::connect_to(endpoint).await {
        Ok(mut client) => client.token("p").await.map(|t| t.profile),
        Err(e) => Err(e),
    }
    .expect_err("the async client refused the impostor");
    assert_eq!(error.class(), tokend_client::ErrorClass::Untrusted, "{error}");

    let transcript = impostor.transcript().await;
    assert!(nothing_was_sent(&transcript), "{transcript:?}");
    assert!(!transcript.is_empty(), "the clients did connect, and the check came after connecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenctl_refuses_a_socket_directory_others_can_write() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let tokend = Tokend::start(&cc_config(&fake, "s")).await;
    let dir = tokend.socket.parent().unwrap();
    for mode in [0o777, 0o730, 0o1777] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = tokend.tokenctl(&["token", "p"]).await;
        assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
        let message = stderr(&out);
        assert!(message.contains(&format!("can be written by other users (mode {mode:04o})")), "{message}");
        assert!(stdout(&out).is_empty());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    tokend.tokenctl_ok(&["token", "p"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_always_verified() {
    require!(Need::Program("openssl"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", stderr(&made));
    let port = free_port();
    let mut server = tokio::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await);
    let config = format!(
        "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"https://127.0.0.1:{port}/token\"\nclient_id = \"c\"\nclient_secret = \"s\"\n"
    );
    let tokend = Tokend::start(&config).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).to_lowercase().contains("certificate"), "{}", stderr(&out));
    let _ = server.kill().await;
}

/// An HTTPS token endpoint in Python: it answers every POST with a fixed token and prints the
/// port it listens on.
const TLS_TOKEN_SERVER: &str = r#"
import http.server, ssl, sys
class Token(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"access_token":"at_over_tls","token_type":"Bearer","expires_in":3600}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Token)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The other side of verification, and proof that TLS works with the crypto provider tokend
/// installs: a server whose certificate chains to a root the system trusts is accepted.
/// `SSL_CERT_FILE` stands in for the system's store, which tokend reads the way OpenSSL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_a_trusted_root_is_accepted() {
    require!(Need::Program("openssl"), Need::Program("python3"));
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &str| {
        let out = std::process::Command::new("openssl").args(args.split(' ')).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args}: {}", stderr(&out));
    };
    openssl("req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=tokend-test-root -keyout root.key -out root.pem");
    openssl("req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr");
    let extensions = "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n";
    std::fs::write(dir.path().join("server.ext"), extensions).unwrap();
    openssl(
        "x509 -req -in server.csr -CA root.pem -CAkey root.key -CAcreateserial -days 1 -extfile server.ext -out server.pem",
    );
    let mut server = tokio::process::Command::new("python3")
        .args(["-c", TLS_TOKEN_SERVER, "server.pem", "server.key"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the TLS server starts within 10 s")
        .unwrap()
        .expect("the TLS server prints its port");
    let config = format!(
        "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"https://127.0.0.1:{port}/token\"\nclient_id = \"c\"\nclient_secret = \"s\"\n"
    );
    let trust = vec![("SSL_CERT_FILE".to_owned(), dir.path().join("root.pem").display().to_string())];
    let tokend = Tokend::start_with(&config, Options { env: trust, ..Default::default() }).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert!(out.status.success(), "{}\n{}", stderr(&out), tokend.log());
    assert_eq!(stdout(&out).trim(), "at_over_tls");
    let _ = server.kill().await;
}

async fn movemint_with_key(extra_daemon: &str, options: Options) -> (Movemint, Tokend, String) {
    let fake = Movemint::with_client("mm", "s").await;
    let config = format!("[daemon]\n{extra_daemon}\n{}", fake.config());
    let tokend = Tokend::start_with(&config, options).await;
    tokend.log_in("mm").await;
    (fake, tokend, config)
}

fn write_key(path: &Path, byte: u8) {
    std::fs::write(path, [byte; 32]).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_encrypted_at_rest_and_a_wrong_key_needs_a_login_without_stopping_tokend() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("state.key");
    write_key(&key, 1);
    let (fake, mut tokend, _) = movemint_with_key(&format!("encryption_key_file = {key:?}"), Options::default()).await;
    let token = tokend.tokenctl_ok(&["token", "mm"]).await;
    let on_disk = std::fs::read_to_string(tokend.state.join("mm.json")).unwrap();
    assert!(on_disk.contains("tokend-state-sealed"));
    for secret in fake.every_secret_issued() {
        assert!(!on_disk.contains(&secret), "no token in the clear on disk");
    }
    // Same key: restarts without a login.
    tokend.stop().await;
    tokend.restart().await;
    assert_eq!(tokend.tokenctl_ok(&["token", "mm"]).await, token);
    // Wrong key: tokend runs, says why, and the profile needs a login; the file is kept.
    tokend.stop().await;
    write_key(&key, 2);
    tokend.restart().await;
    let out = tokend.tokenctl(&["token", "mm"]).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(tokend.log().contains("the key is wrong, or the file was altered"), "{}", tokend.log());
    let kept: Vec<_> = std::fs::read_dir(&tokend.state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(kept.iter().any(|n| n.starts_with("mm.json.damaged-")), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_state_file_is_detected() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("state.key");
    write_key(&key, 3);
    let (_fake, mut tokend, _) = movemint_with_key(&format!("encryption_key_file = {key:?}"), Options::default()).await;
    tokend.stop().await;
    let path = tokend.state.join("mm.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    use base64::Engine;
    let mut sealed = base64::engine::general_purpose::STANDARD.decode(json["sealed"].as_str().unwrap()).unwrap();
    let middle = sealed.len() / 2;
    sealed[middle] ^= 0x01;
    json["sealed"] = base64::engine::general_purpose::STANDARD.encode(sealed).into();
    std::fs::write(&path, json.to_string()).unwrap();
    tokend.restart().await;
    assert_eq!(tokend.tokenctl(&["token", "mm"]).await.status.code(), Some(5));
    assert!(tokend.log().contains("cannot decrypt"), "{}", tokend.log());
    tokend.tokenctl_ok(&["ping"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_can_come_from_systemd_credentials() {
    let credentials = tempfile::tempdir().unwrap();
    write_key(&credentials.path().join("tokend-state"), 4);
    let options = Options {
        env: vec![("CREDENTIALS_DIRECTORY".into(), credentials.path().to_string_lossy().into_owned())],
        ..Default::default()
    };
    let (_fake, mut tokend, _) = movemint_with_key("encryption_key_credential = \"tokend-state\"", options).await;
    assert!(std::fs::read_to_string(tokend.state.join("mm.json")).unwrap().contains("tokend-state-sealed"));
    tokend.stop().await;
    tokend.restart().await;
    tokend.tokenctl_ok(&["token", "mm"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_exposed_key_stops_tokend_at_start() {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("state.key");
    std::fs::write(&key, [5u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("config.toml");
    write_private(&config, &format!("[daemon]\nencryption_key_file = {key:?}\n\n{}", cc_config(&fake, "s")));
    let start = || {
        std::process::Command::new(bin("tokend"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(dir.path().join("run/t.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap()
    };
    let out = start();
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::remove_file(&key).unwrap();
    let out = start();
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("cannot open the key file"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_listener_is_loopback_only_and_bounded() {
    let fake = Movemint::with_client("mm", "s").await;
    let port = url::Url::parse(&fake.redirect).unwrap().port().unwrap();
    let config = fake.config();
    let tokend = Tokend::start(&config).await;
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    // Bound to 127.0.0.1 only.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    assert!(
        listening.lines().any(|l| l.split_whitespace().nth(1) == Some(local.as_str())),
        "listening on 127.0.0.1:{port}"
    );
    assert!(!listening.lines().any(|l| l.split_whitespace().nth(1) == Some(format!("00000000:{port:04X}").as_str())));
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A connection that sends nothing is closed once the read time (10 s) is up.
        let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // A huge request is cut off at 8 KiB, not buffered, and closed at once — long before
        // the read time is up — and it does not end the login.
        let mut flood = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), flood.write_all(&vec![b'A'; 1024 * 1024])).await;
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), flood.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the listener closed the flooding connection without waiting for the read time");
        let closed = tokio::time::timeout(Duration::from_secs(20), silent.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the listener closed the silent connection");
    }
    let http = tokend_e2e::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let location = http.get(&url).send().await.unwrap().headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(http.get(&location).send().await.unwrap().status(), 200);
    assert!(login.finish().await.0.success());
    // One-shot: the listener is gone.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
