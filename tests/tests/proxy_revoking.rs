//! The proxy against servers that revoke the previous access token when they issue a new one —
//! at the refresh (Django OAuth Toolkit, Doorkeeper), or when the new token is first used
//! (Doorkeeper's `revoke_previous_refresh_token_on_use`): 50 programs send requests through the
//! proxy without pause across many refreshes, and not one request fails. The quiet window keeps
//! tokens that are in use from being replaced under them, and a request that meets a revoked
//! token anyway is sent again with the new one — which alone is enough, as the test without a
//! quiet window shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokend_e2e::fake::RevokeOnRefresh;
use tokend_e2e::{FakeProvider, Movemint, Tokend, eventually};

const CLIENTS: usize = 50;
/// Refreshes to go through while the clients send.
const REFRESHES: usize = 6;

/// A Doorkeeper-style provider issuing six-second tokens (refreshed about every three seconds)
/// and revoking replaced ones as `revoke` says, and tokend with a logged-in profile `mm` whose
/// API is the provider's; `extra` goes into the profile's table.
async fn doorkeeper(revoke: RevokeOnRefresh, extra: &str) -> (Movemint, Tokend) {
    let fake = Movemint::start().await;
    fake.set_lifetime(Duration::from_secs(6));
    fake.set_revoke_on_refresh(revoke);
    let tokend = Tokend::start(&fake.profile(&format!("api_base = \"{}/api\"\n{extra}", fake.base))).await;
    tokend.log_in("mm").await;
    (fake, tokend)
}

fn refreshes(fake: &FakeProvider) -> usize {
    fake.requests().iter().filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token")).count()
}

/// `CLIENTS` programs on kept-alive connections, half reading a resource and half posting a
/// small body, as fast as they are answered, until the provider has answered `REFRESHES`
/// refreshes. Asserts that every request succeeded; returns how many were made.
async fn clients_across_refreshes(fake: &FakeProvider, tokend: &Tokend) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let mut http = tokend.http().await;
        let (stop, made, failures) = (stop.clone(), made.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let body = format!("client {n}").repeat(100);
            let digest: String = Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
            while !stop.load(Ordering::Relaxed) {
                let failure = if n % 2 == 0 {
                    let answer = http.get(&format!("/v1/proxy/mm/resource/{n}")).await;
                    (answer.status != 200).then(|| format!("GET: {} {:?}", answer.status, answer.body))
                } else {
                    let answer = http.request("POST", "/v1/proxy/mm/echo", &[], body.as_bytes()).await;
                    let ok = answer.status == 200 && answer.json()["sha256"] == digest;
                    (!ok).then(|| format!("POST: {} {:?}", answer.status, answer.body))
                };
                made.fetch_add(1, Ordering::Relaxed);
                if let Some(failure) = failure {
                    failures.lock().unwrap().push(failure);
                }
            }
        }));
    }
    let reached = eventually(Duration::from_secs(120), || refreshes(fake) >= REFRESHES).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert!(reached, "tokend refreshed {} times, not {REFRESHES}:\n{}", refreshes(fake), tokend.log());
    let (made, failures) = (made.load(Ordering::Relaxed), failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {made} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_through_the_proxy_lose_no_request_to_a_server_that_revokes_at_refresh() {
    let (fake, tokend) = doorkeeper(RevokeOnRefresh::AtRefresh, "").await;
    let made = clients_across_refreshes(&fake, &tokend).await;
    assert!(made > (CLIENTS * REFRESHES) as u64, "{made} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quiet_window_the_proxy_s_retry_alone_loses_no_request() {
    let (fake, tokend) = doorkeeper(RevokeOnRefresh::AtRefresh, "quiet_window = \"0s\"").await;
    let made = clients_across_refreshes(&fake, &tokend).await;
    let refused = fake.api_requests().iter().filter(|r| r.status == 401).count();
    assert!(refused > 0, "the server did revoke tokens in use ({made} requests), and each was sent again");
    assert!(tokend.log().contains("retrying once with a new one"), "{}", tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_through_the_proxy_lose_no_request_to_a_server_that_revokes_on_first_use() {
    let (fake, tokend) = doorkeeper(RevokeOnRefresh::OnFirstUse, "").await;
    let made = clients_across_refreshes(&fake, &tokend).await;
    assert!(made > (CLIENTS * REFRESHES) as u64, "{made} requests");
}
