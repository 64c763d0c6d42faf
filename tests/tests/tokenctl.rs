//! tokenctl for people and scripts: `exec`, `watch`, output formats.

use std::time::Duration;

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::{FakeProvider, Lines, Tokend, stderr, stdout};

async fn daemon(lifetime: Duration) -> (FakeProvider, Tokend) {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    fake.set_lifetime(lifetime);
    let tokend = Tokend::start(&profile_p(&fake)).await;
    (fake, tokend)
}

/// Profile `p`: client_credentials against `fake`.
fn profile_p(fake: &FakeProvider) -> String {
    fake.cc_profile("p", "")
}

/// Starts `tokenctl watch ARGS`; returns the process and its output, line by line.
fn watch(tokend: &Tokend, args: &[&str]) -> (tokio::process::Child, Lines) {
    tokend.tokenctl_lines(&[&["watch"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_command_with_the_token_and_passes_its_exit_status_through() {
    let (fake, tokend) = daemon(Duration::from_secs(3600)).await;
    let out = tokend.tokenctl(&["exec", "p", "--", "sh", "-c", "printf %s \"$TOKEN\"; exit 7"]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(fake.accepts(&stdout(&out)), "the command saw a valid token in $TOKEN");
    let out = tokend
        .tokenctl(&[
            "exec",
            "p",
            "--env",
            "API_AUTH",
            "--format",
            "header",
            "--",
            "sh",
            "-c",
            "printf %s \"$API_AUTH\"",
        ])
        .await;
    assert!(out.status.success());
    let header = stdout(&out);
    assert!(fake.accepts(header.strip_prefix("Bearer ").expect("a header value")));
    let missing = tokend.tokenctl(&["exec", "p", "--", "/nonexistent/program"]).await;
    assert_eq!(missing.status.code(), Some(127));
    let unknown = tokend.tokenctl(&["exec", "nope", "--", "true"]).await;
    assert_eq!(unknown.status.code(), Some(4), "no token, no command");
}

/// Runs `tokenctl exec p --retry-on-exit 77` with a command that records each token it is given
/// and exits with the next of `exits`; returns tokenctl's exit code and the tokens, one per run.
async fn exec_with_retry(tokend: &Tokend, exits: &[u8]) -> (Option<i32>, Vec<String>) {
    let runs = tokend.dir.path().join("runs");
    let script = format!(
        "printf '%s\\n' \"$TOKEN\" >> '{runs}'; set -- {exits}; shift $(( $(wc -l < '{runs}') - 1 )); exit $1",
        runs = runs.display(),
        exits = exits.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")
    );
    let out = tokend.tokenctl(&["exec", "p", "--retry-on-exit", "77", "--", "sh", "-c", &script]).await;
    let tokens = std::fs::read_to_string(&runs).unwrap_or_default().lines().map(str::to_owned).collect();
    (out.status.code(), tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_command_once_more_with_a_new_token_when_it_exits_with_the_retry_code() {
    let (fake, tokend) = daemon(Duration::from_secs(3600)).await;
    let (code, tokens) = exec_with_retry(&tokend, &[77, 0]).await;
    assert_eq!(code, Some(0), "{}", tokend.log());
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_ne!(tokens[0], tokens[1], "the second run has a new token");
    assert!(fake.accepts(&tokens[1]));
    assert_eq!(fake.token_requests(), 2, "the first token was reported, and replaced once");
    assert_eq!(tokend.log().matches("a client reports the token was rejected").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_on_the_second_run_s_status_and_never_runs_a_third_time() {
    let (fake, tokend) = daemon(Duration::from_secs(3600)).await;
    let (code, tokens) = exec_with_retry(&tokend, &[77, 77, 0]).await;
    assert_eq!(code, Some(77));
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_does_not_retry_on_any_other_status() {
    let (fake, tokend) = daemon(Duration::from_secs(3600)).await;
    let (code, tokens) = exec_with_retry(&tokend, &[3, 0]).await;
    assert_eq!(code, Some(3));
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(fake.token_requests(), 1, "nothing was reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_new_token_and_state_change_as_it_happens() {
    let (fake, tokend) = daemon(Duration::from_secs(2)).await;
    let first = tokend.tokenctl_ok(&["token", "p"]).await;
    let (_watch, mut lines) = watch(&tokend, &["p", "--json"]);
    let mut tokens = Vec::new();
    let mut states = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokens.len() < 4 {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("events arrive as tokens are refreshed")
            .unwrap()
            .expect("the stream goes on");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        match event["event"].as_str().unwrap() {
            "token" => tokens.push(event["access_token"].as_str().unwrap().to_owned()),
            "status" => states.push(event["state"].as_str().unwrap().to_owned()),
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(tokens[0], first.trim(), "the current token comes first");
    for pair in tokens.windows(2) {
        assert_ne!(pair[0], pair[1], "each line is a new token");
    }
    assert!(states.contains(&"valid".to_owned()) && states.contains(&"refreshing".to_owned()), "{states:?}");
    // Every new token the server issued reached the watcher.
    assert!(fake.token_requests() <= tokens.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_are_pushed_over_one_request() {
    use tokend_proto::{Event, Request, Response};
    use tokio::io::AsyncWriteExt;
    let (fake, tokend) = daemon(Duration::from_secs(2)).await;
    // One Watch request on a connection, then nothing but reading: every event that arrives
    // was pushed by the daemon.
    let mut stream = tokend_e2e::wire::handshake(&tokend.socket).await;
    let request = tokend_e2e::wire::frame(&Request::Watch { profile: Some("p".into()) });
    stream.write_all(&request).await.unwrap();
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..200 {
        match tokend_e2e::wire::read_frame::<Response>(&mut stream).await.expect("the stream goes on") {
            Response::Event(Event::Token(token)) => {
                assert!(fake.accepts(token.access_token.expose()) || token.expires_at <= std::time::SystemTime::now());
                tokens.insert(token.fingerprint);
            }
            Response::Event(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        if tokens.len() >= 3 {
            break;
        }
    }
    assert!(tokens.len() >= 3, "refreshed tokens kept arriving without another request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_for_people_reads_like_a_log() {
    let (_fake, tokend) = daemon(Duration::from_secs(2)).await;
    let (_watch, mut lines) = watch(&tokend, &[]);
    let mut seen = String::new();
    while !seen.contains("new token") || !seen.contains(": refreshing") {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(seen.lines().all(|l| l.contains(" p: ")), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_json_output_are_stable_for_scripts() {
    let (_fake, tokend) = daemon(Duration::from_secs(3600)).await;
    let pong: serde_json::Value = serde_json::from_str(&tokend.tokenctl_ok(&["ping", "--json"]).await).unwrap();
    assert_eq!(pong["pid"], tokend.pid());
    assert_eq!(pong["profiles"], 1);
    let token: serde_json::Value = serde_json::from_str(&tokend.tokenctl_ok(&["token", "p", "--json"]).await).unwrap();
    for field in ["profile", "access_token", "token_type", "expires_at", "expires_in", "fingerprint"] {
        assert!(!token[field].is_null(), "{field}");
    }
    let list: serde_json::Value = serde_json::from_str(&tokend.tokenctl_ok(&["list", "--json"]).await).unwrap();
    assert_eq!(list[0]["name"], "p");
    let human = tokend.tokenctl_ok(&["ping"]).await;
    assert!(human.contains("is running"), "{human}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_no_profiles_waits_for_a_reload_that_adds_one() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let tokend = Tokend::start("").await;
    let (_watch, mut lines) = watch(&tokend, &["--json"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut until = async |wanted: &dyn Fn(&serde_json::Value) -> bool| loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the events wanted arrive within 20s")
            .unwrap()
            .expect("the watch goes on");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if wanted(&event) {
            return event;
        }
    };
    // A profile that needs a login asks no server; its state is the watch's first event.
    let login_only = format!(
        "[profiles.q]\ngrant = \"authorization_code\"\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\nredirect_uri = \"http://127.0.0.1:9/callback\"\nclient_id = \"q\"\n",
        fake.url("/oauth/token"),
        fake.url("/oauth/authorize")
    );
    tokend.write_config(&login_only);
    tokend.tokenctl_ok(&["reload"]).await;
    until(&|e| e["event"] == "status" && e["state"] == "needs-login").await;
    // Removed again, and the watch has nothing to watch: it goes on waiting, and a reload that
    // adds a profile brings that profile's events.
    tokend.write_config("");
    tokend.tokenctl_ok(&["reload"]).await;
    until(&|e| e["event"] == "removed" && e["profile"] == "q").await;
    tokend.write_config(&profile_p(&fake));
    tokend.tokenctl_ok(&["reload"]).await;
    let token = until(&|e| e["event"] == "token").await;
    assert!(fake.accepts(token["access_token"].as_str().unwrap()));
}
