//! Never surprised by a dead login: tokend learns when a login ends (from `refresh_expires_in`,
//! a JWT refresh token's `exp`, or `login_lifetime`), shows it in `tokenctl status`, warns
//! ahead of time (log, `watch`, notify command), and when the login has ended asks for a new
//! one instead of trying a dead refresh token. Also: a JWT access token without `expires_in` is
//! refreshed by its `exp`, and garbage JWTs change nothing but the schedule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokend_e2e::fake::{ClientAuth, Fault, LoginEnd, Style};
use tokend_e2e::{FakeProvider, Lines, Movemint, Tokend, eventually, stderr, stdout};

/// A Movemint-style provider for the login profile `mm`, whose logins end `login` after they
/// began, said as `end` says; access tokens live an hour.
async fn provider(login: Duration, end: LoginEnd) -> (Movemint, String) {
    let fake = Movemint::start().await;
    fake.set_login_lifetime(Some(login), end);
    let config = fake.config();
    (fake, config)
}

/// Starts `tokenctl --json watch mm`; returns the process and its output, line by line.
fn watch(tokend: &Tokend) -> (tokio::process::Child, Lines) {
    tokend.tokenctl_lines(&["--json", "watch", "mm"])
}

/// The next line of `lines` that contains `needle`, within 30 s.
async fn next_line_with(lines: &mut Lines, needle: &str) -> String {
    let wait = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the watch ended before {needle:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("no {needle:?} within 30s"))
}

async fn status(tokend: &Tokend) -> serde_json::Value {
    serde_json::from_str(&tokend.tokenctl_ok(&["--json", "status", "mm"]).await).unwrap()
}

fn time(value: &serde_json::Value) -> SystemTime {
    let text = value.as_str().unwrap_or_else(|| panic!("a time: {value}"));
    let t = humantime::parse_rfc3339(text).unwrap();
    assert!(t > UNIX_EPOCH);
    t
}

/// Whether `t` is within a few seconds of `expected` (the login takes a moment, and times are
/// counted from the whole second a request was sent in).
fn about(t: SystemTime, expected: SystemTime) -> bool {
    let gap = t.duration_since(expected).unwrap_or_else(|e| e.duration());
    gap < Duration::from_secs(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_when_the_login_ends_whichever_way_it_is_known() {
    let days = |n: u64| Duration::from_secs(n * 24 * 3600);
    for (end, extra, source, lifetime) in [
        (LoginEnd::RefreshExpiresIn, "", "refresh_expires_in", days(2)),
        (LoginEnd::JwtRefreshToken, "", "refresh_token_exp", days(2)),
        (LoginEnd::Silent, "login_lifetime = \"30days\"\n", "login_lifetime", days(30)),
    ] {
        let (_fake, config) = provider(days(2), end).await;
        let tokend = Tokend::start(&(config + extra)).await;
        let before = status(&tokend).await;
        assert!(before["login_expiry"].is_null(), "nothing known before a login: {before}");
        let logged_in = SystemTime::now();
        tokend.log_in("mm").await;

        let s = status(&tokend).await;
        let expiry = &s["login_expiry"];
        assert_eq!(expiry["source"], source, "{s}");
        let expires = time(&expiry["expires_at"]);
        assert!(about(expires, logged_in + lifetime), "{source}: {s}");
        let lead = (lifetime / 10).min(days(1));
        assert_eq!(time(&expiry["warn_at"]), expires - lead, "a day ahead, or a tenth for short logins: {s}");
        assert_eq!(expiry["warned"], false, "{s}");

        let text = tokend.tokenctl_ok(&["status", "mm"]).await;
        assert!(text.contains("login expires") && text.contains(&format!("from {source}")), "{text}");
        let table = tokend.tokenctl_ok(&["status"]).await;
        assert!(table.contains("login expires in") && table.contains(source), "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_ends_soon_is_warned_about_once_through_watch_the_log_and_the_notify_command() {
    let (fake, config) = provider(Duration::from_secs(20), LoginEnd::RefreshExpiresIn).await;
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    let config =
        config + &format!("notify_command = 'echo \"$TOKEND_EVENT $TOKEND_EXPIRES_AT\" >> {}'\n", notes.display());
    let mut tokend = Tokend::start(&config).await;
    let (_watcher, mut watch) = watch(&tokend);
    tokend.log_in("mm").await;
    let s = status(&tokend).await;
    let (expires, warn_at) = (time(&s["login_expiry"]["expires_at"]), time(&s["login_expiry"]["warn_at"]));
    // A tenth of a 20-second login: 2 s, shown to the second.
    let lead = expires.duration_since(warn_at).unwrap();
    assert!(lead >= Duration::from_secs(2) && lead <= Duration::from_secs(3), "{s}");

    let line = next_line_with(&mut watch, "login_expiring").await;
    let received = SystemTime::now();
    assert!(received >= warn_at && received < expires, "the warning comes at its time: {line}\n{s}");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["profile"], "mm");
    assert_eq!(time(&event["expires_at"]), expires);
    assert!(tokend.log().contains("the login expires in"), "{}", tokend.log());
    let at = tokend_proto::time::rfc3339(expires);
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&notes)
            .is_ok_and(|t| t.contains(&format!("login-expiring {at}"))))
        .await,
        "the notify command ran: {:?}\n{}",
        std::fs::read_to_string(&notes),
        tokend.log()
    );
    let s = status(&tokend).await;
    assert_eq!(s["login_expiry"]["warned"], true, "{s}");
    assert!(s["action"].as_str().unwrap().contains("tokenctl login mm"), "{s}");

    // A restart before the end does not warn again: by the time the login-needed notification
    // for the end arrives, a repeated warning would have come before it.
    tokend.restart().await;
    assert!(
        eventually(Duration::from_secs(30), || std::fs::read_to_string(&notes)
            .is_ok_and(|t| t.contains("login-needed")))
        .await,
        "the end was announced: {:?}\n{}",
        std::fs::read_to_string(&notes),
        tokend.log()
    );
    let notes = std::fs::read_to_string(&notes).unwrap();
    assert_eq!(notes.matches("login-expiring").count(), 1, "warned once: {notes}");
    assert_eq!(fake.login_expired_refreshes(), 0, "{}", tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_login_needs_a_login_and_its_dead_refresh_token_is_not_tried() {
    for (end, extra) in [
        (LoginEnd::RefreshExpiresIn, ""),
        (LoginEnd::JwtRefreshToken, ""),
        (LoginEnd::Silent, "login_lifetime = \"6s\"\n"),
    ] {
        // Access tokens of 4 s are refreshed every 2 s, right up to the end of a 6 s login.
        let (fake, config) = provider(Duration::from_secs(6), end).await;
        fake.set_lifetime(Duration::from_secs(4));
        let tokend = Tokend::start(&(config + extra)).await;
        tokend.log_in("mm").await;
        let mut last = serde_json::Value::Null;
        let ended = eventually(Duration::from_secs(30), || {
            last = serde_json::from_str(
                &std::process::Command::new(tokend_e2e::bin("tokenctl"))
                    .args(["--json", "status", "mm"])
                    .env("TOKEND_SOCKET", &tokend.socket)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default(),
            )
            .unwrap_or_default();
            last["state"] == "needs-login"
        })
        .await;
        assert!(ended, "{end:?}: {last}\n{}", tokend.log());
        assert!(last["action"].as_str().unwrap().contains("the login expired at"), "{last}");
        let requests = fake.token_requests();
        let out = tokend.tokenctl(&["refresh", "mm"]).await;
        assert_eq!(out.status.code(), Some(5), "login needed: {}", stderr(&out));
        assert_eq!(fake.token_requests(), requests, "{end:?}: a refresh by hand sends nothing either");
        assert!(stderr(&out).contains("tokenctl login mm"), "{}", stderr(&out));
        assert_eq!(
            fake.login_expired_refreshes(),
            0,
            "{end:?}: the dead refresh token was never sent\n{}",
            tokend.log()
        );
        // Once the access token has run out too, clients are told to log in.
        assert!(
            eventually(Duration::from_secs(10), || std::process::Command::new(tokend_e2e::bin("tokenctl"))
                .args(["token", "mm"])
                .env("TOKEND_SOCKET", &tokend.socket)
                .output()
                .is_ok_and(|o| o.status.code() == Some(5)))
            .await,
            "{}",
            tokend.log()
        );
        // A new login starts afresh.
        tokend.log_in("mm").await;
        assert_eq!(status(&tokend).await["state"], "valid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_ends_on_time_while_its_access_token_is_still_served() {
    let (fake, config) = provider(Duration::from_secs(5), LoginEnd::JwtRefreshToken).await;
    let tokend = Tokend::start(&config).await;
    tokend.log_in("mm").await;
    let (_watcher, mut watch) = watch(&tokend);
    let line = next_line_with(&mut watch, "needs-login").await;
    assert!(line.contains("the login expired at"), "{line}");
    let token = tokend.tokenctl_ok(&["token", "mm"]).await;
    assert!(fake.accepts(token.trim()), "the access token still works, and is served until it expires");
    assert_eq!(fake.token_requests(), 1, "only the login: {}", tokend.log());
}

/// A Minut-style provider whose access tokens are JWTs that live `lifetime`, sent without
/// `expires_in`, for the client_credentials profile `p`.
async fn minut_with_jwts(lifetime: Duration) -> (FakeProvider, Tokend) {
    let fake = FakeProvider::start().await;
    fake.client("p", "s", ClientAuth::Basic);
    fake.set_style(Style::NoExpiry);
    fake.set_jwt_access_tokens(true);
    fake.set_lifetime(lifetime);
    let config = format!(
        r#"
[profiles.p]
grant = "client_credentials"
token_url = "{}"
client_id = "p"
client_secret = "s"
default_expires_in = "1h"
"#,
        fake.url("/oauth/token")
    );
    let tokend = Tokend::start(&config).await;
    (fake, tokend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_expires_in_a_jwt_access_token_is_refreshed_by_its_exp() {
    let (fake, tokend) = minut_with_jwts(Duration::from_secs(6)).await;
    let token = tokend.tokenctl_ok(&["token", "p", "--format", "json"]).await;
    let token: serde_json::Value = serde_json::from_str(&token).unwrap();
    assert!(fake.accepts(token["access_token"].as_str().unwrap()));
    let s: serde_json::Value = serde_json::from_str(&tokend.tokenctl_ok(&["--json", "status", "p"]).await).unwrap();
    let lifetime = time(&s["token"]["expires_at"]).duration_since(time(&s["token"]["obtained_at"])).unwrap();
    assert!(lifetime <= Duration::from_secs(6) && lifetime > Duration::from_secs(4), "by exp, not 1h: {s}");
    // Refreshed half-way through its 6 s, not after default_expires_in's hour.
    assert!(
        eventually(Duration::from_secs(20), || fake.token_requests() >= 2).await,
        "refreshed near exp: {}",
        tokend.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_jwts_fall_back_to_the_defaults_and_break_nothing() {
    let (fake, tokend) = minut_with_jwts(Duration::from_secs(3600)).await;
    tokend.tokenctl_ok(&["token", "p"]).await;
    let part = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
    let header = part(r#"{"alg":"RS256"}"#);
    let past = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 3600;
    for payload in [
        "~~~".to_owned(),
        part("not json"),
        part(r#"{"exp":"tomorrow"}"#),
        part(r#"{"exp":1e300}"#),
        part(r#"{"exp":-1}"#),
        part(&format!(r#"{{"exp":{past}}}"#)),
        part(&format!(r#"{{"exp":{}}}"#, "9".repeat(500))),
    ] {
        fake.fail_next([Fault::Field("access_token", format!("{header}.{payload}.sig").into())]);
        let out = tokend.tokenctl(&["--json", "refresh", "p"]).await;
        assert!(out.status.success(), "{payload}: {}\n{}", stderr(&out), tokend.log());
        let token: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let left = Duration::from_secs(token["expires_in"].as_u64().unwrap());
        assert!(left > Duration::from_secs(3500), "default_expires_in applies: {payload}: {token}");
    }
    assert!(tokend.log().contains("looks like a JWT"), "{}", tokend.log());
    assert!(tokend.log().contains("not after the time it was issued"), "{}", tokend.log());
    tokend.tokenctl_ok(&["ping"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_jwt_refresh_token_leaves_the_login_end_unknown() {
    let (fake, config) = provider(Duration::from_secs(3600), LoginEnd::Silent).await;
    let tokend = Tokend::start(&config).await;
    let header = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, r#"{"alg":"none"}"#);
    fake.fail_next([Fault::Field("refresh_token", format!("{header}.bm90IGpzb24.").into())]);
    tokend.log_in("mm").await;
    let s = status(&tokend).await;
    assert!(s["login_expiry"].is_null(), "{s}");
    assert_eq!(s["has_refresh_token"], true, "{s}");
    assert!(
        tokend.log().contains("the refresh token looks like a JWT, but its payload is not JSON"),
        "{}",
        tokend.log()
    );
}
