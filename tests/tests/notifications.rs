//! Desktop notifications: a profile that needs a login, with no `notify_command`, is announced
//! through `org.freedesktop.Notifications` on the session bus — a real `dbus-daemon` started
//! here, with a notification server registered on that name that records what it is sent —
//! and a fake bus that misbehaves, to show that nothing a bus sends can hurt tokend.

use std::time::Duration;

use tokend_e2e::dbus::{NotificationServer, SessionBus};
use tokend_e2e::fake::LoginEnd;
use tokend_e2e::{Movemint, Need, Options, Tokend, eventually, require, wait_for};

/// A Movemint-style provider for a login profile `name`, with tokens that live 2 s.
async fn provider(name: &str) -> (Movemint, String) {
    let fake = Movemint::with_client(name, "secret").await;
    fake.set_lifetime(Duration::from_secs(2));
    let config = fake.config();
    (fake, config)
}

fn on_bus(bus: &SessionBus) -> Options {
    Options { env: vec![("DBUS_SESSION_BUS_ADDRESS".into(), bus.address.clone())], ..Options::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_needed_without_a_notify_command_is_a_desktop_notification() {
    require!(Need::Program("dbus-daemon"));
    let bus = SessionBus::start().await;
    let server = NotificationServer::register(&bus.address).await;
    let (fake, config) = provider("mm").await;
    let tokend = Tokend::start_with(&config, on_bus(&bus)).await;
    tokend.log_in("mm").await;
    assert!(server.received().is_empty(), "nothing to tell while logged in");

    fake.revoke_everything();
    assert!(
        eventually(Duration::from_secs(15), || !server.received().is_empty()).await,
        "a notification arrived:\n{}",
        tokend.log()
    );
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let note = &received[0];
    assert_eq!(note.app, "tokend");
    assert!(note.summary.contains("mm"), "the summary names the profile: {note:?}");
    assert!(note.body.contains("tokenctl login mm"), "the body names the command to run: {note:?}");
    assert!(note.body.contains("no longer accepts the refresh token"), "and why: {note:?}");

    // tokend hung up after its one call: nothing of it stays on the bus to wake it.
    let hung_up =
        wait_for(Duration::from_secs(10), async || server.other_connections().await.is_empty().then_some(())).await;
    assert!(hung_up.is_some(), "tokend is still connected: {:?}", server.other_connections().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_command_takes_precedence_over_the_desktop_notification() {
    require!(Need::Program("dbus-daemon"));
    let bus = SessionBus::start().await;
    let server = NotificationServer::register(&bus.address).await;
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("note");
    let (commanded, commanded_config) = provider("commanded").await;
    let (plain, plain_config) = provider("plain").await;
    let config =
        commanded_config + &format!("notify_command = \"echo $TOKEND_PROFILE > {}\"\n", note.display()) + &plain_config;
    let tokend = Tokend::start_with(&config, on_bus(&bus)).await;
    tokend.log_in("commanded").await;
    tokend.log_in("plain").await;

    commanded.revoke_everything();
    assert!(
        eventually(Duration::from_secs(15), || std::fs::read_to_string(&note).is_ok_and(|t| t.contains("commanded")))
            .await,
        "the notify command ran:\n{}",
        tokend.log()
    );
    // A later login-needed of a profile without a command does reach the bus, so by the time
    // it arrives, a notification for the first one would have too.
    plain.revoke_everything();
    assert!(
        eventually(Duration::from_secs(15), || !server.received().is_empty()).await,
        "the other profile's notification arrived:\n{}",
        tokend.log()
    );
    let received = server.received();
    assert_eq!(received.len(), 1, "only the profile without a notify command: {received:?}");
    assert!(received[0].summary.contains("plain"), "{received:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_bus_a_login_needed_is_only_logged() {
    let (fake, config) = provider("mm").await;
    let tokend = Tokend::start(&config).await;
    tokend.log_in("mm").await;
    fake.revoke_everything();
    assert!(
        eventually(Duration::from_secs(15), || tokend.log().contains("no desktop notification")).await,
        "{}",
        tokend.log()
    );
    tokend.tokenctl_ok(&["ping"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_ends_soon_is_a_desktop_notification() {
    require!(Need::Program("dbus-daemon"));
    let bus = SessionBus::start().await;
    let server = NotificationServer::register(&bus.address).await;
    let (fake, config) = provider("mm").await;
    fake.set_lifetime(Duration::from_secs(3600));
    fake.set_login_lifetime(Some(Duration::from_secs(10)), LoginEnd::RefreshExpiresIn);
    let tokend = Tokend::start_with(&config, on_bus(&bus)).await;
    tokend.log_in("mm").await;
    assert!(
        eventually(Duration::from_secs(20), || !server.received().is_empty()).await,
        "a notification arrived:\n{}",
        tokend.log()
    );
    let note = &server.received()[0];
    assert!(note.summary.contains("mm") && note.summary.contains("expires in"), "{note:?}");
    assert!(note.body.contains("tokenctl login mm"), "the body names the command to run: {note:?}");
    assert_eq!(fake.login_expired_refreshes(), 0);
}

/// A "bus" that authenticates anyone and then announces a 1 GiB message: tokend refuses to
/// read it, warns, and goes on serving.
async fn hostile_bus(dir: &std::path::Path) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let socket = dir.join("bus");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut stream = tokio::io::BufReader::new(stream);
            let mut line = Vec::new();
            if stream.read_until(b'\n', &mut line).await.is_err() || !line.starts_with(b"\0AUTH EXTERNAL ") {
                continue;
            }
            let mut huge = b"l\x02\x00\x01".to_vec();
            huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
            huge.extend_from_slice(&1u32.to_le_bytes());
            huge.extend_from_slice(&0u32.to_le_bytes());
            let answer = [&b"OK 0123456789abcdef0123456789abcdef\r\n"[..], &huge].concat();
            if stream.get_mut().write_all(&answer).await.is_err() {
                continue;
            }
            // Hold the connection until tokend hangs up, so that only its own limit ends it.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    });
    format!("unix:path={}", socket.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_bus_is_a_warning_and_tokend_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let address = hostile_bus(dir.path()).await;
    let (fake, config) = provider("mm").await;
    let options = Options { env: vec![("DBUS_SESSION_BUS_ADDRESS".into(), address)], ..Options::default() };
    let tokend = Tokend::start_with(&config, options).await;
    tokend.log_in("mm").await;
    fake.revoke_everything();
    assert!(
        eventually(Duration::from_secs(15), || {
            let log = tokend.log();
            log.contains("cannot send a desktop notification") && log.contains("larger than the 65536 bytes allowed")
        })
        .await,
        "{}",
        tokend.log()
    );
    tokend.tokenctl_ok(&["ping"]).await;
    assert!(tokend.tokenctl_ok(&["status"]).await.contains("mm"));
}
