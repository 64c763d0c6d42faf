//! Crash consistency: tokend killed with SIGKILL at random moments during many
//! refresh-and-persist cycles always restarts from a readable state, and never loses a refresh
//! token it has acted on.
//!
//! The exact promise: by the time a client is served an access token, the refresh token issued
//! in the same response (or a newer one) is on disk. A kill between the server rotating the
//! refresh token and tokend receiving the response cannot be helped by any client; such a cycle
//! is counted, and the session is restored by logging in again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokend_e2e::fake::{Client, ClientAuth, Fault, Style};
use tokend_e2e::{FakeProvider, Tokend, eventually, free_port};

const CYCLES: usize = 25;

async fn movemint_fake(lifetime: Duration) -> (FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    fake.register(
        "mm",
        Client {
            secret: Some("s".into()),
            auth: ClientAuth::Post,
            required_params: vec![],
            redirect_uri: Some(redirect.clone()),
        },
    );
    fake.set_style(Style::Movemint);
    fake.set_lifetime(lifetime);
    let config = format!(
        r#"
[profiles.mm]
grant = "authorization_code"
token_url = "{base}/oauth/token"
authorize_url = "{base}/oauth/authorize"
redirect_uri = "{redirect}"
client_id = "mm"
client_secret = "s"
client_auth = "post"
retry_min = "100ms"
retry_max = "200ms"
"#,
        base = fake.base
    );
    (fake, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_loses_a_refresh_token() {
    let (fake, config) = movemint_fake(Duration::from_secs(2)).await;
    let mut tokend = Tokend::start(&config).await;
    log_in(&tokend).await;
    let mut relogins = 0;
    let mut checked = 0;
    for cycle in 0..CYCLES {
        let last_served = Arc::new(Mutex::new(None::<String>));
        let poller = {
            let socket = tokend.socket.clone();
            let last_served = last_served.clone();
            tokio::spawn(async move {
                let Ok(mut client) = tokend_client::Client::connect_to(tokend_client::Endpoint::new(socket)).await
                else {
                    return;
                };
                while let Ok(token) = client.token("mm").await {
                    *last_served.lock().unwrap() = Some(token.access_token.expose().to_owned());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..1500))).await;
        tokend.kill().await;
        let _ = poller.await;
        // A refresh request already on the wire is still answered by the server; let it finish
        // before reading which refresh token is the newest.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let state = std::fs::read_to_string(tokend.state.join("mm.json")).expect("the state file exists");
        let json: serde_json::Value =
            serde_json::from_str(&state).unwrap_or_else(|e| panic!("cycle {cycle}: unreadable state: {e}\n{state}"));
        let saved = json["refresh_token"].as_str().expect("a refresh token is saved").to_owned();
        if let Some(access) = last_served.lock().unwrap().clone() {
            let served_with = fake.refresh_issued_with(&access).expect("every access token came with a refresh token");
            let (saved_seq, served_seq) =
                (fake.refresh_sequence(&saved).unwrap(), fake.refresh_sequence(&served_with).unwrap());
            assert!(
                saved_seq >= served_seq,
                "cycle {cycle}: a client was served an access token whose refresh token (#{served_seq}) is not on disk (#{saved_seq})"
            );
            checked += 1;
        }
        let newest = fake.newest_refresh_token().unwrap();
        let (saved_seq, newest_seq) = (fake.refresh_sequence(&saved).unwrap(), fake.refresh_sequence(&newest).unwrap());
        tokend.restart().await;
        assert!(!tokend.log().contains("cannot use the saved tokens"), "cycle {cycle}:\n{}", tokend.log());
        if saved_seq < newest_seq {
            // Killed after the server rotated the refresh token but before the answer arrived:
            // then what is on disk is exactly one rotation behind, nothing was served with the
            // newest one, and the server will take the next refresh for a replay and revoke the
            // grant. A forced refresh shows tokend turning that into "login needed".
            assert_eq!(saved_seq + 1, newest_seq, "cycle {cycle}: only the very last rotation can be missed");
            let refresh = tokend.tokenctl(&["refresh", "mm"]).await;
            assert_eq!(refresh.status.code(), Some(5), "cycle {cycle}: {refresh:?}");
            relogins += 1;
            log_in(&tokend).await;
        }
        assert!(fake.accepts(tokend.tokenctl_ok(&["token", "mm"]).await.trim()), "cycle {cycle}");
    }
    assert!(checked >= CYCLES / 2, "most cycles served a token before the kill: {checked}");
    assert!(relogins <= 4, "{relogins} of {CYCLES} kills landed between rotation and receipt");
    eprintln!("{CYCLES} kills, {checked} checked against a served token, {relogins} re-logins");
}

/// The situation a kill between rotation and receipt leaves behind, made deterministic: the
/// server rotates the refresh token and the answer never arrives. tokend can only retry with the
/// refresh token it has, the server takes that for a replay and revokes the grant, and tokend
/// must then stop and ask for a login instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_after_rotation_ends_in_login_needed_not_a_retry_loop() {
    let (fake, config) = movemint_fake(Duration::from_secs(3600)).await;
    let tokend = Tokend::start(&config).await;
    log_in(&tokend).await;
    let before = fake.token_requests();
    fake.fail_next([Fault::LostAnswer]);
    let _ = tokend.tokenctl(&["refresh", "mm"]).await;
    let needs_login = || async {
        let status = tokend.tokenctl_ok(&["status", "mm", "--json"]).await;
        serde_json::from_str::<serde_json::Value>(&status).unwrap()["state"] == "needs-login"
    };
    let mut reached = false;
    for _ in 0..50 {
        if needs_login().await {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reached, "{}", tokend.log());
    assert!(fake.reuse_detected(), "the retry presented the rotated-out refresh token");
    let requests = fake.token_requests();
    assert_eq!(requests - before, 2, "one lost answer, one refused retry");
    let out = tokend.tokenctl(&["token", "mm"]).await;
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    // No retry loop: the profile waits for the user.
    assert!(!eventually(Duration::from_millis(800), || fake.token_requests() > requests).await);
    log_in(&tokend).await;
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "mm"]).await.trim()));
}

async fn log_in(tokend: &Tokend) {
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    let http = tokend_e2e::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let location = http.get(&url).send().await.unwrap().headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(http.get(&location).send().await.unwrap().status(), 200);
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}");
}
