//! The authenticating proxy: `ANY /v1/proxy/NAME/PATH?QUERY` is sent to the profile's
//! `api_base` + `/PATH?QUERY` with `Authorization: Bearer <current token>`, and the API's
//! answer comes back as it is. The program never holds the token.
//!
//! The flow of one request:
//!
//! 1. The target is checked ([`super::target::join`]): only `api_base`, nothing an upstream
//!    server could resolve to elsewhere. A request that brings its own `Authorization` is
//!    refused rather than silently overridden or forwarded, and `TRACE` is refused, since its
//!    answer would echo the token back.
//! 2. A body of up to [`REPLAY_LIMIT`] is read into memory so that it can be sent twice; a
//!    longer one (or one for which the shared [`REPLAY_BUDGET`] has no room) is streamed and
//!    cannot be. Bodies are never held whole beyond that: both directions stream, with
//!    backpressure, through hyper's bounded buffers.
//! 3. The token is taken as for `GET /v1/token` (waiting at most the request timeout for a
//!    refresh; a profile that needs a login answers 409 `login_needed` at once).
//! 4. If the API answers 401, tokend reports exactly that token as rejected (by fingerprint,
//!    so a token that was already replaced is not refreshed again). A replayable request is
//!    sent once more with the new token and that answer is returned, whatever it is; any other
//!    request gets the 401, and the next request gets the new token.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the fields it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`, and the proxy credentials) are
//! dropped in both directions, as are the client's `Host` and `Expect`. Upstream connections
//! come from one pool shared by all profiles ([`super::upstream`]), reused with keep-alive and
//! HTTP/2 where the server offers it (ALPN); TLS is verified exactly as for token endpoints;
//! redirects are answered to the client, not followed. Only method, profile, status and timing
//! are logged — never a path, a header or a body.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokend_proto::Token;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use super::api::ApiError;
use super::body::{BoxError, Idle, Outgoing, Read, ResponseBody, Stalled};
use super::target;
use super::upstream::{ConnectTimedOut, Connector};
use crate::daemon::Daemon;
use crate::oauth::Tls;
use crate::server::handler::with_profile;

/// The largest request body kept in memory to be replayed after a 401.
pub(crate) const REPLAY_LIMIT: usize = 1024 * 1024;
/// How much memory the request bodies kept for replay may take in all.
pub(crate) const REPLAY_BUDGET: usize = 64 * REPLAY_LIMIT;
/// How long idle upstream connections are kept for reuse. The pool's timer runs only while it
/// holds one, so an idle tokend is not woken.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// A proxied request's body, as it goes upstream.
type Upload = Outgoing<Idle<Incoming>>;

/// The client side of the proxy.
pub(crate) struct Proxy {
    client: Client<Connector, Upload>,
    /// How long the API may take to start answering once it has the request, and how long
    /// either side of a transfer may send nothing while the other waits.
    idle: Duration,
    /// Bytes of request bodies that may be held for replay, in all.
    replay_budget: Arc<Semaphore>,
}

/// A request body, ready to send.
enum Payload {
    /// Held in memory (with its share of the budget): it can be sent again.
    Replayable(Bytes, Option<OwnedSemaphorePermit>),
    /// What was read, and the rest of the client's body: it can be sent once.
    Streaming(Bytes, Idle<Incoming>, Option<u64>),
}

impl Proxy {
    /// A proxy whose upstream requests wait at most `timeout` for an answer or a piece of one.
    pub(crate) fn new(timeout: Duration, tls: &Tls) -> Proxy {
        let connector = Connector::new(&Arc::new(tls.config().clone()), timeout.min(Duration::from_secs(10)));
        // hyper-util's client follows no redirects: a 3xx goes back to the client as it came.
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Proxy { client, idle: timeout, replay_budget: Arc::new(Semaphore::new(REPLAY_BUDGET)) }
    }

    /// Forwards `request` for profile `name`, whose path below `/v1/proxy/NAME` is `below`.
    pub(crate) async fn forward(
        &self,
        daemon: &Arc<Daemon>,
        name: &str,
        below: &str,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let started = std::time::Instant::now();
        let method = request.method().clone();
        let (response, retried) = match self.exchange(daemon, name, below, request).await {
            Ok(answered) => answered,
            Err(error) => (error.into_response(), false),
        };
        // The name came in the request's path: it is logged only if it is a profile's.
        let profile = if daemon.profile(name).is_ok() { name } else { "(unknown)" };
        tracing::debug!(
            %method,
            profile,
            status = response.status().as_u16(),
            retried,
            elapsed = ?started.elapsed(),
            "proxied a request"
        );
        response
    }

    async fn exchange(
        &self,
        daemon: &Arc<Daemon>,
        name: &str,
        below: &str,
        request: Request<Incoming>,
    ) -> Result<(Response<ResponseBody>, bool), ApiError> {
        if request.method() == Method::TRACE {
            return Err(ApiError::refused_method(
                super::api::PROXY_METHODS,
                "refused: TRACE would echo the request back, with the token tokend adds",
            ));
        }
        let profile = daemon.profile(name)?;
        let Some(base) = profile.config.api_base.clone() else {
            return Err(ApiError::bad_request(format!(
                "profile `{name}` has no api_base, so the proxy cannot send its requests anywhere; add `api_base = \"https://…\"` to [profiles.{name}] and run `tokenctl reload`"
            )));
        };
        let url = target::join(&base, below, request.uri().query())
            .map_err(|refused| ApiError::bad_request(format!("refused: {}; tokend is not an open proxy", refused.0)))?;
        let uri = Uri::try_from(url.as_str()).map_err(|_| {
            ApiError::bad_request("the path or query has characters an HTTP request cannot carry; percent-encode them")
        })?;
        let (parts, body) = request.into_parts();
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::bad_request(
                "refused: the request has its own Authorization header; the proxy adds the profile's token itself, so remove it",
            ));
        }
        let headers = forwarded(parts.headers);
        let payload = self.payload(body).await?;

        let deadline = Instant::now() + daemon.request_timeout;
        let served = with_profile(daemon, name, |h| async move { h.token(None, deadline).await }).await?;
        let (first, replay) = match payload {
            Payload::Replayable(bytes, permit) => (Outgoing::buffered(bytes.clone()), Some((bytes, permit))),
            Payload::Streaming(read, rest, length) => (Outgoing::streaming(read, rest, length), None),
        };
        let response = self.send(&parts.method, &uri, &url, &headers, served.token(), first).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok((self.respond(response), false));
        }

        let rejected = served.token().fingerprint;
        let Some((bytes, _permit)) = replay else {
            // Too late to send the body again: the client gets the 401, and the next request a
            // new token.
            tracing::info!(profile = %name, "the API rejected the token of a request that cannot be replayed; getting a new one");
            let (daemon, name) = (daemon.clone(), name.to_owned());
            tokio::spawn(async move {
                let deadline = Instant::now() + daemon.request_timeout;
                let _ =
                    with_profile(&daemon, &name, |h| async move { h.invalidate(Some(rejected), deadline).await }).await;
            });
            return Ok((self.respond(response), false));
        };
        drop(response);
        tracing::info!(profile = %name, "the API rejected the token; retrying once with a new one");
        let deadline = Instant::now() + daemon.request_timeout;
        let served =
            with_profile(daemon, name, |h| async move { h.invalidate(Some(rejected), deadline).await }).await?;
        let again = Outgoing::buffered(bytes);
        let response = self.send(&parts.method, &uri, &url, &headers, served.token(), again).await?;
        Ok((self.respond(response), true))
    }

    /// Reads as much of the body as may be replayed.
    async fn payload(&self, body: Incoming) -> Result<Payload, ApiError> {
        let length = hyper::body::Body::size_hint(&body).exact();
        let body = Idle::new(body, "the client", self.idle);
        if hyper::body::Body::is_end_stream(&body) {
            return Ok(Payload::Replayable(Bytes::new(), None));
        }
        // Known to be too long, or no room left to hold it: stream it.
        let share = match length {
            Some(n) if n > REPLAY_LIMIT as u64 => None,
            Some(n) => u32::try_from(n).ok().and_then(|n| self.replay_budget.clone().try_acquire_many_owned(n).ok()),
            None => {
                let limit = u32::try_from(REPLAY_LIMIT).expect("the replay limit fits in u32");
                self.replay_budget.clone().try_acquire_many_owned(limit).ok()
            }
        };
        let Some(permit) = share else { return Ok(Payload::Streaming(Bytes::new(), body, length)) };
        match super::body::read_up_to(body, REPLAY_LIMIT).await.map_err(client_body_error)? {
            Read::Whole(bytes) => Ok(Payload::Replayable(bytes, Some(permit))),
            Read::Longer(read, rest) => Ok(Payload::Streaming(read, rest, length)),
        }
    }

    /// Sends one request with `token`, and waits for the answer's head: at most the idle time
    /// once the body has been handed over.
    async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        url: &Url,
        headers: &HeaderMap,
        token: &Token,
        body: Upload,
    ) -> Result<Response<Incoming>, ApiError> {
        let sent = body.sent();
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        let mut headers = headers.clone();
        headers.insert(header::AUTHORIZATION, authorization(token)?);
        *request.headers_mut() = headers;
        tokio::select! {
            answer = self.client.request(request) => answer.map_err(|e| upstream_error(&e, url)),
            () = async { sent.notified().await; tokio::time::sleep(self.idle).await } => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream",
                format!("the API at {} did not answer within {}", origin(url), humantime::format_duration(self.idle)),
            )),
        }
    }

    /// The API's answer, for the client.
    fn respond(&self, response: Response<Incoming>) -> Response<ResponseBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // The client speaks HTTP/1.1 whatever the upstream spoke.
        parts.version = hyper::Version::HTTP_11;
        parts.extensions = Default::default();
        let body = http_body_util::BodyExt::boxed(Idle::new(body, "the API", self.idle));
        Response::from_parts(parts, body)
    }
}

/// `Authorization: Bearer TOKEN` (or the server's own token type), marked sensitive so that
/// HTTP/2 never puts it in a compression table.
fn authorization(token: &Token) -> Result<HeaderValue, ApiError> {
    let kind = if token.token_type.eq_ignore_ascii_case("bearer") { "Bearer" } else { &token.token_type };
    let text = Zeroizing::new(format!("{kind} {}", token.access_token.expose()));
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            "the token cannot be sent in an HTTP header (it has characters a header may not carry)",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The client's headers as they go upstream.
fn forwarded(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    // The upstream's own Host is set from the URL; the client's Expect was answered by hyper
    // here; the body's length goes with the body.
    for name in [header::HOST, header::EXPECT, header::CONTENT_LENGTH] {
        headers.remove(name);
    }
    headers
}

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1, and the fields `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
}

/// `scheme://host[:port]` of `url`: enough to say which API, without a path or query that may
/// carry something private.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn upstream_error(error: &hyper_util::client::legacy::Error, url: &Url) -> ApiError {
    if let Some(stalled) = find::<Stalled>(error) {
        return ApiError::new(StatusCode::REQUEST_TIMEOUT, "usage", format!("the request body stopped: {stalled}"));
    }
    let cause = crate::oauth::root_cause(error);
    let origin = origin(url);
    if timed_out(error) {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream", format!("the API at {origin} timed out ({cause})"))
    } else if error.is_connect() {
        ApiError::new(StatusCode::BAD_GATEWAY, "upstream", format!("cannot connect to the API at {origin}: {cause}"))
    } else {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            format!("the request to the API at {origin} failed: {cause}"),
        )
    }
}

/// Whether connecting or a read or write gave up for time.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        let timeout = e.is::<ConnectTimedOut>()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout);
        if timeout {
            return true;
        }
        current = e.source();
    }
    false
}

fn client_body_error(error: BoxError) -> ApiError {
    match error.downcast_ref::<Stalled>() {
        Some(stalled) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "usage", format!("the request body stopped: {stalled}"))
        }
        None => ApiError::bad_request(format!("cannot read the request body: {error}")),
    }
}

/// The first error of type `E` in `error`'s chain of sources.
fn find<'a, E: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("connection", "upgrade"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-private", "1"),
            ("host", "tokend"),
            ("expect", "100-continue"),
            ("content-length", "5"),
            ("accept", "application/json"),
            ("x-request-id", "42"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let kept = forwarded(headers);
        let mut names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["accept", "x-request-id"]);
    }

    #[test]
    fn the_token_goes_in_a_sensitive_header_with_its_type() {
        let token = |kind: &str, value: &str| Token {
            profile: "p".into(),
            access_token: value.into(),
            token_type: kind.into(),
            expires_at: std::time::SystemTime::now(),
            fingerprint: tokend_proto::Fingerprint::of(value),
            scope: None,
        };
        let value = authorization(&token("bearer", "abc")).unwrap();
        assert_eq!(value, "Bearer abc");
        assert!(value.is_sensitive());
        assert_eq!(authorization(&token("MAC", "abc")).unwrap(), "MAC abc");
        assert!(authorization(&token("Bearer", "a\nb")).is_err());
    }
}
