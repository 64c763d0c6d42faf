//! Talking to OAuth servers: the token endpoint (every grant), and in the modules below the
//! device authorization, revocation, info and metadata endpoints.
//!
//! One [`Http`] client is shared by every profile. It never follows redirects (a token request
//! that is redirected would carry the client secret to wherever the redirect points), verifies
//! certificates always, and bounds every request in time and every response in size. Its TLS
//! settings, [`Tls`], are built once and shared with the proxy's client.
//!
//! Failures become an [`UpstreamError`] that says whether retrying can help
//! ([`Retry::Transient`]: connection failures, timeouts, 408, 429, 5xx, a 2xx that is not a
//! token response) or not ([`Retry::Permanent`]: `invalid_grant`, `invalid_client`, other 4xx),
//! following RFC 6749 §5.2.

pub(crate) mod device;
pub(crate) mod discovery;
pub(crate) mod info;
pub(crate) mod jwt;
pub(crate) mod revoke;
pub(crate) mod token;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokend_proto::{Failure, Secret};
use zeroize::Zeroizing;

/// The largest response body read from an OAuth server.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// How many requests to OAuth servers may be in flight at once across all profiles.
pub(crate) const UPSTREAM_CONCURRENCY: usize = 16;

/// The HTTP client shared by all profiles, with the cap on requests in flight.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    /// Bounds the requests in flight across all profiles, so that a daemon with many profiles
    /// does not send them all at once (at start, or after the network returns).
    permits: Arc<tokio::sync::Semaphore>,
}

impl Http {
    /// A client whose requests give up after `timeout`, over `tls`.
    pub(crate) fn new(timeout: Duration, tls: &Tls) -> Result<Http, SetupError> {
        let client = tls
            .client_builder()
            .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            // Connections are reused within a burst (start-up, profiles refreshing together) and
            // closed soon after, so that the pool's expiry timer stops and an idle tokend is not
            // woken until the next refresh is due.
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| SetupError(root_cause(&e)))?;
        Ok(Http { client, permits: Arc::new(tokio::sync::Semaphore::new(UPSTREAM_CONCURRENCY)) })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Waits for a turn under the cap on requests in flight; the turn lasts until the permit
    /// is dropped. Token requests and info requests take one.
    pub(crate) async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits.acquire().await.expect("the upstream semaphore is never closed")
    }
}

/// `f` (not negative, not NaN) in whole seconds, `u64::MAX` if it is larger.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "`as` from f64 saturates, as wanted here")]
fn saturating_secs(f: f64) -> u64 {
    f as u64
}

/// Why a field is not a number of seconds; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadSeconds {
    /// A JSON value of another kind.
    #[error("{0} is a {1}")]
    Kind(String, &'static str),
    /// Text that is no number.
    #[error("{0} is not a number")]
    NotANumber(String),
    /// A negative number.
    #[error("{0} is negative")]
    Negative(String),
}

/// The TLS settings of every connection tokend makes upstream, to OAuth servers and through the
/// proxy: rustls with ring, TLS 1.2 and 1.3, the platform's certificate verifier over the
/// system's roots, ALPN for HTTP/2 and HTTP/1.1 — what reqwest would choose itself, but built
/// once. Each copy shares the one verifier, so the system's roots (about 180 KB in memory for a
/// usual bundle) are read and held once, however many clients use them.
#[derive(Clone, Debug)]
pub(crate) struct Tls(rustls::ClientConfig);

impl Tls {
    /// Reads the system's roots; fails if they cannot be read.
    pub(crate) fn new() -> Result<Tls, SetupError> {
        install_crypto_provider();
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
            .map_err(|e| SetupError(format!("cannot read the system's TLS roots: {e}")))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls(config))
    }

    /// The settings themselves, for a client built on hyper directly (the proxy's).
    pub(crate) fn config(&self) -> &rustls::ClientConfig {
        &self.0
    }

    /// A builder for a client that uses these settings.
    pub(crate) fn client_builder(&self) -> reqwest::ClientBuilder {
        #[allow(clippy::disallowed_methods, reason = "with the TLS settings given, reqwest looks up no provider")]
        reqwest::Client::builder().tls_backend_preconfigured(self.0.clone())
    }
}

/// The HTTP client cannot be set up (no TLS roots, say); the text is the root cause.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub(crate) struct SetupError(String);

/// Makes ring the process's rustls crypto provider, which reqwest takes for every client it
/// builds. reqwest is built without a provider of its own (its own choice would be aws-lc-rs;
/// DEVELOPERS.md says why ring) and panics when it builds a client and finds none installed.
/// Call it before building any reqwest client; calling it again, or after the program installed
/// a provider of its own, changes nothing.
pub fn install_crypto_provider() {
    // The only error is "a provider is installed already", which is what this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether retrying a failed request can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The server or the network may recover: retry with backoff.
    Transient,
    /// The server refused for good: retrying would only repeat the refusal.
    Permanent,
}

/// A request to an OAuth server that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamError {
    /// Whether to retry.
    pub retry: Retry,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The OAuth `error` code.
    pub error: Option<String>,
    /// The OAuth `error_description`.
    pub description: Option<String>,
    /// What happened, for people. Never contains a secret.
    pub message: String,
    /// How long the server asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// A new refresh token from an answer that was unusable otherwise (say, its access token
    /// was malformed). The server has already retired the old refresh token, so this one must
    /// be kept all the same.
    pub rotated_refresh_token: Option<Secret>,
}

impl UpstreamError {
    /// A failure before any response arrived.
    pub(crate) fn transport(what: &str, error: &reqwest::Error) -> Self {
        let cause = root_cause(error);
        let message = if error.is_timeout() {
            format!("{what} timed out ({cause})")
        } else if error.is_connect() {
            format!("cannot connect to {what}: {cause}")
        } else {
            format!("request to {what} failed: {cause}")
        };
        UpstreamError {
            retry: Retry::Transient,
            status: None,
            error: None,
            description: None,
            message,
            retry_after: None,
            rotated_refresh_token: None,
        }
    }

    /// A response that is not what the endpoint should send, though the server did answer.
    pub(crate) fn malformed(status: u16, message: String) -> Self {
        UpstreamError {
            retry: Retry::Transient,
            status: Some(status),
            error: None,
            description: None,
            message,
            retry_after: None,
            rotated_refresh_token: None,
        }
    }

    /// A request that cannot be made because the endpoint is not known: the profile's issuer
    /// has not been discovered. Transient, since discovery is retried.
    pub(crate) fn unresolved(what: &str) -> Self {
        UpstreamError {
            retry: Retry::Transient,
            status: None,
            error: None,
            description: None,
            message: format!("{what} is not known yet: discovery from the profile's issuer has not succeeded"),
            retry_after: None,
            rotated_refresh_token: None,
        }
    }

    /// Whether this failure means the server will not accept the request as configured.
    pub(crate) fn is_permanent(&self) -> bool {
        self.retry == Retry::Permanent
    }

    /// Whether the server said the grant (refresh token or code) is no longer valid.
    pub(crate) fn is_invalid_grant(&self) -> bool {
        self.error.as_deref() == Some("invalid_grant")
    }

    /// The failure as recorded in status output and sent to clients.
    pub(crate) fn to_failure(&self, at: SystemTime) -> Failure {
        Failure {
            at,
            status: self.status,
            error: self.error.clone(),
            description: self.description.clone(),
            message: self.message.clone(),
            transient: self.retry == Retry::Transient,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_failure(SystemTime::UNIX_EPOCH).fmt(f)
    }
}

/// A response that came back, its body read within [`MAX_BODY`].
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub retry_after: Option<Duration>,
    /// Wiped on drop: token responses carry secrets.
    pub body: Zeroizing<Vec<u8>>,
}

impl Answer {
    /// Reads `response` to the end, refusing bodies over `limit` bytes ([`MAX_BODY`] for OAuth
    /// endpoints).
    pub(crate) async fn read(
        what: &str,
        mut response: reqwest::Response,
        limit: usize,
    ) -> Result<Answer, UpstreamError> {
        let mut answer = Answer::head(response.status().as_u16(), response.headers(), SystemTime::now());
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.body.len() + chunk.len() > limit => {
                    return Err(UpstreamError::malformed(
                        answer.status,
                        format!("{what} sent a response larger than {} KiB", limit / 1024),
                    ));
                }
                Ok(Some(chunk)) => answer.body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(UpstreamError::transport(what, &e)),
            }
        }
        Ok(answer)
    }

    /// The status and the headers tokend reads, with an empty body.
    fn head(status: u16, headers: &HeaderMap, now: SystemTime) -> Answer {
        let header =
            |name: reqwest::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Answer {
            status,
            content_type: header(reqwest::header::CONTENT_TYPE),
            location: header(reqwest::header::LOCATION),
            retry_after: header(reqwest::header::RETRY_AFTER).and_then(|v| parse_retry_after(&v, now)),
            body: Zeroizing::new(Vec::new()),
        }
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error for a non-2xx answer, with the server's `error` and `error_description` when
    /// the body carries them.
    pub(crate) fn to_error(&self, what: &str) -> UpstreamError {
        let (error, description) = error_fields(&self.body);
        let mut message = format!("{what} answered HTTP {}", self.status);
        if (300..400).contains(&self.status) {
            let target = self.location.as_deref().map(sanitize).unwrap_or_else(|| "elsewhere".into());
            message.push_str(&format!(
                ", a redirect to {target}; tokend does not follow redirects from OAuth endpoints, so configure the final URL"
            ));
        } else if error.is_none() && !self.body.is_empty() {
            let kind = self.content_type.as_deref().map(sanitize).unwrap_or_else(|| "no content type".into());
            message.push_str(&format!(" with a body that is not an OAuth error ({kind}, {} bytes)", self.body.len()));
        }
        let retry = classify(self.status, error.as_deref());
        UpstreamError {
            retry,
            status: Some(self.status),
            error,
            description,
            message,
            retry_after: self.retry_after,
            rotated_refresh_token: None,
        }
    }
}

/// Runs what tokend does with an answer from an OAuth server — its headers, then the body as a
/// token response or error, as a device authorization (RFC 8628), and as an info answer — on arbitrary input, and panics where
/// something that must hold of the outcome does not: tokens that pass fit a frame and a
/// header, lifetimes are clamped, text meant for people carries no control characters.
///
/// For the fuzz target `fuzz/fuzz_targets/upstream_answer.rs`; not part of tokend's API.
#[doc(hidden)]
pub fn fuzz_upstream_answer(status: u16, headers: &[(&[u8], &[u8])], body: &[u8]) {
    use reqwest::header::{HeaderName, HeaderValue};
    use tokend_proto::{Response, Token, codec};

    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    let now = SystemTime::now();
    let inert = |text: &str| !text.chars().any(|c| c.is_control() || is_bidi_control(c));
    let check_error = |e: &UpstreamError| {
        for text in [Some(&e.message), e.error.as_ref(), e.description.as_ref()].into_iter().flatten() {
            assert!(inert(text), "server text reaches people unsanitized: {text:?}");
        }
        assert!(inert(&e.to_string()));
        if let Some(rotated) = &e.rotated_refresh_token {
            crate::limits::check_token(rotated.expose()).expect("a kept refresh token passed the checks");
        }
    };
    // Bodies are refused beyond these limits before they are parsed.
    let answer = |limit: usize| {
        let mut answer = Answer::head(status, &map, now);
        answer.body.extend_from_slice(&body[..body.len().min(limit)]);
        answer
    };

    let token_answer = answer(MAX_BODY);
    if token_answer.is_success() {
        for keeps_refresh_tokens in [true, false] {
            match token::parse(&token_answer, now, Duration::from_secs(7200), keeps_refresh_tokens) {
                Ok(set) => {
                    crate::limits::check_token(set.access_token.expose()).expect("a served token passed the checks");
                    crate::limits::check_token_type(&set.token_type).expect("its type passed the checks");
                    if let Some(refresh_token) = &set.refresh_token {
                        crate::limits::check_token(refresh_token.expose()).expect("a kept refresh token passed");
                    }
                    assert!(set.lifetime() <= crate::limits::MAX_LIFETIME);
                    if let Some(expiry) = set.refresh_expiry {
                        assert!(keeps_refresh_tokens, "a login end only for grants with refresh tokens");
                        assert!(expiry.lifetime <= crate::limits::MAX_LIFETIME);
                        let left = expiry.expires_at.duration_since(now).unwrap_or_default();
                        assert!(left <= crate::limits::MAX_LIFETIME + Duration::from_secs(1));
                        tokend_proto::time::rfc3339(expiry.expires_at);
                    }
                    assert!(set.scope.as_deref().is_none_or(inert));
                    // Clients print the expiry: that must not panic either.
                    tokend_proto::time::rfc3339(set.expires_at);
                    let token = Token {
                        profile: "p".repeat(64),
                        fingerprint: set.access_token.fingerprint(),
                        access_token: set.access_token,
                        token_type: set.token_type,
                        expires_at: set.expires_at,
                        scope: set.scope,
                    };
                    let mut frame = Vec::new();
                    codec::encode(&Response::Token(token), &mut frame).expect("a token from a server fits a frame");
                }
                Err(e) => check_error(&e),
            }
        }
    } else {
        check_error(&token_answer.to_error("the token endpoint"));
    }

    if token_answer.is_success() {
        match device::parse(&token_answer) {
            Ok(d) => {
                crate::limits::check_device_code(d.device_code.expose()).expect("a kept device code passed the checks");
                assert!(inert(&d.user_code) && d.user_code.chars().count() <= crate::limits::MAX_USER_CODE_LEN);
                for uri in std::iter::once(&d.verification_uri).chain(&d.verification_uri_complete) {
                    assert!(uri.as_str().is_ascii() && inert(uri.as_str()));
                    assert!(uri.as_str().len() <= crate::limits::MAX_VERIFICATION_URI_LEN);
                }
                assert!(d.interval >= Duration::from_secs(1) && d.interval <= crate::limits::MAX_POLL_INTERVAL);
                assert!(d.expires_in.is_none_or(|e| e <= crate::limits::MAX_DEVICE_CODE_LIFETIME));
                let response = Response::LoginCode {
                    profile: "p".repeat(64),
                    user_code: d.user_code,
                    verification_uri: d.verification_uri.into(),
                    verification_uri_complete: d.verification_uri_complete.map(Into::into),
                    expires_at: crate::limits::after(
                        now,
                        d.expires_in.unwrap_or(crate::limits::MAX_DEVICE_CODE_LIFETIME),
                    ),
                };
                codec::encode(&response, &mut Vec::new()).expect("a device login's code fits a frame");
            }
            Err(e) => check_error(&e),
        }
    }

    match info::InfoAnswer::from_answer(&answer(crate::limits::MAX_INFO_BODY)) {
        Ok(info) => {
            let response = Response::Info { profile: "p".repeat(64), status: info.status, body: info.body };
            codec::encode(&response, &mut Vec::new()).expect("an info answer fits a frame");
        }
        Err(e) => check_error(&e),
    }
}

/// RFC 6749 §5.2 and HTTP semantics: which failures are worth retrying.
fn classify(status: u16, error: Option<&str>) -> Retry {
    match (status, error) {
        (408 | 429 | 500..=599, _) => Retry::Transient,
        // Some servers send the authorization endpoint's "try later" codes from the token
        // endpoint too.
        (_, Some("temporarily_unavailable" | "server_error" | "slow_down")) => Retry::Transient,
        _ => Retry::Permanent,
    }
}

/// The `error` and `error_description` of an error body, JSON or form-encoded.
fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let mut fields = Fields::parse(body);
    let error = fields.as_mut().and_then(|f| f.string("error")).map(|s| sanitize(&s));
    let description = fields.as_mut().and_then(|f| f.string("error_description")).map(|s| sanitize(&s));
    (error.filter(|e| !e.is_empty()), description.filter(|d| !d.is_empty()))
}

/// The fields of a JSON object or a form-encoded body: servers send either.
pub(crate) enum Fields {
    Json(serde_json::Map<String, serde_json::Value>),
    Form(Vec<(String, String)>),
}

impl Fields {
    pub(crate) fn parse(body: &[u8]) -> Option<Fields> {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => Some(Fields::Json(map)),
            Ok(_) => None,
            Err(_) => {
                let text = std::str::from_utf8(body).ok()?.trim();
                let pairs: Vec<(String, String)> = url::form_urlencoded::parse(text.as_bytes()).into_owned().collect();
                let plausible = !text.is_empty()
                    && !text.contains(char::is_whitespace)
                    && pairs
                        .iter()
                        .any(|(k, v)| !v.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                plausible.then_some(Fields::Form(pairs))
            }
        }
    }

    /// Takes a string field out, so that secrets are moved rather than copied.
    pub(crate) fn string(&mut self, key: &str) -> Option<String> {
        match self {
            Fields::Json(map) => match map.remove(key)? {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            },
            Fields::Form(pairs) => {
                let i = pairs.iter().position(|(k, _)| k == key)?;
                Some(pairs.swap_remove(i).1)
            }
        }
    }

    /// A number of seconds, as a number or a numeric string; `Err` for anything else.
    pub(crate) fn seconds(&mut self, key: &str) -> Result<Option<u64>, BadSeconds> {
        let text = match self {
            Fields::Json(map) => match map.remove(key) {
                None | Some(serde_json::Value::Null) => return Ok(None),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(serde_json::Value::String(s)) => s,
                Some(other) => return Err(BadSeconds::Kind(key.to_owned(), json_kind(&other))),
            },
            Fields::Form(_) => match self.string(key) {
                None => return Ok(None),
                Some(s) => s,
            },
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = text.parse::<u64>() {
            return Ok(Some(n));
        }
        // Too large for a u64 (2^64 or more, 1e300, inf) is far too long, not an error: `as`
        // saturates, and the lifetime is clamped later.
        match text.parse::<f64>() {
            Ok(f) if f >= 0.0 => Ok(Some(saturating_secs(f))),
            Ok(f) if f.is_nan() => Err(BadSeconds::NotANumber(key.to_owned())),
            Ok(_) => Err(BadSeconds::Negative(key.to_owned())),
            Err(_) => Err(BadSeconds::NotANumber(key.to_owned())),
        }
    }

    /// A space-separated list, sent as a string or (by some servers) as an array of strings.
    pub(crate) fn scope(&mut self, key: &str) -> Option<String> {
        if let Fields::Json(map) = self
            && let Some(serde_json::Value::Array(items)) = map.get(key)
        {
            let words: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
            return (!words.is_empty()).then(|| words.join(" "));
        }
        self.string(key).filter(|s| !s.trim().is_empty())
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "object",
    }
}

/// Keeps text from a server fit for a log line or a terminal: no control characters and no
/// bidirectional overrides (which make text display other than it reads), at most 300
/// characters.
pub(crate) fn sanitize(text: &str) -> String {
    let clean: String = text.chars().filter(|&c| !c.is_control() && !is_bidi_control(c)).take(300).collect();
    clean.trim().to_owned()
}

/// Unicode's explicit bidirectional formatting characters (UAX #9).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The innermost cause of an error, which is the part people can act on ("connection refused").
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    sanitize(&current.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses_are_transient() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(status, None), Retry::Transient, "{status}");
        }
        assert_eq!(classify(400, Some("temporarily_unavailable")), Retry::Transient);
    }

    #[test]
    fn refusals_are_permanent() {
        for error in ["invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"] {
            assert_eq!(classify(400, Some(error)), Retry::Permanent, "{error}");
        }
        assert_eq!(classify(401, None), Retry::Permanent);
        assert_eq!(classify(404, None), Retry::Permanent);
        assert_eq!(classify(302, None), Retry::Permanent);
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn error_fields_come_from_json_or_forms() {
        let (e, d) = error_fields(br#"{"error":"invalid_grant","error_description":"expired"}"#);
        assert_eq!((e.as_deref(), d.as_deref()), (Some("invalid_grant"), Some("expired")));
        let (e, d) = error_fields(b"error=invalid_client&error_description=bad+secret");
        assert_eq!((e.as_deref(), d.as_deref()), (Some("invalid_client"), Some("bad secret")));
        assert_eq!(error_fields(b"<html>Bad Gateway</html>"), (None, None));
    }

    #[test]
    fn server_text_is_sanitized() {
        assert_eq!(sanitize("bad\u{1b}[31m\nthing"), "bad[31mthing");
        assert_eq!(sanitize("a\u{9b}2J\u{202e}b\u{2066}c"), "a2Jbc");
        assert_eq!(sanitize(&"x".repeat(1000)).len(), 300);
    }
}
