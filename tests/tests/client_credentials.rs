//! client_credentials end to end: the real tokend and tokenctl against the fake provider, in
//! the Minut style (HTTP Basic, `response_type=token`) and the Movemint style (body auth).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokend_e2e::fake::{Client, ClientAuth, Fault, Style};
use tokend_e2e::{FakeProvider, Tokend, eventually, stderr, stdout, until_past};
use tokend_proto::ProfileState;

fn minut_config(fake: &FakeProvider) -> String {
    format!(
        r#"
[profiles.minut]
grant = "client_credentials"
token_url = "{}"
client_id = "minut-client"
client_secret = "minut secret:with/odd&chars"
token_params = {{ response_type = "token" }}
"#,
        fake.url("/v8/oauth/token")
    )
}

async fn minut() -> FakeProvider {
    let fake = FakeProvider::start().await;
    fake.register(
        "minut-client",
        Client {
            secret: Some("minut secret:with/odd&chars".into()),
            auth: ClientAuth::Basic,
            required_params: vec![("response_type".into(), "token".into())],
            redirect_uri: None,
        },
    );
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minut_style_client_credentials_serves_a_token_the_server_accepts() {
    let fake = minut().await;
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let token = tokend.tokenctl_ok(&["token", "minut"]).await;
    let token = token.trim();
    assert!(fake.accepts(token), "the served token is one the server issued and accepts");
    let request = &fake.requests()[0];
    assert!(request.authorization.as_deref().unwrap().starts_with("Basic "));
    assert_eq!(request.form["grant_type"], "client_credentials");
    assert_eq!(request.form["response_type"], "token");
    assert!(!request.form.contains_key("client_secret"), "Basic auth keeps the secret out of the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movemint_style_client_credentials_authenticates_in_the_body() {
    let fake = FakeProvider::start().await;
    fake.client("mm-client", "mm-secret", ClientAuth::Post);
    fake.set_style(Style::Movemint);
    let config = format!(
        r#"
[profiles.movemint]
grant = "client_credentials"
token_url = "{}"
client_id = "mm-client"
client_secret = "mm-secret"
client_auth = "post"
scopes = ["public"]
"#,
        fake.url("/oauth/token")
    );
    let tokend = Tokend::start(&config).await;
    let out = tokend.tokenctl_ok(&["token", "movemint", "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(fake.accepts(json["access_token"].as_str().unwrap()));
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["scope"], "public");
    assert!(json["expires_in"].as_i64().unwrap() > 3500);
    let request = &fake.requests()[0];
    assert_eq!(request.authorization, None);
    assert_eq!(request.form["client_secret"], "mm-secret");
    assert_eq!(request.form["scope"], "public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_format_is_ready_for_curl() {
    let fake = minut().await;
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let header = tokend.tokenctl_ok(&["token", "minut", "--format", "header"]).await;
    let token = header.trim().strip_prefix("Authorization: Bearer ").expect("an Authorization header line");
    assert!(fake.accepts(token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sloppy_server_without_token_type_and_with_string_expires_in_is_understood() {
    let fake = minut().await;
    fake.set_style(Style::Sloppy);
    fake.set_lifetime(Duration::from_secs(900));
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let out = tokend.tokenctl_ok(&["token", "minut", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["token_type"], "Bearer");
    let left = json["expires_in"].as_i64().unwrap();
    assert!((880..=900).contains(&left), "expiry counted from the string expires_in: {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_expires_in_falls_back_to_default_expires_in() {
    let fake = minut().await;
    fake.set_style(Style::NoExpiry);
    let config = minut_config(&fake) + "default_expires_in = \"10m\"\n";
    let tokend = Tokend::start(&config).await;
    let out = tokend.tokenctl_ok(&["token", "minut", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let left = json["expires_in"].as_i64().unwrap();
    assert!((580..=600).contains(&left), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_happens_before_expiry_and_every_served_token_is_accepted() {
    let fake = minut().await;
    fake.set_lifetime(Duration::from_secs(2));
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let mut client = tokend.client().await;
    let mut seen = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 5 {
        assert!(std::time::Instant::now() < deadline, "5 tokens within 30s, not {}:\n{}", seen.len(), tokend.log());
        let token = client.token("minut").await.expect("a token");
        let now = SystemTime::now();
        assert!(token.expires_at > now, "never an expired token");
        assert!(fake.accepts(token.access_token.expose()), "the server accepts every served token");
        seen.insert(token.fingerprint);
        // A program asking now and then through each token's life, not only right after a
        // refresh.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No refresh storm: every token the server issued reached the client, but for one that
    // may be on its way.
    let requests = fake.token_requests();
    assert!(requests <= seen.len() + 1, "{requests} requests for {} tokens served", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_refreshes_ahead_of_expiry_with_no_client_asking() {
    let fake = minut().await;
    fake.set_lifetime(Duration::from_secs(4));
    let tokend = Tokend::start(&minut_config(&fake)).await;
    // One token, then nobody asks tokend anything: the only client is gone, and what follows
    // watches the server alone.
    let first = tokend.client().await.token("minut").await.unwrap();
    assert_eq!(fake.token_requests(), 1);
    assert!(
        eventually(Duration::from_secs(20), || fake.token_requests() >= 3).await,
        "the timer refreshed twice with no client asking:\n{}",
        tokend.log()
    );
    // Each refresh came while the token before it was still valid.
    let requests = fake.requests();
    assert!(requests[1].at < first.expires_at, "the first refresh came before the first token expired");
    for pair in requests.windows(2) {
        let expired = pair[0].at + Duration::from_secs(4);
        assert!(pair[1].at < expired, "a refresh came before the token it replaced expired: {requests:?}");
    }
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "minut"]).await.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herd_of_clients_on_an_expired_token_triggers_one_upstream_request() {
    tokend_e2e::raise_fd_limit();
    let fake = minut().await;
    fake.set_lifetime(Duration::from_secs(2));
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let first = tokend.client().await.token("minut").await.unwrap();
    // Hold the token endpoint: the scheduled refresh stays in flight while the token expires.
    fake.hold();
    fake.set_lifetime(Duration::from_secs(3600));
    assert!(eventually(Duration::from_secs(10), || fake.token_requests() == 2).await, "{}", tokend.log());
    until_past(first.expires_at).await;
    assert_eq!(fake.token_requests(), 2, "the first token, then the refresh being held");

    let connected = Arc::new(AtomicUsize::new(0));
    let herd: Vec<_> = (0..600)
        .map(|_| {
            let socket = tokend.socket.clone();
            let connected = connected.clone();
            tokio::spawn(async move {
                let mut client = tokend_client::Client::connect_to(tokend_client::Endpoint::new(socket)).await?;
                connected.fetch_add(1, Ordering::SeqCst);
                client.token("minut").await
            })
        })
        .collect();
    // Every client is connected and asking for the expired token before the refresh is let go.
    assert!(eventually(Duration::from_secs(30), || connected.load(Ordering::SeqCst) == 600).await);
    fake.release();
    let mut served = std::collections::HashSet::new();
    for task in herd {
        let token = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("every client is answered within 30s")
            .unwrap()
            .expect("every client gets a token");
        assert!(token.expires_at > SystemTime::now());
        assert_ne!(token.fingerprint, first.fingerprint, "never the expired token");
        served.insert(token.fingerprint);
    }
    assert_eq!(served.len(), 1, "the whole herd got the one new token");
    assert_eq!(fake.token_requests(), 2, "one upstream request for 600 clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_refreshes_once_per_rejected_token() {
    let fake = minut().await;
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let first = tokend.client().await.token("minut").await.unwrap();
    assert_eq!(fake.token_requests(), 1);
    let reports: Vec<_> = (0..50)
        .map(|_| {
            let socket = tokend.socket.clone();
            let first = first.clone();
            tokio::spawn(async move {
                let mut client = tokend_client::Client::connect_to(tokend_client::Endpoint::new(socket)).await?;
                client.invalidate("minut", &first).await
            })
        })
        .collect();
    for report in reports {
        let token = report.await.unwrap().unwrap();
        assert_ne!(token.fingerprint, first.fingerprint);
        assert!(fake.accepts(token.access_token.expose()));
    }
    assert_eq!(fake.token_requests(), 2, "50 reports of one rejected token cause one refresh");
    // A late report about the replaced token returns the current one without a request.
    let again = tokend.client().await.invalidate("minut", &first).await.unwrap();
    assert_ne!(again.fingerprint, first.fingerprint);
    assert_eq!(fake.token_requests(), 2);
    // tokenctl can name the rejected token on stdin.
    let current = again.access_token.expose().to_owned();
    let fresh = tokend.tokenctl_with_stdin(&["invalidate", "minut", "--token-stdin"], Some(&current)).await;
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    assert_ne!(stdout(&fresh).trim(), current);
    assert_eq!(fake.token_requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_valid_beyond_the_token_lifetime_is_refused_clearly() {
    let fake = minut().await;
    fake.set_lifetime(Duration::from_secs(60));
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let out = tokend.tokenctl(&["token", "minut", "--min-valid", "5m"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("valid for 1m"), "{}", stderr(&out));
    assert!(fake.token_requests() <= 2, "one refresh at most to find out");
    let out = tokend.tokenctl(&["token", "minut", "--min-valid", "30s"]).await;
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_a_permanent_failure_with_the_servers_words() {
    let fake = minut().await;
    let tokend = Tokend::start(&minut_config(&fake).replace("minut secret:with/odd&chars", "wrong")).await;
    let out = tokend.tokenctl(&["token", "minut"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("invalid_client: Client authentication failed"), "{message}");
    assert!(message.contains("tokenctl reload"), "says what to do: {message}");
    assert!(!message.contains("wrong"), "never shows the secret: {message}");
    // No retries after a permanent failure: nothing is scheduled, and a client asking again
    // starts no request.
    let status = tokend.status("minut").await;
    assert_eq!((status.state, status.next_refresh), (ProfileState::Failed, None), "{status:?}");
    assert_eq!(tokend.tokenctl(&["token", "minut"]).await.status.code(), Some(6));
    assert_eq!(fake.token_requests(), 1, "no retries after a permanent failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_extra_parameter_is_reported() {
    let fake = minut().await;
    let config = minut_config(&fake).replace("token_params = { response_type = \"token\" }\n", "");
    let tokend = Tokend::start(&config).await;
    let out = tokend.tokenctl(&["token", "minut"]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("missing response_type=token"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_response_is_a_clear_transient_error() {
    let fake = minut().await;
    fake.fail_always(Some(Fault::Garbage));
    let tokend = Tokend::start(&minut_config(&fake)).await;
    let out = tokend.tokenctl(&["token", "minut"]).await;
    assert_eq!(out.status.code(), Some(6));
    let message = stderr(&out);
    assert!(message.contains("neither JSON nor form-encoded"), "{message}");
    assert!(message.contains("unavailable since"), "{message}");
    fake.fail_always(None);
    tokend.status_until("minut", |s| s.state == ProfileState::Valid).await;
    let token = tokend.tokenctl_ok(&["token", "minut"]).await;
    assert!(fake.accepts(token.trim()), "recovers by itself once the server does");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_list_describe_the_profiles() {
    let fake = minut().await;
    let tokend = Tokend::start(&minut_config(&fake)).await;
    tokend.tokenctl_ok(&["token", "minut"]).await;
    let table = tokend.tokenctl_ok(&["status"]).await;
    assert!(table.starts_with("PROFILE"), "{table}");
    assert!(table.contains("minut") && table.contains("valid"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&tokend.tokenctl_ok(&["status", "minut", "--json"]).await).unwrap();
    assert_eq!(json["state"], "valid");
    assert_eq!(json["grant"], "client_credentials");
    assert_eq!(json["upstream_requests"], 1);
    assert!(json["token"]["fingerprint"].as_str().unwrap().len() == 32);
    // The token lives an hour; the default refresh_margin of 5m (less up to a fifth at random)
    // puts the next refresh 5 to 6 minutes before expiry.
    let expires_in = json["token"]["expires_in"].as_i64().unwrap();
    let next_refresh_in = json["next_refresh_in"].as_i64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{json}");
    assert!(next_refresh_in > 0 && next_refresh_in < expires_in, "{json}");
    assert!((299..=361).contains(&(expires_in - next_refresh_in)), "{json}");
    let expires_at = rfc3339(&json["token"]["expires_at"]);
    let next_refresh = rfc3339(&json["next_refresh"]);
    let obtained_at = rfc3339(&json["token"]["obtained_at"]);
    let now = SystemTime::now();
    assert!(obtained_at <= now + Duration::from_secs(1) && obtained_at < next_refresh, "{json}");
    assert!(now < next_refresh && next_refresh < expires_at, "{json}");
    let left = i64::try_from(expires_at.duration_since(now).unwrap().as_secs()).unwrap();
    assert!((expires_in - left).abs() <= 2, "expires_at and expires_in agree: {json}");
    let until_refresh = i64::try_from(next_refresh.duration_since(now).unwrap().as_secs()).unwrap();
    assert!((next_refresh_in - until_refresh).abs() <= 2, "next_refresh and next_refresh_in agree: {json}");
    // The table shows the same in its EXPIRES IN and NEXT REFRESH columns.
    let expires_cell = column(&table, "minut", "EXPIRES IN");
    let next_cell = column(&table, "minut", "NEXT REFRESH");
    let table_expires = seconds(&expires_cell);
    let table_next = seconds(next_cell.strip_prefix("in ").unwrap_or_else(|| panic!("{next_cell:?}\n{table}")));
    assert!((3500..=3600).contains(&table_expires), "{expires_cell:?}\n{table}");
    assert!(table_next > 0 && table_next < table_expires, "{next_cell:?}\n{table}");
    assert!((298..=362).contains(&(table_expires - table_next)), "{expires_cell:?} {next_cell:?}\n{table}");
    let list = tokend.tokenctl_ok(&["list"]).await;
    assert!(list.contains("minut") && list.contains("client_credentials"), "{list}");
    let unknown = tokend.tokenctl(&["token", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(4));
    assert!(stderr(&unknown).contains("configured profiles: minut"), "{}", stderr(&unknown));
}

/// A time in tokenctl's JSON output (RFC 3339).
fn rfc3339(value: &serde_json::Value) -> SystemTime {
    let text = value.as_str().unwrap_or_else(|| panic!("an RFC 3339 time, not {value}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// The cell of `row`'s line in the status `table` under the column headed `heading`.
fn column(table: &str, row: &str, heading: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let start = header.find(heading).unwrap_or_else(|| panic!("no {heading:?} column:\n{table}"));
    let end = header[start + heading.len()..]
        .find(|c: char| !c.is_whitespace())
        .map_or(usize::MAX, |next| start + heading.len() + next);
    let line = lines
        .find(|l| l.split_whitespace().next() == Some(row))
        .unwrap_or_else(|| panic!("no row for {row}:\n{table}"));
    line.get(start..end.min(line.len())).unwrap_or_else(|| panic!("short row:\n{table}")).trim().to_owned()
}

/// The seconds in a short duration such as "59m 12s", "1h 5m" or "3s".
fn seconds(text: &str) -> i64 {
    text.split_whitespace()
        .map(|part| {
            let (number, unit) = part.split_at(part.len() - 1);
            let number: i64 = number.parse().unwrap_or_else(|_| panic!("not a duration: {text:?}"));
            number
                * match unit {
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    "d" => 86400,
                    _ => panic!("not a duration: {text:?}"),
                }
        })
        .sum()
}
