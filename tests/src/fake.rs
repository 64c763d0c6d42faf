//! A fake OAuth 2.0 provider: a real HTTP server on 127.0.0.1 that behaves like the
//! Minut-style and Movemint-style APIs, and can be told to misbehave.
//!
//! It issues random tokens and remembers them, so a test can ask whether a token tokend served
//! is one the server would accept right now. It counts requests and open connections (so that a
//! test can wait until the requests of a client that went away are carried out), can insist on
//! HTTP Basic or on body authentication and on extra form parameters, can hold requests until
//! released, delay them, answer any status or garbage (or a real answer with any field
//! replaced), rotate refresh tokens (and revoke the whole grant when a rotated-out refresh token
//! is used again, as careful servers do), revoke the access token a refresh replaces (at the
//! refresh, or when the new token is first used, as Doorkeeper and Django OAuth Toolkit do), run
//! the authorization endpoint with PKCE, revoke tokens, and describe them (or answer the info
//! request with any body). It can also publish its endpoints as authorization server metadata
//! (RFC 8414 and OpenID Connect Discovery), for an issuer with or without a path, and make
//! those documents lie or misbehave. Logins can end (refresh tokens that stop working a set time
//! after the login, said through Keycloak's `refresh_expires_in`, a JWT refresh token's `exp`, or
//! not at all), and tokens can be JWTs (unsigned: tokend reads them without verifying). It runs
//! the device authorization grant (RFC 8628): codes, a verification page that approves them, and
//! polls answered as a [`DeviceFlow`] says — pending, `slow_down`, approved, denied or expired —
//! or a hostile device answer. Under `/api/` it is also the API the tokens are for ([`api`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, oneshot};

pub mod api;

/// How a client must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic only.
    Basic,
    /// `client_id` and `client_secret` in the body only.
    Post,
    /// Either.
    Any,
}

/// How token responses are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `access_token`, `token_type: "Bearer"`, `expires_in` (number).
    Minut,
    /// Doorkeeper: adds `created_at`, `scope`, and `refresh_token` for code and refresh grants.
    Movemint,
    /// What sloppy servers send: no `token_type`, `expires_in` as a string, `text/plain`.
    Sloppy,
    /// No `expires_in` at all.
    NoExpiry,
}

/// How the provider tells when a login ends (see [`Fake::set_login_lifetime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginEnd {
    /// It does not say.
    Silent,
    /// `refresh_expires_in` in every answer with a refresh token, as Keycloak does.
    RefreshExpiresIn,
    /// Refresh tokens are JWTs whose `exp` is the end of the login.
    JwtRefreshToken,
}

/// A one-off or standing misbehaviour of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and JSON body.
    Status(u16, String),
    /// Answer 200 with a body that is not a token response.
    Garbage,
    /// Answer 503 with `Retry-After`.
    RetryAfter(u64),
    /// Close the connection without answering.
    Hangup,
    /// Carry out the grant (issuing and rotating tokens), then close the connection without
    /// delivering the answer.
    LostAnswer,
    /// Answer 200 with a token response that is well-formed but [`HUGE_BODY`] bytes long, far
    /// over tokend's 1 MiB cap on response bodies. The token in it is not issued.
    Huge,
    /// Carry out the grant (issuing and rotating tokens), then answer with the token response's
    /// field set to this value: a hostile answer built on a real one.
    Field(&'static str, serde_json::Value),
}

/// When the server revokes the access tokens a refresh replaces. Doorkeeper and Django OAuth
/// Toolkit keep an access token and its refresh token as one record, and revoke the record once
/// its refresh token has been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOnRefresh {
    /// Never: an access token lives until it expires (the default).
    Never,
    /// When the refresh happens: every earlier access token of the grant is revoked (Django
    /// OAuth Toolkit, and Doorkeeper by default).
    AtRefresh,
    /// When an access token is first used at an API endpoint (`/oauth/token/info`,
    /// `/v8/users/me`): every access token of its grant issued before it is revoked
    /// (Doorkeeper's `revoke_previous_refresh_token_on_use`).
    OnFirstUse,
}

/// The size of a [`Fault::Huge`] body: four times tokend's cap on response bodies.
pub const HUGE_BODY: usize = 4 * 1024 * 1024;

/// The metadata documents the provider publishes; none until [`Fake::publish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The issuer's path: `""` for the issuer `BASE`, `"/tenant/a"` for `BASE/tenant/a`.
    pub issuer_path: String,
    /// Serve RFC 8414's document, at `/.well-known/oauth-authorization-server{issuer_path}`.
    pub rfc8414: bool,
    /// Serve OpenID Connect's document, at `{issuer_path}/.well-known/openid-configuration`.
    pub openid: bool,
    /// Name this issuer in the documents instead of the right one.
    pub issuer_override: Option<String>,
    /// List this as the token endpoint instead of the provider's own.
    pub token_endpoint: Option<String>,
    /// Answer with this body instead of a document.
    pub body: Option<MetadataBody>,
}

/// A metadata answer that is not a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataBody {
    /// A valid document padded to [`HUGE_BODY`] bytes.
    Huge,
    /// An HTML page.
    Garbage,
}

/// How the device authorization grant (RFC 8628) goes; see [`Fake::set_device_flow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFlow {
    /// The `interval` the device authorization answer names, if any.
    pub interval: Option<u64>,
    /// The `expires_in` it names.
    pub expires_in: u64,
    /// Whether it carries `verification_uri_complete`.
    pub complete: bool,
    /// Polls (1-based, counted per device code) answered `slow_down`.
    pub slow_down_at: Vec<u32>,
    /// Polls answered `authorization_pending` before the outcome, whatever else happens.
    pub pending_polls: u32,
    /// What the polls after those get.
    pub outcome: DeviceOutcome,
    /// Answer the device authorization request with this status and body (sent as
    /// `application/json`, whatever it holds) instead of a code.
    pub answer: Option<(u16, String)>,
}

impl Default for DeviceFlow {
    fn default() -> Self {
        DeviceFlow {
            interval: Some(1),
            expires_in: 600,
            complete: true,
            slow_down_at: vec![],
            pending_polls: 0,
            outcome: DeviceOutcome::WaitForUser,
            answer: None,
        }
    }
}

/// What a poll gets once the pending polls are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// `authorization_pending` until the user approves at the verification page, then tokens.
    WaitForUser,
    /// Tokens, as if the user had approved.
    Approve,
    /// `access_denied`.
    Deny,
    /// `expired_token`.
    Expire,
}

#[derive(Debug, Clone)]
struct Device {
    client_id: String,
    user_code: String,
    scope: Option<String>,
    polls: u32,
    approved: bool,
    /// Tokens were issued for it: it is used up.
    done: bool,
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its secret; `None` for a public client.
    pub secret: Option<String>,
    /// How it must authenticate.
    pub auth: ClientAuth,
    /// Form parameters every token request must carry.
    pub required_params: Vec<(String, String)>,
    /// The redirect URI registered for the code grant.
    pub redirect_uri: Option<String>,
}

/// A token request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The path.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The form fields.
    pub form: HashMap<String, String>,
    /// When it arrived.
    pub at: SystemTime,
}

#[derive(Debug, Clone)]
struct Issued {
    /// The refresh token issued in the same response, if any.
    refresh: Option<String>,
    client_id: String,
    expires_at: SystemTime,
    scope: Option<String>,
    grant: u64,
    revoked: bool,
    /// Issue order among all access tokens.
    order: usize,
    /// Presented at an API endpoint at least once.
    used: bool,
}

#[derive(Debug, Clone)]
struct Refresh {
    /// Issue order, 1 for the first refresh token ever issued.
    sequence: u64,
    client_id: String,
    grant: u64,
    scope: Option<String>,
    used: bool,
    revoked: bool,
    /// When the login this refresh token belongs to happened.
    login_at: SystemTime,
}

#[derive(Debug, Clone)]
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: Option<String>,
    scope: Option<String>,
}

struct Inner {
    clients: HashMap<String, Client>,
    api_requests: Vec<api::ApiRequest>,
    lifetime: Duration,
    style: Style,
    rotate: bool,
    cc_refresh: bool,
    delay: Duration,
    answer_delay: Duration,
    faults: VecDeque<Fault>,
    standing_fault: Option<Fault>,
    hold: Option<Arc<Notify>>,
    issued: HashMap<String, Issued>,
    refresh: HashMap<String, Refresh>,
    codes: HashMap<String, Code>,
    revoked_grants: Vec<u64>,
    next_grant: u64,
    requests: Vec<Recorded>,
    revocations: Vec<HashMap<String, String>>,
    deny_authorization: Option<String>,
    issuer_param: Option<String>,
    info_requests: u64,
    info_answer: Option<(u16, String)>,
    codes_issued: Vec<String>,
    token_size: usize,
    metadata: Option<Metadata>,
    metadata_requests: Vec<String>,
    revoke_on_refresh: RevokeOnRefresh,
    reject_every_use: bool,
    /// Refresh requests refused because their login had ended.
    login_expired_refreshes: u64,
    login_lifetime: Option<Duration>,
    login_end: LoginEnd,
    jwt_access_tokens: bool,
    device_flow: DeviceFlow,
    devices: HashMap<String, Device>,
    device_requests: Vec<HashMap<String, String>>,
}

/// The provider's shared state.
#[derive(Clone)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
    /// How many connections are open.
    open: Arc<AtomicUsize>,
    /// Where it listens, e.g. `http://127.0.0.1:41234`.
    pub base: String,
}

/// A running provider; stops when dropped.
pub struct FakeProvider {
    /// Handle on its state.
    pub fake: Fake,
    /// Its address.
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl std::ops::Deref for FakeProvider {
    type Target = Fake;
    fn deref(&self) -> &Fake {
        &self.fake
    }
}

impl FakeProvider {
    /// Starts a provider on an ephemeral port of 127.0.0.1.
    pub async fn start() -> FakeProvider {
        FakeProvider::start_on("127.0.0.1:0").await
    }

    /// The provider with the client most client_credentials tests use: `c`, secret `s`,
    /// authenticated with HTTP Basic.
    pub async fn with_basic_client() -> FakeProvider {
        let fake = FakeProvider::start().await;
        fake.client("c", "s", ClientAuth::Basic);
        fake
    }

    /// Starts a provider on `addr`.
    pub async fn start_on(addr: &str) -> FakeProvider {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the fake provider");
        let addr = listener.local_addr().unwrap();
        let fake = Fake {
            base: format!("http://{addr}"),
            open: Arc::default(),
            inner: Arc::new(Mutex::new(Inner {
                clients: HashMap::new(),
                api_requests: Vec::new(),
                lifetime: Duration::from_secs(3600),
                style: Style::Minut,
                rotate: true,
                cc_refresh: false,
                delay: Duration::ZERO,
                answer_delay: Duration::ZERO,
                faults: VecDeque::new(),
                standing_fault: None,
                hold: None,
                issued: HashMap::new(),
                refresh: HashMap::new(),
                codes: HashMap::new(),
                revoked_grants: Vec::new(),
                next_grant: 1,
                requests: Vec::new(),
                revocations: Vec::new(),
                deny_authorization: None,
                issuer_param: None,
                info_requests: 0,
                info_answer: None,
                codes_issued: Vec::new(),
                token_size: 0,
                metadata: None,
                metadata_requests: Vec::new(),
                revoke_on_refresh: RevokeOnRefresh::Never,
                reject_every_use: false,
                login_expired_refreshes: 0,
                login_lifetime: None,
                login_end: LoginEnd::Silent,
                jwt_access_tokens: false,
                device_flow: DeviceFlow::default(),
                devices: HashMap::new(),
                device_requests: Vec::new(),
            })),
        };
        let app = axum::Router::new().fallback(handle).with_state(fake.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = Counted { listener, open: fake.open.clone() };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeProvider { fake, addr, _stop: stop }
    }
}

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// A URL on this provider.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client_credentials profile `name` for client `c` (secret `s`) on this provider's token
    /// endpoint, followed by `extra` (more keys of the profile, one per line).
    pub fn cc_profile(&self, name: &str, extra: &str) -> String {
        format!(
            "[profiles.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{extra}\n",
            self.url("/oauth/token")
        )
    }

    /// Registers a confidential client.
    pub fn client(&self, id: &str, secret: &str, auth: ClientAuth) {
        self.register(id, Client { secret: Some(secret.into()), auth, required_params: vec![], redirect_uri: None });
    }

    /// Registers a client with every detail.
    pub fn register(&self, id: &str, client: Client) {
        self.with(|i| i.clients.insert(id.into(), client));
    }

    /// Sets the lifetime of tokens issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.with(|i| i.lifetime = lifetime);
    }

    /// Sets the response style.
    pub fn set_style(&self, style: Style) {
        self.with(|i| i.style = style);
    }

    /// Makes refresh tokens stop working `lifetime` after the login they come from (a maximum
    /// session length: refreshing does not extend it), saying so as `end` says. Applies to
    /// logins from now on.
    pub fn set_login_lifetime(&self, lifetime: Option<Duration>, end: LoginEnd) {
        self.with(|i| {
            i.login_lifetime = lifetime;
            i.login_end = end;
        });
    }

    /// How many refresh requests were refused because their login had ended.
    pub fn login_expired_refreshes(&self) -> u64 {
        self.with(|i| i.login_expired_refreshes)
    }

    /// Whether access tokens are JWTs whose `exp` is their expiry (default: no, opaque).
    pub fn set_jwt_access_tokens(&self, on: bool) {
        self.with(|i| i.jwt_access_tokens = on);
    }

    /// Whether refresh grants rotate the refresh token (default: yes).
    pub fn set_rotation(&self, rotate: bool) {
        self.with(|i| i.rotate = rotate);
    }

    /// Whether client_credentials responses carry a refresh token (default: no).
    pub fn set_client_credentials_refresh(&self, on: bool) {
        self.with(|i| i.cc_refresh = on);
    }

    /// Makes access tokens at least `bytes` long (real JWTs are around a kilobyte).
    pub fn set_token_size(&self, bytes: usize) {
        self.with(|i| i.token_size = bytes);
    }

    /// Whether and when a refresh revokes the grant's earlier access tokens (default: never).
    pub fn set_revoke_on_refresh(&self, mode: RevokeOnRefresh) {
        self.with(|i| i.revoke_on_refresh = mode);
    }

    /// The API endpoints answer 401 to every token, as a server whose tokens all fail to verify
    /// would (default: off).
    pub fn reject_every_use(&self, on: bool) {
        self.with(|i| i.reject_every_use = on);
    }

    /// Delays token responses by `delay` after the grant has been carried out (tokens issued,
    /// refresh token rotated): the server has acted, the answer is still on its way.
    pub fn set_answer_delay(&self, delay: Duration) {
        self.with(|i| i.answer_delay = delay);
    }

    /// Delays every token request before the grant is carried out.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|i| i.delay = delay);
    }

    /// The next token requests misbehave, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.with(|i| i.faults.extend(faults));
    }

    /// Every token request misbehaves until cleared with `None`.
    pub fn fail_always(&self, fault: Option<Fault>) {
        self.with(|i| i.standing_fault = fault);
    }

    /// Holds every token request until [`Fake::release`].
    pub fn hold(&self) {
        self.with(|i| i.hold = Some(Arc::new(Notify::new())));
    }

    /// Lets held requests (and later ones) through.
    pub fn release(&self) {
        if let Some(gate) = self.with(|i| i.hold.take()) {
            gate.notify_waiters();
        }
    }

    /// The authorization endpoint answers with this error instead of a code.
    pub fn deny_authorization(&self, error: Option<&str>) {
        self.with(|i| i.deny_authorization = error.map(str::to_owned));
    }

    /// The authorization endpoint adds `iss=VALUE` to its redirects (RFC 9207).
    pub fn send_issuer(&self, issuer: Option<&str>) {
        self.with(|i| i.issuer_param = issuer.map(str::to_owned));
    }

    /// The info endpoint answers a request that carries a live token with this status and
    /// body (sent as JSON, whatever it holds) instead of describing the token; `None` restores
    /// the description.
    pub fn set_info_answer(&self, answer: Option<(u16, String)>) {
        self.with(|i| i.info_answer = answer);
    }

    /// Publishes (or with `None`, withdraws) metadata documents.
    pub fn publish(&self, metadata: Option<Metadata>) {
        self.with(|i| i.metadata = metadata);
    }

    /// The issuer of the published metadata: the base URL and the issuer path.
    pub fn issuer(&self) -> String {
        let path = self.with(|i| i.metadata.as_ref().map(|m| m.issuer_path.clone()).unwrap_or_default());
        format!("{}{path}", self.base)
    }

    /// The path of every request for a `.well-known` document so far, in order.
    pub fn metadata_requests(&self) -> Vec<String> {
        self.with(|i| i.metadata_requests.clone())
    }

    /// How many token requests arrived.
    pub fn token_requests(&self) -> usize {
        self.with(|i| i.requests.len())
    }

    /// Every token request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|i| i.requests.clone())
    }

    /// How many requests the info endpoint served.
    pub fn info_requests(&self) -> u64 {
        self.with(|i| i.info_requests)
    }

    /// Every revocation request's form.
    pub fn revocations(&self) -> Vec<HashMap<String, String>> {
        self.with(|i| i.revocations.clone())
    }

    /// Whether the server would accept `token` as an access token right now.
    pub fn accepts(&self, token: &str) -> bool {
        self.with(|i| accepts(i, token, SystemTime::now()))
    }

    /// Whether `refresh_token` is a live, unused refresh token.
    pub fn refresh_token_is_live(&self, refresh_token: &str) -> bool {
        self.with(|i| {
            i.refresh.get(refresh_token).is_some_and(|r| !r.used && !r.revoked && !i.revoked_grants.contains(&r.grant))
        })
    }

    /// The newest refresh token issued, if any.
    pub fn newest_refresh_token(&self) -> Option<String> {
        self.with(|i| i.refresh.iter().max_by_key(|(_, r)| r.sequence).map(|(t, _)| t.clone()))
    }

    /// The issue order of a refresh token (1 for the first ever issued).
    pub fn refresh_sequence(&self, refresh_token: &str) -> Option<u64> {
        self.with(|i| i.refresh.get(refresh_token).map(|r| r.sequence))
    }

    /// The refresh token issued in the same response as `access_token`.
    pub fn refresh_issued_with(&self, access_token: &str) -> Option<String> {
        self.with(|i| i.issued.get(access_token).and_then(|t| t.refresh.clone()))
    }

    /// Revokes every token of every grant (as if the user revoked the app at the server).
    pub fn revoke_everything(&self) {
        self.with(|i| {
            for t in i.issued.values_mut() {
                t.revoked = true;
            }
            for r in i.refresh.values_mut() {
                r.revoked = true;
            }
        });
    }

    /// Revokes one access token (as if the server dropped it early).
    pub fn revoke_access_token(&self, token: &str) {
        self.with(|i| {
            if let Some(t) = i.issued.get_mut(token) {
                t.revoked = true;
            }
        });
    }

    /// Every secret the provider ever handed out: access tokens, refresh tokens and
    /// authorization codes.
    pub fn every_secret_issued(&self) -> Vec<String> {
        self.with(|i| i.issued.keys().chain(i.refresh.keys()).chain(i.codes_issued.iter()).cloned().collect())
    }

    /// Sets how device logins go from now on.
    pub fn set_device_flow(&self, flow: DeviceFlow) {
        self.with(|i| i.device_flow = flow);
    }

    /// The form of every device authorization request so far.
    pub fn device_requests(&self) -> Vec<HashMap<String, String>> {
        self.with(|i| i.device_requests.clone())
    }

    /// The token requests that polled with a device code, in order.
    pub fn device_polls(&self) -> Vec<Recorded> {
        self.with(|i| {
            i.requests
                .iter()
                .filter(|r| r.form.get("grant_type").map(String::as_str) == Some(DEVICE_GRANT))
                .cloned()
                .collect()
        })
    }

    /// Whether any grant was revoked because a rotated-out refresh token was used again.
    pub fn reuse_detected(&self) -> bool {
        self.with(|i| !i.revoked_grants.is_empty())
    }

    /// How many connections to the provider are open.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits (at most 20 s) until every connection to the provider has ended. Once a client is
    /// gone (tokend killed, say), this is when the provider has read and carried out everything
    /// it sent, including a request that was still on its way when the client went; connections
    /// of a client that is still running (the test's own, for one) keep it waiting.
    pub async fn wait_connections_closed(&self) {
        assert!(
            crate::eventually(Duration::from_secs(20), || self.open_connections() == 0).await,
            "{} connections to the fake provider still open after 20s",
            self.open_connections()
        );
    }
}

/// The address a request came from, for the handlers (as `ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Counted>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Counted>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// The provider's listener: counts the connections open, so that a test can wait for the
/// requests of a client that went away to be carried out.
struct Counted {
    listener: tokio::net::TcpListener,
    open: Arc<AtomicUsize>,
}

impl axum::serve::Listener for Counted {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        self.open.fetch_add(1, Ordering::SeqCst);
        (CountedStream { stream, open: self.open.clone() }, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection, counted as open until the server drops it.
struct CountedStream {
    stream: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Marks `token` used; on its first use, revokes the earlier tokens of its grant if the server
/// does so ([`RevokeOnRefresh::OnFirstUse`]).
fn first_use(i: &mut Inner, token: &str) {
    let Some(t) = i.issued.get_mut(token).filter(|t| !t.used) else { return };
    t.used = true;
    let (grant, order) = (t.grant, t.order);
    if i.revoke_on_refresh == RevokeOnRefresh::OnFirstUse {
        for earlier in i.issued.values_mut().filter(|e| e.grant == grant && e.order < order) {
            earlier.revoked = true;
        }
    }
}

fn accepts(i: &Inner, token: &str, now: SystemTime) -> bool {
    i.issued.get(token).is_some_and(|t| !t.revoked && t.expires_at > now && !i.revoked_grants.contains(&t.grant))
}

/// An unsigned JWT (`alg: none`) issued at `iat` that expires at `exp`, unique by its `jti`.
fn jwt(iat: u64, exp: u64) -> String {
    let part = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = part(serde_json::json!({ "alg": "none", "typ": "JWT" }));
    let payload = part(serde_json::json!({ "iss": "fake", "iat": iat, "exp": exp, "jti": random("") }));
    format!("{header}.{payload}.")
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn random(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json(status, serde_json::json!({ "error": error, "error_description": description }))
}

async fn handle(State(fake): State<Fake>, request: Request) -> Response {
    // Before the body is read: the API's bodies are streamed, and may be large.
    if request.uri().path().starts_with("/api/") {
        return api::handle(&fake, request).await;
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let body = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if path.contains("/.well-known/") {
        return metadata(&fake, &path);
    }
    match (parts.method.clone(), path.as_str()) {
        (Method::POST, "/oauth/token" | "/v8/oauth/token") => token(&fake, &path, &parts.headers, form).await,
        (Method::GET, "/oauth/authorize") => authorize(&fake, query),
        (Method::POST, "/oauth/device") => device_authorization(&fake, &parts.headers, form),
        (Method::GET, "/oauth/device/verify") => verify_device(&fake, query),
        (Method::POST, "/oauth/revoke") => revoke(&fake, &parts.headers, form),
        (Method::GET, "/v8/users/me" | "/oauth/token/info") => info(&fake, &parts.headers),
        (_, "/redirect-me") => {
            (StatusCode::FOUND, [(header::LOCATION, "https://elsewhere.example/token")], "").into_response()
        }
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// Authenticates the client; `Err` is the response to send.
fn authenticate(
    i: &Inner,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    check_params: bool,
) -> Result<String, Box<Response>> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|text| {
            let (id, secret) = text.split_once(':')?;
            let decode =
                |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            Some((decode(id)?, decode(secret)?))
        });
    let body_secret = form.get("client_secret").cloned();
    let (id, secret, used_basic) = match (&basic, form.get("client_id")) {
        (Some((id, secret)), _) => (id.clone(), Some(secret.clone()), true),
        (None, Some(id)) => (id.clone(), body_secret, false),
        (None, None) => {
            return Err(Box::new(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "no client authentication")));
        }
    };
    let Some(client) = i.clients.get(&id) else {
        return Err(Box::new(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client")));
    };
    match (client.auth, used_basic) {
        (ClientAuth::Basic, false) if client.secret.is_some() => {
            return Err(Box::new(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "use HTTP Basic authentication",
            )));
        }
        (ClientAuth::Post, true) => {
            return Err(Box::new(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "send the credentials in the body",
            )));
        }
        _ => {}
    }
    if client.secret != secret {
        return Err(Box::new(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed")));
    }
    for (key, value) in client.required_params.iter().filter(|_| check_params) {
        if form.get(key) != Some(value) {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("missing {key}={value}"),
            )));
        }
    }
    Ok(id)
}

async fn token(fake: &Fake, path: &str, headers: &HeaderMap, form: HashMap<String, String>) -> Response {
    let (delay, hold, fault) = fake.with(|i| {
        i.requests.push(Recorded {
            path: path.to_owned(),
            authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
            form: form.clone(),
            at: SystemTime::now(),
        });
        let fault = i.faults.pop_front().or_else(|| i.standing_fault.clone());
        (i.delay, i.hold.clone(), fault)
    });
    if let Some(gate) = hold {
        let released = gate.notified();
        // Released already between taking the gate and waiting on it?
        if fake.with(|i| i.hold.is_some()) {
            released.await;
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::Status(status, body)) => {
            return (StatusCode::from_u16(status).unwrap(), [(header::CONTENT_TYPE, "application/json")], body)
                .into_response();
        }
        Some(Fault::Garbage) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>Service maintenance</body></html>",
            )
                .into_response();
        }
        Some(Fault::RetryAfter(secs)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, secs.to_string())], "busy")
                .into_response();
        }
        Some(Fault::Hangup) => return hang_up(),
        Some(Fault::Huge) => return huge(),
        Some(Fault::LostAnswer) => {
            fake.with(|i| issue(i, headers, &form));
            return hang_up();
        }
        Some(Fault::Field(field, value)) => {
            let response = fake.with(|i| issue(i, headers, &form));
            return with_field(response, field, value).await;
        }
        None => {}
    }
    let (response, answer_delay) = fake.with(|i| (issue(i, headers, &form), i.answer_delay));
    if !answer_delay.is_zero() {
        tokio::time::sleep(answer_delay).await;
    }
    response
}

/// A response whose body stream fails after its first chunk, which makes the server drop the
/// connection mid-response.
fn hang_up() -> Response {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> =
        vec![Ok("{\"access_tok".into()), Err(std::io::Error::other("hang up"))];
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap()
}

/// A token response that would be accepted but for its size: [`HUGE_BODY`] bytes of JSON.
fn huge() -> Response {
    let head = r#"{"token_type":"Bearer","expires_in":3600,"access_token":"at_huge_"#;
    let tail = r#""}"#;
    let mut body = String::with_capacity(HUGE_BODY);
    body.push_str(head);
    body.extend(std::iter::repeat_n('x', HUGE_BODY - head.len() - tail.len()));
    body.push_str(tail);
    debug_assert_eq!(body.len(), HUGE_BODY);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `response`, a JSON token response, with `field` set to `value`.
async fn with_field(response: Response, field: &str, value: serde_json::Value) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json[field] = value;
    (parts.status, [(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

fn issue(i: &mut Inner, headers: &HeaderMap, form: &HashMap<String, String>) -> Response {
    let client_id = match authenticate(i, headers, form, true) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let now = SystemTime::now();
    let (grant, scope, with_refresh, login_at) = match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let grant = i.next_grant;
            i.next_grant += 1;
            (grant, form.get("scope").cloned(), i.cc_refresh, now)
        }
        Some("authorization_code") => {
            let Some(code) = form.get("code").and_then(|c| i.codes.remove(c)) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or used authorization code");
            };
            if code.client_id != client_id || form.get("redirect_uri") != Some(&code.redirect_uri) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code was issued to another client or redirect URI",
                );
            }
            if let Some(challenge) = &code.challenge {
                let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                let computed =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                if &computed != challenge || !(43..=128).contains(&verifier.len()) {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "PKCE verification failed");
                }
            }
            let grant = i.next_grant;
            i.next_grant += 1;
            (grant, code.scope, true, now)
        }
        Some(DEVICE_GRANT) => {
            let presented = form.get("device_code").cloned().unwrap_or_default();
            let flow = i.device_flow.clone();
            let Some(device) = i.devices.get_mut(&presented).filter(|d| d.client_id == client_id && !d.done) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or used device code");
            };
            device.polls += 1;
            let poll = device.polls;
            let refuse = |error: &str| oauth_error(StatusCode::BAD_REQUEST, error, &format!("poll {poll}"));
            if flow.slow_down_at.contains(&poll) {
                return refuse("slow_down");
            }
            if poll <= flow.pending_polls {
                return refuse("authorization_pending");
            }
            match flow.outcome {
                DeviceOutcome::WaitForUser if !device.approved => return refuse("authorization_pending"),
                DeviceOutcome::Deny => return refuse("access_denied"),
                DeviceOutcome::Expire => return refuse("expired_token"),
                DeviceOutcome::WaitForUser | DeviceOutcome::Approve => {}
            }
            device.done = true;
            let scope = device.scope.clone();
            let grant = i.next_grant;
            i.next_grant += 1;
            (grant, scope, true, now)
        }
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let Some(entry) = i.refresh.get(&presented).cloned() else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
            };
            if entry.client_id != client_id {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "refresh token of another client");
            }
            if entry.revoked || i.revoked_grants.contains(&entry.grant) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "The refresh token was revoked");
            }
            if i.login_lifetime.is_some_and(|l| now >= entry.login_at + l) {
                i.login_expired_refreshes += 1;
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Token is not active");
            }
            if entry.used {
                // Reuse of a rotated-out refresh token: treat as theft, revoke the whole grant.
                i.revoked_grants.push(entry.grant);
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "refresh token reuse detected; grant revoked",
                );
            }
            let rotate = i.rotate;
            if rotate {
                i.refresh.get_mut(&presented).unwrap().used = true;
            }
            (entry.grant, entry.scope, rotate, entry.login_at)
        }
        other => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", &format!("{other:?}"));
        }
    };
    let refreshed = form.get("grant_type").map(String::as_str) == Some("refresh_token");
    if refreshed && i.revoke_on_refresh == RevokeOnRefresh::AtRefresh {
        for t in i.issued.values_mut().filter(|t| t.grant == grant) {
            t.revoked = true;
        }
    }
    let login_ends = i.login_lifetime.map(|l| login_at + l);
    let refresh = with_refresh.then(|| {
        let token = match (i.login_end, login_ends) {
            (LoginEnd::JwtRefreshToken, Some(ends)) => jwt(unix(now), unix(ends)),
            _ => random("rt_"),
        };
        let sequence = i.refresh.len() as u64 + 1;
        i.refresh.insert(
            token.clone(),
            Refresh {
                sequence,
                client_id: client_id.clone(),
                grant,
                scope: scope.clone(),
                used: false,
                revoked: false,
                login_at,
            },
        );
        token
    });
    let mut access = if i.jwt_access_tokens { jwt(unix(now), unix(now + i.lifetime)) } else { random("at_") };
    while access.len() < i.token_size {
        access.push_str(&random("."));
    }
    let order = i.issued.len();
    i.issued.insert(
        access.clone(),
        Issued {
            refresh: refresh.clone(),
            client_id: client_id.clone(),
            expires_at: now + i.lifetime,
            scope: scope.clone(),
            grant,
            revoked: false,
            order,
            used: false,
        },
    );
    let secs = i.lifetime.as_secs();
    let refresh_expires_in = match (i.login_end, login_ends, &refresh) {
        (LoginEnd::RefreshExpiresIn, Some(ends), Some(_)) => {
            Some(ends.duration_since(now).unwrap_or_default().as_secs())
        }
        _ => None,
    };
    match i.style {
        Style::Minut => json(
            StatusCode::OK,
            serde_json::json!({ "access_token": access, "token_type": "Bearer", "expires_in": secs }),
        ),
        Style::Movemint => {
            let mut body = serde_json::json!({
                "access_token": access, "token_type": "Bearer", "expires_in": secs,
                "scope": scope.clone().unwrap_or_else(|| "public".into()),
                "created_at": now.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            });
            if let Some(refresh) = refresh {
                body["refresh_token"] = refresh.into();
            }
            if let Some(left) = refresh_expires_in {
                body["refresh_expires_in"] = left.into();
            }
            json(StatusCode::OK, body)
        }
        Style::Sloppy => {
            let mut body = serde_json::json!({ "access_token": access, "expires_in": secs.to_string() });
            if let Some(refresh) = refresh {
                body["refresh_token"] = refresh.into();
            }
            if let Some(left) = refresh_expires_in {
                body["refresh_expires_in"] = left.into();
            }
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
        }
        Style::NoExpiry => {
            let mut body = serde_json::json!({ "access_token": access, "token_type": "bearer" });
            if let Some(refresh) = refresh {
                body["refresh_token"] = refresh.into();
            }
            if let Some(left) = refresh_expires_in {
                body["refresh_expires_in"] = left.into();
            }
            json(StatusCode::OK, body)
        }
    }
}

fn authorize(fake: &Fake, query: HashMap<String, String>) -> Response {
    fake.with(|i| {
        let client_id = query.get("client_id").cloned().unwrap_or_default();
        let Some(client) = i.clients.get(&client_id).cloned() else {
            return (StatusCode::BAD_REQUEST, "unknown client").into_response();
        };
        let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
        if client.redirect_uri.as_deref() != Some(redirect.as_str()) {
            return (StatusCode::BAD_REQUEST, "redirect_uri is not registered").into_response();
        }
        if query.get("response_type").map(String::as_str) != Some("code") {
            return (StatusCode::BAD_REQUEST, "response_type must be code").into_response();
        }
        if query.get("code_challenge_method").map(String::as_str) != Some("S256") {
            return (StatusCode::BAD_REQUEST, "PKCE with S256 is required").into_response();
        }
        let state = query.get("state").cloned().unwrap_or_default();
        let mut target = url::Url::parse(&redirect).unwrap();
        {
            let mut pairs = target.query_pairs_mut();
            match &i.deny_authorization {
                Some(error) => {
                    pairs
                        .append_pair("error", error)
                        .append_pair("error_description", "The resource owner denied the request");
                }
                None => {
                    let code = random("code_");
                    i.codes_issued.push(code.clone());
                    i.codes.insert(
                        code.clone(),
                        Code {
                            client_id,
                            redirect_uri: redirect.clone(),
                            challenge: query.get("code_challenge").cloned(),
                            scope: query.get("scope").cloned(),
                        },
                    );
                    pairs.append_pair("code", &code);
                }
            }
            pairs.append_pair("state", &state);
            if let Some(iss) = &i.issuer_param {
                pairs.append_pair("iss", iss);
            }
        }
        (StatusCode::FOUND, [(header::LOCATION, target.to_string())], "").into_response()
    })
}

/// The `grant_type` of a device login's polls.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 8628 §3.1: a device code for the client, or the answer the test asked for.
fn device_authorization(fake: &Fake, headers: &HeaderMap, form: HashMap<String, String>) -> Response {
    fake.with(|i| {
        i.device_requests.push(form.clone());
        let client_id = match authenticate(i, headers, &form, false) {
            Ok(id) => id,
            Err(response) => return *response,
        };
        let flow = i.device_flow.clone();
        if let Some((status, body)) = flow.answer {
            return (StatusCode::from_u16(status).unwrap(), [(header::CONTENT_TYPE, "application/json")], body)
                .into_response();
        }
        let device_code = random("dc_");
        let letters: [u8; 8] = rand::random();
        let letters: String = letters.iter().map(|b| char::from(b'B' + b % 20)).collect();
        let user_code = format!("{}-{}", &letters[..4], &letters[4..]);
        i.codes_issued.push(device_code.clone());
        i.devices.insert(
            device_code.clone(),
            Device {
                client_id,
                user_code: user_code.clone(),
                scope: form.get("scope").cloned(),
                polls: 0,
                approved: false,
                done: false,
            },
        );
        let verification_uri = format!("{}/oauth/device/verify", fake.base);
        let mut body = serde_json::json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "expires_in": flow.expires_in,
        });
        if flow.complete {
            body["verification_uri_complete"] = format!("{verification_uri}?user_code={user_code}").into();
        }
        if let Some(interval) = flow.interval {
            body["interval"] = interval.into();
        }
        json(StatusCode::OK, body)
    })
}

/// The verification page: the user enters (or the complete URI carries) the code and approves.
fn verify_device(fake: &Fake, query: HashMap<String, String>) -> Response {
    fake.with(|i| {
        let entered = query.get("user_code").map(|c| c.trim().to_uppercase()).unwrap_or_default();
        match i.devices.values_mut().find(|d| d.user_code == entered && !d.done) {
            Some(device) => {
                device.approved = true;
                (StatusCode::OK, "Approved: you can return to your device.").into_response()
            }
            None => (StatusCode::NOT_FOUND, "No such code.").into_response(),
        }
    })
}

fn revoke(fake: &Fake, headers: &HeaderMap, form: HashMap<String, String>) -> Response {
    fake.with(|i| {
        if let Err(response) = authenticate(i, headers, &form, false) {
            return *response;
        }
        i.revocations.push(form.clone());
        let token = form.get("token").cloned().unwrap_or_default();
        if let Some(refresh) = i.refresh.get_mut(&token) {
            refresh.revoked = true;
            let grant = refresh.grant;
            for t in i.issued.values_mut().filter(|t| t.grant == grant) {
                t.revoked = true;
            }
        }
        if let Some(access) = i.issued.get_mut(&token) {
            access.revoked = true;
        }
        json(StatusCode::OK, serde_json::json!({}))
    })
}

fn info(fake: &Fake, headers: &HeaderMap) -> Response {
    fake.with(|i| {
        i.info_requests += 1;
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if i.reject_every_use || !accepts(i, token, SystemTime::now()) {
            return json(StatusCode::UNAUTHORIZED, serde_json::json!({ "error": "invalid_token" }));
        }
        first_use(i, token);
        if let Some((status, body)) = i.info_answer.clone() {
            return (StatusCode::from_u16(status).unwrap(), [(header::CONTENT_TYPE, "application/json")], body)
                .into_response();
        }
        let t = &i.issued[token];
        json(
            StatusCode::OK,
            serde_json::json!({
                "resource_owner_id": 42,
                "scope": t.scope.as_deref().unwrap_or("").split_whitespace().collect::<Vec<_>>(),
                "expires_in": t.expires_at.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                "application": { "uid": t.client_id },
                "created_at": SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            }),
        )
    })
}

fn metadata(fake: &Fake, path: &str) -> Response {
    fake.with(|i| {
        i.metadata_requests.push(path.to_owned());
        let Some(m) = &i.metadata else {
            return (StatusCode::NOT_FOUND, "not found").into_response();
        };
        let served = (m.rfc8414 && path == format!("/.well-known/oauth-authorization-server{}", m.issuer_path))
            || (m.openid && path == format!("{}/.well-known/openid-configuration", m.issuer_path));
        if !served {
            return (StatusCode::NOT_FOUND, "not found").into_response();
        }
        let base = &fake.base;
        let document = serde_json::json!({
            "issuer": m.issuer_override.clone().unwrap_or_else(|| format!("{base}{}", m.issuer_path)),
            "token_endpoint": m.token_endpoint.clone().unwrap_or_else(|| format!("{base}/oauth/token")),
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "userinfo_endpoint": format!("{base}/oauth/token/info"),
            "device_authorization_endpoint": format!("{base}/oauth/device"),
            "response_types_supported": ["code"],
            "scopes_supported": ["openid", "offline_access", "public"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
        });
        match m.body {
            None => json(StatusCode::OK, document),
            Some(MetadataBody::Garbage) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "<html>Under maintenance</html>")
                    .into_response()
            }
            Some(MetadataBody::Huge) => {
                let mut text = document.to_string();
                text.pop();
                text.push_str(",\"padding\":\"");
                text.extend(std::iter::repeat_n('x', HUGE_BODY.saturating_sub(text.len() + 2)));
                text.push_str("\"}");
                json_text(text)
            }
        }
    })
}

fn json_text(text: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}
