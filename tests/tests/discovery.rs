//! Configuring a profile by its issuer alone: the endpoints come from the server's metadata
//! (RFC 8414, then OpenID Connect Discovery), are cached in the state directory for restarts
//! while the server is away, and `tokend --check-config` says where each came from — against the
//! fake provider's metadata documents, including ones that lie or misbehave.

use std::time::Duration;

use tokend_e2e::fake::{ClientAuth, Metadata, MetadataBody};
use tokend_e2e::{FakeProvider, Tokend, bin, stderr, stdout, wait_for};

/// A provider with a client_credentials client `app`, publishing `metadata`.
async fn provider(metadata: Metadata) -> FakeProvider {
    let fake = FakeProvider::start().await;
    fake.client("app", "app-secret", ClientAuth::Basic);
    fake.publish(Some(metadata));
    fake
}

fn rfc8414() -> Metadata {
    Metadata { rfc8414: true, ..Metadata::default() }
}

/// A client_credentials profile `name` configured by `issuer` alone.
fn by_issuer(name: &str, issuer: &str) -> String {
    format!(
        r#"
[profiles.{name}]
grant = "client_credentials"
issuer = "{issuer}"
client_id = "app"
client_secret = "app-secret"
retry_min = "1s"
retry_max = "1s"
"#
    )
}

/// Polls `tokenctl ARGS` until its output contains `needle` (at most 20 s); returns it.
async fn until_output(tokend: &Tokend, args: &[&str], needle: &str) -> String {
    let mut last = String::new();
    let found = wait_for(Duration::from_secs(20), async || {
        let out = tokend.tokenctl(args).await;
        last = stdout(&out) + &stderr(&out);
        last.contains(needle).then(|| last.clone())
    })
    .await;
    found.unwrap_or_else(|| panic!("tokenctl {args:?} never said {needle:?}; last:\n{last}\n{}", tokend.log()))
}

fn check_config(tokend: &Tokend) -> String {
    let out = std::process::Command::new(bin("tokend"))
        .arg("--check-config")
        .arg(&tokend.config)
        .arg("--state-dir")
        .arg(&tokend.state)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_configured_only_by_issuer_uses_the_endpoints_it_publishes() {
    let fake = provider(rfc8414()).await;
    let tokend = Tokend::start(&by_issuer("api", &fake.issuer())).await;
    let token = tokend.tokenctl_ok(&["token", "api"]).await;
    assert!(fake.accepts(token.trim()), "a token from the discovered token endpoint");
    assert_eq!(fake.requests()[0].path, "/oauth/token");
    assert_eq!(fake.metadata_requests(), ["/.well-known/oauth-authorization-server"]);
    let info = tokend.tokenctl_ok(&["info", "api"]).await;
    assert!(info.contains("resource_owner_id"), "the info URL is the published userinfo_endpoint: {info}");
    assert_eq!(fake.info_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_rfc_8414_document_the_openid_configuration_is_used() {
    let fake = provider(Metadata { openid: true, ..Metadata::default() }).await;
    let tokend = Tokend::start(&by_issuer("api", &fake.issuer())).await;
    let token = tokend.tokenctl_ok(&["token", "api"]).await;
    assert!(fake.accepts(token.trim()));
    assert_eq!(
        fake.metadata_requests(),
        ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"],
        "RFC 8414's document first, then OpenID Connect's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_with_a_path_is_looked_up_where_each_specification_puts_it() {
    let rfc = provider(Metadata { issuer_path: "/tenant/a".into(), rfc8414: true, ..Metadata::default() }).await;
    let oidc = provider(Metadata { issuer_path: "/tenant/b".into(), openid: true, ..Metadata::default() }).await;
    let config = by_issuer("a", &rfc.issuer()) + &by_issuer("b", &oidc.issuer());
    let tokend = Tokend::start(&config).await;
    assert!(rfc.accepts(tokend.tokenctl_ok(&["token", "a"]).await.trim()));
    assert!(oidc.accepts(tokend.tokenctl_ok(&["token", "b"]).await.trim()));
    assert_eq!(
        rfc.metadata_requests(),
        ["/.well-known/oauth-authorization-server/tenant/a"],
        "RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path"
    );
    assert_eq!(
        oidc.metadata_requests(),
        ["/.well-known/oauth-authorization-server/tenant/b", "/tenant/b/.well-known/openid-configuration"],
        "OpenID Connect Discovery appends it to the issuer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_naming_another_issuer_is_refused_and_other_profiles_carry_on() {
    let liar = provider(Metadata {
        rfc8414: true,
        openid: true,
        issuer_override: Some("https://evil.example".into()),
        ..Metadata::default()
    })
    .await;
    let good = provider(rfc8414()).await;
    let tokend = Tokend::start(&(by_issuer("liar", &liar.issuer()) + &by_issuer("good", &good.issuer()))).await;
    assert!(good.accepts(tokend.tokenctl_ok(&["token", "good"]).await.trim()));

    let status = until_output(&tokend, &["status", "liar"], "backoff").await;
    assert!(status.contains("names issuer \"https://evil.example\"") && status.contains("RFC 8414 §3.3"), "{status}");
    assert!(status.contains("check `issuer`"), "status says what to do: {status}");
    let out = tokend.tokenctl(&["token", "liar"]).await;
    assert_eq!(out.status.code(), Some(6), "an upstream failure: {}", stderr(&out));
    assert!(stderr(&out).contains("RFC 8414 §3.3"), "{}", stderr(&out));
    assert_eq!(liar.token_requests(), 0, "nothing was sent to the endpoints it named");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_discovery_is_retried_and_the_profile_starts_once_it_succeeds() {
    let fake = provider(rfc8414()).await;
    fake.publish(None);
    let tokend = Tokend::start(&by_issuer("api", &fake.issuer())).await;
    let status = until_output(&tokend, &["status", "api"], "not found (HTTP 404)").await;
    assert!(status.contains("backoff") && status.contains("retries by itself"), "{status}");
    let tried = fake.metadata_requests().len();
    fake.publish(Some(rfc8414()));
    until_output(&tokend, &["status", "api"], "valid").await;
    assert!(fake.metadata_requests().len() > tried, "retried");
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "api"]).await.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_server_is_unreachable_uses_the_cached_metadata() {
    let fake = provider(rfc8414()).await;
    let addr = fake.addr;
    let mut tokend = Tokend::start(&by_issuer("api", &fake.issuer())).await;
    let first = tokend.tokenctl_ok(&["token", "api"]).await;
    tokend.stop().await;
    drop(fake);

    tokend.restart().await;
    let served = tokend.tokenctl_ok(&["token", "api"]).await;
    assert_eq!(served, first, "the profile runs (and serves its saved token) though the issuer is unreachable");
    assert!(tokend.log().contains("using the cached metadata"), "{}", tokend.log());

    // The server comes back without its metadata: the cached token endpoint is what works.
    let back = FakeProvider::start_on(&addr.to_string()).await;
    back.client("app", "app-secret", ClientAuth::Basic);
    let fresh = tokend.tokenctl_ok(&["refresh", "api"]).await;
    assert!(back.accepts(fresh.trim()), "a token from the cached token endpoint");
    assert!(back.metadata_requests().is_empty(), "fresh cached metadata is not fetched again at start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_each_endpoint_and_where_it_came_from() {
    let fake = provider(rfc8414()).await;
    let config = by_issuer("api", &fake.issuer())
        .replace("client_id", &format!("revoke_url = \"{}\"\nclient_id", fake.url("/my/revoke")));
    let mut tokend = Tokend::start(&config).await;
    let base = fake.base.clone();

    let now = check_config(&tokend);
    assert!(now.contains("valid, 1 profile: api"), "{now}");
    assert!(
        now.contains(&format!(
            "token_url                 {base}/oauth/token (discovered now, {base}/.well-known/oauth-authorization-server)"
        )),
        "{now}"
    );
    assert!(now.contains(&format!("revoke_url                {base}/my/revoke (config)")), "{now}");
    assert!(now.contains(&format!("info_url                  {base}/oauth/token/info (discovered now")), "{now}");

    tokend.tokenctl_ok(&["token", "api"]).await;
    tokend.stop().await;
    drop(fake);
    let cached = check_config(&tokend);
    assert!(cached.contains(&format!("token_url                 {base}/oauth/token (cache, fetched ")), "{cached}");
    assert!(cached.contains("ago from") && cached.contains("using the cached copy"), "{cached}");

    std::fs::remove_dir_all(tokend.state.join("discovery")).unwrap();
    let nothing = check_config(&tokend);
    assert!(nothing.contains("token_url                 -"), "{nothing}");
    assert!(nothing.contains("nothing is cached") && nothing.contains("cannot get tokens"), "{nothing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_metadata_is_refused_with_a_clear_reason() {
    let huge = provider(Metadata { rfc8414: true, body: Some(MetadataBody::Huge), ..Metadata::default() }).await;
    let garbage = provider(Metadata { rfc8414: true, body: Some(MetadataBody::Garbage), ..Metadata::default() }).await;
    let plain = provider(Metadata {
        rfc8414: true,
        token_endpoint: Some("http://tokens.example/token".into()),
        ..Metadata::default()
    })
    .await;
    let config = by_issuer("huge", &huge.issuer())
        + &by_issuer("garbage", &garbage.issuer())
        + &by_issuer("plain", &plain.issuer());
    let tokend = Tokend::start(&config).await;
    until_output(&tokend, &["status", "huge"], "larger than 1024 KiB").await;
    until_output(&tokend, &["status", "garbage"], "not JSON").await;
    let status = until_output(&tokend, &["status", "plain"], "token_endpoint").await;
    assert!(status.contains("plain http"), "{status}");
    tokend.tokenctl_ok(&["ping"]).await;
}
