//! A plain HTTP/1.1 client over a Unix socket (hyper's connection-level client, which sends a
//! request target exactly as given), for tests and benchmarks of tokend's HTTP API that are
//! not about a particular client program.
//!
//! Like curl or Python's `http.client`, it does its I/O in the task that makes the request: the
//! connection is driven by [`drive`] while a request waits, rather than by a task of its own,
//! which would add a hand-over between tasks (and often threads) to every request.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The I/O half of a client connection: runs until the connection closes.
pub type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One kept-alive connection to an HTTP socket (or to a TCP server, for a baseline).
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
    /// Whether the server closed the connection.
    closed: bool,
}

/// Runs `work` (a request on the connection `driver` belongs to) while driving the connection's
/// I/O; `closed` records that the connection ended, after which `work` runs alone.
pub async fn drive<F: Future>(driver: &mut Driver, closed: &mut bool, work: F) -> F::Output {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = driver.as_mut(), if !*closed => *closed = true,
        }
    }
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
        Connection { sender, driver: Box::pin(conn), closed: false }
    }

    /// Sends `request` and reads the answer's head and body.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
        let sender = &mut self.sender;
        let exchange = async {
            sender.ready().await.expect("the connection is usable");
            let response: Response<Incoming> = sender.send_request(request).await.expect("an answer");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("the whole body").to_bytes();
            (Response::from_parts(parts, ()), body)
        };
        tokio::time::timeout(Duration::from_secs(120), drive(&mut self.driver, &mut self.closed, exchange))
            .await
            .expect("an answer within 2 minutes")
    }

    /// Sends `method target` with `headers` and `body`, and reads the whole answer.
    pub async fn request(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = Request::builder().method(method).uri(target).header("host", "tokend");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::copy_from_slice(body))).expect("a valid request");
        let (response, body) = self.send(request).await;
        let (parts, ()) = response.into_parts();
        Answer { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    /// `GET target`.
    pub async fn get(&mut self, target: &str) -> Answer {
        self.request("GET", target, &[], b"").await
    }
}
