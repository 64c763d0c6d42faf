//! The HTTP API's socket and token API: the same answers as tokenctl, errors as JSON with
//! fitting statuses, the socket set up and guarded like tokend.sock, and the running server
//! checked against its OpenAPI description (docs/http-api.openapi.json).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokend_e2e::fake::{ClientAuth, Fault};
use tokend_e2e::http::{Answer, Connection};
use tokend_e2e::openapi::Description;
use tokend_e2e::{FakeProvider, Movemint, Need, Options, Tokend, bin, other_user, require, stderr, stdout, wait_for};
use tokend_proto::{Fingerprint, ProfileState};

fn cc(name: &str, fake: &FakeProvider, secret: &str, api_base: &str) -> String {
    format!(
        "[profiles.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\nclient_secret = \"{secret}\"\napi_base = \"{api_base}\"\n\n",
        fake.url("/oauth/token")
    )
}

async fn daemon() -> (FakeProvider, Tokend) {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let tokend = Tokend::start(&cc("p", &fake, "s", &fake.url("/api"))).await;
    (fake, tokend)
}

/// `tokenctl ARGS` as JSON.
async fn tokenctl_json(tokend: &Tokend, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&tokend.tokenctl_ok(args).await).unwrap()
}

/// Whether two JSON views of the same thing agree, allowing the `*_in` seconds to have ticked.
fn same_view(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    match (k.ends_with("_in"), v.as_i64(), y.get(k).and_then(serde_json::Value::as_i64)) {
                        (true, Some(v), Some(w)) => (v - w).abs() <= 1,
                        _ => y.get(k).is_some_and(|w| same_view(v, w)),
                    }
                })
        }
        (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_view(v, w))
        }
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_api_answers_what_tokenctl_prints() {
    let (fake, tokend) = daemon().await;
    let mut http = tokend.http().await;
    let answer = http.get("/v1/token/p").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let json = answer.json();
    assert!(fake.accepts(json["access_token"].as_str().unwrap()));
    let printed = tokenctl_json(&tokend, &["token", "p", "--format", "json"]).await;
    assert!(same_view(&json, &printed), "HTTP {json}\ntokenctl {printed}");

    let status = http.get("/v1/status").await.json();
    let printed = tokenctl_json(&tokend, &["--json", "status"]).await;
    assert!(same_view(&status, &printed), "HTTP {status}\ntokenctl {printed}");
    let one = http.get("/v1/status/p").await.json();
    let printed = tokenctl_json(&tokend, &["--json", "status", "p"]).await;
    assert!(same_view(&one, &printed), "HTTP {one}\ntokenctl {printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_share_one_kept_alive_connection() {
    let (_fake, tokend) = daemon().await;
    let mut http = tokend.http().await;
    let first = http.get("/v1/token/p").await.json();
    for _ in 0..200 {
        let answer = http.get("/v1/token/p").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["access_token"], first["access_token"]);
    }
    // Errors keep the connection too.
    assert_eq!(http.get("/v1/token/nope").await.status, 404);
    assert_eq!(http.get("/v1/token/p").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_valid_waits_for_a_fresh_enough_token_and_is_bounded() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    fake.set_lifetime(Duration::from_secs(600));
    let tokend = Tokend::start(&cc("p", &fake, "s", &fake.url("/api"))).await;
    let mut http = tokend.http().await;
    let first = http.get("/v1/token/p").await.json();
    assert_eq!(fake.token_requests(), 1);
    let same = http.get("/v1/token/p?min_valid=1m").await.json();
    assert_eq!(same["access_token"], first["access_token"], "more than a minute is left");
    // The first token lasts ten minutes: asking for 59 minutes and a half needs a new one.
    fake.set_lifetime(Duration::from_secs(3600));
    let fresh = http.get("/v1/token/p?min_valid=59m%2030s").await.json();
    assert_ne!(fresh["access_token"], first["access_token"]);
    assert!(fresh["expires_in"].as_i64().unwrap() >= 59 * 60 + 30);
    assert_eq!(fake.token_requests(), 2);
    // Longer than the server's tokens ever live: a usage error, after one more try.
    let too_long = http.get("/v1/token/p?min_valid=2h").await;
    assert_eq!((too_long.status, too_long.json()["error"].as_str()), (400, Some("usage")));
    let requests = fake.token_requests();
    for bad in ["soon", "18446744073709551616", "99999999999999999999h", "200years", "-1", "1m&min_valid=2m"] {
        let answer = http.get(&format!("/v1/token/p?min_valid={bad}")).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.json()["error"], "usage", "{bad}");
    }
    assert_eq!(http.get("/v1/token/p?max_valid=1m").await.status, 400);
    assert_eq!(fake.token_requests(), requests, "no bad min_valid reaches the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_takes_the_rejected_token_or_its_fingerprint_and_answers_a_new_one() {
    let (fake, tokend) = daemon().await;
    let mut http = tokend.http().await;
    let first = http.get("/v1/token/p").await.json();
    let first_token = first["access_token"].as_str().unwrap().to_owned();
    let body = serde_json::json!({ "token": first_token }).to_string();
    let second =
        http.request("POST", "/v1/invalidate/p", &[("content-type", "application/json")], body.as_bytes()).await;
    assert_eq!(second.status, 200);
    let second = second.json();
    assert_ne!(second["access_token"], first["access_token"]);
    assert!(fake.accepts(second["access_token"].as_str().unwrap()));
    assert_eq!(fake.token_requests(), 2);

    // The same report again, now about a replaced token: the current one, without a refresh.
    let again = http.request("POST", "/v1/invalidate/p", &[], body.as_bytes()).await.json();
    assert_eq!(again["access_token"], second["access_token"]);
    assert_eq!(fake.token_requests(), 2);

    let by_fingerprint = serde_json::json!({ "fingerprint": second["fingerprint"] }).to_string();
    let third = http.request("POST", "/v1/invalidate/p", &[], by_fingerprint.as_bytes()).await.json();
    assert_ne!(third["access_token"], second["access_token"]);
    assert_eq!(third["fingerprint"], Fingerprint::of(third["access_token"].as_str().unwrap()).to_string());
    assert_eq!(fake.token_requests(), 3);

    let current = third["access_token"].as_str().unwrap();
    for bad in [
        String::new(),
        "{}".to_owned(),
        format!("{{\"token\": \"{current}\", \"fingerprint\": \"{}\"}}", third["fingerprint"].as_str().unwrap()),
        format!("{{\"token\": \"{current}\", \"extra\": 1}}"),
        format!("{{\"token\": \"{current}\""),
        format!("\"{current}\""),
        "{\"fingerprint\": \"xyz\"}".to_owned(),
        "{\"token\": \"\"}".to_owned(),
    ] {
        let answer = http.request("POST", "/v1/invalidate/p", &[], bad.as_bytes()).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.json()["error"], "usage");
        assert!(!String::from_utf8_lossy(&answer.body).contains(current), "an error never repeats the token");
    }
    let huge = vec![b' '; 100 * 1024];
    assert_eq!(http.request("POST", "/v1/invalidate/p", &[], &huge).await.status, 413);
    let get = http.get("/v1/invalidate/p").await;
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));
    assert_eq!(fake.token_requests(), 3, "no bad report refreshed anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_a_class_a_fitting_status_and_a_tokend_error_header() {
    let (_fake, tokend) = daemon().await;
    let mut http = tokend.http().await;
    for (target, status, class, says) in [
        ("/v1/token/nope", 404, "unknown_profile", "configured profiles: p"),
        ("/v1/status/nope", 404, "unknown_profile", "configured profiles: p"),
        ("/v1/tokens/p", 404, "usage", "no such route"),
        ("/", 404, "usage", "docs/http-api.md"),
        ("/v1/token/", 404, "usage", "no such route"),
        ("/v1/status?x=1", 400, "usage", "no query"),
    ] {
        let answer = http.get(target).await;
        assert_eq!(answer.status, status, "{target}");
        let json = answer.json();
        assert_eq!(json["error"], class, "{target}: {json}");
        assert!(json["message"].as_str().unwrap().contains(says), "{target}: {json}");
        assert_eq!(answer.header("tokend-error"), Some(class));
    }
    let post = http.request("POST", "/v1/token/p", &[], b"").await;
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_socket_is_private_and_removed_on_exit() {
    let (_fake, mut tokend) = daemon().await;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tokend.http_socket), 0o600);
    assert_eq!(mode(tokend.http_socket.parent().unwrap()), 0o700);
    assert!(tokend.stop().await.success());
    assert!(!tokend.http_socket.exists(), "removed on exit");
    assert!(!tokend.socket.exists());

    // A stale socket left by a crash is replaced.
    drop(std::os::unix::net::UnixListener::bind(&tokend.http_socket).unwrap());
    assert!(tokend.http_socket.exists());
    tokend.restart().await;
    assert_eq!(tokend.http().await.get("/v1/status").await.status, 200);

    // A live one is left alone, and the new tokend refuses to start.
    let out = std::process::Command::new(bin("tokend"))
        .arg("--config")
        .arg(&tokend.config)
        .arg("--socket")
        .arg(tokend.dir.path().join("other/tokend.sock"))
        .arg("--http-socket")
        .arg(&tokend.http_socket)
        .arg("--state-dir")
        .arg(tokend.dir.path().join("other-state"))
        .env_remove("TOKEND_HTTP_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("another tokend is already running"), "{}", stderr(&out));
    assert_eq!(tokend.http().await.get("/v1/status").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_socket_can_be_moved_or_turned_off() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let profile = cc("p", &fake, "s", &fake.url("/api"));
    let off = Tokend::start(&format!("[daemon]\nhttp_socket = false\n\n{profile}")).await;
    assert!(!off.http_socket.exists());
    assert!(off.log().contains("http_socket=off"), "{}", off.log());

    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("api/h.sock");
    let by_flag = Tokend::start_with(
        &format!("[daemon]\nhttp_socket = false\n\n{profile}"),
        Options { args: vec!["--http-socket".into(), moved.display().to_string()], ..Default::default() },
    )
    .await;
    assert!(!by_flag.http_socket.exists());
    assert_eq!(Connection::unix(&moved).await.get("/v1/token/p").await.status, 200, "--http-socket beats the config");
    drop(by_flag);

    let by_env = elsewhere.path().join("env/h.sock");
    let tokend = Tokend::start_with(
        &profile,
        Options { env: vec![("TOKEND_HTTP_SOCKET".into(), by_env.display().to_string())], ..Default::default() },
    )
    .await;
    assert_eq!(Connection::unix(&by_env).await.get("/v1/token/p").await.status, 200);
    assert!(!tokend.http_socket.exists());

    let configured = elsewhere.path().join("conf/h.sock");
    let tokend = Tokend::start(&format!("[daemon]\nhttp_socket = \"{}\"\n\n{profile}", configured.display())).await;
    assert_eq!(Connection::unix(&configured).await.get("/v1/token/p").await.status, 200);
    assert_eq!(std::fs::metadata(configured.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    drop(tokend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused_on_the_http_socket() {
    require!(Need::OtherUser, Need::Program("curl"));
    let (_fake, tokend) = daemon().await;
    let (uid, gid) = other_user();
    let curl_as_other = |target: &str| {
        std::process::Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .args(["curl", "-sS", "-m", "30", "-i", "--unix-socket"])
            .arg(&tokend.http_socket)
            .arg(format!("http://tokend{target}"))
            .output()
            .unwrap()
    };
    // As installed, the file system keeps other users out.
    std::fs::set_permissions(tokend.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = curl_as_other("/v1/token/p");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("Permission denied") || stderr(&out).contains("Couldn't connect"),
        "{}",
        stderr(&out)
    );

    // Even if the socket is opened up, tokend checks the peer's credentials.
    std::fs::set_permissions(tokend.http_socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tokend.http_socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    for target in ["/v1/token/p", "/v1/proxy/p/resource/x", "/v1/status"] {
        let out = curl_as_other(target);
        let text = stdout(&out);
        assert!(text.starts_with("HTTP/1.1 403"), "{target}: {text}{}", stderr(&out));
        assert!(text.contains("tokend-error: not_reachable"), "{text}");
        assert!(text.contains("permission denied") && text.contains(&format!("uid {uid}")), "{text}");
        assert!(!text.contains("at_"), "no token leaked: {text}");
    }
    assert!(tokend.log().contains("refused a connection to the HTTP socket"), "{}", tokend.log());
    assert_eq!(tokend.http().await.get("/v1/token/p").await.status, 200, "the owner is still served");
}

/// Every documented route, method and status, each answer checked against its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_server_matches_its_openapi_description() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut description = Description::load(&root.join("docs/http-api.openapi.json"));
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let flaky = FakeProvider::start().await;
    flaky.fail_always(Some(Fault::Status(503, "{}".into())));
    let closed = format!("http://127.0.0.1:{}", tokend_e2e::free_port());
    let api = fake.url("/api");
    let doorkeeper = Movemint::with_client("busy", "busy-secret").await;
    let busy_redirect = doorkeeper.redirect.clone();
    let config = format!(
        "[daemon]\nhttp_timeout = \"1s\"\n\n{}{}{}{}[profiles.mm]\ngrant = \"authorization_code\"\ntoken_url = \"{base}/oauth/token\"\nauthorize_url = \"{base}/oauth/authorize\"\nredirect_uri = \"http://127.0.0.1:{port}/cb\"\nclient_id = \"mm\"\napi_base = \"{api}\"\n\n[profiles.busy]\ngrant = \"authorization_code\"\ntoken_url = \"{door}/oauth/token\"\nauthorize_url = \"{door}/oauth/authorize\"\nredirect_uri = \"{busy_redirect}\"\nclient_id = \"busy\"\nclient_secret = \"busy-secret\"\nclient_auth = \"post\"\nquiet_window = \"10m\"\n",
        cc("p", &fake, "s", &api),
        cc("wrong", &fake, "not-the-secret", &api),
        cc("flaky", &flaky, "s", &api),
        cc("gone", &fake, "s", &closed),
        base = fake.base,
        door = doorkeeper.base,
        port = tokend_e2e::free_port(),
    );
    let tokend = Tokend::start(&config).await;
    let mut http = tokend.http().await;
    // `busy` in its quiet window (an hour-long token gets up to 450 s of it): its token was
    // handed out, and a refresh waits for the window to pass.
    tokend.log_in("busy").await;
    assert_eq!(http.get("/v1/token/busy").await.status, 200);
    let mut refresher = tokend.client().await;
    let refresh = tokio::spawn(async move { refresher.refresh("busy").await });
    let mut state = String::new();
    let quiet = wait_for(Duration::from_secs(10), async || {
        state = http.get("/v1/status/busy").await.json()["state"].as_str().unwrap_or_default().to_owned();
        (state == "quiet").then_some(())
    })
    .await;
    assert!(quiet.is_some(), "busy never quiet, last {state:?}:\n{}", tokend.log());
    let token = http.get("/v1/token/p").await.json()["access_token"].as_str().unwrap().to_owned();
    let fingerprint = serde_json::json!({ "fingerprint": Fingerprint::of("some other token").to_string() }).to_string();

    let token_route = "/v1/token/{name}";
    let invalidate = "/v1/invalidate/{name}";
    let proxy = "/v1/proxy/{name}/{path}";
    let checks: Vec<(&str, &str, &str, String, u16)> = vec![
        (token_route, "GET", "/v1/token/p", String::new(), 200),
        (token_route, "GET", "/v1/token/p?min_valid=later", String::new(), 400),
        (token_route, "GET", "/v1/token/nope", String::new(), 404),
        (token_route, "GET", "/v1/token/mm", String::new(), 409),
        (token_route, "GET", "/v1/token/wrong", String::new(), 502),
        (token_route, "GET", "/v1/token/flaky", String::new(), 503),
        (invalidate, "POST", "/v1/invalidate/p", serde_json::json!({ "token": token }).to_string(), 200),
        (invalidate, "POST", "/v1/invalidate/p", "[]".into(), 400),
        (invalidate, "POST", "/v1/invalidate/nope", fingerprint.clone(), 404),
        (invalidate, "POST", "/v1/invalidate/mm", fingerprint.clone(), 409),
        (invalidate, "POST", "/v1/invalidate/wrong", fingerprint.clone(), 502),
        (invalidate, "POST", "/v1/invalidate/flaky", fingerprint.clone(), 503),
        (invalidate, "POST", "/v1/invalidate/p", " ".repeat(70_000), 413),
        ("/v1/status", "GET", "/v1/status", String::new(), 200),
        ("/v1/status", "GET", "/v1/status?verbose=1", String::new(), 400),
        ("/v1/status/{name}", "GET", "/v1/status/wrong", String::new(), 200),
        ("/v1/status/{name}", "GET", "/v1/status/busy", String::new(), 200),
        ("/v1/status/{name}", "GET", "/v1/status/nope", String::new(), 404),
        ("/v1/status/{name}", "GET", "/v1/status/p?verbose=1", String::new(), 400),
        (proxy, "GET", "/v1/proxy/p/resource/a?b=c", String::new(), 200),
        (proxy, "POST", "/v1/proxy/p/resource/a", "{\"x\":1}".into(), 200),
        (proxy, "PUT", "/v1/proxy/p/resource/a", "x".into(), 200),
        (proxy, "PATCH", "/v1/proxy/p/resource/a", "x".into(), 200),
        (proxy, "DELETE", "/v1/proxy/p/resource/a", String::new(), 200),
        (proxy, "GET", "/v1/proxy/p/nothing-here", String::new(), 404),
        (proxy, "GET", "/v1/proxy/p/x/../../oauth/token", String::new(), 400),
        (proxy, "GET", "/v1/proxy/nope/resource", String::new(), 404),
        (proxy, "GET", "/v1/proxy/p/resource", String::new(), 200),
        (proxy, "GET", "/v1/proxy/mm/resource", String::new(), 409),
        (proxy, "GET", "/v1/proxy/gone/resource", String::new(), 502),
        (proxy, "GET", "/v1/proxy/flaky/resource", String::new(), 503),
        (proxy, "GET", "/v1/proxy/p/stall", String::new(), 504),
    ];
    let mut failures = Vec::new();
    for (template, method, target, body, status) in checks {
        let answer: Answer = http.request(method, target, &[], body.as_bytes()).await;
        if answer.status != status {
            failures.push(format!("{method} {target}: {} (expected {status}): {:?}", answer.status, answer.body));
            continue;
        }
        let tokend_error = answer.header("tokend-error").map(str::to_owned);
        if let Some(class) = &tokend_error {
            assert_eq!(answer.json()["error"].as_str(), Some(class.as_str()), "{method} {target}");
        }
        // The API's own answers (its 404 here too) are documented as passed through.
        let checked = if template == proxy && tokend_error.is_none() {
            description.check_as(template, &method.to_lowercase(), "default", &answer)
        } else {
            description.check(template, &method.to_lowercase(), &answer)
        };
        if let Err(e) = checked {
            failures.push(e);
        }
    }
    // Methods a route does not take: 405 with Allow, and the error schema.
    for (template, method, target) in [
        (token_route, "DELETE", "/v1/token/p"),
        (invalidate, "GET", "/v1/invalidate/p"),
        ("/v1/status", "PUT", "/v1/status"),
        ("/v1/status/{name}", "POST", "/v1/status/p"),
        (proxy, "TRACE", "/v1/proxy/p/resource"),
        (proxy, "CONNECT", "/v1/proxy/p/resource"),
    ] {
        let answer = http.request(method, target, &[], b"").await;
        if let Err(e) = description.check_not_allowed(template, &method.to_lowercase(), &answer) {
            failures.push(format!("{method} {target}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    refresh.abort();
    // 504 for a token that does not arrive in time cannot be provoked from outside: every
    // request tokend makes to an OAuth server is itself bounded by http_timeout, which is
    // shorter than the request timeout, and its failure answers the waiting clients first.
    let missing = description.unexercised();
    assert_eq!(missing, ["/v1/token/{name} answering default"], "documented but never exercised");
}

/// The running server shows only the states the check above provokes; the document must list
/// them all.
#[test]
fn the_openapi_description_lists_every_profile_state() {
    use ProfileState::*;
    let every = [Empty, Valid, Refreshing, Backoff, NeedsLogin, Failed, Quiet];
    // No wildcard arm: a new state stops this compiling until it is added to `every`.
    for state in every {
        match state {
            Empty | Valid | Refreshing | Backoff | NeedsLogin | Failed | Quiet => {}
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/http-api.openapi.json")).unwrap()).unwrap();
    let listed: Vec<&str> = document["components"]["schemas"]["Status"]["properties"]["state"]["enum"]
        .as_array()
        .expect("Status.state is an enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut expected = every.map(ProfileState::as_str).to_vec();
    let mut listed_sorted = listed.clone();
    expected.sort_unstable();
    listed_sorted.sort_unstable();
    assert_eq!(listed_sorted, expected);
}

/// The document's grant enum names every grant a profile can have.
#[test]
fn the_openapi_description_lists_every_grant() {
    use tokend_proto::Grant::*;
    let every = [ClientCredentials, AuthorizationCode, DeviceCode];
    // No wildcard arm: a new grant stops this compiling until it is added to `every`.
    for grant in every {
        match grant {
            ClientCredentials | AuthorizationCode | DeviceCode => {}
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/http-api.openapi.json")).unwrap()).unwrap();
    let mut listed: Vec<&str> = document["components"]["schemas"]["Status"]["properties"]["grant"]["enum"]
        .as_array()
        .expect("Status.grant is an enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut expected = every.map(tokend_proto::Grant::as_str).to_vec();
    listed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(listed, expected);
}

/// A daemon started by `systemd-socket-activate` on the first connection, as a socket unit
/// would: killed on drop.
struct Activated {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tokend under `systemd-socket-activate`, listening on `listen` with `names`
/// (`--fdname`), with `args` for tokend.
async fn activated(dir: &Path, config: &Path, listen: &[&Path], names: Option<&str>, args: &[&str]) -> Activated {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = dir.join("tokend.log");
    let mut command = std::process::Command::new("systemd-socket-activate");
    for path in listen {
        command.arg("-l").arg(path);
    }
    if let Some(names) = names {
        command.arg(format!("--fdname={names}"));
    }
    // It passes its children only the environment it is told to.
    command
        .arg("-E")
        .arg("RUST_LOG=tokend=debug")
        .arg("-E")
        .arg(format!("XDG_RUNTIME_DIR={}", dir.join("xdg").display()))
        .arg(bin("tokend"))
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env_remove("TOKEND_HTTP_SOCKET")
        .env_remove("TOKEND_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let activated = Activated { child: command.spawn().unwrap(), log };
    // Its sockets are bound, then listened on, the last one last. This first connection to it
    // starts tokend.
    let last = listen.last().unwrap();
    let listening = || std::os::unix::net::UnixStream::connect(last).is_ok();
    assert!(tokend_e2e::eventually(Duration::from_secs(10), listening).await);
    activated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_hands_tokend_both_sockets_by_path_or_by_name() {
    require!(Need::Program("systemd-socket-activate"));
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    tokend_e2e::write_private(&config, &cc("p", &fake, "s", &fake.url("/api")));
    let run = dir.path().join("run");
    let (main, http) = (run.join("tokend.sock"), run.join("http.sock"));
    let tokenctl = |socket: &Path| {
        std::process::Command::new(bin("tokenctl")).args(["token", "p"]).env("TOKEND_SOCKET", socket).output().unwrap()
    };

    // As tokend.socket passes them: two sockets of one unit, told apart by their paths.
    let daemon =
        activated(dir.path(), &config, &[&main, &http], None, &["--socket", &main.display().to_string()]).await;
    let answer = Connection::unix(&http).await.get("/v1/token/p").await;
    assert_eq!(answer.status, 200);
    assert!(fake.accepts(answer.json()["access_token"].as_str().unwrap()));
    assert!(tokenctl(&main).status.success());
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert_eq!(log.matches("using the socket passed by systemd").count(), 2, "{log}");
    drop(daemon);

    // Named (two units with FileDescriptorName=), in any order and at any path.
    let (a, b) = (run.join("a.sock"), run.join("b.sock"));
    let elsewhere = dir.path().join("unused/tokend.sock");
    let daemon =
        activated(dir.path(), &config, &[&a, &b], Some("http:tokend"), &["--socket", &elsewhere.display().to_string()])
            .await;
    assert_eq!(Connection::unix(&a).await.get("/v1/status/p").await.status, 200, "a is the HTTP socket");
    assert!(tokenctl(&b).status.success(), "b is the protocol socket");
    assert!(!elsewhere.exists() && !elsewhere.with_file_name("http.sock").exists(), "nothing bound of its own");
    drop(daemon);

    // An older unit that passes the protocol socket alone, under any name and path: tokend
    // takes it, and binds the HTTP socket itself, beside its own socket path (replacing the
    // stale one the first daemon left).
    let only = run.join("only.sock");
    let daemon =
        activated(dir.path(), &config, &[&only], Some("tokend.socket"), &["--socket", &main.display().to_string()])
            .await;
    assert!(tokenctl(&only).status.success());
    assert_eq!(Connection::unix(&http).await.get("/v1/status").await.status, 200);
    assert!(std::os::unix::net::UnixStream::connect(&main).is_err(), "the protocol socket is the one passed");
    drop(daemon);
}
