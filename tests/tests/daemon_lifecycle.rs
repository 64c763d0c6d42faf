//! The daemon as a process: its socket, signals, restarts, and who may talk to it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokend_e2e::wire::frame;
use tokend_e2e::{FakeProvider, Need, Tokend, bin, other_user, require, stderr, stdout, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn provider() -> FakeProvider {
    FakeProvider::with_basic_client().await
}

fn config(fake: &FakeProvider) -> String {
    fake.cc_profile("p", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_to_the_user() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tokend.socket), 0o600);
    assert_eq!(mode(tokend.socket.parent().unwrap()), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_in_flight_requests_removes_the_socket_and_exits_zero() {
    shuts_down_gracefully_on(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_like_sigterm() {
    shuts_down_gracefully_on(libc::SIGINT).await;
}

/// `signal` arrives while a request waits for a slow refresh: the request is answered, the
/// socket removed, and tokend exits 0.
async fn shuts_down_gracefully_on(signal: i32) {
    let fake = provider().await;
    let mut tokend = Tokend::start(&config(&fake)).await;
    tokend.tokenctl_ok(&["token", "p"]).await;
    fake.set_delay(Duration::from_millis(1500));
    let socket = tokend.socket.clone();
    let waiting = tokio::spawn(async move {
        let mut client = tokend_client::Client::connect_to(tokend_client::Endpoint::new(socket)).await.unwrap();
        client.refresh("p").await
    });
    assert!(tokend_e2e::eventually(Duration::from_secs(5), || fake.token_requests() == 2).await, "{}", tokend.log());
    tokend.signal(signal);
    let status = tokend.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status {status}:\n{}", tokend.log());
    let answer = waiting.await.unwrap();
    assert!(answer.is_ok(), "the in-flight request was answered: {answer:?}");
    assert!(!tokend.socket.exists(), "the socket is removed");
    assert!(tokend.log().contains("shutting down"), "{}", tokend.log());
    let out = tokend.tokenctl(&["ping"]).await;
    assert_eq!(out.status.code(), Some(3));
}

/// Connections that have not finished their hello when shutdown begins (still held by the
/// socket's thread, or already on the runtime) are closed then, like idle ones: they do not
/// hold up the exit until the handshake times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_that_have_not_said_hello() {
    let fake = provider().await;
    let mut tokend = Tokend::start(&config(&fake)).await;
    let mut silent = Vec::new();
    for sent in [&[][..], &[0, 0][..], &frame(&tokend_proto::Hello::new())[..5]] {
        for _ in 0..3 {
            let mut stream = tokio::net::UnixStream::connect(&tokend.socket).await.unwrap();
            stream.write_all(sent).await.unwrap();
            silent.push(stream);
        }
    }
    tokend.signal(libc::SIGTERM);
    let status = tokend.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status {status}:\n{}", tokend.log());
    for stream in &mut silent {
        let mut sink = [0u8; 64];
        assert!(matches!(stream.read(&mut sink).await, Ok(0) | Err(_)), "closed without a word");
    }
    assert!(
        !tokend.log().contains("said nothing"),
        "closed at shutdown, not at the handshake's timeout:\n{}",
        tokend.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_max_connections_is_refused_clearly() {
    let fake = provider().await;
    let tokend = Tokend::start(&format!("[daemon]\nmax_connections = 2\n\n{}", config(&fake))).await;
    // The connections tokend was probed with at start-up free their places a moment after they close.
    let mut first = connect_when_admitted(&tokend).await;
    let mut second = connect_when_admitted(&tokend).await;
    first.token("p").await.expect("the first connection is served");
    second.ping().await.expect("the second connection is served");
    // A third connection, while both are open, is turned away and told why — every time, also
    // when tokend's refusal and close arrive before the client has sent its hello.
    for _ in 0..20 {
        let out = tokend.tokenctl(&["ping"]).await;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let message = stderr(&out);
        assert!(message.contains("tokend refused the connection"), "{message}");
        assert!(message.contains("at its connection limit ([daemon] max_connections)"), "{message}");
    }
    for _ in 0..20 {
        let json = tokend.tokenctl(&["--json", "token", "p"]).await;
        assert_eq!(json.status.code(), Some(3), "{}", stderr(&json));
        let error: serde_json::Value = serde_json::from_str(stderr(&json).trim()).unwrap();
        assert_eq!(error["error"]["class"], "not_reachable", "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("max_connections"), "{error}");
    }
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        tokend_client::Client::connect_to(tokend_client::Endpoint::new(&tokend.socket)),
    )
    .await
    .expect("a refusal is prompt");
    assert!(
        matches!(&refused, Err(tokend_client::Error::Refused { message }) if message.contains("max_connections")),
        "the library is refused too: {refused:?}"
    );
    // The refusals did not disturb the two connections being served.
    let token = first.token("p").await.expect("the first connection still works");
    assert!(fake.accepts(token.access_token.expose()));
    assert_eq!(second.token("p").await.expect("the second connection still works").fingerprint, token.fingerprint);
    // Once one closes, its place is free again.
    drop(first);
    let admitted = wait_for(Duration::from_secs(10), async || {
        let out = tokend.tokenctl(&["ping"]).await;
        let message = stderr(&out);
        assert!(out.status.success() || message.contains("max_connections"), "{message}");
        out.status.success().then_some(())
    })
    .await;
    assert!(admitted.is_some(), "no connection was admitted after one closed:\n{}", tokend.log());
    second.ping().await.expect("the second connection still works");
    assert_eq!(fake.token_requests(), 1, "{}", tokend.log());
}

/// A client connection, retried (for at most 10 s) while tokend is at its connection limit.
async fn connect_when_admitted(tokend: &Tokend) -> tokend_client::Client {
    let admitted = wait_for(Duration::from_secs(10), async || {
        match tokend_client::Client::connect_to(tokend_client::Endpoint::new(&tokend.socket)).await {
            Ok(client) => Some(client),
            Err(e) => {
                assert!(matches!(e, tokend_client::Error::Refused { .. }), "{e}");
                None
            }
        }
    })
    .await;
    admitted.unwrap_or_else(|| panic!("never admitted within 10s:\n{}", tokend.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenctl_says_how_to_start_a_daemon_that_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("tokenctl"))
        .args(["token", "p"])
        .env("TOKEND_SOCKET", dir.path().join("nothing.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let message = stderr(&out);
    assert!(message.contains("tokend is not running"), "{message}");
    assert!(message.contains("systemctl --user start tokend"), "{message}");
    let json = std::process::Command::new(bin("tokenctl"))
        .args(["--json", "ping"])
        .env("TOKEND_SOCKET", dir.path().join("nothing.sock"))
        .output()
        .unwrap();
    let error: serde_json::Value = serde_json::from_str(stderr(&json).trim()).unwrap();
    assert_eq!(error["error"]["class"], "not_reachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_does_not_take_a_live_daemons_socket() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    let out = std::process::Command::new(bin("tokend"))
        .arg("--config")
        .arg(&tokend.config)
        .arg("--socket")
        .arg(&tokend.socket)
        .arg("--state-dir")
        .arg(tokend.dir.path().join("other-state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another tokend is already running"), "{}", stderr(&out));
    tokend.tokenctl_ok(&["ping"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_left_by_a_crash_is_replaced() {
    let fake = provider().await;
    let mut tokend = Tokend::start(&config(&fake)).await;
    tokend.kill().await;
    assert!(tokend.socket.exists(), "SIGKILL leaves the socket behind");
    tokend.restart().await;
    tokend.tokenctl_ok(&["token", "p"]).await;
    assert!(tokend.log().contains("removing the stale socket"), "{}", tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_after_a_daemon_restart() {
    let fake = provider().await;
    let mut tokend = Tokend::start(&config(&fake)).await;
    let mut client = tokend.client().await;
    let mut blocking = {
        let socket = tokend.socket.clone();
        tokio::task::spawn_blocking(move || {
            tokend_client::blocking::Client::connect_to(tokend_client::Endpoint::new(socket))
        })
        .await
        .unwrap()
        .unwrap()
    };
    client.token("p").await.unwrap();
    tokend.stop().await;
    tokend.restart().await;
    client.token("p").await.expect("the async client reconnects");
    tokio::task::spawn_blocking(move || blocking.token("p").map(|_| ()))
        .await
        .unwrap()
        .expect("the blocking client reconnects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_many_requests() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    let mut client = tokend.client().await;
    let first = client.token("p").await.unwrap();
    for _ in 0..2000 {
        let token = client.token("p").await.unwrap();
        assert_eq!(token.fingerprint, first.fingerprint);
    }
    assert_eq!(fake.token_requests(), 1, "served from memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_connections_are_served() {
    tokend_e2e::raise_fd_limit();
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    tokend.tokenctl_ok(&["token", "p"]).await;
    // Open them all first, so they are truly concurrent, then ask on every one.
    let mut clients = Vec::new();
    for _ in 0..3000 {
        clients.push(tokend.client().await);
    }
    let tasks: Vec<_> =
        clients.into_iter().map(|mut c| tokio::spawn(async move { c.token("p").await.map(|t| (t, c)) })).collect();
    let mut kept = Vec::new();
    for task in tasks {
        let (token, client) = task.await.unwrap().expect("served");
        assert!(fake.accepts(token.access_token.expose()));
        kept.push(client);
    }
    assert_eq!(kept.len(), 3000);
    // With 3000 connections open, a new client is still answered at once.
    let out = tokend.tokenctl(&["ping"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

fn tokenctl_as(uid: u32, gid: u32, socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(bin("tokenctl"))
        .args(args)
        .env("TOKEND_SOCKET", socket)
        .env("HOME", "/")
        .output()
        .expect("setpriv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_running_as_another_user_is_refused() {
    require!(Need::OtherUser);
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    let (uid, gid) = other_user();

    // As installed, the file system already keeps other users out.
    std::fs::set_permissions(tokend.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tokenctl_as(uid, gid, &tokend.socket, &["token", "p"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("another user"), "{}", stderr(&out));

    // Even if the socket is opened up, tokend checks the peer's credentials.
    std::fs::set_permissions(tokend.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tokend.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = tokenctl_as(uid, gid, &tokend.socket, &["token", "p"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("permission denied") && message.contains(&format!("uid {uid}")), "{message}");
    assert!(!stdout(&out).contains("at_"), "no token leaked");
    assert!(tokend.log().contains("refused a connection"), "{}", tokend.log());
    // The owner is still served.
    tokend.tokenctl_ok(&["token", "p"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_log_lines_carry_priorities_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let fake = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    tokend_e2e::write_private(&config, &self::config(&fake));
    let log_path = dir.path().join("journal-stream");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    // What systemd sets when stderr is connected to the journal.
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let socket = dir.path().join("run/tokend.sock");
    let mut daemon = std::process::Command::new(bin("tokend"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("JOURNAL_STREAM", stream)
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(tokend_e2e::eventually(Duration::from_secs(10), || socket.exists()).await);
    let _ = std::process::Command::new(bin("tokenctl"))
        .args(["token", "p"])
        .env("TOKEND_SOCKET", &socket)
        .output()
        .unwrap();
    unsafe { libc::kill(libc::pid_t::try_from(daemon.id()).unwrap(), libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.lines().count() >= 3, "{text}");
    for line in text.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"),
            "a priority prefix: {line}"
        );
        assert!(!has_timestamp(line), "no timestamp of its own: {line}");
        assert!(!line.contains('\u{1b}'), "no colours: {line}");
    }
    assert!(text.contains("<6>tokend 0.1.0 ready"), "{text}");
}

/// Whether `line` holds an RFC 3339 date such as `2026-11-22T17:02:49`.
fn has_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.windows(11).any(|w| {
        w[..4].iter().all(u8::is_ascii_digit)
            && w[4] == b'-'
            && w[5..7].iter().all(u8::is_ascii_digit)
            && w[7] == b'-'
            && w[10] == b'T'
    })
}
