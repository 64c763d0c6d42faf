//! The README's first command: `tokend-demo` runs the real daemon on the default socket against
//! a local stand-in for real APIs, and the README's `tokenctl` commands work against it.

use tokend_e2e::xdg::XdgHome;
use tokend_e2e::{stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_both_demo_profiles_on_the_default_socket() {
    let xdg = XdgHome::new();
    let demo = xdg.start("tokend-demo").await;

    let out = xdg.tokenctl(&["token", "demo-minut"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("at_"), "{}", stdout(&out));
    let out = xdg.tokenctl(&["status"]).await;
    assert!(out.status.success() && stdout(&out).contains("demo-movemint"), "{}", stdout(&out));

    // The browser login, with the demo server approving at once.
    let mut login = xdg.spawn_tokenctl(&["login", "demo-movemint", "--no-browser"]);
    let url = login.login_url().await;
    let http = tokend_e2e::http().redirect(reqwest::redirect::Policy::limited(3)).build().unwrap();
    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200, "the browser ends on tokend's page");
    let (status, output) = login.finish().await;
    assert!(status.success(), "{output}");

    let out = xdg.tokenctl(&["info", "demo-movemint", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(info.is_object(), "{info}");

    let status = xdg.stop(demo).await;
    assert!(status.success(), "the demo stops cleanly: {status}");
    assert!(!xdg.socket().exists(), "and removes its socket");
}
