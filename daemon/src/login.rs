//! Logging in: the authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636), received on a
//! loopback redirect URI (RFC 8252 §7.3).
//!
//! `tokenctl login NAME` asks the daemon to start a login. The daemon draws a `state` and a
//! PKCE verifier from the operating system's CSPRNG, listens on the profile's `redirect_uri`
//! (127.0.0.1 or ::1 only), and hands back the authorization URL for the browser. One login
//! task then waits for exactly one thing, whichever comes first:
//!
//! - the browser's redirect to the listener;
//! - the same redirect URL pasted into `tokenctl login` by a user whose browser runs on another
//!   machine (a login over SSH), which is checked exactly like a redirect;
//! - a newer login for the same profile (the newer one wins; the older one is told so);
//! - the profile's `login_timeout`.
//!
//! A redirect is checked in a fixed order: the path, then `state` (in constant time) before
//! anything else is looked at, then `iss` (RFC 9207) when present, then `error`, then `code`.
//! Requests for other paths or with a wrong `state` are answered and ignored, so a stray or
//! forged request cannot end the login. The listener reads at most 8 KiB per request, gives
//! each connection 10 seconds, and closes when the login ends.
//!
//! A profile with `grant = "device_code"` logs in through [`device`] instead (RFC 8628): no
//! listener, a code the user enters on any device, and tokend polling the token endpoint. Both
//! kinds share [`Logins`], so the newer login wins either way.

mod device;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokend_proto::{Error, Grant, Secret};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use url::{Host, Url};

use crate::config::Profile;
use crate::daemon::Daemon;
use crate::oauth::Http;
use crate::profile::ProfileHandle;

mod page;
pub use device::DeviceCode;
use page::{Page, respond};

/// The most a login listener reads of one request.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one connection to the login listener may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of a login: `None` while it is pending.
pub type Outcome = Option<Result<(), Error>>;

/// A login that was started.
pub struct Started {
    /// Where to send the browser.
    pub url: String,
    /// When the login gives up.
    pub expires_at: SystemTime,
    /// Turns `Some` when the login ends.
    pub outcome: watch::Receiver<Outcome>,
    /// What to show the user of a device login; `url` is then where to enter the code.
    pub device: Option<DeviceCode>,
}

/// The pending logins, at most one per profile.
pub struct Logins {
    pending: Mutex<HashMap<String, Pending>>,
    /// For the requests of device logins.
    http: Http,
}

struct Pending {
    cancel: Option<oneshot::Sender<String>>,
    pasted: mpsc::Sender<(Secret, oneshot::Sender<Result<(), Error>>)>,
    outcome: watch::Receiver<Outcome>,
    task: JoinHandle<()>,
}

/// What one login task needs to check a redirect.
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

impl Logins {
    /// No logins pending; device logins make their requests with `http`.
    pub fn new(http: Http) -> Logins {
        Logins { pending: Mutex::default(), http }
    }

    /// Starts a login for `handle`'s profile, replacing a pending one.
    pub async fn start(&self, handle: Arc<ProfileHandle>) -> Result<Started, Error> {
        if handle.config.grant == Grant::DeviceCode {
            return device::start(self, handle).await;
        }
        let profile = handle.config.clone();
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
            return Err(Error::NotSupported {
                profile: name,
                message: "logins are for grant = \"authorization_code\" and \"device_code\"; this profile gets its tokens by itself".into(),
            });
        };

        let mut pending = self.pending.lock().await;
        if let Some(old) = pending.remove(&name) {
            finish(old, "a newer login for this profile replaced this one").await;
        }

        let listener = bind(redirect, &name).await?;
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
            profile: name.clone(),
            path: redirect.path().to_owned(),
            state,
            issuer: match &profile.issuer {
                Some(issuer) => Issuer::Exact(issuer.clone()),
                None => Issuer::Origin(authorize_url.origin()),
            },
        };
        let expires_at = SystemTime::now() + profile.login_timeout;
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let (pasted_tx, pasted_rx) = mpsc::channel(4);
        let (outcome_tx, outcome_rx) = watch::channel(None);
        handle.set_login_pending(Some(expires_at)).await;
        let task = tokio::spawn(run(
            handle,
            listener,
            expect,
            verifier,
            profile.login_timeout,
            cancel_rx,
            pasted_rx,
            outcome_tx,
        ));
        pending.insert(
            name.clone(),
            Pending { cancel: Some(cancel_tx), pasted: pasted_tx, outcome: outcome_rx.clone(), task },
        );
        tracing::info!(profile = %name, "login started; waiting for the browser");
        Ok(Started { url: url.into(), expires_at, outcome: outcome_rx, device: None })
    }

    /// Completes `profile`'s pending login with a redirect URL pasted by the user.
    pub async fn paste(&self, profile: &str, url: Secret) -> Result<(), Error> {
        let sender = {
            let pending = self.pending.lock().await;
            match pending.get(profile).filter(|p| p.outcome.borrow().is_none()) {
                Some(p) => p.pasted.clone(),
                None => {
                    return Err(Error::Login {
                        profile: profile.to_owned(),
                        message: format!("no login is pending; run `tokenctl login {profile}` first"),
                    });
                }
            }
        };
        let (reply, done) = oneshot::channel();
        let ended =
            || Error::Login { profile: profile.to_owned(), message: "the login ended before the URL arrived".into() };
        sender.send((url, reply)).await.map_err(|_| ended())?;
        done.await.map_err(|_| ended())?
    }

    /// Ends `profile`'s pending login, if any, telling its waiters `why`.
    pub async fn cancel(&self, profile: &str, why: &str) {
        let old = self.pending.lock().await.remove(profile);
        if let Some(old) = old {
            finish(old, why).await;
        }
    }
}

/// Cancels a pending login and waits until its listener is closed.
async fn finish(mut old: Pending, why: &str) {
    if let Some(cancel) = old.cancel.take() {
        let _ = cancel.send(why.to_owned());
    }
    let _ = old.task.await;
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

#[allow(clippy::too_many_arguments)]
async fn run(
    handle: Arc<ProfileHandle>,
    listener: TcpListener,
    expect: Expect,
    verifier: Secret,
    timeout: Duration,
    mut cancel: oneshot::Receiver<String>,
    mut pasted: mpsc::Receiver<(Secret, oneshot::Sender<Result<(), Error>>)>,
    outcome: watch::Sender<Outcome>,
) {
    let profile = expect.profile.clone();
    let login_error = |message: String| Error::Login { profile: profile.clone(), message };
    let deadline = tokio::time::Instant::now() + timeout;
    let (requests_tx, mut requests) = mpsc::channel(1);
    let acceptor = tokio::spawn(accept_requests(listener, requests_tx));
    let result = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                break Err(login_error(format!(
                    "no answer from the browser within {}; run `tokenctl login {profile}` again",
                    humantime::format_duration(timeout)
                )));
            }
            why = &mut cancel => break Err(login_error(why.unwrap_or_else(|_| "the login was cancelled".into()))),
            Some((mut stream, target)) = requests.recv() => {
                match check_redirect(&expect, &target, true) {
                    Checked::Ignore(status, why) => {
                        respond(&mut stream, status, &Page::Ignored { why: &why }).await;
                    }
                    Checked::Fail(message) => {
                        respond(&mut stream, "400 Bad Request", &Page::Failed { profile: &profile, why: message.clone() }).await;
                        break Err(login_error(message));
                    }
                    Checked::Code(code) => {
                        let result = exchange(&handle, code, &verifier).await;
                        match &result {
                            Ok(()) => respond(&mut stream, "200 OK", &Page::LoggedIn { profile: &profile }).await,
                            Err(e) => respond(&mut stream, "502 Bad Gateway", &Page::failed(&profile, e)).await,
                        }
                        break result;
                    }
                }
            }
            Some((url, reply)) = pasted.recv() => {
                match check_redirect(&expect, url.expose(), false) {
                    Checked::Ignore(_, message) => {
                        let _ = reply.send(Err(login_error(message)));
                    }
                    Checked::Fail(message) => {
                        let _ = reply.send(Err(login_error(message.clone())));
                        break Err(login_error(message));
                    }
                    Checked::Code(code) => {
                        let result = exchange(&handle, code, &verifier).await;
                        let _ = reply.send(result.clone());
                        break result;
                    }
                }
            }
        }
    };
    // The port is free again once this returns: a newer login may be waiting to bind it.
    acceptor.abort();
    let _ = acceptor.await;
    match &result {
        Ok(()) => tracing::info!(profile = %profile, "login complete"),
        Err(e) => tracing::warn!(profile = %profile, "login ended: {e}"),
    }
    handle.set_login_pending(None).await;
    outcome.send_replace(Some(result));
}

async fn exchange(handle: &ProfileHandle, code: Secret, verifier: &Secret) -> Result<(), Error> {
    match handle.exchange(code, verifier.clone()).await {
        Ok(result) => result,
        Err(_) => Err(Error::Login {
            profile: handle.config.name.clone(),
            message: "the profile was reloaded during the login; log in again".into(),
        }),
    }
}

/// What a redirect (or a pasted URL) amounts to.
enum Checked {
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

/// Connections whose request line is still being read, at most. Browsers open spare
/// connections that send nothing, so requests are read side by side: a silent connection must
/// not hold up the redirect on another.
const MAX_READERS: usize = 64;

/// Accepts connections on the login listener and passes on each GET request read from them.
async fn accept_requests(listener: TcpListener, found: mpsc::Sender<(TcpStream, String)>) {
    let readers = Arc::new(tokio::sync::Semaphore::new(MAX_READERS));
    loop {
        let stream = match listener.accept().await {
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
        let found = found.clone();
        tokio::spawn(async move {
            if let Some(request) = read_request(stream).await {
                drop(permit);
                let _ = found.send(request).await;
            }
        });
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

/// Starts a login when a profile needs one and a notify command is configured, then runs the
/// command with the login's URL, so the user can log in straight from the notification.
/// Without a notify command, a desktop notification names the command to run instead.
pub async fn notify_when_needed(daemon: Weak<Daemon>, mut needed: mpsc::UnboundedReceiver<(String, String)>) {
    while let Some((name, reason)) = needed.recv().await {
        let Some(daemon) = daemon.upgrade() else { return };
        let Ok(handle) = daemon.profile(&name) else { continue };
        let profile: Arc<Profile> = handle.config.clone();
        if !daemon.notifier().configured_for(&profile) {
            #[cfg(unix)]
            crate::desktop::login_needed(&name, &reason);
            continue;
        }
        // A device login's URL alone does not log anyone in (the code may not be in it), and
        // a code nobody asked for would only expire: the user runs `tokenctl login`.
        if profile.grant == Grant::DeviceCode {
            daemon.notifier().login_needed(&profile, &reason);
            continue;
        }
        match daemon.logins.start(handle).await {
            Ok(started) => daemon.notifier().login_needed_with_url(&profile, &reason, &started.url),
            Err(e) => {
                tracing::warn!(profile = %name, "cannot start a login for the notification: {e}");
                daemon.notifier().login_needed(&profile, &reason);
            }
        }
    }
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
