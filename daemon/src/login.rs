//! Logging in: the authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636), received on a
//! loopback redirect URI (RFC 8252 §7.3).
//!
//! `tokenctl login NAME` asks the profile's actor to start a login. A [`Plan`] draws a `state`
//! and a PKCE verifier from the operating system's CSPRNG and builds the authorization URL for
//! the browser; [`Plan::listen`] binds the profile's `redirect_uri` (127.0.0.1 or ::1 only) and
//! starts the [`Listener`], a task that waits for the browser's redirect. The code can also
//! come as the same redirect URL pasted into `tokenctl login` by a user whose browser runs on
//! another machine (a login over SSH), which [`Listener::check_pasted`] checks exactly like a
//! redirect.
//!
//! This module holds the mechanics only. Whether a login is pending, until when, which code
//! exchange is queued and who waits for the outcome is the profile's state machine's to know
//! ([`crate::profile::state`]); the listener reports what it hears ([`Heard`]) to the actor,
//! which feeds it to the machine, and closes the listener when the machine says the login
//! ended (a newer login, the `login_timeout`, a logout, a reload).
//!
//! A redirect is checked in a fixed order: the path, then `state` (in constant time) before
//! anything else is looked at, then `iss` (RFC 9207) when present, then `error`, then `code`.
//! Requests for other paths or with a wrong `state` are answered and ignored, so a stray or
//! forged request cannot end the login. The listener reads at most 8 KiB per request, gives
//! each connection 10 seconds, reads up to 64 connections side by side, and stops listening as
//! soon as it has the redirect; the browser that brought the code is answered once the code is
//! exchanged.
//!
//! A profile with `grant = "device_code"` logs in through [`device`] instead (RFC 8628): no
//! listener, a code the user enters on any device, and a task polling the token endpoint. A
//! device login is a pending login of the profile's state machine like any other, so the
//! newer login of either kind wins.

pub(crate) mod device;
mod page;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokend_proto::{Error, Grant, Secret};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use url::{Host, Url};

use crate::config::Profile;
use crate::oauth::token::TokenSet;

use page::{Page, respond};

/// The most a login listener reads of one request.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one connection to the login listener may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How a waiter for a login's outcome is answered.
pub(crate) type Reply = oneshot::Sender<Result<(), Error>>;

/// A login about to start: where to send the browser, and what its redirect must carry.
pub(crate) struct Plan {
    /// The authorization URL.
    pub(crate) url: String,
    /// The PKCE verifier, for the code exchange.
    pub(crate) verifier: Secret,
    redirect: Url,
    expect: Expect,
}

/// What a login's listener heard, for the profile's actor.
pub(crate) struct Heard {
    /// The login whose listener (or polling) heard it.
    pub(crate) login: u64,
    /// What it heard.
    pub(crate) what: Redirect,
}

/// What ends the wait for the browser, or for the user to enter a device login's code.
pub(crate) enum Redirect {
    /// The authorization code; the browser that brought it waits on the reply for the outcome.
    Code(Secret, Reply),
    /// The server refused, or the redirect came from another server: the login fails.
    Refused(String),
    /// A device login's tokens: the user approved it.
    Tokens(Box<TokenSet>),
}

/// A login's listening task.
pub(crate) struct Listener {
    id: u64,
    expect: Arc<Expect>,
    task: JoinHandle<()>,
}

/// What a pending login runs: a browser login's listener, or a device login's polling.
pub(crate) enum Waiting {
    /// Waits for the browser's redirect.
    Browser(Listener),
    /// Polls for a device login's tokens.
    Device(device::Poller),
}

impl Waiting {
    /// Stops listening or polling.
    pub(crate) async fn close(self) {
        match self {
            Waiting::Browser(listener) => listener.close().await,
            Waiting::Device(poller) => poller.close().await,
        }
    }
}

/// What a redirect must carry.
struct Expect {
    profile: String,
    path: String,
    state: Secret,
    issuer: Issuer,
}

/// Whom `iss` must name.
enum Issuer {
    /// The configured `issuer`, exactly.
    Exact(String),
    /// The authorization server's origin (scheme, host, port), when no `issuer` is configured.
    Origin(url::Origin),
}

/// The error for a login asked of a profile that gets its tokens by itself.
pub(crate) fn no_login(profile: String) -> Error {
    Error::NotSupported {
        profile,
        message:
            "logins are for grant = \"authorization_code\" and \"device_code\"; this profile gets its tokens by itself"
                .into(),
    }
}

impl Plan {
    /// Plans a login for `profile`: draws its `state` and PKCE verifier and builds the
    /// authorization URL. Fails for a profile that cannot log in (yet).
    pub(crate) fn new(profile: &Profile) -> Result<Plan, Error> {
        let name = profile.name.clone();
        if profile.grant == Grant::AuthorizationCode && profile.authorize_url().is_none() {
            return Err(Error::Login {
                profile: name,
                message: "the authorization endpoint is not known yet: tokend has not discovered it from the profile's issuer; see `tokenctl status` for why".into(),
            });
        }
        let (Grant::AuthorizationCode, Some(authorize_url), Some(redirect)) =
            (profile.grant, profile.authorize_url(), &profile.redirect_uri)
        else {
            return Err(no_login(name));
        };
        let state = random_token();
        let verifier = random_token();
        let challenge =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()));
        let mut url = authorize_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &profile.client_id)
                .append_pair("redirect_uri", redirect.as_str());
            if let Some(scope) = profile.scope_param() {
                query.append_pair("scope", &scope);
            }
            query
                .append_pair("state", state.expose())
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            for (key, value) in &profile.authorize_params {
                query.append_pair(key, value);
            }
        }
        let expect = Expect {
            profile: name,
            path: redirect.path().to_owned(),
            state,
            issuer: match &profile.issuer {
                Some(issuer) => Issuer::Exact(issuer.clone()),
                None => Issuer::Origin(authorize_url.origin()),
            },
        };
        Ok(Plan { url: url.into(), verifier, redirect: redirect.clone(), expect })
    }

    /// Listens on the redirect URI for login `id`, reporting what it hears to `heard`. Returns
    /// the listener, the authorization URL and the verifier.
    pub(crate) async fn listen(self, id: u64, heard: mpsc::Sender<Heard>) -> Result<(Listener, String, Secret), Error> {
        let socket = bind(&self.redirect, &self.expect.profile).await?;
        let expect = Arc::new(self.expect);
        let task = tokio::spawn(listen(socket, expect.clone(), id, heard));
        Ok((Listener { id, expect, task }, self.url, self.verifier))
    }
}

impl Listener {
    /// The login it listens for.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Checks a redirect URL the user pasted, as the redirect would be checked (from any host).
    pub(crate) fn check_pasted(&self, url: &str) -> Checked {
        check_redirect(&self.expect, url, false)
    }

    /// Stops listening. The port is free once this returns: a newer login may be waiting to
    /// bind it.
    pub(crate) async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// A listener dropped without [`Listener::close`] (its actor panicked) stops listening too.
impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on the redirect URI's loopback address and port.
async fn bind(redirect: &Url, profile: &str) -> Result<TcpListener, Error> {
    let ip = match redirect.host() {
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Domain(name)) => name.parse::<IpAddr>().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        None => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let addr = SocketAddr::new(ip, redirect.port_or_known_default().unwrap_or(80));
    debug_assert!(addr.ip().is_loopback(), "the config only admits loopback redirect URIs");
    TcpListener::bind(addr).await.map_err(|e| Error::Login {
        profile: profile.to_owned(),
        message: format!(
            "cannot listen on {addr} for the browser's redirect: {e}; another program may be using the port (change redirect_uri here and at the server)"
        ),
    })
}

/// 32 bytes from the CSPRNG, Base64url-encoded: 43 characters, as RFC 7636 §4.1 recommends
/// for the verifier, and plenty for `state`.
fn random_token() -> Secret {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::fill(&mut bytes[..]);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*bytes))
}

/// Connections whose request line is still being read, at most. Browsers open spare
/// connections that send nothing, so requests are read side by side: a silent connection must
/// not hold up the redirect on another.
const MAX_READERS: usize = 64;

/// The listener's task: accepts connections, reads their requests side by side, answers those
/// that are not the redirect, and ends once the redirect arrives, handing it to `heard`.
async fn listen(socket: TcpListener, expect: Arc<Expect>, id: u64, heard: mpsc::Sender<Heard>) {
    let readers = Arc::new(tokio::sync::Semaphore::new(MAX_READERS));
    let (requests_tx, mut requests) = mpsc::channel(1);
    loop {
        let (mut stream, target) = tokio::select! {
            accepted = socket.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, most likely: wait instead of spinning.
                        tracing::debug!("login listener: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Over the limit, the connection is closed at once; the browser retries.
                let Ok(permit) = readers.clone().try_acquire_owned() else { continue };
                let found = requests_tx.clone();
                tokio::spawn(async move {
                    if let Some(request) = read_request(stream).await {
                        drop(permit);
                        let _ = found.send(request).await;
                    }
                });
                continue;
            }
            Some(request) = requests.recv() => request,
        };
        let what = match check_redirect(&expect, &target, true) {
            Checked::Ignore(status, page) => {
                tokio::spawn(async move { respond(&mut stream, status, &Page::Ignored { why: &page }).await });
                continue;
            }
            Checked::Fail(message) => {
                let profile = expect.profile.clone();
                let why = message.clone();
                tokio::spawn(async move {
                    respond(&mut stream, "400 Bad Request", &Page::Failed { profile: &profile, why }).await;
                });
                Redirect::Refused(message)
            }
            Checked::Code(code) => {
                let (reply, outcome) = oneshot::channel();
                tokio::spawn(answer_browser(stream, expect.profile.clone(), outcome));
                Redirect::Code(code, reply)
            }
        };
        drop(socket);
        let _ = heard.send(Heard { login: id, what }).await;
        return;
    }
}

/// Shows the browser that brought the code how the exchange went.
async fn answer_browser(mut stream: TcpStream, profile: String, outcome: oneshot::Receiver<Result<(), Error>>) {
    let result = outcome.await.unwrap_or_else(|_| {
        Err(Error::Login { profile: profile.clone(), message: "the login ended before its code was exchanged".into() })
    });
    match &result {
        Ok(()) => respond(&mut stream, "200 OK", &Page::LoggedIn { profile: &profile }).await,
        Err(e) => respond(&mut stream, "502 Bad Gateway", &Page::failed(&profile, e)).await,
    }
}

/// What a redirect (or a pasted URL) amounts to.
pub(crate) enum Checked {
    /// Not the redirect being waited for: answer with this status and page, keep waiting.
    Ignore(&'static str, String),
    /// The server refused or the redirect came from the wrong server: the login fails.
    Fail(String),
    /// The authorization code.
    Code(Secret),
}

fn check_redirect(expect: &Expect, target: &str, from_listener: bool) -> Checked {
    let base = Url::parse("http://127.0.0.1/").expect("a valid base URL");
    let Ok(url) = base.join(target.trim()) else {
        return Checked::Ignore("400 Bad Request", "that is not a URL".into());
    };
    if from_listener && url.path() != expect.path {
        return Checked::Ignore(
            "404 Not Found",
            "Nothing here: tokend is waiting for a login redirect on another path.".into(),
        );
    }
    let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let state_ok =
        params.get("state").is_some_and(|s| bool::from(s.as_bytes().ct_eq(expect.state.expose().as_bytes())));
    if !state_ok {
        return Checked::Ignore(
            "400 Bad Request",
            "the `state` in this redirect does not match the pending login; it is not the answer to the login tokend started (or it is from an older attempt)".into(),
        );
    }
    if let Some(iss) = params.get("iss") {
        let ok = match &expect.issuer {
            Issuer::Exact(issuer) => iss == issuer,
            Issuer::Origin(origin) => Url::parse(iss).is_ok_and(|u| u.origin() == *origin),
        };
        if !ok {
            return Checked::Fail(format!(
                "the redirect names issuer {:?}, which is not this profile's authorization server (a possible mix-up attack, RFC 9207); set `issuer` in the profile if the server's issuer differs from its authorize_url",
                crate::oauth::sanitize(iss)
            ));
        }
    }
    if let Some(error) = params.get("error") {
        let error = crate::oauth::sanitize(error);
        let description = params.get("error_description").map(|d| crate::oauth::sanitize(d));
        let advice = match error.as_str() {
            "access_denied" => " — access was denied at the server; run `tokenctl login` again to retry",
            "invalid_scope" => " — check `scopes` in the profile",
            "unauthorized_client" => " — the server does not allow this client to use the authorization code grant",
            _ => "",
        };
        return Checked::Fail(match description {
            Some(d) => format!("the server refused: {error}: {d}{advice}"),
            None => format!("the server refused: {error}{advice}"),
        });
    }
    match params.get("code").filter(|c| !c.is_empty()) {
        Some(code) => Checked::Code(Secret::from(code.as_str())),
        None => Checked::Fail("the redirect carries neither a code nor an error".into()),
    }
}

/// Reads one HTTP request line within the limits; returns the request target.
async fn read_request(mut stream: TcpStream) -> Option<(TcpStream, String)> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_REQUEST {
                return true;
            }
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_REQUEST - buf.len())]),
            }
        }
    })
    .await;
    if read != Ok(true) {
        return None;
    }
    let line_end = buf.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?.trim_end();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    if method != "GET" {
        respond(
            &mut stream,
            "405 Method Not Allowed",
            &Page::Ignored { why: "tokend only expects a GET redirect here." },
        )
        .await;
        return None;
    }
    Some((stream, target.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect() -> Expect {
        Expect {
            profile: "mm".into(),
            path: "/callback".into(),
            state: Secret::from("the-state"),
            issuer: Issuer::Origin(Url::parse("https://as.example/oauth/authorize").unwrap().origin()),
        }
    }

    #[test]
    fn a_good_redirect_yields_the_code() {
        let checked = check_redirect(&expect(), "/callback?code=abc&state=the-state", true);
        assert!(matches!(checked, Checked::Code(c) if c.expose() == "abc"));
    }

    #[test]
    fn state_is_checked_before_anything_else() {
        let checked = check_redirect(&expect(), "/callback?error=access_denied&state=forged", true);
        assert!(matches!(checked, Checked::Ignore("400 Bad Request", _)), "a forged error must not end the login");
        let checked = check_redirect(&expect(), "/callback?code=abc", true);
        assert!(matches!(checked, Checked::Ignore(..)));
    }

    #[test]
    fn other_paths_are_ignored() {
        assert!(matches!(check_redirect(&expect(), "/favicon.ico", true), Checked::Ignore("404 Not Found", _)));
    }

    #[test]
    fn a_pasted_url_may_come_from_any_host_but_must_carry_the_state() {
        let checked = check_redirect(&expect(), "http://127.0.0.1:9999/callback?code=abc&state=the-state", false);
        assert!(matches!(checked, Checked::Code(_)));
    }

    #[test]
    fn iss_is_verified_when_present() {
        let ok = check_redirect(&expect(), "/callback?code=abc&state=the-state&iss=https%3A%2F%2Fas.example", true);
        assert!(matches!(ok, Checked::Code(_)));
        let bad = check_redirect(&expect(), "/callback?code=abc&state=the-state&iss=https%3A%2F%2Fevil.example", true);
        assert!(matches!(bad, Checked::Fail(m) if m.contains("mix-up")));
    }

    #[test]
    fn access_denied_becomes_a_clear_message() {
        let checked = check_redirect(
            &expect(),
            "/callback?error=access_denied&error_description=User+said+no&state=the-state",
            true,
        );
        assert!(matches!(checked, Checked::Fail(m) if m.contains("access_denied: User said no")));
    }

    #[test]
    fn pkce_verifiers_are_43_unreserved_characters() {
        let v = random_token();
        assert_eq!(v.expose().len(), 43);
        assert!(v.expose().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(random_token(), v);
    }
}
