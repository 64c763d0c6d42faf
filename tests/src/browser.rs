//! A real browser for the login tests: headless Chromium driven over WebDriver (Debian's
//! `chromedriver`) as a user's hands would drive it — find the form, type, click — and handed
//! the authorization URL the way `tokenctl login` hands it to a user's browser: through
//! `$BROWSER`, here the launcher `tests/browser/launch`.
//!
//! The flow: [`Browser::start`] starts chromedriver and, through it, Chromium with a fresh
//! profile; the test runs `tokenctl login` with [`Browser::env`]; tokenctl runs the launcher
//! with the URL, which writes it into the browser's private directory; [`Browser::open_launched`]
//! waits for it and opens it. The WebDriver client is the few W3C WebDriver commands the tests
//! use, spoken over HTTP with reqwest.
//!
//! Chromium reaches nothing but 127.0.0.1 (every other host name fails to resolve;
//! oidc-provider's pages import a web font). No leftovers: chromedriver and the browser it starts
//! run in a process group of their own, and the test process is a child subreaper, so that
//! whatever outlives chromedriver is reparented here and reaped. [`Browser::close`] ends the
//! session (chromedriver quits Chromium) and waits; dropping a [`Browser`] (a failed test) kills
//! the whole group. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// How long an element, page or process may take to appear.
const WAIT: Duration = Duration::from_secs(30);
/// How long one WebDriver command may take: starting Chromium (the session) takes a few
/// seconds, and many more on a loaded machine.
const COMMAND: Duration = Duration::from_secs(90);
/// The W3C WebDriver key under which an element reference comes.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// What Chromium needs to run here — headless, as root in a container, with a fresh profile
/// (added with the profile's path) — and to keep from reaching out to the network by itself.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-breakpad",
    "--password-store=basic",
    "--hide-scrollbars",
    "--window-size=720,480",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
];

/// A headless Chromium, its WebDriver session, and the launcher that hands it a URL.
pub struct Browser {
    dir: tempfile::TempDir,
    http: reqwest::Client,
    /// chromedriver, the leader of the process group that holds the browser too.
    driver: std::process::Child,
    /// The WebDriver endpoint of the session, `http://127.0.0.1:PORT/session/ID`.
    session: String,
    /// Whether [`Browser::close`] ended everything, leaving nothing for `drop` to kill.
    closed: bool,
}

/// An element of the current page.
pub struct Element {
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, on a blank page.
    pub async fn start() -> Browser {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl with integer arguments; it only decides which process adopts orphans.
        let made = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(made, 0, "become a child subreaper: {}", std::io::Error::last_os_error());
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = crate::free_port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", dir.path().join("chromedriver.log").display()))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            http: crate::http().timeout(COMMAND).build().unwrap(),
            driver,
            session: String::new(),
            closed: false,
            dir,
        };
        let status = format!("{base}/status");
        let up = crate::wait_for(WAIT, async || {
            browser.http.get(&status).send().await.is_ok_and(|a| a.status().is_success()).then_some(())
        })
        .await;
        assert!(up.is_some(), "chromedriver did not answer within {WAIT:?}\n{}", browser.log());
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(ToString::to_string).collect();
        args.push(format!("--user-data-dir={}", browser.dir.path().join("profile").display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium(), "args": args},
        }}});
        let session = browser.call(reqwest::Method::POST, &format!("{base}/session"), Some(capabilities)).await;
        let id = session["sessionId"].as_str().expect("a session ID");
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// The environment for `tokenctl login`: `BROWSER` is the launcher.
    pub fn env(&self) -> Vec<(String, String)> {
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/launch");
        vec![
            ("BROWSER".into(), launcher.display().to_string()),
            ("TOKEND_TEST_BROWSER_DIR".into(), self.dir.path().display().to_string()),
        ]
    }

    /// Waits (bounded) for the launcher to hand over a URL, and opens it.
    pub async fn open_launched(&self) {
        let file = self.dir.path().join("url");
        let url = crate::wait_for(WAIT, async || std::fs::read_to_string(&file).ok())
            .await
            .unwrap_or_else(|| panic!("no URL from the launcher within {WAIT:?}: did tokenctl run $BROWSER?"));
        let url = url.trim();
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// The address of the current page.
    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The title of the current page.
    pub async fn title(&self) -> String {
        self.command(reqwest::Method::GET, "/title", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (bounded) until the current page has an element matching `css`; returns it.
    pub async fn find(&self, css: &str) -> Element {
        let query = json!({"using": "css selector", "value": css});
        let mut answer = None;
        let found = crate::wait_for(WAIT, async || {
            let value = self.try_command(reqwest::Method::POST, "/element", Some(query.clone())).await;
            let id = value.as_ref().ok().and_then(|v| v[ELEMENT].as_str()).map(str::to_owned);
            answer = Some(value);
            id
        })
        .await;
        if let Some(id) = found {
            return Element { id };
        }
        let source = self.try_command(reqwest::Method::GET, "/source", None).await;
        panic!("no element `{css}` within {WAIT:?} on {} ({answer:?}):\n{source:?}", self.url().await);
    }

    /// Types `text` into `element`.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.command(reqwest::Method::POST, &format!("/element/{}/value", element.id), Some(json!({"text": text})))
            .await;
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) {
        self.command(reqwest::Method::POST, &format!("/element/{}/click", element.id), Some(json!({}))).await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        let text = self.command(reqwest::Method::GET, &format!("/element/{}/text", element.id), None).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The computed value of a CSS property of `element`.
    pub async fn css(&self, element: &Element, property: &str) -> String {
        let value = self.command(reqwest::Method::GET, &format!("/element/{}/css/{property}", element.id), None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// A PNG screenshot of the page, written to `target/screenshots/NAME`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot.as_str().expect("base64")).expect("a PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let exe = std::env::current_exe().expect("the test executable's path");
        // The test runs from target/debug/deps/.
        let dir = exe.ancestors().nth(3).expect("the target directory").join("screenshots");
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session — chromedriver quits Chromium — and chromedriver, and waits for both.
    pub async fn close(mut self) {
        let session = std::mem::take(&mut self.session);
        self.call(reqwest::Method::DELETE, &session, None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_group(i32::try_from(self.driver.id()).unwrap_or(i32::MAX));
        self.closed = true;
    }

    /// What chromedriver logged, for failure messages.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(4000)..];
        format!("the end of chromedriver's log:\n{tail}")
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("{}{path}", self.session), body).await
    }

    async fn try_command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let answer = request.send().await.map_err(|e| e.to_string())?;
        let ok = answer.status().is_success();
        let json: Value = answer.json().await.map_err(|e| e.to_string())?;
        if ok { Ok(json["value"].clone()) } else { Err(json["value"].to_string()) }
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let request = self.http.request(method.clone(), url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => panic!("WebDriver {method} {url}: {e}\n{}", self.log()),
        };
        let status = answer.status();
        let json: Value = answer.json().await.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
        assert!(status.is_success(), "WebDriver {method} {url}: {status}: {}", json["value"]);
        json["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            kill_group(i32::try_from(self.driver.id()).unwrap_or(i32::MAX));
            let _ = self.driver.wait();
        }
    }
}

/// The Chromium binary on `PATH`.
fn chromium() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .expect("chromium on PATH")
        .display()
        .to_string()
}

/// Kills process group `pgid` and reaps its processes as they are adopted here (at most 5 s).
fn kill_group(pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: plain signal and wait calls; -pgid addresses chromedriver's own process group.
    unsafe {
        while libc::kill(-pgid, libc::SIGKILL) == 0 && Instant::now() < deadline {
            let mut status = 0;
            if libc::waitpid(-pgid, &mut status, libc::WNOHANG) <= 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
