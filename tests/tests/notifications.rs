//! Desktop notifications: a profile that needs a login, with no `notify_command`, is announced
//! through `org.freedesktop.Notifications` on the session bus — a real `dbus-daemon` started
//! here, with a notification server registered on that name that records what it is sent.

use std::time::Duration;

use tokend_e2e::dbus::{NotificationServer, SessionBus};
use tokend_e2e::fake::{Client, ClientAuth, Style};
use tokend_e2e::{FakeProvider, Need, Options, Tokend, eventually, free_port, require};

/// A Movemint-style provider for a login profile `name`, with tokens that live 2 s.
async fn provider(name: &str) -> (FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    fake.register(
        name,
        Client {
            secret: Some("secret".into()),
            auth: ClientAuth::Post,
            required_params: vec![],
            redirect_uri: Some(redirect.clone()),
        },
    );
    fake.set_style(Style::Movemint);
    fake.set_lifetime(Duration::from_secs(2));
    let config = format!(
        r#"
[profiles.{name}]
grant = "authorization_code"
token_url = "{base}/oauth/token"
authorize_url = "{base}/oauth/authorize"
redirect_uri = "{redirect}"
client_id = "{name}"
client_secret = "secret"
client_auth = "post"
"#,
        base = fake.base
    );
    (fake, config)
}

async fn log_in(tokend: &Tokend, name: &str) {
    let mut login = tokend.spawn_tokenctl(&["login", name, "--no-browser"]);
    let url = login.login_url().await;
    let browser = tokend_e2e::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirect = browser.get(&url).send().await.unwrap().headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(browser.get(&redirect).send().await.unwrap().status(), 200);
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", tokend.log());
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
    log_in(&tokend, "mm").await;
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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.other_connections().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "tokend is still connected: {:?}",
            server.other_connections().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    log_in(&tokend, "commanded").await;
    log_in(&tokend, "plain").await;

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
    log_in(&tokend, "mm").await;
    fake.revoke_everything();
    assert!(
        eventually(Duration::from_secs(15), || tokend.log().contains("no desktop notification")).await,
        "{}",
        tokend.log()
    );
    tokend.tokenctl_ok(&["ping"]).await;
}
