//! Logging in with the authorization code grant and PKCE, staying logged in through refresh
//! token rotation and restarts, logout and info — against the Movemint-style fake provider.

use std::time::Duration;

use tokend_e2e::{Movemint, Running, Tokend, eventually, free_port, stderr, stdout, until_past};

async fn movemint() -> Movemint {
    Movemint::start().await
}

fn config(s: &Movemint) -> String {
    s.profile(r#"scopes = ["public", "write"]"#)
}

fn http() -> reqwest::Client {
    tokend_e2e::http().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// What the user's browser does: visit the authorization URL; the fake approves at once and
/// redirects. Returns the redirect target.
async fn approve(url: &str) -> String {
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 302, "the authorization endpoint redirects");
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The browser follows the redirect to tokend's listener; returns the page it shows.
async fn follow(redirect: &str) -> (u16, String) {
    let response = http().get(redirect).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_pkce_gives_tokens_the_server_accepts() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    let before = tokend.tokenctl(&["token", "mm"]).await;
    assert_eq!(before.status.code(), Some(5), "login needed before the first login");
    assert!(stderr(&before).contains("run `tokenctl login mm`"), "{}", stderr(&before));

    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    let parsed = url::Url::parse(&url).unwrap();
    let query: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["scope"], "public write");
    assert_eq!(query["redirect_uri"], s.redirect);
    assert!(query["state"].len() >= 43);
    let (status, page) = follow(&approve(&url).await).await;
    assert_eq!(status, 200);
    assert!(page.contains("Logged in"), "{page}");
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}");
    assert!(output.contains("Logged in"), "{output}");

    let token = tokend.tokenctl_ok(&["token", "mm"]).await;
    assert!(s.fake.accepts(token.trim()));
    let exchange = &s.fake.requests()[0];
    assert_eq!(exchange.form["grant_type"], "authorization_code");
    assert_eq!(exchange.form["code_verifier"].len(), 43, "the fake checked the verifier against the challenge");
    // The listener is gone once the login is done.
    assert!(http().get(&s.redirect).send().await.is_err(), "the one-shot listener closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_redirect_url_completes_a_login_over_ssh() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    login.wait_for_line("paste").await;
    // The browser, on another machine, could not load the redirect; the user pastes it.
    let redirect = approve(&url).await;
    login.type_line(&redirect).await;
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", tokend.log());
    assert!(s.fake.accepts(tokend.tokenctl_ok(&["token", "mm"]).await.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_stray_redirect_does_not_end_the_login() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    let good = approve(&url).await;
    let forged = {
        let mut u = url::Url::parse(&good).unwrap();
        u.set_query(Some("code=attacker-code&state=forged"));
        u.to_string()
    };
    let (status, page) = follow(&forged).await;
    assert_eq!(status, 400);
    assert!(page.contains("state"), "{page}");
    let forged_error = format!("{}?error=access_denied&state=forged", s.redirect);
    assert_eq!(follow(&forged_error).await.0, 400, "a forged error does not end the login either");
    let (status, _) =
        follow(&format!("http://{}/favicon.ico", url::Url::parse(&s.redirect).unwrap().authority())).await;
    assert_eq!(status, 404);
    // A pasted URL with the wrong state is refused, and the login goes on.
    login.type_line(&forged).await;
    login.wait_for_line("does not match").await;
    let (status, _) = follow(&good).await;
    assert_eq!(status, 200);
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}");
    assert_eq!(s.fake.token_requests(), 1, "only the genuine code was exchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_a_clear_login_failure() {
    let s = movemint().await;
    s.fake.deny_authorization(Some("access_denied"));
    let tokend = Tokend::start(&config(&s)).await;
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    let (status, page) = follow(&approve(&url).await).await;
    assert_eq!(status, 400);
    assert!(page.contains("access_denied"), "{page}");
    let (exit, output) = login.finish().await;
    assert_eq!(exit.code(), Some(5), "{output}");
    assert!(output.contains("access_denied: The resource owner denied the request"), "{output}");
    assert_eq!(s.fake.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_login_replaces_a_pending_one() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    let mut first: Running = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let first_url = first.login_url().await;
    let mut second = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let second_url = second.login_url().await;
    let (exit, output) = first.finish().await;
    assert_eq!(exit.code(), Some(5));
    assert!(output.contains("a newer login for this profile replaced this one"), "{output}");
    // The first login's redirect is no longer accepted; the second one completes.
    let stale = approve(&first_url).await;
    assert_eq!(follow(&stale).await.0, 400, "the old state is not the pending one");
    assert_eq!(follow(&approve(&second_url).await).await.0, 200);
    let (exit, output) = second.finish().await;
    assert!(exit.success(), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_tokens_keep_the_session_alive_over_many_lifetimes() {
    let s = movemint().await;
    s.fake.set_lifetime(Duration::from_secs(2));
    let tokend = Tokend::start(&config(&s)).await;
    tokend.log_in("mm").await;
    let mut client = tokend.client().await;
    let refreshes = || s.fake.requests().iter().filter(|r| r.form["grant_type"] == "refresh_token").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while refreshes() < 4 {
        assert!(std::time::Instant::now() < deadline, "4 refreshes within 30s, not {}:\n{}", refreshes(), tokend.log());
        let token = client.token("mm").await.expect("a token");
        assert!(s.fake.accepts(token.access_token.expose()), "every served token is accepted");
        // A program asking now and then through each token's life, not only right after a
        // refresh.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!s.fake.reuse_detected(), "a rotated-out refresh token was never sent again");
    let (saved, live, newest) = tokend
        .at_rest("mm", async |saved| {
            let saved = saved.expect("a saved refresh token");
            (saved.clone(), s.fake.refresh_token_is_live(&saved), s.fake.newest_refresh_token())
        })
        .await;
    assert!(live, "the saved refresh token is live");
    assert_eq!(Some(saved), newest, "and the newest one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_needs_no_login_and_no_request_while_the_token_lasts() {
    let s = movemint().await;
    let mut tokend = Tokend::start(&config(&s)).await;
    tokend.log_in("mm").await;
    let before = tokend.tokenctl_ok(&["token", "mm"]).await;
    let requests = s.fake.token_requests();
    tokend.stop().await;
    tokend.restart().await;
    let after = tokend.tokenctl_ok(&["token", "mm"]).await;
    assert_eq!(before, after, "the same token, restored from disk");
    assert_eq!(s.fake.token_requests(), requests, "no upstream request");
    // And when the saved access token has expired, the refresh token gets a new one.
    s.fake.set_lifetime(Duration::from_secs(1));
    tokend.tokenctl_ok(&["refresh", "mm"]).await;
    tokend.stop().await;
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tokend.state.join("mm.json")).unwrap()).unwrap();
    let expiry_ms = state["access_token"]["expires_at_ms"].as_u64().expect("the saved token's expiry");
    until_past(std::time::UNIX_EPOCH + Duration::from_millis(expiry_ms)).await;
    let requests = s.fake.token_requests();
    s.fake.set_lifetime(Duration::from_secs(3600));
    tokend.restart().await;
    let fresh = tokend.tokenctl_ok(&["token", "mm"]).await;
    assert!(s.fake.accepts(fresh.trim()));
    assert_eq!(s.fake.token_requests(), requests + 1, "the expired token was refreshed");
}

/// A `notify_command` line that writes the `TOKEND_*` environment it gets to `file`.
fn notify_into(file: &std::path::Path) -> String {
    format!("notify_command = \"env | grep ^TOKEND_ | sort > {}\"\n", file.display())
}

/// Waits (at most 10 s) for the command of [`notify_into`] to have written `file`, and then for
/// every command tokend started to have finished; returns what it wrote.
async fn notification(tokend: &Tokend, file: &std::path::Path) -> String {
    assert!(
        eventually(Duration::from_secs(10), || file.exists()).await,
        "the notify command writing {} ran:\n{}",
        file.display(),
        tokend.log()
    );
    tokend.commands_finished().await;
    std::fs::read_to_string(file).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_needs_a_login_and_runs_the_notify_command() {
    let s = movemint().await;
    s.fake.set_lifetime(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("note");
    let config = config(&s).replace("[profiles.mm]", &format!("[daemon]\n{}\n[profiles.mm]", notify_into(&note)));
    let tokend = Tokend::start(&config).await;
    tokend.log_in("mm").await;
    s.fake.revoke_everything();
    let env = notification(&tokend, &note).await;
    assert!(env.contains("TOKEND_EVENT=login-needed"), "{env}");
    assert!(env.contains("TOKEND_PROFILE=mm"), "{env}");
    assert!(env.contains("TOKEND_LOGIN_COMMAND=tokenctl login mm"), "{env}");
    assert!(env.contains("TOKEND_URL=http"), "a login was started for the notification: {env}");
    let status: serde_json::Value =
        serde_json::from_str(&tokend.tokenctl_ok(&["status", "mm", "--json"]).await).unwrap();
    assert_eq!(status["state"], "needs-login");
    assert_eq!(status["has_refresh_token"], false);
    assert!(status["action"].as_str().unwrap().contains("tokenctl login mm"));
    // No retries once the grant is dead: nothing is scheduled, and a client asking starts none.
    assert!(status["next_refresh"].is_null(), "{status}");
    let requests = s.fake.token_requests();
    let out = tokend.tokenctl(&["token", "mm"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("run `tokenctl login mm`"));
    assert_eq!(s.fake.token_requests(), requests, "no retries once the grant is dead");
    // The login the daemon started for the notification works.
    let url = env.lines().find_map(|l| l.strip_prefix("TOKEND_URL=")).unwrap().to_owned();
    s.fake.set_lifetime(Duration::from_secs(3600));
    assert_eq!(follow(&approve(&url).await).await.0, 200, "the page is shown once the code is exchanged");
    let token = tokend.tokenctl_ok(&["token", "mm"]).await;
    assert!(s.fake.accepts(token.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_at_the_server_and_forgets_locally() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    tokend.log_in("mm").await;
    let token = tokend.tokenctl_ok(&["token", "mm"]).await.trim().to_owned();
    let refresh = tokend.saved_refresh_token("mm").unwrap();
    let out = tokend.tokenctl_ok(&["logout", "mm"]).await;
    assert!(out.contains("refresh token: revoked at the server"), "{out}");
    let revocations = s.fake.revocations();
    assert_eq!(revocations.len(), 2);
    assert_eq!(revocations[0]["token"], refresh);
    assert_eq!(revocations[0]["token_type_hint"], "refresh_token");
    assert_eq!(revocations[0]["client_id"], "mm");
    assert_eq!(revocations[0]["client_secret"], "mm-secret");
    assert_eq!(revocations[1]["token"], token);
    assert!(!s.fake.accepts(&token));
    assert!(!s.fake.refresh_token_is_live(&refresh));
    assert!(!tokend.state.join("mm.json").exists(), "the state file is gone");
    assert_eq!(tokend.tokenctl(&["token", "mm"]).await.status.code(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_do_not_hold_up_the_redirect() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    // Browsers open spare connections ahead of time; a local program could do the same on
    // purpose. Neither may delay the real redirect until their read timeout (10 s) passes.
    let port = url::Url::parse(&s.redirect).unwrap().port().unwrap();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let redirect = approve(&url).await;
    let (status, page) = tokio::time::timeout(Duration::from_secs(5), follow(&redirect))
        .await
        .expect("the redirect is answered while the silent connections are still open");
    assert_eq!(status, 200, "{page}");
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}");
    drop(silent);
    assert!(s.fake.accepts(tokend.tokenctl_ok(&["token", "mm"]).await.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_a_refresh_revokes_what_the_refresh_brings() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    tokend.log_in("mm").await;
    let requests = s.fake.token_requests();
    // The server rotates the refresh token at once, but its answer takes a while to arrive.
    s.fake.set_answer_delay(Duration::from_millis(800));
    let refresh = tokend.spawn_tokenctl(&["refresh", "mm"]);
    assert!(
        eventually(Duration::from_secs(5), || s.fake.token_requests() > requests).await,
        "the refresh is in flight"
    );
    let logout = tokend.spawn_tokenctl(&["logout", "mm"]);
    let (_, _) = refresh.finish().await;
    let (exit, output) = logout.finish().await;
    assert!(exit.success(), "{output}");
    // The refresh token the delayed answer brought is the one revoked, and nothing survives.
    let newest = s.fake.newest_refresh_token().unwrap();
    assert!(!s.fake.refresh_token_is_live(&newest), "the rotated refresh token was revoked");
    assert!(s.fake.revocations().iter().any(|r| r["token"] == newest), "{:?}", s.fake.revocations());
    assert!(!tokend.state.join("mm.json").exists(), "the state file is gone");
    assert_eq!(tokend.tokenctl(&["token", "mm"]).await.status.code(), Some(5));
    let status: serde_json::Value =
        serde_json::from_str(&tokend.tokenctl_ok(&["status", "mm", "--json"]).await).unwrap();
    assert_eq!(status["has_refresh_token"], false, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_forgets_locally_even_when_the_server_is_unreachable() {
    let s = movemint().await;
    let dead = format!("http://127.0.0.1:{}/oauth/revoke", free_port());
    let tokend = Tokend::start(&config(&s).replace(&s.fake.url("/oauth/revoke"), &dead)).await;
    tokend.log_in("mm").await;
    let out = tokend.tokenctl(&["logout", "mm", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["refresh_token"]["outcome"], "failed");
    assert!(report["refresh_token"]["message"].as_str().unwrap().contains("cannot connect"), "{report}");
    assert!(!tokend.state.join("mm.json").exists());
    assert_eq!(tokend.tokenctl(&["token", "mm"]).await.status.code(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_prints_the_servers_answer_and_retries_once_after_a_401() {
    let s = movemint().await;
    let tokend = Tokend::start(&config(&s)).await;
    tokend.log_in("mm").await;
    let out = tokend.tokenctl_ok(&["info", "mm"]).await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["application"]["uid"], "mm");
    assert!(out.contains("\n  "), "pretty-printed for people");
    let raw = tokend.tokenctl_ok(&["info", "mm", "--json"]).await;
    assert_eq!(raw.trim().lines().count(), 1, "raw with --json");
    // The server drops the access token early: info invalidates it and tries once more.
    let token = tokend.tokenctl_ok(&["token", "mm"]).await;
    s.fake.revoke_access_token(token.trim());
    let requests = s.fake.token_requests();
    let out = tokend.tokenctl_ok(&["info", "mm"]).await;
    assert!(out.contains("\"uid\": \"mm\""), "{out}");
    assert_eq!(s.fake.token_requests(), requests + 1, "one refresh after the 401");
    assert_ne!(tokend.tokenctl_ok(&["token", "mm"]).await, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_without_info_url_says_what_to_add() {
    let s = movemint().await;
    let tokend =
        Tokend::start(&config(&s).replace(&format!("info_url = \"{}\"\n", s.fake.url("/oauth/token/info")), "")).await;
    let out = tokend.tokenctl(&["info", "mm"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no info_url"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_security_settings_do_not_reuse_stored_tokens() {
    let s = movemint().await;
    let mut tokend = Tokend::start(&config(&s)).await;
    tokend.log_in("mm").await;
    tokend.stop().await;
    tokend.write_config(&config(&s).replace("scopes = [\"public\", \"write\"]", "scopes = [\"public\", \"admin\"]"));
    tokend.restart().await;
    let out = tokend.tokenctl(&["token", "mm"]).await;
    assert_eq!(out.status.code(), Some(5), "tokens obtained for other scopes are not served");
    assert!(tokend.log().contains("not reusing stored tokens"), "{}", tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_times_out_with_advice() {
    let s = movemint().await;
    let tokend = Tokend::start(&(config(&s) + "login_timeout = \"1s\"\n")).await;
    let login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let (exit, output) = login.finish().await;
    assert_eq!(exit.code(), Some(5));
    assert!(output.contains("no answer from the browser within 1s"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_params_reach_the_authorization_url() {
    let s = movemint().await;
    let tokend =
        Tokend::start(&(config(&s) + "authorize_params = { prompt = \"consent\", access_type = \"offline\" }\n")).await;
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = url::Url::parse(&login.login_url().await).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["prompt"], "consent");
    assert_eq!(query["access_type"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_naming_another_issuer_is_refused() {
    let s = movemint().await;
    s.fake.send_issuer(Some("https://evil.example"));
    let tokend = Tokend::start(&config(&s)).await;
    let mut login = tokend.spawn_tokenctl(&["login", "mm", "--no-browser"]);
    let url = login.login_url().await;
    let (status, page) = follow(&approve(&url).await).await;
    assert_eq!(status, 400);
    assert!(page.contains("mix-up"), "{page}");
    let (exit, output) = login.finish().await;
    assert_eq!(exit.code(), Some(5), "{output}");
    assert_eq!(s.fake.token_requests(), 0, "the code was not exchanged");
    // The server's own origin as issuer is accepted.
    s.fake.send_issuer(Some(&s.fake.base));
    tokend.log_in("mm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
    let s = movemint().await;
    s.fake.set_rotation(false);
    let tokend = Tokend::start(&config(&s)).await;
    tokend.log_in("mm").await;
    let refresh = tokend.saved_refresh_token("mm").unwrap();
    tokend.tokenctl_ok(&["refresh", "mm"]).await;
    tokend.tokenctl_ok(&["refresh", "mm"]).await;
    assert_eq!(tokend.saved_refresh_token("mm").unwrap(), refresh);
    assert!(s.fake.refresh_token_is_live(&refresh));
    assert_eq!(s.fake.requests().iter().filter(|r| r.form.get("refresh_token") == Some(&refresh)).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiles_own_notify_command_beats_the_daemon_default() {
    let s = movemint().await;
    s.fake.set_lifetime(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let global = dir.path().join("global");
    let own = dir.path().join("own");
    let config = config(&s).replace("[profiles.mm]", &format!("[daemon]\n{}\n[profiles.mm]", notify_into(&global)))
        + &notify_into(&own);
    let tokend = Tokend::start(&config).await;
    tokend.log_in("mm").await;
    s.fake.revoke_everything();
    // Every command tokend started has finished once the notification is read: a wrongly
    // chosen (or additional) global command would have written its file by then.
    let env = notification(&tokend, &own).await;
    assert!(env.contains("TOKEND_EVENT=login-needed"), "{env}");
    assert!(env.contains("TOKEND_PROFILE=mm"), "{env}");
    assert!(env.contains("TOKEND_LOGIN_COMMAND=tokenctl login mm"), "{env}");
    assert!(
        s.fake.requests().iter().any(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token")),
        "the notification followed a refresh the server refused"
    );
    assert!(!global.exists(), "the [daemon] notify_command did not run:\n{}", tokend.log());
    let status: serde_json::Value =
        serde_json::from_str(&tokend.tokenctl_ok(&["status", "mm", "--json"]).await).unwrap();
    assert_eq!(status["state"], "needs-login");
}
