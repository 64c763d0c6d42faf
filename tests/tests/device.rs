//! Logging in with the device authorization grant (RFC 8628) against the fake provider: the code
//! tokenctl shows, tokend's polling (`authorization_pending`, `slow_down`), every way a device
//! login ends (approved, `access_denied`, `expired_token`, the code's own expiry), hostile
//! device answers, and staying logged in afterwards like a browser login.

use std::time::Duration;

use tokend_e2e::fake::{DeviceFlow, DeviceOutcome, Metadata};
use tokend_e2e::{FakeProvider, Running, Tokend, eventually, stderr, stdout};
use tokend_proto::ProfileState;

/// A public client, as device clients are.
async fn provider(flow: DeviceFlow) -> FakeProvider {
    let fake = FakeProvider::start().await;
    fake.register(
        "tv",
        tokend_e2e::fake::Client {
            secret: None,
            auth: tokend_e2e::fake::ClientAuth::Any,
            required_params: vec![],
            redirect_uri: None,
        },
    );
    fake.set_device_flow(flow);
    // Doorkeeper-style answers, which carry the refresh token.
    fake.set_style(tokend_e2e::fake::Style::Movemint);
    fake
}

fn config(fake: &FakeProvider) -> String {
    format!(
        r#"
[profiles.tv]
grant = "device_code"
device_authorization_url = "{base}/oauth/device"
token_url = "{base}/oauth/token"
client_id = "tv"
scopes = ["read", "offline_access"]
"#,
        base = fake.base
    )
}

/// What the user does on their phone: open the verification page with the code.
async fn approve(fake: &FakeProvider, user_code: &str) -> reqwest::Response {
    let http = tokend_e2e::http().build().unwrap();
    http.get(fake.url(&format!("/oauth/device/verify?user_code={user_code}"))).send().await.unwrap()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Starts `tokenctl login tv --json` and returns it with the code object it printed first.
async fn start_login(tokend: &Tokend) -> (Running, serde_json::Value) {
    let mut login = tokend.spawn_tokenctl(&["--json", "login", "tv"]);
    let code = json(&login.stdout_line().await);
    (login, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_shows_the_code_and_completes_once_the_user_approves_it() {
    let fake = provider(DeviceFlow::default()).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let before = tokend.tokenctl(&["token", "tv"]).await;
    assert_eq!(before.status.code(), Some(5), "login needed first: {}", stderr(&before));

    let (mut login, code) = start_login(&tokend).await;
    let user_code = code["user_code"].as_str().unwrap().to_owned();
    assert_eq!(code["profile"], "tv");
    assert_eq!(code["verification_uri"], fake.url("/oauth/device/verify"));
    assert_eq!(code["verification_uri_complete"], fake.url(&format!("/oauth/device/verify?user_code={user_code}")));
    assert!(code["expires_at"].is_string(), "{code}");
    login.wait_for_line(&user_code).await;
    let device_request = &fake.device_requests()[0];
    assert_eq!(device_request["client_id"], "tv");
    assert_eq!(device_request["scope"], "read offline_access");

    // While the user has not approved, the profile shows the pending login, and tokend polls.
    let status = json(&stdout(&tokend.tokenctl(&["--json", "status", "tv"]).await));
    assert!(status["login_pending_until"].is_string(), "{status}");
    assert_eq!(status["state"], "needs-login");
    let mut watch = tokend.spawn_tokenctl(&["--json", "watch", "tv"]);
    let event = json(&watch.stdout_line().await);
    assert!(event.to_string().contains("login_pending_until\":\""), "watch shows the pending login: {event}");
    assert!(eventually(Duration::from_secs(10), || fake.device_polls().len() >= 2).await, "tokend polls");

    // The user enters the code on another device.
    let page = approve(&fake, &user_code).await;
    assert_eq!(page.status(), 200);
    let outcome = json(&login.stdout_line().await);
    assert_eq!(outcome, serde_json::json!({ "profile": "tv", "logged_in": true }));
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", tokend.log());

    let token = tokend.tokenctl_ok(&["token", "tv"]).await;
    assert!(fake.accepts(token.trim()), "the token came from the approved device code");
    let polls = fake.device_polls();
    assert!(polls.iter().all(|p| p.form["device_code"].starts_with("dc_") && p.form["client_id"] == "tv"));
    let status = json(&stdout(&tokend.tokenctl(&["--json", "status", "tv"]).await));
    assert_eq!(status["login_pending_until"], serde_json::Value::Null, "{status}");
    assert_eq!(status["has_refresh_token"], true);
    assert!(!tokend.log().contains(&user_code), "the user code stays out of the log");

    // From now on the profile refreshes like a browser-login profile, rotating its refresh token.
    let first_refresh_token = tokend.saved_refresh_token("tv").unwrap();
    let refreshed = tokend.tokenctl_ok(&["refresh", "tv"]).await;
    assert_ne!(refreshed.trim(), token.trim());
    assert!(fake.accepts(refreshed.trim()));
    assert_eq!(fake.requests().last().unwrap().form["grant_type"], "refresh_token");
    assert!(!fake.refresh_token_is_live(&first_refresh_token), "rotated");
    assert!(fake.refresh_token_is_live(&tokend.saved_refresh_token("tv").unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokend_keeps_polling_while_pending_and_slows_down_by_five_seconds_when_told() {
    // Poll 1: pending; poll 2: slow_down; poll 3: pending; poll 4: approved.
    let flow = DeviceFlow {
        pending_polls: 3,
        slow_down_at: vec![2],
        outcome: DeviceOutcome::Approve,
        ..DeviceFlow::default()
    };
    let fake = provider(flow).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let (login, _) = start_login(&tokend).await;
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", tokend.log());
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "tv"]).await.trim()));

    let polls = fake.device_polls();
    assert_eq!(polls.len(), 4, "one poll per answer, none after the tokens");
    let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1].at.duration_since(w[0].at).unwrap_or_default()).collect();
    // The times the server saw are a lower bound on how long tokend waited: the interval of 1 s,
    // then 1 + 5 s after the slow_down, for the rest of the login.
    assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_secs(6), "slow_down adds 5 s: {gaps:?}");
    assert!(gaps[2] >= Duration::from_secs(6), "and it stays added: {gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_ends_the_login_with_a_clear_error_and_no_tokens() {
    let fake = provider(DeviceFlow { pending_polls: 1, outcome: DeviceOutcome::Deny, ..DeviceFlow::default() }).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let (login, _) = start_login(&tokend).await;
    let (exit, output) = login.finish().await;
    assert_eq!(exit.code(), Some(5), "{output}");
    assert!(output.contains("access was denied at the server"), "{output}");
    assert!(output.contains("tokenctl login tv"), "says what to do: {output}");
    assert_eq!(fake.device_polls().len(), 2, "no poll after the refusal");
    let status = json(&stdout(&tokend.tokenctl(&["--json", "status", "tv"]).await));
    assert_eq!(status["state"], "needs-login");
    assert_eq!(status["login_pending_until"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_from_the_server_ends_the_login() {
    let fake = provider(DeviceFlow { outcome: DeviceOutcome::Expire, ..DeviceFlow::default() }).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let (login, _) = start_login(&tokend).await;
    let (exit, output) = login.finish().await;
    assert_eq!(exit.code(), Some(5), "{output}");
    assert!(output.contains("the code expired before the login was approved"), "{output}");
    assert_eq!(fake.device_polls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_code_s_expires_in_is_a_deadline_even_if_the_server_never_says_so() {
    let fake = provider(DeviceFlow { expires_in: 3, ..DeviceFlow::default() }).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let (login, code) = start_login(&tokend).await;
    let (exit, output) = login.finish().await;
    assert_eq!(exit.code(), Some(5), "{output}");
    assert!(output.contains("the code expired"), "{output}");
    let polls = fake.device_polls();
    assert!(!polls.is_empty() && polls.len() <= 3, "polled only while the code lived: {}", polls.len());
    assert!(code["expires_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_broken_device_answers_fail_the_login_clearly_and_tokend_carries_on() {
    let fake = provider(DeviceFlow::default()).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let huge = format!(
        r#"{{"device_code":"dc","user_code":"{}","verification_uri":"https://a.example/"}}"#,
        "A".repeat(2 << 20)
    );
    let cases = [
        ((200, "<html>maintenance</html>".to_owned()), "neither JSON nor form-encoded"),
        (
            (
                200,
                r#"{"device_code":"dc","user_code":"AB\u001b]0;pwned\u0007","verification_uri":"https://a.example/"}"#
                    .to_owned(),
            ),
            "user_code containing control characters",
        ),
        (
            (200, r#"{"device_code":"dc","user_code":"ABCD","verification_uri":"http://phish.example/"}"#.to_owned()),
            "plain http",
        ),
        (
            (200, r#"{"device_code":"d c","user_code":"ABCD","verification_uri":"https://a.example/"}"#.to_owned()),
            "unusable device_code",
        ),
        ((200, r#"{"user_code":"ABCD","verification_uri":"https://a.example/"}"#.to_owned()), "without a device_code"),
        ((200, huge), "larger than 1024 KiB"),
        (
            (401, r#"{"error":"invalid_client","error_description":"unknown client"}"#.to_owned()),
            "invalid_client: unknown client",
        ),
    ];
    for (answer, why) in cases {
        fake.set_device_flow(DeviceFlow { answer: Some(answer), ..DeviceFlow::default() });
        let out = tokend.tokenctl(&["login", "tv"]).await;
        assert_eq!(out.status.code(), Some(6), "{why}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{why}: {}", stderr(&out));
        assert!(!stderr(&out).contains("pwned"), "{}", stderr(&out));
    }
    assert!(fake.device_polls().is_empty(), "nothing was polled for");
    // tokend is fine, and a good answer logs in.
    fake.set_device_flow(DeviceFlow { outcome: DeviceOutcome::Approve, ..DeviceFlow::default() });
    let out = tokend.tokenctl(&["login", "tv"]).await;
    assert!(out.status.success(), "{}\n{}", stderr(&out), tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_login_replaces_a_pending_device_login_even_while_its_poll_hangs() {
    let fake = provider(DeviceFlow::default()).await;
    // The server holds the first login's poll for longer than the test waits.
    let tokend = Tokend::start(&format!("[daemon]\nhttp_timeout = \"5m\"\n{}", config(&fake))).await;
    fake.hold();
    let (first, first_code) = start_login(&tokend).await;
    assert!(eventually(Duration::from_secs(10), || fake.device_polls().len() == 1).await);
    let (mut second, second_code) = start_login(&tokend).await;
    assert_ne!(first_code["user_code"], second_code["user_code"]);
    let (exit, output) = first.finish().await;
    assert_eq!(exit.code(), Some(5), "{output}");
    assert!(output.contains("a newer login for this profile replaced this one"), "{output}");
    fake.release();
    let user_code = second_code["user_code"].as_str().unwrap();
    approve(&fake, user_code).await;
    assert_eq!(json(&second.stdout_line().await)["logged_in"], true);
    assert!(second.finish().await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_profile_configured_by_issuer_discovers_its_device_endpoint() {
    let fake = provider(DeviceFlow { outcome: DeviceOutcome::Approve, ..DeviceFlow::default() }).await;
    fake.publish(Some(Metadata { rfc8414: true, ..Metadata::default() }));
    let config =
        format!("[profiles.tv]\ngrant = \"device_code\"\nissuer = \"{}\"\nclient_id = \"tv\"\n", fake.issuer());
    let tokend = Tokend::start(&config).await;
    let out = tokend.tokenctl(&["login", "tv"]).await;
    assert!(out.status.success(), "{}\n{}", stderr(&out), tokend.log());
    assert_eq!(fake.device_requests().len(), 1, "the discovered device_authorization_endpoint was used");
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "tv"]).await.trim()));
}

/// A login asked for while the profile still waits for its endpoints does not fail at once: it
/// makes tokend try discovery now, and goes ahead when that finds them — or says why not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_before_discovery_succeeded_tries_it_at_once_and_goes_ahead() {
    let fake = provider(DeviceFlow { outcome: DeviceOutcome::Approve, ..DeviceFlow::default() }).await;
    let config = format!(
        "[profiles.tv]\ngrant = \"device_code\"\nissuer = \"{}\"\nclient_id = \"tv\"\nretry_min = \"10m\"\nretry_max = \"20m\"\n",
        fake.issuer()
    );
    // Nothing published yet: the first attempt fails, and the next is ten minutes away.
    let tokend = Tokend::start(&config).await;
    tokend.status_until("tv", |s| s.state == ProfileState::Backoff).await;
    let out = tokend.tokenctl(&["login", "tv"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("the profile's endpoints are not known yet ("), "says why: {}", stderr(&out));
    assert!(stderr(&out).contains("404"), "the server's answer: {}", stderr(&out));

    fake.publish(Some(Metadata { rfc8414: true, ..Metadata::default() }));
    let asked = fake.metadata_requests().len();
    let out = tokend.tokenctl(&["login", "tv"]).await;
    assert!(out.status.success(), "{}\n{}", stderr(&out), tokend.log());
    assert!(fake.metadata_requests().len() > asked, "the login made tokend look again");
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "tv"]).await.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_login_shows_a_qr_code_of_the_complete_uri() {
    let fake =
        provider(DeviceFlow { pending_polls: 1, outcome: DeviceOutcome::Approve, ..DeviceFlow::default() }).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let (exit, shown) = tokend.tokenctl_in_terminal(&["login", "tv", "--no-browser"]).await;
    assert!(exit.success(), "{shown}");
    let device_code = &fake.device_polls()[0].form["device_code"];
    assert!(!shown.contains(device_code.as_str()), "the device code is never shown");
    assert!(shown.contains("enter the code"), "{shown}");
    assert!(shown.contains("/oauth/device/verify?user_code="), "{shown}");
    let qr_lines = shown.lines().filter(|l| l.chars().count() >= 21 && l.chars().all(|c| " ▀▄█".contains(c))).count();
    assert!(qr_lines >= 11, "a QR code of at least 21 modules, two to a line:\n{shown}");
    assert!(shown.contains("Logged in"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_there_is_no_qr_code() {
    let fake = provider(DeviceFlow { outcome: DeviceOutcome::Approve, ..DeviceFlow::default() }).await;
    let tokend = Tokend::start(&config(&fake)).await;
    let out = tokend.tokenctl(&["login", "tv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains('█'), "{all}");
    assert!(all.contains("enter the code"), "{all}");
}
