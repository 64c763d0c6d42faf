//! The recipes in docs/recipes.md, run as written: shell scripts (one with `tokenctl exec`), a
//! Python module and a Rust program that call an API with a token and retry once after a 401.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::{FakeProvider, Need, Tokend, bin, require, stderr, stdout};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

async fn daemon() -> (FakeProvider, Tokend) {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let config = format!(
        "[profiles.minut]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
        fake.url("/v8/oauth/token")
    );
    let tokend = Tokend::start(&config).await;
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
