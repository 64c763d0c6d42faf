//! Reload (`tokenctl reload` and SIGHUP): validated completely, applied atomically; unchanged
//! profiles keep serving without a gap, changed ones start afresh, removed ones go, and an
//! invalid config changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::{FakeProvider, Tokend, eventually, stderr};

async fn provider() -> FakeProvider {
    let fake = FakeProvider::start().await;
    for id in ["a", "b", "b2", "c", "d"] {
        fake.client(id, "s", ClientAuth::Basic);
    }
    fake
}

fn profile(fake: &FakeProvider, name: &str, client_id: &str, extra: &str) -> String {
    format!(
        "[profiles.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"{client_id}\"\nclient_secret = \"s\"\n{extra}\n",
        fake.url("/oauth/token")
    )
}

fn requests_for(fake: &FakeProvider, client_id: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            let auth = r.authorization.as_deref().unwrap_or_default();
            let decoded = base64_decode(auth.trim_start_matches("Basic "));
            decoded.starts_with(&format!("{client_id}:"))
        })
        .count()
}

fn base64_decode(text: &str) -> String {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_profiles_keep_serving_without_a_gap_through_reloads() {
    let fake = provider().await;
    let a = profile(&fake, "a", "a", "");
    let tokend = Tokend::start(&(a.clone() + &profile(&fake, "b", "b", ""))).await;
    let first = tokend.client().await.token("a").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (socket, stop, served) = (tokend.socket.clone(), stop.clone(), served.clone());
        tokio::spawn(async move {
            let mut client = tokend_client::Client::connect_to(tokend_client::Endpoint::new(&socket)).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let token = tokio::time::timeout(Duration::from_secs(5), client.token("a"))
                    .await
                    .expect("no gap: every request is answered within 5s")
                    .expect("profile a is served throughout the reloads");
                assert_eq!(token.fingerprint, first.fingerprint, "and keeps its token");
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for margin in ["1m", "2m", "3m", "4m", "5m"] {
        tokend.write_config(&(a.clone() + &profile(&fake, "b", "b", &format!("refresh_margin = \"{margin}\""))));
        let out = tokend.tokenctl_ok(&["reload"]).await;
        assert!(out.contains("changed b") && out.contains("1 unchanged"), "{out}");
    }
    stop.store(true, Ordering::Relaxed);
    hammer.await.unwrap();
    assert!(served.load(Ordering::Relaxed) > 50);
    assert_eq!(requests_for(&fake, "a"), 1, "profile a never went back to the server");
    assert_eq!(requests_for(&fake, "b"), 1, "a margin change reuses b's stored token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_changes_and_removes_profiles() {
    let fake = provider().await;
    let tokend = Tokend::start(&(profile(&fake, "b", "b", "") + &profile(&fake, "c", "c", ""))).await;
    let b_before = tokend.tokenctl_ok(&["token", "b"]).await;
    tokend.tokenctl_ok(&["token", "c"]).await;
    tokend.write_config(&(profile(&fake, "b", "b2", "") + &profile(&fake, "d", "d", "")));
    let out = tokend.tokenctl_ok(&["reload", "--json"]).await;
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["added"], serde_json::json!(["d"]));
    assert_eq!(summary["changed"], serde_json::json!(["b"]));
    assert_eq!(summary["removed"], serde_json::json!(["c"]));
    let b_after = tokend.tokenctl_ok(&["token", "b"]).await;
    assert_ne!(b_before, b_after, "another client_id does not reuse the old client's token");
    assert_eq!(requests_for(&fake, "b2"), 1);
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "d"]).await.trim()));
    let removed = tokend.tokenctl(&["token", "c"]).await;
    assert_eq!(removed.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_and_the_old_one_keeps_running() {
    let fake = provider().await;
    let good = profile(&fake, "b", "b", "");
    let tokend = Tokend::start(&good).await;
    let token = tokend.tokenctl_ok(&["token", "b"]).await;
    for (broken, expect) in [
        (good.replace("grant = ", "grnat = "), ":2"),
        (good.clone() + "[profiles.x]\ngrant = \"client_credentials\"\n", "profiles.x"),
        ("this is not toml".to_owned(), ":1"),
    ] {
        tokend.write_config(&broken);
        let out = tokend.tokenctl(&["reload"]).await;
        assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
        let message = stderr(&out);
        assert!(message.contains("rejected") && message.contains("old one keeps running"), "{message}");
        assert!(message.contains(&format!("{}", tokend.config.display())) && message.contains(expect), "{message}");
        assert_eq!(tokend.tokenctl_ok(&["token", "b"]).await, token, "still served, same token");
    }
    assert!(tokend.log().contains("reload rejected"), "{}", tokend.log());
    tokend.write_config(&good);
    tokend.tokenctl_ok(&["reload"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let fake = provider().await;
    let tokend = Tokend::start(&profile(&fake, "b", "b", "")).await;
    tokend.write_config(&(profile(&fake, "b", "b", "") + &profile(&fake, "d", "d", "")));
    tokend.signal(libc::SIGHUP);
    let socket = tokend.socket.clone();
    let listed = eventually(Duration::from_secs(5), || {
        let socket = socket.clone();
        std::thread::spawn(move || {
            tokend_client::blocking::Client::connect_to(tokend_client::Endpoint::new(socket))
                .and_then(|mut c| c.list())
                .map(|l| l.iter().any(|p| p.name == "d"))
                .unwrap_or(false)
        })
        .join()
        .unwrap()
    })
    .await;
    assert!(listed, "{}", tokend.log());
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "d"]).await.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_settings_that_need_a_restart_say_so() {
    let fake = provider().await;
    let config = profile(&fake, "a", "a", "");
    let tokend = Tokend::start(&config).await;
    tokend.tokenctl_ok(&["token", "a"]).await;
    tokend.write_config(&format!("[daemon]\nhttp_timeout = \"7s\"\nmax_connections = 100\n\n{config}"));
    tokend.tokenctl_ok(&["reload"]).await;
    let named = || {
        let log = tokend.log();
        let line = log.lines().find(|l| l.contains("take effect when tokend restarts"))?;
        let keys = line.split_once("changes to [daemon] ")?.1.split_once(" take effect")?.0;
        let mut keys: Vec<String> = keys.split(", ").map(str::to_owned).collect();
        keys.sort();
        Some(keys)
    };
    assert!(eventually(Duration::from_secs(5), || named().is_some()).await, "{}", tokend.log());
    assert_eq!(
        named().unwrap(),
        ["http_timeout", "max_connections"],
        "exactly the keys that changed:\n{}",
        tokend.log()
    );
    tokend.tokenctl_ok(&["token", "a"]).await;
}
