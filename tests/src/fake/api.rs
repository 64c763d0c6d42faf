//! The fake provider's API: the resource server that tokens are for, which tokend's proxy
//! sends requests to. Every route under `/api/` wants a token the provider would accept right
//! now (`Authorization: Bearer …`), and answers 401 otherwise:
//!
//! - `ANY /api/resource/…`: a JSON description of the request (method, path, query, headers
//!   other than `Authorization`, body size);
//! - `POST|PUT /api/echo`: the body's size and SHA-256, read as a stream;
//! - `POST|PUT /api/sink`: the body's size alone (for benchmarks, where hashing would dominate);
//! - `GET /api/download?bytes=N`: N bytes of [`pattern`] repeated, generated as they are sent;
//! - `GET /api/redirect`: a 302 to another resource;
//! - `GET /api/hop`: an answer carrying hop-by-hop header fields that a proxy must drop;
//! - `GET /api/stall`: no answer for ten minutes.
//!
//! Each request is recorded ([`Fake::api_requests`]) with the token it carried and the address it
//! came from, so a test can tell which token reached the API, and over which connection.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::{Fake, accepts, first_use, json};

/// The size of the block [`pattern`] repeats.
pub const PATTERN_BLOCK: usize = 64 * 1024;

/// One request the API received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// The method.
    pub method: String,
    /// The path and query, as received.
    pub target: String,
    /// The bearer token it carried (empty without one).
    pub token: String,
    /// The status it was answered with.
    pub status: u16,
    /// The address and port it came from: one per connection, so a test can tell whether
    /// connections were reused.
    pub peer: SocketAddr,
}

/// The bytes `/api/download` repeats: a fixed pseudo-random block, so that a test can check
/// what arrived piece by piece without holding it.
pub fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let block: Vec<u8> = (0..PATTERN_BLOCK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24).to_le_bytes()[0]
            })
            .collect();
        Bytes::from(block)
    })
}

impl Fake {
    /// Every request the API received, in order.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.with(|i| i.api_requests.clone())
    }
}

/// Answers a request for `/api/…`.
pub(super) async fn handle(fake: &Fake, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<super::Peer>>().expect("served with the peer's address").0.0;
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let target = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let valid = fake.with(|i| {
        let valid = !i.reject_every_use && accepts(i, &token, std::time::SystemTime::now());
        if valid {
            first_use(i, &token);
        }
        valid
    });
    let response = if !valid {
        // Read what was sent before answering, as servers behind a load balancer do: answering
        // early and closing on a body still arriving resets the connection, and the client may
        // lose the answer.
        consume(body).await;
        let mut response = json(StatusCode::UNAUTHORIZED, serde_json::json!({ "error": "invalid_token" }));
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        response
    } else {
        route(fake, &parts, body).await
    };
    fake.with(|i| {
        i.api_requests.push(ApiRequest {
            method: parts.method.to_string(),
            target,
            token,
            status: response.status().as_u16(),
            peer,
        })
    });
    response
}

async fn route(fake: &Fake, parts: &axum::http::request::Parts, body: Body) -> Response {
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    if path.starts_with("/api/resource") {
        let (bytes, _) = consume(body).await;
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .filter(|(name, _)| *name != header::AUTHORIZATION)
            .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into()))
            .collect();
        return json(
            StatusCode::OK,
            serde_json::json!({
                "method": parts.method.as_str(), "path": path, "query": query,
                "headers": headers, "body_bytes": bytes,
            }),
        );
    }
    match path {
        "/api/echo" => {
            let (bytes, sha256) = consume(body).await;
            let length = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            json(
                StatusCode::OK,
                serde_json::json!({
                    "bytes": bytes, "sha256": sha256, "content_length": length,
                    "chunked": parts.headers.get(header::TRANSFER_ENCODING).is_some(),
                }),
            )
        }
        "/api/sink" => {
            let mut stream = body.into_data_stream();
            let mut bytes = 0u64;
            while let Some(Ok(chunk)) = stream.next().await {
                bytes += chunk.len() as u64;
            }
            json(StatusCode::OK, serde_json::json!({ "bytes": bytes }))
        }
        "/api/download" => {
            let bytes = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "bytes")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0);
            download(bytes)
        }
        "/api/redirect" => {
            (StatusCode::FOUND, [(header::LOCATION, fake.url("/api/resource/moved"))], "").into_response()
        }
        "/api/hop" => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONNECTION, "x-hop")
            .header("x-hop", "dropped")
            .header("keep-alive", "timeout=5")
            .header(header::PROXY_AUTHENTICATE, "Basic")
            .header("x-end", "kept")
            .body(Body::from("{}"))
            .unwrap(),
        "/api/stall" => {
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            (StatusCode::OK, "late").into_response()
        }
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// Reads a body to its end as it arrives: its size and its SHA-256 in hex.
async fn consume(body: Body) -> (u64, String) {
    let mut stream = body.into_data_stream();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let digest = hasher.finalize();
    (bytes, digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// `bytes` bytes of the pattern, one block at a time.
fn download(bytes: u64) -> Response {
    let chunks = futures_util::stream::unfold(bytes, |left| async move {
        if left == 0 {
            return None;
        }
        let n = usize::try_from(left).map_or(PATTERN_BLOCK, |left| left.min(PATTERN_BLOCK));
        Some((Ok::<_, std::io::Error>(pattern().slice(..n)), left - n as u64))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, bytes)
        .body(Body::from_stream(chunks))
        .unwrap()
}
