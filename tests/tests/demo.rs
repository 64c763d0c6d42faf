//! The README's first command: `tokend-demo` runs the real daemon on the default socket against
//! a local stand-in for real APIs, and the README's `tokenctl` commands work against it.

use std::process::Stdio;
use std::time::Duration;

use tokend_e2e::{bin, eventually, stderr, stdout};

async fn tokenctl(runtime_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(bin("tokenctl"))
            .args(args)
            .env("XDG_RUNTIME_DIR", runtime_dir)
            .env_remove("TOKEND_SOCKET")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("tokenctl finished within 30 s")
    .expect("tokenctl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_both_demo_profiles_on_the_default_socket() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("run");
    std::fs::create_dir(&runtime_dir).unwrap();
    std::fs::set_permissions(&runtime_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut demo = tokio::process::Command::new(bin("tokend-demo"))
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .env_remove("TOKEND_SOCKET")
        .env_remove("TOKEND_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let socket = runtime_dir.join("tokend/tokend.sock");
    assert!(eventually(Duration::from_secs(20), || socket.exists()).await, "the demo listens on the default socket");

    let out = tokenctl(&runtime_dir, &["token", "demo-minut"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("at_"), "{}", stdout(&out));
    let out = tokenctl(&runtime_dir, &["status"]).await;
    assert!(out.status.success() && stdout(&out).contains("demo-movemint"), "{}", stdout(&out));

    // The browser login, with the demo server approving at once.
    let mut login = tokio::process::Command::new(bin("tokenctl"))
        .args(["login", "demo-movemint", "--no-browser"])
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .env_remove("TOKEND_SOCKET")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(login.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(start) = line.find("http") {
                return line[start..].trim().to_owned();
            }
        }
        panic!("tokenctl login ended without printing a URL");
    })
    .await
    .expect("tokenctl login prints the URL");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(3)).build().unwrap();
    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200, "the browser ends on tokend's page");
    let status = tokio::time::timeout(Duration::from_secs(20), login.wait()).await.unwrap().unwrap();
    assert!(status.success());

    let out = tokenctl(&runtime_dir, &["info", "demo-movemint", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(info.is_object(), "{info}");

    // SAFETY: sending a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(demo.id().unwrap() as i32, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), demo.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the demo stops cleanly: {status}");
    assert!(!socket.exists(), "and removes its socket");
}
