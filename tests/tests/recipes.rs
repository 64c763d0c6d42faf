//! The recipes in docs/recipes.md, run as written: shell scripts (one with `tokenctl exec`), a
//! Python module and a Rust program that call an API with a token and retry once after a 401;
//! and Python, Node.js and Go programs that use the HTTP API both ways — asking for the token
//! (and retrying once after a 401 themselves), and sending requests through the proxy (which
//! retries for them).

use std::path::{Path, PathBuf};
use std::process::Command;

use tokend_e2e::{FakeProvider, Need, Tokend, bin, require, stderr, stdout};
use tokio::process::Command as AsyncCommand;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

async fn daemon() -> (FakeProvider, Tokend) {
    let fake = FakeProvider::with_basic_client().await;
    let tokend = Tokend::start(&fake.cc_profile("minut", "")).await;
    (fake, tokend)
}

/// Runs a recipe with tokenctl on its PATH, twice: with a good token, then after the server
/// dropped the token (the recipe must invalidate it and retry).
async fn run_twice(recipe: impl Fn() -> Command) {
    let (fake, tokend) = daemon().await;
    let url = fake.url("/v8/users/me");
    let run = || {
        let mut command = recipe();
        let path =
            format!("{}:{}", bin("tokenctl").parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
        command.arg("minut").arg(&url).env("PATH", path).env("TOKEND_SOCKET", &tokend.socket);
        command.output().unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("\"uid\":\"c\""), "{}", stdout(&out));
    assert_eq!(fake.token_requests(), 1);

    let token = tokend.tokenctl_ok(&["token", "minut"]).await;
    fake.revoke_access_token(token.trim());
    let info_before = fake.info_requests();
    let out = run();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(fake.info_requests(), info_before + 2, "a 401, then a retry");
    assert_eq!(fake.token_requests(), 2, "one new token after the 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_recipe_retries_once_after_a_401() {
    require!(Need::Program("curl"));
    run_twice(|| {
        let mut command = Command::new("sh");
        command.arg(root().join("examples/shell/call-api.sh"));
        command
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokenctl_exec_recipe_retries_once_after_a_401() {
    require!(Need::Program("curl"));
    run_twice(|| {
        let mut command = Command::new("sh");
        command.arg(root().join("examples/shell/exec-call-api.sh"));
        command
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_recipe_retries_once_after_a_401() {
    require!(Need::Program("python3"));
    run_twice(|| {
        let mut command = Command::new("python3");
        command.arg(root().join("examples/python/tokend_token.py"));
        command
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_recipe_retries_once_after_a_401() {
    let example = bin("tokenctl").parent().unwrap().join("examples/call_api");
    assert!(example.exists(), "built by `cargo test --workspace`: {}", example.display());
    run_twice(|| Command::new(&example)).await;
}

/// Runs an HTTP API recipe (`PROFILE token URL` and `PROFILE proxy PATH`), each mode twice:
/// with a good token, then after the server dropped it.
async fn run_http_recipe(recipe: impl Fn() -> AsyncCommand) {
    let fake = FakeProvider::with_basic_client().await;
    let tokend = Tokend::start(&fake.cc_profile("minut", &format!("api_base = \"{}\"", fake.url("/api")))).await;
    let run = |mode: &str, target: &str| {
        let mut command = recipe();
        command.args(["minut", mode, target]).env("TOKEND_HTTP_SOCKET", &tokend.http_socket).kill_on_drop(true);
        async move { command.output().await.unwrap() }
    };
    let succeeded = |out: &std::process::Output| assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    let revoke = || async {
        let token = tokend.tokenctl_ok(&["token", "minut"]).await;
        fake.revoke_access_token(token.trim());
    };

    // Asking for the token: the program calls the API and handles the 401 itself.
    let url = fake.url("/v8/users/me");
    let out = run("token", &url).await;
    succeeded(&out);
    assert!(stdout(&out).contains("\"uid\":\"c\""), "{}", stdout(&out));
    assert_eq!(fake.token_requests(), 1);
    revoke().await;
    let info_before = fake.info_requests();
    let out = run("token", &url).await;
    succeeded(&out);
    assert_eq!(fake.info_requests(), info_before + 2, "a 401, then a retry");
    assert_eq!(fake.token_requests(), 2, "one new token after the 401");

    // Through the proxy: tokend adds the token and handles the 401.
    let out = run("proxy", "/resource/me").await;
    succeeded(&out);
    assert!(stdout(&out).contains("\"path\":\"/api/resource/me\""), "{}", stdout(&out));
    revoke().await;
    let out = run("proxy", "/resource/me").await;
    succeeded(&out);
    let statuses: Vec<u16> = fake.api_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 200], "the proxy retried once");
    assert_eq!(fake.token_requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_http_recipe_uses_the_token_api_and_the_proxy() {
    require!(Need::Program("python3"));
    run_http_recipe(|| {
        let mut command = AsyncCommand::new("python3");
        command.arg(root().join("examples/python/tokend_http.py"));
        command
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_http_recipe_uses_the_token_api_and_the_proxy() {
    require!(Need::Node);
    run_http_recipe(|| {
        let mut command = AsyncCommand::new("node");
        command.arg(root().join("examples/node/tokend-http.mjs"));
        command
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_http_recipe_uses_the_token_api_and_the_proxy() {
    require!(Need::Program("go"));
    run_http_recipe(|| {
        let mut command = AsyncCommand::new("go");
        command.arg("run").arg(root().join("examples/go/tokend-http.go"));
        command
    })
    .await;
}
