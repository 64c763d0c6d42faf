//! Hostile OAuth servers: nothing a token or info endpoint sends can crash tokend or tokenctl,
//! leave tokend unable to start, or reach a terminal unescaped. An answer tokend cannot use is
//! an upstream error that says why, the profile recovers once the server behaves, and a
//! refresh token the server rotated is kept whatever else was wrong with the answer.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokend_e2e::fake::Fault;
use tokend_e2e::{FakeProvider, Movemint, Options, Tokend, eventually, stderr, stdout, wait_for};

/// A token this long fits under tokend's 1 MiB cap on response bodies, but not in a frame.
const FRAME_BUSTER: usize = 70_000;

/// The most tokend believes a token lives, however long the server says.
const A_YEAR_AND_A_DAY: u64 = 366 * 24 * 3600;

async fn provider() -> FakeProvider {
    FakeProvider::with_basic_client().await
}

fn config(fake: &FakeProvider) -> String {
    let info = fake.url("/v8/users/me");
    fake.cc_profile("p", &format!("info_url = \"{info}\"\nretry_min = \"100ms\"\nretry_max = \"300ms\""))
}

async fn status(tokend: &Tokend, profile: &str) -> Value {
    serde_json::from_str(&tokend.tokenctl_ok(&["status", profile, "--json"]).await).unwrap()
}

/// Polls `tokenctl status PROFILE --json` (at most 20 s) until `condition` holds; returns it.
async fn status_until(tokend: &Tokend, profile: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = wait_for(Duration::from_secs(20), async || {
        last = status(tokend, profile).await;
        condition(&last).then(|| last.clone())
    })
    .await;
    found.unwrap_or_else(|| panic!("{last}\n{}", tokend.log()))
}

fn no_panic(tokend: &Tokend) {
    let log = tokend.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// What a person sees must be free of anything a terminal acts on: control characters other
/// than newline and tab, and Unicode's bidirectional overrides.
fn inert(shown: &str) -> bool {
    !shown.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || ('\u{202a}'..='\u{202e}').contains(&c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_too_long_for_a_frame_is_an_upstream_error_and_never_saved() {
    let fake = provider().await;
    fake.fail_always(Some(Fault::Field("access_token", json!("a".repeat(FRAME_BUSTER)))));
    let tokend = Tokend::start(&config(&fake)).await;
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(6), "{}\n{}", stderr(&out), tokend.log());
    assert!(stderr(&out).contains(&format!("access_token of {FRAME_BUSTER} bytes")), "{}", stderr(&out));
    // Retried as a transient failure: backing off between attempts (a status taken just as a
    // retry starts says `refreshing`, so wait for a moment between attempts).
    let status = status_until(&tokend, "p", |s| s["state"] == "backoff").await;
    assert_eq!(status["last_error"]["transient"], true, "{status}");
    assert!(!tokend.state.join("p.json").exists(), "nothing unusable is saved");
    // Once the server answers normally again, tokend recovers by itself.
    fake.fail_always(None);
    status_until(&tokend, "p", |s| s["state"] == "valid").await;
    let token = tokend.tokenctl_ok(&["token", "p"]).await;
    assert!(fake.accepts(token.trim()));
    no_panic(&tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_saved_by_an_older_tokend_that_cannot_be_served_is_set_aside_and_tokend_starts() {
    let (fake, config) = movemint().await;
    let mut tokend = Tokend::start(&config).await;
    tokend.log_in("mm").await;
    let refresh_token = tokend.saved_refresh_token("mm").unwrap();
    tokend.stop().await;
    // What an older tokend saved from a hostile answer: a token no frame can carry.
    let file = tokend.state.join("mm.json");
    let mut saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let huge = "a".repeat(FRAME_BUSTER);
    saved["access_token"]["token"] = json!(huge);
    std::fs::write(&file, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();

    tokend.restart().await;
    let aside: Vec<_> = std::fs::read_dir(&tokend.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("mm.json."))
        .collect();
    assert_eq!(aside.len(), 1, "the file is kept for the user: {aside:?}");
    assert!(std::fs::read_to_string(&aside[0]).unwrap().contains(&huge));
    let log = tokend.log();
    assert!(log.contains(&aside[0].display().to_string()), "the log names where it is: {log}");
    // The refresh token in it was usable, so it was kept: no login is needed.
    let token = tokend.tokenctl_ok(&["token", "mm"]).await;
    assert!(fake.accepts(token.trim()));
    let refresh = fake.requests().into_iter().find(|r| r.form["grant_type"] == "refresh_token").expect("a refresh");
    assert_eq!(refresh.form["refresh_token"], refresh_token);
    no_panic(&tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_beyond_what_a_clock_can_hold_are_clamped_and_print_safely() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    for expires_in in [json!(9_223_372_036_854_775_808u64), json!(1e300), json!(1e12), json!("1e400")] {
        fake.fail_next([Fault::Field("expires_in", expires_in.clone())]);
        let token = tokend.tokenctl_ok(&["refresh", "p"]).await;
        assert!(fake.accepts(token.trim()), "{expires_in}: {}", tokend.log());
        let json: Value = serde_json::from_str(&tokend.tokenctl_ok(&["token", "p", "--format", "json"]).await).unwrap();
        let left = json["expires_in"].as_u64().unwrap();
        assert!(left > 300 && left <= A_YEAR_AND_A_DAY, "{expires_in}: {json}");
        let status = status(&tokend, "p").await;
        assert_eq!(status["state"], "valid", "{expires_in}: {status}");
        let expires = humantime::parse_rfc3339(status["token"]["expires_at"].as_str().unwrap()).unwrap();
        assert!(expires < SystemTime::now() + Duration::from_secs(A_YEAR_AND_A_DAY), "{status}");
        for args in [&["status"][..], &["status", "p"], &["list"]] {
            tokend.tokenctl_ok(args).await;
        }
    }
    no_panic(&tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_valid_longer_than_any_token_is_a_usage_error() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    for min_valid in ["18446744073709551615", "400days"] {
        let out = tokend.tokenctl(&["token", "p", "--min-valid", min_valid]).await;
        assert_eq!(out.status.code(), Some(2), "{min_valid}: {}\n{}", stderr(&out), tokend.log());
        assert!(stderr(&out).contains("longer than any token"), "{}", stderr(&out));
    }
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "p"]).await.trim()));
    no_panic(&tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_info_answer_too_large_to_pass_on_is_a_clear_error_and_is_fetched_once() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    for status in [200, 403] {
        fake.set_info_answer(Some((status, format!("{{\"blob\":\"{}\"}}", "x".repeat(FRAME_BUSTER)))));
        let before = fake.info_requests();
        let out = tokend.tokenctl(&["info", "p"]).await;
        assert_eq!(out.status.code(), Some(6), "{}\n{}", stderr(&out), tokend.log());
        assert!(stderr(&out).contains("larger than 32 KiB"), "{}", stderr(&out));
        assert_eq!(fake.info_requests() - before, 1, "the GET is sent once");
    }
    // Anything up to the limit is passed on whole.
    let body = format!("{{\"blob\":\"{}\"}}", "y".repeat(30_000));
    fake.set_info_answer(Some((200, body.clone())));
    assert_eq!(tokend.tokenctl_ok(&["info", "p", "--json"]).await.trim_end(), body);
    no_panic(&tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_or_token_type_that_could_inject_a_header_is_never_served() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    for (field, value) in [
        ("access_token", "at_fine\r\nX-Injected: yes"),
        ("access_token", "at fine"),
        ("token_type", "Bearer\r\nX-Injected: yes"),
    ] {
        fake.fail_always(Some(Fault::Field(field, json!(value))));
        let out = tokend.tokenctl(&["refresh", "p", "--format", "header"]).await;
        assert_eq!(out.status.code(), Some(6), "{field}={value:?}: {}", stdout(&out));
        assert!(!stdout(&out).contains("X-Injected") && !stderr(&out).contains("X-Injected"), "{out:?}");
        assert!(stderr(&out).contains(&format!("unusable {field}")), "{}", stderr(&out));
        fake.fail_always(None);
        status_until(&tokend, "p", |s| s["state"] == "valid").await;
        let header = tokend.tokenctl_ok(&["token", "p", "--format", "header"]).await;
        assert_eq!(header.lines().count(), 1, "{header}");
        let token = header.trim().strip_prefix("Authorization: Bearer ").unwrap();
        assert!(fake.accepts(token), "{header}");
    }
    no_panic(&tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_text_reaches_a_terminal_escaped_and_a_pipe_unchanged() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    let nasty = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}\r";
    for (status, body) in [
        (200, json!({ "name": nasty }).to_string()),
        (200, format!("plain text {nasty}")),
        (403, format!("{{\"error\":\"{nasty}\"}}")),
    ] {
        fake.set_info_answer(Some((status, body.clone())));
        for args in [&["info", "p"][..], &["info", "p", "--json"]] {
            let (_, shown) = tokend.tokenctl_in_terminal(args).await;
            assert!(inert(&shown), "{args:?} {body:?} showed {shown:?}");
            assert!(shown.contains("]0;owned"), "escaped, not dropped: {shown:?}");
        }
        // Scripts reading a pipe get the body as the server sent it.
        let piped = stdout(&tokend.tokenctl(&["info", "p", "--json"]).await);
        assert_eq!(piped.trim_end_matches('\n'), body);
    }
    // An error description goes the same way.
    let description = format!("bad {nasty} client");
    let refusal = json!({ "error": "invalid_client", "error_description": description }).to_string();
    fake.fail_always(Some(Fault::Status(401, refusal)));
    let (exit, shown) = tokend.tokenctl_in_terminal(&["refresh", "p"]).await;
    assert_eq!(exit.code(), Some(6), "{shown}");
    assert!(shown.contains("bad") && shown.contains("client"), "{shown}");
    assert!(inert(&shown), "{shown:?}");
    let (_, shown) = tokend.tokenctl_in_terminal(&["status"]).await;
    assert!(inert(&shown), "{shown:?}");
    no_panic(&tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_tokenctl_quietly() {
    let fake = provider().await;
    let tokend = Tokend::start(&config(&fake)).await;
    tokend.tokenctl_ok(&["token", "p"]).await;
    for args in [
        &["info", "p"][..],
        &["info", "p", "--json"],
        &["token", "p"],
        &["token", "p", "--format", "json"],
        &["status"],
        &["status", "p", "--json"],
        &["list"],
        &["ping"],
        &["completions", "bash"],
        &["--help"],
    ] {
        let out = tokend.tokenctl_into_closed_pipe(args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_whose_task_dies_fails_alone_and_says_why() {
    let fake = provider().await;
    let mut config = config(&fake);
    let other = config.replace("[profiles.p]", "[profiles.other]");
    config.push_str(&other);
    // A hook compiled into debug builds only: the actor of the named profile panics when asked
    // to refresh. (After this suite's fixes no answer from a server makes an actor panic.)
    let options = Options { env: vec![("TOKEND_TEST_PANIC_ON_REFRESH".into(), "p".into())], ..Options::default() };
    let tokend = Tokend::start_with(&config, options).await;
    tokend.tokenctl_ok(&["token", "p"]).await;

    let out = tokend.tokenctl(&["refresh", "p"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("stopped working") && stderr(&out).contains("TOKEND_TEST_PANIC_ON_REFRESH"),
        "{out:?}"
    );
    let status = status(&tokend, "p").await;
    assert_eq!(status["state"], "failed", "{status}");
    assert!(status["last_error"]["message"].as_str().unwrap().contains("panicked"), "{status}");
    assert!(status["action"].as_str().unwrap().contains("tokenctl reload"), "{status}");
    let started = std::time::Instant::now();
    let out = tokend.tokenctl(&["token", "p"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("stopped working") && !stderr(&out).contains("kept being reloaded"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at once, not after waiting for a reload");
    // Every other profile keeps serving.
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "other"]).await.trim()));
    tokend.tokenctl_ok(&["status"]).await;
    // A reload starts the profile afresh.
    tokend.tokenctl_ok(&["reload"]).await;
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "p"]).await.trim()));
    assert_eq!(status_until(&tokend, "p", |s| s["state"] == "valid").await["last_error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_kept_when_the_rest_of_the_answer_is_unusable() {
    let (fake, config) = movemint().await;
    let mut tokend = Tokend::start(&config).await;
    tokend.log_in("mm").await;
    let before = fake.token_requests();
    // Every refresh rotates the refresh token, then answers with an access token no client
    // could use. Had tokend dropped a rotated refresh token, its next attempt would present a
    // retired one, and the server would revoke the grant.
    fake.fail_always(Some(Fault::Field("access_token", json!("at\r\nX-Injected: yes"))));
    let out = tokend.tokenctl(&["refresh", "mm"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("unusable access_token"), "{}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(10), || fake.token_requests() >= before + 3).await,
        "retried: {}",
        tokend.log()
    );
    assert!(!fake.reuse_detected(), "each retry presented the newest refresh token");
    // Saved, too: what is on disk after a shutdown is the newest one, still live.
    tokend.stop().await;
    let saved = tokend.saved_refresh_token("mm").unwrap();
    assert_eq!(Some(&saved), fake.newest_refresh_token().as_ref());
    assert!(fake.refresh_token_is_live(&saved));
    fake.fail_always(None);
    tokend.restart().await;
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "mm"]).await.trim()));
    assert!(!fake.reuse_detected());
    no_panic(&tokend);
}

async fn movemint() -> (Movemint, String) {
    let fake = Movemint::start().await;
    let config = fake.profile("retry_min = \"100ms\"\nretry_max = \"300ms\"");
    (fake, config)
}
