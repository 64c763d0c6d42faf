//! A plain HTTP/1.1 client over a Unix socket (hyper's connection-level client, which sends a
//! request target exactly as given), for tests and benchmarks of tokend's HTTP API that are
//! not about a particular client program.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One kept-alive connection to an HTTP socket (or to a TCP server, for a baseline).
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The header fields.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Connection {
    /// Connects to the Unix socket at `path`.
    pub async fn unix(path: &Path) -> Connection {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .unwrap_or_else(|e| panic!("connect to the HTTP socket {}: {e}", path.display()));
        Connection::over(stream).await
    }

    /// Connects to `addr` over TCP.
    pub async fn tcp(addr: std::net::SocketAddr) -> Connection {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect over TCP");
        stream.set_nodelay(true).unwrap();
        Connection::over(stream).await
    }

    async fn over<S>(stream: S) -> Connection
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Connection { sender }
    }

    /// Sends `request` and returns the answer's head, with its body still to be read.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        self.sender.ready().await.expect("the connection is usable");
        tokio::time::timeout(Duration::from_secs(120), self.sender.send_request(request))
            .await
            .expect("an answer within 2 minutes")
            .expect("an answer")
    }

    /// Sends `method target` with `headers` and `body`, and reads the whole answer.
    pub async fn request(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = Request::builder().method(method).uri(target).header("host", "tokend");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::copy_from_slice(body))).expect("a valid request");
        let response = self.send(request).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the whole body").to_bytes();
        Answer { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    /// `GET target`.
    pub async fn get(&mut self, target: &str) -> Answer {
        self.request("GET", target, &[], b"").await
    }
}
