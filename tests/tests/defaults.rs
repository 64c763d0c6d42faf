//! tokend and tokenctl with no `--config`, `--socket` or `--state-dir` and no `TOKEND_SOCKET` or
//! `TOKEND_CONFIG`: everything comes from the XDG base directories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokend_e2e::fake::ClientAuth;
use tokend_e2e::xdg::XdgHome;
use tokend_e2e::{FakeProvider, eventually, stderr, stdout, write_private};

/// `tokenctl token p`, which must succeed; returns the token.
async fn token_p(xdg: &XdgHome) -> String {
    let out = xdg.tokenctl(&["token", "p"]).await;
    assert!(
        out.status.success(),
        "tokenctl token p failed ({}):\nstdout: {}\nstderr: {}\ntokend log:\n{}",
        out.status,
        stdout(&out),
        stderr(&out),
        xdg.log_text()
    );
    stdout(&out).trim().to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flags_tokend_and_tokenctl_use_the_xdg_directories() {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let xdg = XdgHome::new();
    let config_dir = xdg.config_home().join("tokend");
    std::fs::create_dir(&config_dir).unwrap();
    write_private(
        &config_dir.join("config.toml"),
        &format!(
            r#"
[profiles.p]
grant = "client_credentials"
token_url = "{}"
client_id = "c"
client_secret = "s"
"#,
            fake.url("/oauth/token")
        ),
    );

    let tokend = xdg.start("tokend").await;
    let token = token_p(&xdg).await;
    assert!(fake.accepts(&token), "the served token is one the server issued: {token:?}");
    assert_eq!(fake.token_requests(), 1);

    let socket = xdg.socket();
    assert_eq!(mode(&socket), 0o600, "the socket is private");
    assert_eq!(mode(socket.parent().unwrap()), 0o700, "the socket directory is private");

    let state = xdg.state_dir().join("p.json");
    assert!(
        eventually(Duration::from_secs(5), || state.exists()).await,
        "the tokens are kept in {}:\n{}",
        state.display(),
        xdg.log_text()
    );
    assert_eq!(mode(&state), 0o600, "the state file is private");
    assert_eq!(mode(&xdg.state_dir()), 0o700, "the state directory is private");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains(&token), "the state file holds the served token");

    let status = xdg.stop(tokend).await;
    assert_eq!(status.code(), Some(0), "tokend exits 0 on SIGTERM:\n{}", xdg.log_text());
    assert!(!socket.exists(), "tokend removed its socket on the way out");

    // Started again the same way, it finds its state where it left it.
    let requests = fake.token_requests();
    let tokend = xdg.start("tokend").await;
    assert_eq!(token_p(&xdg).await, token, "the same token, read back from the default state directory");
    assert_eq!(fake.token_requests(), requests, "no upstream request after the restart");
    assert_eq!(xdg.stop(tokend).await.code(), Some(0), "{}", xdg.log_text());
}
