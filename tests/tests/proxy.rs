//! The authenticating proxy, driven by curl (`--unix-socket`): requests reach api_base and
//! nowhere else with the profile's token added, bodies stream both ways (1 GiB each way with
//! bounded memory), a 401 is retried once with a new token when the request can be replayed,
//! hop-by-hop fields are dropped, redirects come back, every refused request is refused before
//! anything is sent, and nothing but method, profile, status and timing is logged.

use std::process::{Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokend_e2e::fake::ClientAuth;
use tokend_e2e::fake::api::{PATTERN_BLOCK, pattern};
use tokend_e2e::{FakeProvider, Need, Options, Tokend, eventually, free_port, require, stderr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GIB: u64 = 1 << 30;

fn cc(name: &str, fake: &FakeProvider, api_base: Option<&str>) -> String {
    fake.cc_profile(name, &api_base.map(|b| format!("api_base = \"{b}\"\n")).unwrap_or_default())
}

async fn daemon_with(daemon_table: &str, options: Options) -> (FakeProvider, Tokend) {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    let config = format!(
        "[daemon]\n{daemon_table}\n\n{}{}{}[profiles.mm]\ngrant = \"authorization_code\"\ntoken_url = \"{base}/oauth/token\"\nauthorize_url = \"{base}/oauth/authorize\"\nredirect_uri = \"http://127.0.0.1:{port}/cb\"\nclient_id = \"mm\"\napi_base = \"{base}/api\"\n",
        cc("p", &fake, Some(&fake.url("/api"))),
        cc("bare", &fake, None),
        cc("res", &fake, Some(&fake.url("/api/resource/base"))),
        base = fake.base,
        port = free_port(),
    );
    let tokend = Tokend::start_with(&config, options).await;
    // Each client_credentials profile fetches its first token at start; counts below start after.
    assert!(eventually(Duration::from_secs(10), || fake.token_requests() == STARTUP_TOKENS).await);
    (fake, tokend)
}

/// The token requests of tokend's start: profiles p, bare and res.
const STARTUP_TOKENS: usize = 3;

async fn daemon() -> (FakeProvider, Tokend) {
    daemon_with("", Options::default()).await
}

/// What curl got: status, header block and body.
struct Got {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.head, String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

fn curl_command(tokend: &Tokend, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("curl");
    command.args(["-sS", "-m", "300", "--unix-socket"]).arg(&tokend.http_socket).args(args).kill_on_drop(true);
    command
}

/// Runs curl with `args` against the HTTP socket and splits its `-i` output.
async fn curl(tokend: &Tokend, args: &[&str]) -> Got {
    let out: Output = curl_command(tokend, &[&["-i"][..], args].concat()).output().await.unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", stderr(&out));
    let mut rest = &out.stdout[..];
    loop {
        let split = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
        let head = String::from_utf8_lossy(&rest[..split]).into_owned();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        rest = &rest[split + 4..];
        // `100 Continue` before the answer to a request with a body.
        if status >= 200 {
            return Got { status, head, body: rest.to_vec() };
        }
    }
}

async fn current_token(tokend: &Tokend) -> String {
    tokend.tokenctl_ok(&["token", "p"]).await.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_goes_to_api_base_with_the_token_and_its_answer_comes_back() {
    require!(Need::Program("curl"));
    let (fake, tokend) = daemon().await;
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/resource/a/b%20c?x=1&y=%2Fz"]).await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert_eq!(got.header("tokend-error"), None, "the API's answer");
    let json = got.json();
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/api/resource/a/b%20c");
    assert_eq!(json["query"], "x=1&y=%2Fz");
    assert!(json["headers"]["user-agent"].as_str().unwrap().starts_with("curl/"), "{json}");
    let requests = fake.api_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].token, current_token(&tokend).await, "the profile's current token");

    // The profile's base path itself, with and without the slash.
    assert_eq!(curl(&tokend, &["http://tokend/v1/proxy/res"]).await.json()["path"], "/api/resource/base");
    assert_eq!(curl(&tokend, &["http://tokend/v1/proxy/res/"]).await.json()["path"], "/api/resource/base/");
    assert_eq!(curl(&tokend, &["http://tokend/v1/proxy/res/x"]).await.json()["path"], "/api/resource/base/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (fake, tokend) = daemon().await;
    // Each request on a connection of its own to tokend, as separate programs would send them.
    for n in 0..20 {
        let answer = tokend.http().await.get(&format!("/v1/proxy/p/resource/{n}")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    let peers: std::collections::HashSet<_> = fake.api_requests().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 1, "20 requests one after another reached the API over {} connections", peers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_and_its_length_pass_through() {
    require!(Need::Program("curl"));
    let (fake, tokend) = daemon().await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let at_file = format!("@{}", file.path().display());
    let got = curl(
        &tokend,
        &["--data-binary", &at_file, "-H", "content-type: application/octet-stream", "http://tokend/v1/proxy/p/echo"],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.head);
    let json = got.json();
    assert_eq!(json["bytes"], body.len());
    assert_eq!(json["sha256"], hex(&Sha256::digest(&body)));
    assert_eq!(json["content_length"], body.len(), "sent with its length, not chunked");
    assert_eq!(json["chunked"], false);
    assert_eq!(fake.api_requests()[0].method, "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_up_and_down_through_the_proxy_in_bounded_memory() {
    require!(Need::Program("curl"));
    let (_fake, tokend) = daemon().await;
    // Warm up, so that what is measured is the transfer.
    assert_eq!(curl(&tokend, &["http://tokend/v1/proxy/p/resource"]).await.status, 200);
    let before = peak_rss_kib(tokend.pid());

    // Up: curl reads the body from its stdin and sends it chunked.
    let mut upload = curl_command(&tokend, &["-T", "-", "http://tokend/v1/proxy/p/echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = upload.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let mut hasher = Sha256::new();
        for _ in 0..GIB / PATTERN_BLOCK as u64 {
            stdin.write_all(pattern()).await.unwrap();
            hasher.update(pattern());
        }
        hex(&hasher.finalize())
    });
    let out = upload.wait_with_output().await.unwrap();
    let sent = writer.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["bytes"], GIB);
    assert_eq!(json["sha256"], sent);
    assert_eq!(json["chunked"], true);

    // Down: the body is checked block by block as it arrives.
    let mut download = curl_command(&tokend, &[&format!("http://tokend/v1/proxy/p/download?bytes={GIB}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = download.stdout.take().unwrap();
    let mut buffer = vec![0u8; PATTERN_BLOCK];
    let mut received = 0u64;
    loop {
        let at = usize::try_from(received % PATTERN_BLOCK as u64).expect("below PATTERN_BLOCK");
        let n = stdout.read(&mut buffer[..PATTERN_BLOCK - at]).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(buffer[..n] == pattern()[at..at + n], "the bytes at {received} are the API's");
        received += n as u64;
    }
    assert!(download.wait().await.unwrap().success());
    assert_eq!(received, GIB);

    let grown = peak_rss_kib(tokend.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "tokend's peak memory grew by {grown} KiB for 2 GiB streamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_is_retried_once_with_a_new_token() {
    require!(Need::Program("curl"));
    let (fake, tokend) = daemon().await;
    let old = current_token(&tokend).await;
    fake.revoke_access_token(&old);
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/resource/me"]).await;
    assert_eq!(got.status, 200, "{}", got.head);
    let new = current_token(&tokend).await;
    assert_ne!(new, old);
    let requests = fake.api_requests();
    assert_eq!(
        requests.iter().map(|r| (r.token.as_str(), r.status)).collect::<Vec<_>>(),
        [(old.as_str(), 401), (new.as_str(), 200)]
    );
    assert_eq!(fake.token_requests(), STARTUP_TOKENS + 1, "one refresh");

    // A body that fits the replay buffer is sent again, whole.
    fake.revoke_access_token(&new);
    let body = "x".repeat(1000);
    let got = curl(&tokend, &["--data-binary", &body, "http://tokend/v1/proxy/p/echo"]).await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert_eq!(got.json()["bytes"], 1000);
    assert_eq!(got.json()["sha256"], hex(&Sha256::digest(body.as_bytes())));
    assert_eq!(fake.token_requests(), STARTUP_TOKENS + 2);
    assert!(tokend.log().contains("the API rejected the token; retrying once with a new one"), "{}", tokend.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_to_replay_gets_the_401_and_the_next_request_a_new_token() {
    require!(Need::Program("curl"));
    let (fake, tokend) = daemon().await;
    let old = current_token(&tokend).await;
    fake.revoke_access_token(&old);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![7u8; 2 << 20]).unwrap();
    let got =
        curl(&tokend, &["--data-binary", &format!("@{}", file.path().display()), "http://tokend/v1/proxy/p/echo"])
            .await;
    assert_eq!(got.status, 401, "{}", got.head);
    assert_eq!(fake.api_requests().len(), 1, "not sent again");
    assert!(
        eventually(Duration::from_secs(10), || fake.token_requests() == STARTUP_TOKENS + 1).await,
        "the rejected token was reported"
    );
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/resource"]).await;
    assert_eq!(got.status, 200);
    let requests = fake.api_requests();
    assert_eq!(requests.len(), 2);
    assert_ne!(requests[1].token, old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_could_leave_api_base_are_refused_before_anything_is_sent() {
    require!(Need::Program("curl"));
    let (fake, tokend) = daemon().await;
    let upstream = fake.addr.to_string();
    let absolute = format!("http://{upstream}/oauth/token");
    let cases: Vec<(Vec<&str>, u16, &str)> = vec![
        (vec!["--request-target", &absolute, "http://tokend/"], 400, "names a host"),
        (vec!["-X", "CONNECT", "--request-target", &upstream, "http://tokend/"], 400, "names a host"),
        (vec!["-X", "CONNECT", "http://tokend/v1/proxy/p/resource"], 405, "CONNECT"),
        (vec!["-X", "TRACE", "http://tokend/v1/proxy/p/resource"], 405, "TRACE"),
        (vec!["--path-as-is", "http://tokend/v1/proxy/p/../../oauth/token"], 400, ". or .."),
        (vec!["--path-as-is", "http://tokend/v1/proxy/p/resource/../../oauth/token"], 400, ". or .."),
        (vec!["http://tokend/v1/proxy/p/%2e%2e/oauth/token"], 400, ". or .."),
        (vec!["http://tokend/v1/proxy/p/.%2E/oauth/token"], 400, ". or .."),
        (vec!["--path-as-is", "http://tokend/v1/proxy/p/..;x/oauth/token"], 400, ". or .."),
        (vec!["--path-as-is", "http://tokend/v1/proxy/p/./resource"], 400, ". or .."),
        (vec!["http://tokend/v1/proxy/p/resource%2F..%2F..%2Foauth%2Ftoken"], 400, "encoded slash"),
        (vec!["http://tokend/v1/proxy/p/resource%5c..%5coauth"], 400, "encoded slash"),
        (vec!["--path-as-is", "http://tokend/v1/proxy/p/resource\\..\\oauth"], 400, "backslash"),
        (vec!["-H", "Authorization: Bearer mine", "http://tokend/v1/proxy/p/resource"], 400, "own Authorization"),
        (vec!["http://tokend/v1/proxy/bare/resource"], 400, "has no api_base"),
        (vec!["http://tokend/v1/proxy/nope/resource"], 404, "unknown profile"),
        (vec!["http://tokend/v1/proxy/mm/resource"], 409, "tokenctl login mm"),
    ];
    for (args, status, says) in cases {
        let got = curl(&tokend, &args).await;
        assert_eq!(got.status, status, "{args:?}: {}", got.head);
        let json = got.json();
        assert!(json["message"].as_str().unwrap().contains(says), "{args:?}: {json}");
        assert_eq!(got.header("tokend-error").as_deref(), json["error"].as_str(), "{args:?}");
    }
    assert!(fake.api_requests().is_empty(), "nothing reached the API: {:?}", fake.api_requests());
    assert_eq!(fake.token_requests(), STARTUP_TOKENS, "nor the token endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_are_dropped_both_ways() {
    require!(Need::Program("curl"));
    let (_fake, tokend) = daemon().await;
    let got = curl(
        &tokend,
        &[
            "-H",
            "Connection: x-secret",
            "-H",
            "X-Secret: 1",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Connection: keep-alive",
            "-H",
            "TE: trailers",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Proxy-Authorization: Basic eDp5",
            "-H",
            "X-Kept: yes",
            "http://tokend/v1/proxy/p/resource",
        ],
    )
    .await;
    let headers = got.json()["headers"].clone();
    let names: Vec<&str> = headers.as_object().unwrap().keys().map(String::as_str).collect();
    for dropped in ["connection", "x-secret", "keep-alive", "proxy-connection", "te", "upgrade", "proxy-authorization"]
    {
        assert!(!names.contains(&dropped), "{dropped} reached the API: {names:?}");
    }
    assert_eq!(headers["x-kept"], "yes");
    assert!(!headers["host"].as_str().unwrap().contains("tokend"), "the API's own Host: {headers}");

    let got = curl(&tokend, &["http://tokend/v1/proxy/p/hop"]).await;
    assert_eq!(got.status, 200);
    for dropped in ["x-hop", "keep-alive", "proxy-authenticate"] {
        assert_eq!(got.header(dropped), None, "{dropped} reached the client:\n{}", got.head);
    }
    assert_ne!(got.header("connection").as_deref(), Some("x-hop"));
    assert_eq!(got.header("x-end").as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_come_back_to_the_client_unfollowed() {
    require!(Need::Program("curl"));
    let (fake, tokend) = daemon().await;
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/redirect"]).await;
    assert_eq!(got.status, 302);
    assert_eq!(got.header("location"), Some(fake.url("/api/resource/moved")));
    assert_eq!(fake.api_requests().len(), 1, "not followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_does_not_answer_gets_504_within_http_timeout() {
    require!(Need::Program("curl"));
    let (_fake, tokend) = daemon_with("http_timeout = \"1s\"", Options::default()).await;
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/stall"]).await;
    assert_eq!(got.status, 504);
    let json = got.json();
    assert_eq!(json["error"], "upstream");
    assert!(json["message"].as_str().unwrap().contains("did not answer within 1s"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_method_profile_status_and_timing_are_logged() {
    require!(Need::Program("curl"));
    let trace = Options { env: vec![("RUST_LOG".into(), "trace".into())], ..Default::default() };
    let (fake, mut tokend) = daemon_with("", trace).await;
    let secrets = ["path-secret-4c1", "query-secret-77e", "header-secret-a09", "body-secret-5d2"];
    let got = curl(
        &tokend,
        &[
            "-H",
            "X-Api-Key: header-secret-a09",
            "--data-binary",
            "body-secret-5d2",
            "http://tokend/v1/proxy/p/resource/path-secret-4c1?key=query-secret-77e",
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    // A rejected token and the retry are logged the same way.
    fake.revoke_everything();
    assert_eq!(curl(&tokend, &["http://tokend/v1/proxy/p/resource/path-secret-4c1"]).await.status, 200);
    tokend.stop().await;
    let log = tokend.log();
    assert!(log.contains("proxied a request"), "{log}");
    for secret in secrets.iter().map(ToString::to_string).chain(fake.every_secret_issued()) {
        assert!(!log.contains(&secret), "the log holds {secret}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The most memory the process has used so far (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A certificate authority and a certificate for 127.0.0.1 signed by it, made with openssl in
/// `dir`: (the CA's PEM, the server's key, the server's certificate).
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "1", "-subj", "/CN=tokend test CA", "-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"]].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (dir.join("ca.pem"), dir.join("server.key"), dir.join("server.pem"))
}

/// An HTTPS API on 127.0.0.1 that offers HTTP/2 (`clients/h2_api.js`), with a certificate from
/// a CA of its own in `dir`: that CA, the running API (stopped when dropped) and its port.
async fn h2_api(dir: &std::path::Path) -> (std::path::PathBuf, tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let (ca, key, cert) = certificates(dir);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/h2_api.js");
    let mut api = tokio::process::Command::new("node")
        .arg(script)
        .arg(&key)
        .arg(&cert)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(api.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    (ca, api, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_speaks_http2_to_an_api_that_offers_it_and_verifies_its_certificate() {
    require!(Need::Program("curl"), Need::Program("openssl"), Need::Node);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _api, port) = h2_api(dir.path()).await;
    let fake = FakeProvider::with_basic_client().await;
    let config = fake.cc_profile("p", &format!("api_base = \"https://127.0.0.1:{port}/v2\""));

    // The API's CA among tokend's roots (rustls reads SSL_CERT_FILE as the system's roots).
    let trusting = Options { env: vec![("SSL_CERT_FILE".into(), ca.display().to_string())], ..Default::default() };
    let tokend = Tokend::start_with(&config, trusting).await;
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/x?y=1"]).await;
    assert_eq!(got.status, 200, "{}\n{}", got.head, String::from_utf8_lossy(&got.body));
    let json = got.json();
    assert_eq!(json["http_version"], "2.0", "HTTP/2, chosen by ALPN: {json}");
    assert_eq!(json["path"], "/v2/x?y=1");
    assert_eq!(json["authorization"], format!("Bearer {}", current_token(&tokend).await));
    // The client still speaks HTTP/1.1 to tokend, and hop-by-hop framing is tokend's own.
    assert!(got.head.starts_with("HTTP/1.1 200"), "{}", got.head);
    drop(tokend);

    // Without that CA the certificate is refused, as it is for token endpoints.
    let tokend = Tokend::start(&config).await;
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/x"]).await;
    assert_eq!(got.status, 502, "{}", got.head);
    let message = got.json()["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("certificate"), "{message}");
}

/// A `CONNECT`-only HTTP proxy on 127.0.0.1 that records the target of each tunnel it opens.
async fn connect_proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tunnels = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    let mut byte = [0u8; 1];
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(target) = head.strip_prefix("CONNECT ").and_then(|r| r.split(' ').next()) else { return };
                seen.lock().unwrap().push(target.to_owned());
                let Ok(mut api) = tokio::net::TcpStream::connect(target).await else { return };
                client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut api).await;
            });
        }
    });
    (port, tunnels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_go_through_https_proxy_unless_no_proxy_names_the_host() {
    require!(Need::Program("curl"), Need::Program("openssl"), Need::Node);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _api, port) = h2_api(dir.path()).await;
    let fake = FakeProvider::with_basic_client().await;
    let config = fake.cc_profile("p", &format!("api_base = \"https://127.0.0.1:{port}/v2\""));
    let (proxy_port, tunnels) = connect_proxy().await;
    let env = |no_proxy: &str| {
        let mut env: Vec<(String, String)> = vec![
            ("SSL_CERT_FILE".into(), ca.display().to_string()),
            ("HTTPS_PROXY".into(), format!("http://127.0.0.1:{proxy_port}")),
        ];
        // Both spellings, so that the environment the tests run in cannot decide.
        env.extend(["NO_PROXY", "no_proxy"].map(|name| (name.to_owned(), no_proxy.to_owned())));
        env
    };

    // Through the tunnel, TLS and ALPN still run end to end with the API. The token endpoint
    // is plain http, which no proxy is asked for.
    let tokend = Tokend::start_with(&config, Options { env: env("example.invalid"), ..Default::default() }).await;
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/x"]).await;
    assert_eq!(got.status, 200, "{}\n{}", got.head, String::from_utf8_lossy(&got.body));
    let json = got.json();
    assert_eq!(json["http_version"], "2.0", "{json}");
    assert_eq!(json["authorization"], format!("Bearer {}", current_token(&tokend).await));
    assert_eq!(*tunnels.lock().unwrap(), [format!("127.0.0.1:{port}")]);
    drop(tokend);

    let tokend = Tokend::start_with(&config, Options { env: env("127.0.0.1"), ..Default::default() }).await;
    let got = curl(&tokend, &["http://tokend/v1/proxy/p/x"]).await;
    assert_eq!(got.status, 200, "{}\n{}", got.head, String::from_utf8_lossy(&got.body));
    assert_eq!(tunnels.lock().unwrap().len(), 1, "NO_PROXY names the API's host: no tunnel");
}
