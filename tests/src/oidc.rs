//! oidc-provider, a real OAuth 2 server written by others (the npm package, run by Node.js from
//! `tests/oidc/`), and a minimal browser to get through its login and consent pages.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// A running oidc-provider; killed when dropped.
pub struct OidcProvider {
    /// Its issuer, e.g. `http://127.0.0.1:41234`.
    pub issuer: String,
    _child: Child,
}

static INSTALL: Mutex<()> = Mutex::new(());

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Installs the npm packages if they are not there yet (CI's `.ci/run` installs them first).
fn ensure_installed() {
    let _once = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if dir().join("node_modules/oidc-provider/package.json").exists() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir())
        .stdin(Stdio::null())
        .status()
        .expect("npm is needed for the oidc-provider interop tests (install Node.js and npm)");
    assert!(status.success(), "npm ci in tests/oidc failed");
}

impl OidcProvider {
    /// Starts oidc-provider with the `web` client's redirect URI and the access token lifetime.
    pub async fn start(redirect_uri: &str, access_ttl: Duration) -> OidcProvider {
        ensure_installed();
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir())
            .env("PORT", "0")
            .env("REDIRECT_URI", redirect_uri)
            .env("ACCESS_TTL", access_ttl.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node is needed for the oidc-provider interop tests");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("oidc-provider started within 30s")
            .expect("read oidc-provider's output")
            .expect("oidc-provider printed its issuer");
        // Keep reading: oidc-provider prints notices on stdout (its device flow pages do, on first
        // use), and Node.js dies of EPIPE if nobody reads them.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        OidcProvider { issuer: json["issuer"].as_str().unwrap().to_owned(), _child: child }
    }

    /// The config table of profile `name` for the provider's `web` client, an
    /// authorization_code profile configured by nothing but the issuer, logging in through
    /// `redirect`.
    pub fn web_profile(&self, name: &str, redirect: &str) -> String {
        format!(
            r#"
[profiles.{name}]
grant = "authorization_code"
issuer = "{issuer}"
redirect_uri = "{redirect}"
client_id = "web"
client_secret = "web-secret"
client_auth = "post"
scopes = ["api:read"]
"#,
            issuer = self.issuer
        )
    }

    /// A URL on the provider.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// RFC 7662 introspection of `token`.
    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        crate::http()
            .build()
            .unwrap()
            .post(self.url("/token/introspection"))
            .basic_auth("cc-basic", Some("cc-basic-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspection request")
            .json()
            .await
            .expect("introspection answer")
    }

    /// Whether introspection says `token` is active.
    pub async fn is_active(&self, token: &str) -> bool {
        self.introspect(token).await["active"] == serde_json::Value::Bool(true)
    }
}

/// Does what a user's browser does with an authorization URL on oidc-provider: follows the
/// redirects, fills in the development login form (any login and password) and confirms the
/// consent form, until the server redirects to `redirect_prefix`. Returns that final URL.
pub async fn browser_login(authorization_url: &str, redirect_prefix: &str) -> String {
    match walk(authorization_url, Some(redirect_prefix)).await {
        Reached::Redirect(url) => url,
        Reached::Page(page) => panic!("no form on the page:\n{page}"),
    }
}

/// Does what a user does with a device login's `verification_uri_complete` on oidc-provider,
/// in a browser on another device: opens it, confirms the code, logs in (any login and
/// password) and consents, following redirects, until a page with no form is shown. Returns
/// that page.
pub async fn device_approval(verification_uri_complete: &str) -> String {
    match walk(verification_uri_complete, None).await {
        Reached::Page(page) => page,
        Reached::Redirect(url) => unreachable!("no redirect prefix to reach: {url}"),
    }
}

/// Where a walk through the provider's pages ended.
enum Reached {
    /// A redirect to the prefix the walk was looking for: its URL.
    Redirect(String),
    /// A page without a form: its text.
    Page(String),
}

/// Walks oidc-provider's pages from `start` as a browser would, keeping cookies: follows each
/// redirect and submits each page's form (filled in by `parse_form`), until a redirect goes to
/// `redirect_prefix` or a page has no form. At most 20 steps.
async fn walk(start: &str, redirect_prefix: Option<&str>) -> Reached {
    let browser = crate::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut cookies = Cookies::default();
    let mut next = (reqwest::Method::GET, start.to_owned(), Vec::<(String, String)>::new());
    for _ in 0..20 {
        let (method, url, form) = next;
        if redirect_prefix.is_some_and(|prefix| url.starts_with(prefix)) {
            return Reached::Redirect(url);
        }
        let request = browser.request(method, &url);
        let request = if form.is_empty() { request } else { request.form(&form) };
        let request = match cookies.header() {
            Some(header) => request.header(reqwest::header::COOKIE, header),
            None => request,
        };
        let response = request.send().await.expect("the provider answers");
        cookies.keep(response.headers());
        let base = reqwest::Url::parse(&url).unwrap();
        if response.status().is_redirection() {
            let location = response.headers()["location"].to_str().unwrap();
            next = (reqwest::Method::GET, base.join(location).unwrap().to_string(), vec![]);
            continue;
        }
        let page = response.text().await.unwrap();
        let Some((action, fields)) = parse_form(&page) else { return Reached::Page(page) };
        next = (reqwest::Method::POST, base.join(&action).unwrap().to_string(), fields);
    }
    panic!("the walk through the provider's pages from {start} did not end within 20 steps");
}

/// The cookies the browser keeps between the provider's pages. A login stays on one origin, so
/// the path and domain of a cookie do not matter; one that is set to expire is dropped, as the
/// provider does with its interaction cookies once the login is done.
#[derive(Default)]
struct Cookies(Vec<(String, String)>);

impl Cookies {
    fn keep(&mut self, headers: &reqwest::header::HeaderMap) {
        for set in headers.get_all(reqwest::header::SET_COOKIE) {
            let set = set.to_str().expect("a Set-Cookie header in ASCII");
            let mut parts = set.split(';');
            let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else { continue };
            let (name, value) = (name.trim(), value.trim());
            self.0.retain(|(kept, _)| kept != name);
            let expired = parts
                .map(|attribute| attribute.trim().to_ascii_lowercase())
                .any(|attribute| attribute == "max-age=0" || attribute.starts_with("expires=thu, 01 jan 1970"));
            if !expired && !value.is_empty() {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn header(&self) -> Option<String> {
        (!self.0.is_empty())
            .then(|| self.0.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; "))
    }
}

/// The first form of a page: its action and fields, with login and password filled in.
fn parse_form(page: &str) -> Option<(String, Vec<(String, String)>)> {
    let form = &page[page.find("<form")?..];
    let action = attribute(&form[..form.find('>')?], "action")?;
    let body = &form[..form.find("</form>")?];
    let mut fields = Vec::new();
    for input in body.split("<input").skip(1) {
        let tag = &input[..input.find('>')?];
        let Some(name) = attribute(tag, "name") else { continue };
        let value = match name.as_str() {
            "login" => "alice".to_owned(),
            "password" => "any".to_owned(),
            _ => attribute(tag, "value").unwrap_or_default(),
        };
        fields.push((name, value));
    }
    Some((action.replace("&amp;", "&"), fields))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_owned())
}
