//! Upstream failures: transient ones are retried with backoff while the still-valid token keeps
//! being served; permanent ones stop retries and say what to do; a token past expiry is never
//! served, whatever the server does.

use std::time::{Duration, SystemTime};

use tokend_e2e::fake::{ClientAuth, Fault};
use tokend_e2e::{FakeProvider, Tokend, eventually, free_port, stderr, until_past, wait_for};

async fn provider(lifetime: Duration) -> FakeProvider {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    fake.set_lifetime(lifetime);
    fake
}

fn config(token_url: &str, extra: &str) -> String {
    format!(
        "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"{token_url}\"\nclient_id = \"c\"\nclient_secret = \"s\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_outage_is_retried_with_backoff_while_the_valid_token_is_served() {
    let fake = provider(Duration::from_secs(4)).await;
    let tokend = Tokend::start(&config(&fake.url("/oauth/token"), "")).await;
    let mut client = tokend.client().await;
    let first = client.token("p").await.unwrap();
    fake.fail_always(Some(Fault::Status(503, "{}".into())));
    // Until the token expires, it keeps being served although every refresh fails.
    let mut served_during_outage = 0;
    while first.expires_at.duration_since(SystemTime::now()).unwrap_or_default() > Duration::from_millis(1500) {
        let token = client.token("p").await.expect("the still-valid token is served during the outage");
        assert_eq!(token.fingerprint, first.fingerprint);
        served_during_outage += 1;
        // A program asking now and then during the outage.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served_during_outage > 5);
    let status: serde_json::Value =
        serde_json::from_str(&tokend.tokenctl_ok(&["status", "p", "--json"]).await).unwrap();
    assert_eq!(status["state"], "backoff");
    assert_eq!(status["last_error"]["status"], 503);
    assert_eq!(status["last_error"]["transient"], true);
    // Once it has expired, clients get a clear error, never the stale token.
    until_past(first.expires_at).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(6));
    let message = stderr(&out);
    assert!(message.contains("unavailable since") && message.contains("HTTP 503"), "{message}");
    // Backoff, not a retry storm: with delays from 200 ms doubling up to 1 s, a few seconds of
    // outage cost a handful of requests.
    let failed = fake.token_requests() - 1;
    assert!((2..=12).contains(&failed), "{failed} retries in about 4 s");
    fake.fail_always(None);
    assert!(eventually(Duration::from_secs(5), || fake.token_requests() > failed + 1).await);
    let recovered = client.token("p").await.expect("recovers by itself");
    assert!(fake.accepts(recovered.access_token.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let fake = provider(Duration::from_secs(3600)).await;
    fake.fail_next([Fault::RetryAfter(2)]);
    let tokend = Tokend::start(&config(&fake.url("/oauth/token"), "")).await;
    let token = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(token.status.code(), Some(6), "{}", stderr(&token));
    assert!(eventually(Duration::from_secs(6), || fake.token_requests() >= 2).await);
    let requests = fake.requests();
    let gap = requests[1].at.duration_since(requests[0].at).unwrap();
    assert!(gap >= Duration::from_millis(1900), "the retry waited for Retry-After: {gap:?}");
    tokend.tokenctl_ok(&["token", "p"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_transient_and_recovers_when_it_comes_back() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/oauth/token");
    let tokend = Tokend::start(&config(&url, "")).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    let fake = FakeProvider::start_on(&format!("127.0.0.1:{port}")).await;
    fake.client("c", "s", ClientAuth::Basic);
    assert!(eventually(Duration::from_secs(5), || fake.token_requests() >= 1).await, "{}", tokend.log());
    tokend.tokenctl_ok(&["token", "p"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_response_is_transient() {
    let fake = provider(Duration::from_secs(3600)).await;
    fake.fail_next([Fault::Hangup]);
    let tokend = Tokend::start(&config(&fake.url("/oauth/token"), "")).await;
    assert!(eventually(Duration::from_secs(5), || fake.token_requests() >= 2).await, "{}", tokend.log());
    tokend.tokenctl_ok(&["token", "p"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_and_timeouts_are_transient() {
    let fake = provider(Duration::from_secs(3600)).await;
    fake.fail_next([
        Fault::Status(429, "{}".into()),
        Fault::Status(408, "{}".into()),
        Fault::Status(502, "<html>".into()),
    ]);
    let tokend = Tokend::start(&config(&fake.url("/oauth/token"), "")).await;
    assert!(eventually(Duration::from_secs(30), || fake.token_requests() >= 4).await, "{}", tokend.log());
    tokend.tokenctl_ok(&["token", "p"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_stop_retries_and_say_what_to_do() {
    for (error, advice) in [
        ("invalid_scope", "check `scopes`"),
        ("unauthorized_client", "check client_id"),
        ("invalid_client", "check client_id, client_secret and client_auth"),
    ] {
        let fake = provider(Duration::from_secs(3600)).await;
        fake.fail_always(Some(Fault::Status(400, format!(r#"{{"error":"{error}","error_description":"nope"}}"#))));
        let tokend = Tokend::start(&config(&fake.url("/oauth/token"), "")).await;
        let out = tokend.tokenctl(&["token", "p"]).await;
        assert_eq!(out.status.code(), Some(6));
        assert!(stderr(&out).contains(&format!("{error}: nope")), "{}", stderr(&out));
        let status: serde_json::Value =
            serde_json::from_str(&tokend.tokenctl_ok(&["status", "p", "--json"]).await).unwrap();
        assert_eq!(status["state"], "failed");
        assert_eq!(status["last_error"]["error"], error);
        assert_eq!(status["last_error"]["error_description"], "nope");
        assert!(status["action"].as_str().unwrap().contains(advice), "{status}");
        let table = tokend.tokenctl_ok(&["status"]).await;
        assert!(table.contains("→") && table.contains(advice), "{table}");
        // No retries: nothing is scheduled, and a client asking again starts no request.
        assert!(status["next_refresh"].is_null(), "{error}: {status}");
        assert_eq!(tokend.tokenctl(&["token", "p"]).await.status.code(), Some(6));
        assert_eq!(fake.token_requests(), 1, "{error}: no retries");
        // The user fixes things at the server and asks again.
        fake.fail_always(None);
        tokend.tokenctl_ok(&["refresh", "p"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_token_endpoint_is_not_followed() {
    let fake = provider(Duration::from_secs(3600)).await;
    let tokend = Tokend::start(&config(&fake.url("/redirect-me"), "")).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("does not follow redirects"), "{}", stderr(&out));
}

/// `tokenctl status p --json`, polled (for at most 20 s) until `state` is `wanted`.
async fn status_once_in_state(tokend: &Tokend, wanted: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let found = wait_for(Duration::from_secs(20), async || {
        last = serde_json::from_str(&tokend.tokenctl_ok(&["status", "p", "--json"]).await).unwrap();
        (last["state"] == wanted).then(|| last.clone())
    })
    .await;
    found.unwrap_or_else(|| panic!("never {wanted:?}: {last}\n{}", tokend.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_token_response_is_transient_and_never_served() {
    let fake = provider(Duration::from_secs(3600)).await;
    fake.fail_always(Some(Fault::Huge));
    let tokend = Tokend::start(&config(&fake.url("/oauth/token"), "")).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("larger than 1024 KiB"), "names the size: {message}");
    assert!(message.contains("unavailable since") && message.contains("retrying at"), "transient: {message}");
    assert!(!tokend_e2e::stdout(&out).contains("at_huge_"), "the oversized token is not served");
    // Transient: retried with backoff, not given up on.
    assert!(eventually(Duration::from_secs(5), || fake.token_requests() >= 3).await, "{}", tokend.log());
    let status = status_once_in_state(&tokend, "backoff").await;
    assert_eq!(status["last_error"]["transient"], true, "{status}");
    assert!(status["action"].as_str().unwrap().contains("keeps retrying"), "{status}");
    assert_eq!(status["last_error"]["status"], 200, "{status}");
    let recorded = status["last_error"]["message"].as_str().unwrap();
    assert!(recorded.contains("larger than 1024 KiB"), "{status}");
    assert!(status["token"].is_null(), "no token from an oversized answer: {status}");
    // Once the server answers normally again, tokend recovers by itself.
    fake.fail_always(None);
    let status = status_once_in_state(&tokend, "valid").await;
    assert!(status["last_error"].is_null(), "{status}");
    let token = tokend.tokenctl_ok(&["token", "p"]).await;
    assert!(fake.accepts(token.trim()), "{token}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_slower_than_http_timeout_is_a_transient_timeout() {
    let fake = provider(Duration::from_secs(3600)).await;
    fake.set_delay(Duration::from_secs(4));
    let config = format!("[daemon]\nhttp_timeout = \"1s\"\n\n{}", config(&fake.url("/oauth/token"), ""));
    let tokend = Tokend::start(&config).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("timed out"), "names the timeout: {message}");
    assert!(message.contains("unavailable since") && message.contains("retrying at"), "transient: {message}");
    // Transient: retried with backoff (each attempt giving up after http_timeout).
    assert!(eventually(Duration::from_secs(10), || fake.token_requests() >= 3).await, "{}", tokend.log());
    let status = status_once_in_state(&tokend, "backoff").await;
    assert_eq!(status["last_error"]["transient"], true, "{status}");
    assert!(status["action"].as_str().unwrap().contains("keeps retrying"), "{status}");
    assert!(status["last_error"]["status"].is_null(), "no HTTP status for a timeout: {status}");
    let recorded = status["last_error"]["message"].as_str().unwrap();
    assert!(recorded.contains("timed out"), "{status}");
    // A server that is fast again is used again.
    fake.set_delay(Duration::ZERO);
    status_once_in_state(&tokend, "valid").await;
    let token = tokend.tokenctl_ok(&["token", "p"]).await;
    assert!(fake.accepts(token.trim()), "{token}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_be_written_is_logged_and_the_token_still_served() {
    let fake = provider(Duration::from_secs(3600)).await;
    let tokend = Tokend::start(&config(&fake.url("/oauth/token"), "")).await;
    let first = tokend.tokenctl_ok(&["token", "p"]).await;
    let saved = tokend.state.join("p.json");
    assert!(saved.is_file());
    // A directory where the state file goes makes the rename fail, even for root.
    std::fs::remove_file(&saved).unwrap();
    std::fs::create_dir(&saved).unwrap();
    std::fs::write(saved.join("occupied"), "").unwrap();
    let second = tokend.tokenctl_ok(&["refresh", "p"]).await;
    assert_ne!(first, second);
    assert!(fake.accepts(second.trim()), "the new token is served although it could not be saved");
    assert!(
        eventually(Duration::from_secs(5), || tokend.log().contains("cannot save tokens")).await,
        "{}",
        tokend.log()
    );
    assert!(!tokend.log().contains(second.trim()), "the log names the problem, not the token");
    // Once the obstacle is gone, the next change is saved.
    std::fs::remove_dir_all(&saved).unwrap();
    let third = tokend.tokenctl_ok(&["refresh", "p"]).await;
    let state = std::fs::read_to_string(&saved).expect("saved again");
    assert!(state.contains(third.trim()));
}
