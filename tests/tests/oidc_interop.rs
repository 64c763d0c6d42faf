//! Interop with oidc-provider, an OAuth 2 server written by others: client_credentials with
//! both client authentication methods, the authorization code flow with PKCE through its real
//! login and consent pages, refresh token rotation across restarts, revocation at logout,
//! profiles configured by nothing but its issuer (OpenID Connect Discovery), and the device
//! authorization grant approved through its own user code pages.

use std::time::Duration;

use tokend_e2e::oidc::{OidcProvider, browser_login, device_approval};
use tokend_e2e::{Need, Tokend, free_port, require};

fn cc_config(oidc: &OidcProvider) -> String {
    format!(
        r#"
[profiles.basic]
grant = "client_credentials"
token_url = "{token}"
client_id = "cc-basic"
client_secret = "cc-basic-secret"
scopes = ["api:read"]

[profiles.post]
grant = "client_credentials"
token_url = "{token}"
client_id = "cc-post"
client_secret = "cc-post-secret"
client_auth = "post"
scopes = ["api:read"]
"#,
        token = oidc.url("/token")
    )
}

fn web_config(oidc: &OidcProvider, redirect: &str) -> String {
    format!(
        r#"
[profiles.web]
grant = "authorization_code"
token_url = "{issuer}/token"
authorize_url = "{issuer}/auth"
redirect_uri = "{redirect}"
revoke_url = "{issuer}/token/revocation"
client_id = "web"
client_secret = "web-secret"
client_auth = "post"
scopes = ["api:read"]
"#,
        issuer = oidc.issuer
    )
}

async fn log_in(tokend: &Tokend, redirect: &str) {
    let mut login = tokend.spawn_tokenctl(&["login", "web", "--no-browser"]);
    let url = login.login_url().await;
    let back = browser_login(&url, redirect).await;
    assert!(back.contains("iss="), "oidc-provider adds iss to the redirect (RFC 9207): {back}");
    let page = tokend_e2e::http().build().unwrap().get(&back).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_basic_and_with_post() {
    require!(Need::Node);
    let oidc = OidcProvider::start("http://127.0.0.1:1/unused", Duration::from_secs(3600)).await;
    let tokend = Tokend::start(&cc_config(&oidc)).await;
    for (profile, client) in [("basic", "cc-basic"), ("post", "cc-post")] {
        let token = tokend.tokenctl_ok(&["token", profile]).await;
        let info = oidc.introspect(token.trim()).await;
        assert_eq!(info["active"], true, "{profile}: {info}");
        assert_eq!(info["client_id"], client);
        assert_eq!(info["scope"], "api:read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_code_flow_with_pkce_through_real_login_and_consent_pages() {
    require!(Need::Node);
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let oidc = OidcProvider::start(&redirect, Duration::from_secs(3600)).await;
    let tokend = Tokend::start(&web_config(&oidc, &redirect)).await;
    log_in(&tokend, &redirect).await;
    let token = tokend.tokenctl_ok(&["token", "web"]).await;
    let info = oidc.introspect(token.trim()).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "alice");
    assert_eq!(info["client_id"], "web");
    let refresh = tokend.saved_refresh_token("web").expect("oidc-provider issued a refresh token");
    assert_eq!(oidc.introspect(&refresh).await["active"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_rotation_over_several_short_lifetimes_and_a_restart() {
    require!(Need::Node);
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let oidc = OidcProvider::start(&redirect, Duration::from_secs(2)).await;
    let mut tokend = Tokend::start(&web_config(&oidc, &redirect)).await;
    log_in(&tokend, &redirect).await;
    let mut refresh_tokens = std::collections::HashSet::new();
    // Two refreshes before the restart and two after it, at least.
    for (round, wanted) in [(0, 2), (1, 2)] {
        let mut client = tokend.client().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen_this_round = std::collections::HashSet::new();
        // The refresh token saved at login or restart counts as the round's first.
        while seen_this_round.len() <= wanted {
            assert!(std::time::Instant::now() < deadline, "round {round}: {wanted} refreshes within 30s");
            let token = client.token("web").await.expect("a token");
            assert!(oidc.is_active(token.access_token.expose()).await, "round {round}: every served token is active");
            seen_this_round.insert(tokend.saved_refresh_token("web").unwrap());
            // A program asking now and then through each token's life, not only right after a
            // refresh.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        refresh_tokens.extend(seen_this_round);
        if round == 0 {
            tokend.stop().await;
            tokend.restart().await;
        }
    }
    assert!(refresh_tokens.len() >= 4, "the refresh token rotated repeatedly: {}", refresh_tokens.len());
    // The saved refresh token is compared with the server's view only while tokend is not
    // rotating it, so that it cannot be one the server retired a moment ago.
    let alive =
        tokend.at_rest("web", async |newest| oidc.is_active(&newest.expect("a saved refresh token")).await).await;
    assert!(
        alive,
        "the grant is alive: no rotated-out refresh token was reused (oidc-provider revokes the grant if one is)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_and_introspection_reports_the_tokens_inactive() {
    require!(Need::Node);
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let oidc = OidcProvider::start(&redirect, Duration::from_secs(3600)).await;
    let tokend = Tokend::start(&web_config(&oidc, &redirect)).await;
    log_in(&tokend, &redirect).await;
    let token = tokend.tokenctl_ok(&["token", "web"]).await.trim().to_owned();
    let refresh = tokend.saved_refresh_token("web").unwrap();
    assert!(oidc.is_active(&token).await && oidc.is_active(&refresh).await);
    let out = tokend.tokenctl_ok(&["logout", "web"]).await;
    assert!(out.contains("revoked at the server"), "{out}");
    assert!(!oidc.is_active(&refresh).await, "the refresh token is revoked");
    assert!(!oidc.is_active(&token).await, "the access token is revoked");
    assert_eq!(tokend.tokenctl(&["token", "web"]).await.status.code(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_configured_only_by_issuer_do_client_credentials_and_the_browser_login() {
    require!(Need::Node);
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let oidc = OidcProvider::start(&redirect, Duration::from_secs(3600)).await;
    let config = format!(
        r#"
[profiles.cc]
grant = "client_credentials"
issuer = "{issuer}"
client_id = "cc-basic"
client_secret = "cc-basic-secret"
scopes = ["api:read"]
{web}"#,
        issuer = oidc.issuer,
        web = oidc.web_profile("web", &redirect)
    );
    let tokend = Tokend::start(&config).await;

    let token = tokend.tokenctl_ok(&["token", "cc"]).await;
    let info = oidc.introspect(token.trim()).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "cc-basic");

    // The login goes to the discovered authorization endpoint, and its redirect's `iss` is
    // checked against the issuer (RFC 9207).
    log_in(&tokend, &redirect).await;
    let token = tokend.tokenctl_ok(&["token", "web"]).await.trim().to_owned();
    let info = oidc.introspect(&token).await;
    assert_eq!((info["active"].clone(), info["sub"].clone()), (true.into(), "alice".into()), "{info}");

    // Logout revokes at the discovered revocation endpoint.
    let out = tokend.tokenctl_ok(&["logout", "web"]).await;
    assert!(out.contains("revoked at the server"), "{out}");
    assert!(!oidc.is_active(&token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_flow_approved_through_oidc_providers_own_pages() {
    require!(Need::Node);
    let oidc = OidcProvider::start("http://127.0.0.1:1/unused", Duration::from_secs(3600)).await;
    // Nothing but the issuer: discovery supplies the token and device authorization endpoints.
    let config = format!(
        "[profiles.tv]\ngrant = \"device_code\"\nissuer = \"{}\"\nclient_id = \"tv\"\nscopes = [\"openid\", \"api:read\"]\n",
        oidc.issuer
    );
    let tokend = Tokend::start(&config).await;
    // A login needs the discovered device endpoint: wait (bounded) until discovery is done.
    let mut state = serde_json::Value::Null;
    for _ in 0..200 {
        let status: serde_json::Value =
            serde_json::from_str(&tokend.tokenctl_ok(&["--json", "status", "tv"]).await).unwrap();
        state = status["state"].clone();
        if state == "needs-login" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "needs-login", "discovery finished within 10 s\n{}", tokend.log());
    let mut login = tokend.spawn_tokenctl(&["--json", "login", "tv"]);
    let code: serde_json::Value = serde_json::from_str(&login.stdout_line().await).unwrap();
    assert_eq!(code["verification_uri"], oidc.url("/device"), "{code}");
    let user_code = code["user_code"].as_str().unwrap();
    let complete = code["verification_uri_complete"].as_str().expect("oidc-provider sends the complete URI");
    assert!(complete.contains(user_code), "{complete}");

    let page = device_approval(complete).await;
    assert!(page.contains("Sign-in Success"), "{page}");
    let outcome: serde_json::Value = serde_json::from_str(&login.stdout_line().await).unwrap();
    assert_eq!(outcome["logged_in"], true, "{outcome}");
    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", tokend.log());

    let token = tokend.tokenctl_ok(&["token", "tv"]).await;
    let info = oidc.introspect(token.trim()).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "tv");
    assert_eq!(info["sub"], "alice", "the user who approved on the other device");
    // And it stays logged in like a browser login: the refresh token works and rotates.
    let first_refresh_token = tokend.saved_refresh_token("tv").expect("a refresh token is held");
    let refreshed = tokend.tokenctl_ok(&["refresh", "tv"]).await;
    assert_ne!(refreshed.trim(), token.trim());
    assert!(oidc.is_active(refreshed.trim()).await);
    assert_ne!(tokend.saved_refresh_token("tv").unwrap(), first_refresh_token, "rotated");
}
