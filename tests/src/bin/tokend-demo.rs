//! tokend-demo: runs tokend against a local stand-in for real OAuth APIs, so tokend can be
//! tried without any account.
//!
//! It starts the fake provider on 127.0.0.1 with two demo clients — one Minut-style
//! (client_credentials, HTTP Basic, one-minute tokens, so refreshes are visible) and one
//! Movemint-style (authorization_code with PKCE; its authorization page approves at once) —
//! writes a config for them into a temporary directory, and runs the real daemon in the
//! foreground on the default socket, where plain `tokenctl` finds it.

use std::process::ExitCode;
use std::time::Duration;

use tokend_e2e::FakeProvider;
use tokend_e2e::fake::{Client, ClientAuth, Style};

const REDIRECT: &str = "http://127.0.0.1:8976/callback";

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let fake = runtime.block_on(FakeProvider::start());
    fake.register(
        "demo-minut",
        Client {
            secret: Some("demo-minut-secret".into()),
            auth: ClientAuth::Basic,
            required_params: vec![("response_type".into(), "token".into())],
            redirect_uri: None,
        },
    );
    fake.register(
        "demo-movemint",
        Client {
            secret: Some("demo-movemint-secret".into()),
            auth: ClientAuth::Post,
            required_params: vec![],
            redirect_uri: Some(REDIRECT.into()),
        },
    );
    fake.set_style(Style::Movemint);
    fake.set_lifetime(Duration::from_secs(60));

    let dir = tempfile::Builder::new().prefix("tokend-demo-").tempdir().expect("temporary directory");
    let config = dir.path().join("config.toml");
    tokend_e2e::write_private(
        &config,
        &format!(
            r#"# Written by tokend-demo; the "server" is a local fake.
[profiles.demo-minut]
grant = "client_credentials"
token_url = "{base}/v8/oauth/token"
client_id = "demo-minut"
client_secret = "demo-minut-secret"
token_params = {{ response_type = "token" }}
info_url = "{base}/v8/users/me"
api_base = "{base}/api"
refresh_margin = "20s"

[profiles.demo-movemint]
grant = "authorization_code"
token_url = "{base}/oauth/token"
authorize_url = "{base}/oauth/authorize"
redirect_uri = "{REDIRECT}"
revoke_url = "{base}/oauth/revoke"
info_url = "{base}/oauth/token/info"
api_base = "{base}/api"
client_id = "demo-movemint"
client_secret = "demo-movemint-secret"
client_auth = "post"
scopes = ["public"]
"#,
            base = fake.base
        ),
    );

    eprintln!(
        "tokend demo: a local OAuth server at {} stands in for real APIs.\n\
         Profiles: demo-minut (client_credentials, one-minute tokens) and demo-movemint (authorization_code).\n\
         In another terminal, try:\n\
         \n    cargo run -q --bin tokenctl -- token demo-minut\
         \n    cargo run -q --bin tokenctl -- status\
         \n    cargo run -q --bin tokenctl -- watch\
         \n    cargo run -q --bin tokenctl -- login demo-movemint\
         \n    cargo run -q --bin tokenctl -- info demo-movemint\
         \n    curl --unix-socket \"$XDG_RUNTIME_DIR/tokend/http.sock\" http://tokend/v1/token/demo-minut\
         \n    curl --unix-socket \"$XDG_RUNTIME_DIR/tokend/http.sock\" http://tokend/v1/proxy/demo-minut/resource/hello\n\
         \nConfig: {}\nStop with Ctrl-C.\n",
        fake.base,
        config.display()
    );

    let cli = tokend::cli::Cli {
        config: Some(config),
        socket: None,
        http_socket: None,
        state_dir: Some(dir.path().join("state")),
        log_level: None,
        check_config: None,
    };
    let code = tokend::run(cli);
    drop(fake);
    drop(runtime);
    code
}
