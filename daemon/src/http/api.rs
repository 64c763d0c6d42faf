//! The routes of the HTTP API, and the token API behind them.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/token/NAME[?min_valid=DUR]` | the token, as `tokenctl token --format json` prints it |
//! | `POST /v1/invalidate/NAME` | a new token, after the one in the body was rejected |
//! | `GET /v1/status`, `GET /v1/status/NAME` | as `tokenctl --json status [NAME]` prints it |
//! | `ANY /v1/proxy/NAME/PATH` | the API's answer (see [`super::proxy`]) |
//!
//! Answers of tokend's own are JSON, with the views of `tokend_proto::json`. An error is
//! `{"error": CLASS, "message": …}` with `tokenctl --json`'s class names, a status that fits
//! it, and a `Tokend-Error: CLASS` header that tells it from an upstream API's answer on the
//! proxy route. Token requests wait as long as the protocol socket's do — for a refresh at most
//! the daemon's request timeout — and follow a profile across reloads the same way.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokend_proto::json::{ErrorView, StatusView, TokenView};
use tokend_proto::{Error, Fingerprint, Secret, Token};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::body::{self, Read, ResponseBody};
use super::proxy::Proxy;
use crate::daemon::Daemon;
use crate::server::handler::with_profile;

/// The largest `POST /v1/invalidate` body: a token, or its fingerprint, in JSON.
const MAX_INVALIDATE_BODY: usize = 64 * 1024;
/// How long a token API request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The header that marks an answer as tokend's own error rather than an API's.
pub(crate) const ERROR_HEADER: &str = "tokend-error";
/// What `Allow` says for a refused `CONNECT` or `TRACE`: the proxy takes any other method.
pub(crate) const PROXY_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// What every request needs.
pub(crate) struct Api {
    /// The profiles.
    pub daemon: Arc<Daemon>,
    /// The authenticating proxy.
    pub proxy: Proxy,
}

/// An answer of tokend's own that is not a success: a status, a class and a sentence.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    class: &'static str,
    message: String,
    /// Seconds after which trying again may help.
    retry_after: Option<u64>,
    /// The methods the route takes, for a 405.
    allow: Option<&'static str>,
}

impl ApiError {
    /// An error with `status` and `class`, saying `message`.
    pub(crate) fn new(status: StatusCode, class: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, class, message: message.into(), retry_after: None, allow: None }
    }

    /// A malformed or refused request (400, class `usage`).
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "usage", message)
    }

    fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "usage",
            "no such route; the routes are /v1/token/NAME, /v1/invalidate/NAME, /v1/status[/NAME] and /v1/proxy/NAME/PATH (see docs/http-api.md)",
        )
    }

    /// A method the route does not take (405, with `Allow`).
    pub(crate) fn method_not_allowed(method: &Method, allow: &'static str) -> Self {
        ApiError::refused_method(allow, format!("this route does not take {method}; use {allow}"))
    }

    /// A method refused for a reason of its own (405, with `Allow`).
    pub(crate) fn refused_method(allow: &'static str, message: impl Into<String>) -> Self {
        ApiError { allow: Some(allow), ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "usage", message) }
    }

    /// The answer to send.
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let json = serde_json::to_vec(&ErrorView { error: self.class, message: &self.message }).unwrap_or_default();
        let mut response = json_response(self.status, Bytes::from(json));
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.class));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = match &error {
            Error::UnknownProfile { .. } => StatusCode::NOT_FOUND,
            // Not 401 or 403: the caller is authorized (it is the user tokend serves); it is the
            // profile's state that stands in the way, and on the proxy route 401 and 403 are
            // what the API itself answers about tokens.
            Error::LoginNeeded { .. } | Error::Login { .. } => StatusCode::CONFLICT,
            Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamUnavailable { .. } | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::MinValidUnsatisfiable { .. } | Error::NotSupported { .. } | Error::BadRequest { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::InvalidConfig { .. } | Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after = match &error {
            Error::UpstreamUnavailable { retry_at: Some(at), .. } => {
                let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            }
            _ => None,
        };
        ApiError { retry_after, ..ApiError::new(status, error.class().as_str(), error.to_string()) }
    }
}

impl Api {
    /// Answers one request. Every failure is an answer, so the connection stays usable.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        Ok(self.route(request).await.unwrap_or_else(ApiError::into_response))
    }

    async fn route(&self, request: Request<Incoming>) -> Result<Response<ResponseBody>, ApiError> {
        let uri = request.uri();
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(ApiError::bad_request(
                "refused: the request target names a host; tokend is not an open proxy, send `GET /v1/proxy/NAME/PATH` with the path alone",
            ));
        }
        if request.method() == Method::CONNECT {
            return Err(ApiError::refused_method(
                PROXY_METHODS,
                "refused: CONNECT makes tokend no tunnel; send the request itself to /v1/proxy/NAME/PATH",
            ));
        }
        let path = uri.path().to_owned();
        let Some(route) = path.strip_prefix("/v1/") else { return Err(ApiError::not_found()) };
        let (kind, rest) = match route.split_once('/') {
            Some((kind, rest)) => (kind, Some(rest)),
            None => (route, None),
        };
        let method = request.method().clone();
        match (kind, rest) {
            ("proxy", Some(rest)) => {
                let (name, below) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
                if name.is_empty() {
                    return Err(ApiError::not_found());
                }
                Ok(self.proxy.forward(&self.daemon, name, below, request).await)
            }
            ("token", Some(name)) if is_name(name) => {
                expect(&method, Method::GET)?;
                let min_valid = min_valid(uri.query())?;
                let deadline = Instant::now() + self.daemon.request_timeout;
                let served =
                    with_profile(&self.daemon, name, |h| async move { h.token(min_valid, deadline).await }).await?;
                Ok(token_response(served.token()))
            }
            ("invalidate", Some(name)) if is_name(name) => {
                expect(&method, Method::POST)?;
                no_query(uri.query())?;
                let rejected = rejected(request.into_body()).await?;
                let deadline = Instant::now() + self.daemon.request_timeout;
                let served =
                    with_profile(&self.daemon, name, |h| async move { h.invalidate(Some(rejected), deadline).await })
                        .await?;
                Ok(token_response(served.token()))
            }
            ("status", None) => {
                expect(&method, Method::GET)?;
                no_query(uri.query())?;
                let statuses: Vec<_> = self.daemon.profiles().values().map(|h| h.status()).collect();
                let now = SystemTime::now();
                let views: Vec<StatusView> = statuses.iter().map(|s| StatusView::new(s, now)).collect();
                Ok(json_response(StatusCode::OK, to_json(&views)))
            }
            ("status", Some(name)) if is_name(name) => {
                expect(&method, Method::GET)?;
                no_query(uri.query())?;
                let status = self.daemon.profile(name)?.status();
                Ok(json_response(StatusCode::OK, to_json(&StatusView::new(&status, SystemTime::now()))))
            }
            _ => Err(ApiError::not_found()),
        }
    }
}

/// A profile name in a path: one non-empty segment.
fn is_name(segment: &str) -> bool {
    !segment.is_empty() && !segment.contains('/')
}

fn expect(method: &Method, allowed: Method) -> Result<(), ApiError> {
    if *method == allowed {
        return Ok(());
    }
    Err(ApiError::method_not_allowed(method, if allowed == Method::GET { "GET" } else { "POST" }))
}

fn no_query(query: Option<&str>) -> Result<(), ApiError> {
    match query {
        None | Some("") => Ok(()),
        Some(_) => Err(ApiError::bad_request("this route takes no query parameters")),
    }
}

/// The `min_valid` query parameter: a duration such as `10m` or `1h 30m`, or whole seconds.
fn min_valid(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let mut min_valid = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != "min_valid" {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{}`; this route takes only min_valid",
                crate::oauth::sanitize(&key)
            )));
        }
        if min_valid.is_some() {
            return Err(ApiError::bad_request("min_valid is given twice"));
        }
        min_valid = Some(parse_duration(value.trim())?);
    }
    Ok(min_valid)
}

fn parse_duration(text: &str) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "invalid min_valid {:?}; write it like 90s, 10m or 1h30m (at most 100 years), or as seconds",
            crate::oauth::sanitize(text)
        ))
    };
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|_| invalid())?,
    };
    // Bounded like every duration in the config, so that adding it to a date never overflows.
    if duration > crate::config::MAX_DURATION {
        return Err(invalid());
    }
    Ok(duration)
}

/// The body of `POST /v1/invalidate/NAME`: exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rejected {
    token: Option<Secret>,
    fingerprint: Option<String>,
}

/// Which token the client reports as rejected.
async fn rejected(body: Incoming) -> Result<Fingerprint, ApiError> {
    let read = tokio::time::timeout(BODY_TIMEOUT, body::read_up_to(body, MAX_INVALIDATE_BODY))
        .await
        .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "usage", "the request body did not arrive in time"))?
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let bytes = match read {
        Read::Whole(bytes) => Zeroizing::new(Vec::from(bytes)),
        Read::Longer(..) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "usage",
                format!("the body is larger than {} KiB", MAX_INVALIDATE_BODY / 1024),
            ));
        }
    };
    let usage = "send {\"token\": \"THE REJECTED TOKEN\"} or {\"fingerprint\": \"ITS FINGERPRINT\"}";
    // serde_json's message may quote the input, which may be a token: say where, not what.
    let parsed: Rejected = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not valid JSON of this form (line {}, column {}): {usage}",
            e.line(),
            e.column()
        ))
    })?;
    match (parsed.token, parsed.fingerprint) {
        (Some(token), None) if !token.is_empty() => Ok(token.fingerprint()),
        (None, Some(fingerprint)) => fingerprint.parse().map_err(|e| ApiError::bad_request(format!("{e}"))),
        _ => Err(ApiError::bad_request(format!("give exactly one of token and fingerprint: {usage}"))),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A token as JSON, in a buffer that is wiped once the answer has been written.
fn token_response(token: &Token) -> Response<ResponseBody> {
    let mut json = Zeroizing::new(Vec::with_capacity(token.access_token.expose().len() + 512));
    if serde_json::to_writer(&mut *json, &TokenView::new(token, SystemTime::now())).is_err() {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "other", "cannot write the token as JSON")
            .into_response();
    }
    let mut response = json_response(StatusCode::OK, Bytes::from_owner(json));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_response(status: StatusCode, json: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(body::full(json));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_valid_takes_durations_and_seconds_within_bounds() {
        assert_eq!(min_valid(None).unwrap(), None);
        assert_eq!(min_valid(Some("min_valid=10m")).unwrap(), Some(Duration::from_secs(600)));
        assert_eq!(min_valid(Some("min_valid=1h%2030m")).unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(min_valid(Some("min_valid=90")).unwrap(), Some(Duration::from_secs(90)));
        for bad in [
            "min_valid=soon",
            "min_valid=",
            "min_valid=-5",
            "min_valid=18446744073709551615",
            "min_valid=99999999999999999999999h",
            "min_valid=101years",
            "min_valid=1m&min_valid=2m",
            "min_vaild=1m",
        ] {
            let error = min_valid(Some(bad)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn every_error_has_a_fitting_status_and_the_class_names_of_tokenctl() {
        let at = SystemTime::now();
        let failure = Box::new(tokend_proto::Failure {
            at,
            status: Some(503),
            error: None,
            description: None,
            message: "x".into(),
            transient: true,
        });
        for (error, status, class) in [
            (Error::UnknownProfile { profile: "p".into(), known: vec![] }, 404, "unknown_profile"),
            (Error::LoginNeeded { profile: "p".into(), reason: "r".into() }, 409, "login_needed"),
            (Error::Upstream { profile: "p".into(), failure: failure.clone() }, 502, "upstream"),
            (
                Error::UpstreamUnavailable {
                    profile: "p".into(),
                    since: at,
                    retry_at: Some(at + Duration::from_millis(2500)),
                    last: failure,
                },
                503,
                "upstream",
            ),
            (Error::Timeout { message: "m".into() }, 504, "other"),
            (Error::BadRequest { message: "m".into() }, 400, "usage"),
        ] {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.class), (status, class));
            if status == 503 {
                assert_eq!(api.retry_after, Some(3), "rounded up");
            }
        }
    }
}
