//! Servers that revoke the old access token when they issue a new one — at the refresh (Django
//! OAuth Toolkit, Doorkeeper) or when the new token is first used (Doorkeeper's
//! `revoke_previous_refresh_token_on_use`). A token tokend hands out keeps working while a
//! program uses it, because a refresh waits for a quiet window first; and the client library's
//! `with_token` recovers from a 401 by itself, reporting exactly the token that was refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokend_client::{Attempt, Fingerprint, TokenExt};
use tokend_e2e::fake::RevokeOnRefresh;
use tokend_e2e::{FakeProvider, Movemint, Tokend, eventually};

/// A Movemint-style (Doorkeeper) provider issuing tokens of `lifetime`, revoking replaced access
/// tokens as `revoke` says, and tokend with a logged-in profile `mm` against it. `extra` goes
/// into the profile's table.
async fn doorkeeper(lifetime: Duration, revoke: RevokeOnRefresh, extra: &str) -> (Movemint, Tokend) {
    let fake = Movemint::start().await;
    fake.set_lifetime(lifetime);
    fake.set_revoke_on_refresh(revoke);
    let tokend = Tokend::start(&fake.profile(extra)).await;
    tokend.log_in("mm").await;
    (fake, tokend)
}

/// Refresh grants the provider has answered.
fn refreshes(fake: &FakeProvider) -> usize {
    fake.requests().iter().filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token")).count()
}

/// Four programs that each ask tokend for a token, hold it for 0–100 ms, and use it at the
/// provider's token info endpoint, over and over until tokend has refreshed `refreshes` times.
/// Returns how many uses there were, and how many the server refused with 401.
async fn fetch_and_use(fake: &FakeProvider, tokend: &Tokend, refreshes_wanted: usize) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let url = fake.url("/oauth/token/info");
    let mut programs = Vec::new();
    for _ in 0..4 {
        let mut tokend = tokend.client().await;
        let (stop, made, refused, url) = (stop.clone(), made.clone(), refused.clone(), url.clone());
        programs.push(tokio::spawn(async move {
            let http = tokend_e2e::http().build().unwrap();
            while !stop.load(Ordering::Relaxed) {
                let token = tokend.token("mm").await.expect("a token");
                // Holding the token a while before using it is the behaviour under test.
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..=100))).await;
                let response = http.get(&url).header("Authorization", token.header_value()).send().await.unwrap();
                made.fetch_add(1, Ordering::Relaxed);
                match response.status().as_u16() {
                    200 => {}
                    401 => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("the info endpoint answered {other}"),
                }
            }
        }));
    }
    let reached = eventually(Duration::from_secs(120), || refreshes(fake) >= refreshes_wanted).await;
    stop.store(true, Ordering::Relaxed);
    for program in programs {
        program.await.unwrap();
    }
    assert!(reached, "tokend refreshed {} times, not {refreshes_wanted}:\n{}", refreshes(fake), tokend.log());
    (made.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

/// Six-second tokens: refreshed about every three seconds, with a quiet window of 750 ms (an
/// eighth of the lifetime) by default.
const SHORT: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_used_promptly_is_not_revoked_by_the_refresh_after_it() {
    let (fake, tokend) = doorkeeper(SHORT, RevokeOnRefresh::AtRefresh, "").await;
    let (made, refused) = fetch_and_use(&fake, &tokend, 3).await;
    assert_eq!(refused, 0, "{refused} of {made} uses were refused:\n{}", tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_used_promptly_is_not_revoked_when_its_successor_is_first_used() {
    let (fake, tokend) = doorkeeper(SHORT, RevokeOnRefresh::OnFirstUse, "").await;
    let (made, refused) = fetch_and_use(&fake, &tokend, 3).await;
    assert_eq!(refused, 0, "{refused} of {made} uses were refused:\n{}", tokend.log());
}

/// The same programs without a quiet window: the server revokes tokens they hold. (Each program
/// holds a token about 95% of the time, so a refresh that catches none of the four is a 1 in
/// 100,000 chance, and three such refreshes in a row do not happen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quiet_window_tokens_in_use_are_revoked_by_the_refresh() {
    let (fake, tokend) = doorkeeper(SHORT, RevokeOnRefresh::AtRefresh, "quiet_window = \"0s\"").await;
    let (made, refused) = fetch_and_use(&fake, &tokend, 3).await;
    assert!(refused > 0, "none of {made} uses was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_is_sent_only_once_the_token_has_not_been_handed_out_for_the_window() {
    refresh_waits_for_the_window_after(async |tokend| {
        tokend.client().await.token("mm").await.unwrap().access_token.expose().to_owned()
    })
    .await;
}

/// The same when the token went out on the socket's short-request path: `tokenctl token` sends
/// its hello and request in one write, which the socket's thread answers itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_answered_on_the_short_request_path_delays_the_refresh_too() {
    refresh_waits_for_the_window_after(async |tokend| tokend.tokenctl_ok(&["token", "mm"]).await.trim().to_owned())
        .await;
}

/// Hands a token out with `fetch`, asks for a refresh at once, and checks that the refresh went
/// out only once the token had not been handed out for the default window.
async fn refresh_waits_for_the_window_after(fetch: impl AsyncFnOnce(&Tokend) -> String) {
    let (fake, tokend) = doorkeeper(Duration::from_secs(3600), RevokeOnRefresh::AtRefresh, "").await;
    let before = SystemTime::now();
    let held = fetch(&tokend).await;
    let fresh = tokend.tokenctl_ok(&["refresh", "mm"]).await;
    assert_ne!(fresh.trim(), held);
    let sent = fake.requests().last().unwrap().at;
    assert!(
        sent >= before + Duration::from_secs(2),
        "the refresh went out {:?} after the token was handed out, within the default 2 s window",
        sent.duration_since(before).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_quiet_window_the_token_is_withheld_and_an_invalidation_ends_the_window() {
    // An hour-long token gets a window of up to 450 s (an eighth of its life).
    let (fake, tokend) =
        doorkeeper(Duration::from_secs(3600), RevokeOnRefresh::AtRefresh, "quiet_window = \"10m\"").await;
    let held = tokend.client().await.token("mm").await.unwrap();
    let refresh = {
        let mut client = tokend.client().await;
        tokio::spawn(async move { client.refresh("mm").await })
    };
    assert!(eventually(Duration::from_secs(10), || tokend_state(&tokend) == "quiet").await, "{}", tokend.log());
    let status: serde_json::Value =
        serde_json::from_str(&tokend.tokenctl_ok(&["status", "mm", "--json"]).await).unwrap();
    assert!(status["next_refresh_in"].as_i64().unwrap() > 60, "{status}");
    assert_eq!(status["token"]["fingerprint"], held.fingerprint.to_string(), "the token is still held");

    let waited = tokend.tokenctl(&["--timeout", "1s", "token", "mm"]).await;
    assert!(!waited.status.success(), "the token is not handed out during the window");
    assert!(fake.accepts(held.access_token.expose()), "and not yet revoked");
    assert_eq!(refreshes(&fake), 0);

    let fingerprint = held.fingerprint.to_string();
    let fresh = tokend.tokenctl_ok(&["invalidate", "mm", "--fingerprint", &fingerprint]).await;
    assert_ne!(fresh.trim(), held.access_token.expose());
    let refreshed = tokio::time::timeout(Duration::from_secs(30), refresh).await.unwrap().unwrap().unwrap();
    assert_eq!(refreshed.access_token.expose(), fresh.trim(), "tokenctl refresh joined the same refresh");
    assert_eq!(refreshes(&fake), 1);
}

fn tokend_state(tokend: &Tokend) -> String {
    let out = std::process::Command::new(tokend_e2e::bin("tokenctl"))
        .args(["status", "mm", "--json"])
        .env("TOKEND_SOCKET", &tokend.socket)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    status["state"].as_str().unwrap_or_default().to_owned()
}

/// A Minut-style provider and tokend with a client_credentials profile `minut`.
async fn minut() -> (FakeProvider, Tokend) {
    let fake = FakeProvider::with_basic_client().await;
    let tokend = Tokend::start(&fake.cc_profile("minut", "")).await;
    (fake, tokend)
}

/// What one run of the caller's request saw: the token it was given, and the HTTP status.
type Runs = Mutex<Vec<(Fingerprint, u16)>>;

/// `with_token` on the async client: GET the provider's `/v8/users/me`, and call a 401 a
/// rejection. Records every run in `runs`; returns the final status.
async fn call_async(tokend: &Tokend, fake: &FakeProvider, runs: &Runs) -> u16 {
    let http = &tokend_e2e::http().build().unwrap();
    let url = &fake.url("/v8/users/me");
    let mut client = tokend.client().await;
    client
        .with_token("minut", |token| async move {
            let status = http.get(url).header("Authorization", token.header_value()).send().await.unwrap().status();
            runs.lock().unwrap().push((token.fingerprint, status.as_u16()));
            if status == 401 { Attempt::Rejected(status.as_u16()) } else { Attempt::Done(status.as_u16()) }
        })
        .await
        .unwrap()
}

/// The same with the blocking client, on a thread of its own.
async fn call_blocking(tokend: &Tokend, fake: &FakeProvider, runs: Arc<Runs>) -> u16 {
    let endpoint = tokend_client::Endpoint::new(&tokend.socket);
    let url = fake.url("/v8/users/me");
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let http = tokend_e2e::http().build().unwrap();
        let mut client = tokend_client::blocking::Client::connect_to(endpoint).unwrap();
        client
            .with_token("minut", |token| {
                let response = runtime.block_on(http.get(&url).header("Authorization", token.header_value()).send());
                let status = response.unwrap().status().as_u16();
                runs.lock().unwrap().push((token.fingerprint, status));
                if status == 401 { Attempt::Rejected(status) } else { Attempt::Done(status) }
            })
            .unwrap()
    })
    .await
    .unwrap()
}

/// How many times clients told tokend that a token was rejected.
fn invalidations(tokend: &Tokend) -> usize {
    tokend.log().matches("a client reports the token was rejected").count()
}

/// The provider drops the token tokend is serving, which tokend still thinks valid.
async fn drop_served_token(fake: &FakeProvider, tokend: &Tokend) -> Fingerprint {
    let dropped = tokend.client().await.token("minut").await.unwrap();
    fake.revoke_access_token(dropped.access_token.expose());
    dropped.fingerprint
}

/// One run with the dropped token, refused; one report; one new token; one run with it, which
/// succeeds.
fn recovered(status: u16, runs: &Runs, dropped: Fingerprint, fake: &FakeProvider, tokend: &Tokend) {
    let runs = runs.lock().unwrap().clone();
    assert_eq!(status, 200, "{runs:?}");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], (dropped, 401));
    assert_ne!(runs[1].0, dropped, "the retry has a new token");
    assert_eq!(runs[1].1, 200);
    assert_eq!(invalidations(tokend), 1, "{}", tokend.log());
    assert_eq!(fake.token_requests(), 2, "one new token");
}

/// Both runs refused: the second answer is the caller's, after exactly one report.
fn refused_twice(status: u16, runs: &Runs, fake: &FakeProvider, tokend: &Tokend) {
    let runs = runs.lock().unwrap().clone();
    assert_eq!(status, 401, "{runs:?}");
    assert_eq!(runs.len(), 2, "one retry, no more: {runs:?}");
    assert_ne!(runs[0].0, runs[1].0, "the retry had a new token");
    assert_eq!(invalidations(tokend), 1, "{}", tokend.log());
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_token_reports_a_refused_token_and_retries_once_with_a_new_one() {
    let (fake, tokend) = minut().await;
    let dropped = drop_served_token(&fake, &tokend).await;
    let runs = Runs::default();
    let status = call_async(&tokend, &fake, &runs).await;
    recovered(status, &runs, dropped, &fake, &tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_with_token_reports_a_refused_token_and_retries_once_with_a_new_one() {
    let (fake, tokend) = minut().await;
    let dropped = drop_served_token(&fake, &tokend).await;
    let runs = Arc::new(Runs::default());
    let status = call_blocking(&tokend, &fake, runs.clone()).await;
    recovered(status, &runs, dropped, &fake, &tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_token_returns_a_second_refusal_instead_of_retrying_again() {
    let (fake, tokend) = minut().await;
    fake.reject_every_use(true);
    let runs = Runs::default();
    let status = call_async(&tokend, &fake, &runs).await;
    refused_twice(status, &runs, &fake, &tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_with_token_returns_a_second_refusal_instead_of_retrying_again() {
    let (fake, tokend) = minut().await;
    fake.reject_every_use(true);
    let runs = Arc::new(Runs::default());
    let status = call_blocking(&tokend, &fake, runs.clone()).await;
    refused_twice(status, &runs, &fake, &tokend);
}

/// Another program reported the token and tokend replaced it while this request was under way:
/// `with_token` reports the token *it* used, so tokend hands over the replacement instead of
/// throwing that away too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_token_reports_exactly_the_token_it_used() {
    let (fake, tokend) = minut().await;
    let other = &tokio::sync::Mutex::new(tokend.client().await);
    let (http, url, fake_ref) = (&tokend_e2e::http().build().unwrap(), &fake.url("/v8/users/me"), &fake);
    let runs = &Runs::default();
    let status = tokend
        .client()
        .await
        .with_token("minut", |token| async move {
            if runs.lock().unwrap().is_empty() {
                fake_ref.revoke_access_token(token.access_token.expose());
                other.lock().await.invalidate("minut", &token).await.unwrap();
            }
            let status = http.get(url).header("Authorization", token.header_value()).send().await.unwrap().status();
            runs.lock().unwrap().push((token.fingerprint, status.as_u16()));
            if status == 401 { Attempt::Rejected(status.as_u16()) } else { Attempt::Done(status.as_u16()) }
        })
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(fake.token_requests(), 2, "only the other program's report brought a new token");
}
