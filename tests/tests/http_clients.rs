//! The HTTP API with clients no one here wrote: Python's `http.client`, Node's `http` with
//! `socketPath`, and Go's `net/http` with a transport that dials the socket
//! (`tests/clients/`, each a dozen lines that send one request and print the answer). Each
//! gets a token, goes through the proxy with and without a body, recovers from a 401 without
//! knowing it happened, reports a token by the API, and is told when a login is needed or a
//! request is refused. (curl does all of that and more in `proxy.rs`.)

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use tokend_e2e::fake::ClientAuth;
use tokend_e2e::{FakeProvider, Need, Tokend, free_port, require, stderr};

#[derive(Clone, Copy, Debug)]
enum Client {
    Python,
    Node,
    Go,
}

/// One answer, as a client program printed it.
#[derive(Debug, serde::Deserialize)]
struct Answer {
    status: u16,
    tokend_error: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// The Go client, built once per test run.
fn go_client() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tokend-go-client");
        let built = std::process::Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&out)
            .arg(clients_dir().join("client.go"))
            .output()
            .expect("run go build");
        assert!(built.status.success(), "go build: {}", stderr(&built));
        out
    })
}

impl Client {
    fn need(self) -> Need {
        match self {
            Client::Python => Need::Program("python3"),
            Client::Node => Need::Node,
            Client::Go => Need::Program("go"),
        }
    }

    async fn request(self, tokend: &Tokend, method: &str, target: &str, body: Option<&Path>) -> Answer {
        let mut command = match self {
            Client::Python => {
                let mut c = tokio::process::Command::new("python3");
                c.arg(clients_dir().join("client.py"));
                c
            }
            Client::Node => {
                let mut c = tokio::process::Command::new("node");
                c.arg(clients_dir().join("client.js"));
                c
            }
            Client::Go => tokio::process::Command::new(go_client()),
        };
        command.arg(&tokend.http_socket).arg(method).arg(target).args(body);
        let out = command.kill_on_drop(true).output().await.unwrap();
        assert!(out.status.success(), "{self:?} {method} {target}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{self:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

async fn daemon() -> (FakeProvider, Tokend) {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let config = format!(
        "[profiles.p]\ngrant = \"client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"c\"\nclient_secret = \"s\"\napi_base = \"{base}/api\"\n\n[profiles.mm]\ngrant = \"authorization_code\"\ntoken_url = \"{base}/oauth/token\"\nauthorize_url = \"{base}/oauth/authorize\"\nredirect_uri = \"http://127.0.0.1:{port}/cb\"\nclient_id = \"mm\"\napi_base = \"{base}/api\"\n",
        base = fake.base,
        port = free_port()
    );
    let tokend = Tokend::start(&config).await;
    (fake, tokend)
}

/// Everything a program does with the HTTP API, through `client`.
async fn works_through(client: Client) {
    let (fake, tokend) = daemon().await;

    let token = client.request(&tokend, "GET", "/v1/token/p", None).await;
    assert_eq!(token.status, 200, "{token:?}");
    let old = token.json()["access_token"].as_str().unwrap().to_owned();
    assert!(fake.accepts(&old));

    let got = client.request(&tokend, "GET", "/v1/proxy/p/resource/x?y=1", None).await;
    assert_eq!((got.status, got.tokend_error.as_deref()), (200, None), "{got:?}");
    assert_eq!(got.json()["path"], "/api/resource/x");
    assert_eq!(got.json()["query"], "y=1");
    assert_eq!(fake.api_requests().last().unwrap().token, old);

    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let echo = client.request(&tokend, "POST", "/v1/proxy/p/echo", Some(file.path())).await;
    assert_eq!(echo.status, 200, "{echo:?}");
    assert_eq!(echo.json()["bytes"], body.len());
    let digest: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(echo.json()["sha256"], digest);

    // The API drops the token: the program never notices.
    fake.revoke_access_token(&old);
    let got = client.request(&tokend, "GET", "/v1/proxy/p/resource/after", None).await;
    assert_eq!(got.status, 200, "{got:?}\n{:?}\n{}", fake.api_requests(), tokend.log());
    let last_two: Vec<u16> = fake.api_requests().iter().rev().take(2).map(|r| r.status).collect();
    assert_eq!(last_two, [200, 401], "a 401, then the retry");
    let new = fake.api_requests().last().unwrap().token.clone();
    assert_ne!(new, old);

    // A program that calls the API itself reports the rejected token and gets another.
    fake.revoke_access_token(&new);
    let report = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(report.path(), serde_json::json!({ "token": new }).to_string()).unwrap();
    let fresh = client.request(&tokend, "POST", "/v1/invalidate/p", Some(report.path())).await;
    assert_eq!(fresh.status, 200, "{fresh:?}");
    let fresh = fresh.json()["access_token"].as_str().unwrap().to_owned();
    assert!(fake.accepts(&fresh) && fresh != new);

    let login = client.request(&tokend, "GET", "/v1/proxy/mm/resource", None).await;
    assert_eq!((login.status, login.tokend_error.as_deref()), (409, Some("login_needed")), "{login:?}");
    assert!(login.json()["message"].as_str().unwrap().contains("tokenctl login mm"));
    let refused = client.request(&tokend, "GET", "/v1/proxy/p/resource%2F..%2F..%2Foauth", None).await;
    assert_eq!((refused.status, refused.tokend_error.as_deref()), (400, Some("usage")), "{refused:?}");
    let unknown = client.request(&tokend, "GET", "/v1/token/nope", None).await;
    assert_eq!((unknown.status, unknown.tokend_error.as_deref()), (404, Some("unknown_profile")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_client_uses_the_api_and_the_proxy() {
    require!(Client::Python.need());
    works_through(Client::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http_with_socket_path_uses_the_api_and_the_proxy() {
    require!(Client::Node.need());
    works_through(Client::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_net_http_with_a_unix_dialer_uses_the_api_and_the_proxy() {
    require!(Client::Go.need());
    works_through(Client::Go).await;
}
