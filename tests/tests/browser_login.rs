//! The browser login, in a real browser: `tokenctl login` opens headless Chromium through
//! `$BROWSER`, the browser goes through oidc-provider's real login and consent pages (typed into
//! and clicked as a user would) and follows the redirect to tokend's loopback listener, and the
//! user sees tokend's last page: logged in, for which profile, close the tab — or why not and
//! what to run next. `tests/src/browser.rs` has the machinery.

use std::time::Duration;

use tokend_e2e::browser::Browser;
use tokend_e2e::oidc::OidcProvider;
use tokend_e2e::{Need, Running, Tokend, free_port, require};

/// A `tokenctl login` under way in a real browser, signed in and at the provider's consent page.
struct Login {
    oidc: OidcProvider,
    tokend: Tokend,
    browser: Browser,
    login: Running,
    redirect: String,
}

impl Login {
    /// Starts the provider, tokend and the browser, runs `tokenctl login` with the browser as
    /// `$BROWSER`, signs in on oidc-provider's login page and waits for its consent page.
    async fn at_consent() -> Login {
        let redirect = format!("http://127.0.0.1:{}/callback", free_port());
        let oidc = OidcProvider::start(&redirect, Duration::from_secs(3600)).await;
        let tokend = Tokend::start(&oidc.web_profile("movemint", &redirect)).await;
        let browser = Browser::start().await;
        let login = tokend.spawn_tokenctl_with_env(&["login", "movemint"], &browser.env());
        browser.open_launched().await;
        browser.type_into(&browser.find("input[name=login]").await, "alice").await;
        browser.type_into(&browser.find("input[name=password]").await, "any").await;
        browser.click(&browser.find("button[type=submit]").await).await;
        browser.find("input[name=prompt][value=consent]").await;
        Login { oidc, tokend, browser, login, redirect }
    }
}

/// Waits until the browser shows tokend's page on the redirect URI; returns the page's text.
async fn tokends_page(browser: &Browser, redirect: &str) -> String {
    browser.find("main > h1").await;
    let url = browser.url().await;
    assert!(url.starts_with(redirect), "the page is tokend's, on the redirect URI: {url}");
    browser.text(&browser.find("main").await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_logs_in_through_the_providers_pages_and_lands_on_tokends_page() {
    require!(Need::Node, Need::Program("chromium"), Need::Program("chromedriver"));
    let Login { oidc, tokend, browser, login, redirect } = Login::at_consent().await;
    browser.click(&browser.find("button[type=submit]").await).await;
    let page = tokends_page(&browser, &redirect).await;

    assert!(page.starts_with("Logged in"), "{page}");
    assert!(page.contains("profile movemint"), "names the profile: {page}");
    assert!(page.contains("tokenctl token movemint"), "says how programs get the token: {page}");
    assert!(page.contains("You can close this tab."), "{page}");
    assert_eq!(browser.title().await, "tokend: logged in to movemint");
    let main = browser.find("main").await;
    assert_eq!(
        browser.css(&main, "border-left-color").await,
        "rgba(46, 125, 50, 1)",
        "the page's style applies under its Content-Security-Policy"
    );
    let shot = browser.screenshot("login-done.png").await;
    eprintln!("screenshot: {}", shot.display());

    let (exit, output) = login.finish().await;
    assert!(exit.success(), "{output}\n{}", tokend.log());
    assert!(output.contains("A browser should have opened it."), "tokenctl ran $BROWSER: {output}");
    let token = tokend.tokenctl_ok(&["token", "movemint"]).await;
    let info = oidc.introspect(token.trim()).await;
    assert_eq!((info["active"].clone(), info["sub"].clone()), (true.into(), "alice".into()), "{info}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_cancels_at_the_consent_page_is_told_why_and_what_to_run() {
    require!(Need::Node, Need::Program("chromium"), Need::Program("chromedriver"));
    let Login { oidc: _provider, tokend, browser, login, redirect } = Login::at_consent().await;
    // oidc-provider's "[ Cancel ]" link ends the interaction with error=access_denied.
    browser.click(&browser.find("a[href$='/abort']").await).await;
    let page = tokends_page(&browser, &redirect).await;

    assert!(page.starts_with("Login failed"), "{page}");
    assert!(page.contains("Profile movemint is not logged in."), "{page}");
    assert!(page.contains("The server refused: access_denied: End-User aborted interaction"), "says why: {page}");
    assert!(page.contains("To try again, run tokenctl login movemint."), "says what to run: {page}");
    assert_eq!(browser.title().await, "tokend: login to movemint failed");
    browser.screenshot("login-failed.png").await;

    let (exit, output) = login.finish().await;
    assert_eq!(exit.code(), Some(5), "{output}");
    assert!(output.contains("access_denied"), "{output}");
    assert_eq!(tokend.tokenctl(&["token", "movemint"]).await.status.code(), Some(5), "still needs a login");
    browser.close().await;
}
