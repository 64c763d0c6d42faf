//! How the proxy reaches APIs: hyper-util's pooled client over a connector of tokend's own.
//!
//! The client is hyper's, with nothing between the proxy and it: the proxy already has the
//! request hyper parsed, its headers filtered and its body wrapped, and hands that over as it
//! is (a general-purpose client such as reqwest would take it apart, check it again and build
//! it anew on every request, which cost more CPU than all the proxy's own work).
//!
//! The connector gives it what the token endpoints' client has:
//!
//! - TLS with tokend's one set of settings ([`crate::oauth::Tls`]): rustls, the platform's
//!   roots, ALPN `h2` and `http/1.1`, so that HTTP/2 is used where the API offers it;
//! - `HTTPS_PROXY` / `ALL_PROXY` and `NO_PROXY` from tokend's environment, read once at start:
//!   an https API is reached through an HTTP `CONNECT` tunnel, with TLS still end to end. Plain
//!   http reaches only loopback APIs (`api_base` allows nothing else), which a proxy elsewhere
//!   could not reach, so those go straight;
//! - TCP as reqwest sets it up: `TCP_NODELAY`, keep-alive probes, a user timeout;
//! - one timeout on the whole of connecting, TLS handshake and tunnel included.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::BoxError;

/// A connection to an API: TLS or not, over TCP or over a tunnel (itself TLS or not).
pub(crate) type Connection = MaybeHttpsStream<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Connecting took longer than the connect timeout.
#[derive(Debug, thiserror::Error)]
#[error("operation timed out")]
pub(crate) struct ConnectTimedOut;

/// Opens connections to APIs, each within `timeout`.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: HttpsConnector<Route>,
    timeout: Duration,
}

impl Connector {
    /// A connector with TLS settings `tls` (their ALPN list included) that gives up on a
    /// connection after `timeout`.
    pub(crate) fn new(tls: &Arc<rustls::ClientConfig>, timeout: Duration) -> Connector {
        let mut tcp = HttpConnector::new();
        // The URL's scheme is the TLS layer's business.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout));
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        // A tunnel speaks HTTP/1.1 to the proxy, whatever the API behind it speaks.
        let mut to_proxy = (**tls).clone();
        to_proxy.alpn_protocols = vec![b"http/1.1".to_vec()];
        let route = Route {
            proxies: Arc::new(Matcher::from_env()),
            to_proxy: HttpsConnector::from((tcp.clone(), to_proxy)),
            tcp,
        };
        Connector { tls: HttpsConnector::from((route, tls.clone())), timeout }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Connection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tls.poll_ready(cx)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let connecting = self.tls.call(destination);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

/// The way to an API, under its TLS: straight, or through a `CONNECT` tunnel.
#[derive(Clone)]
struct Route {
    proxies: Arc<Matcher>,
    tcp: HttpConnector,
    /// To the proxy itself, which may be https.
    to_proxy: HttpsConnector<HttpConnector>,
}

impl tower_service::Service<Uri> for Route {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both connectors are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let proxy = match destination.scheme() {
            Some(scheme) if *scheme == hyper::http::uri::Scheme::HTTPS => self.proxies.intercept(&destination),
            _ => None,
        };
        let Some(proxy) = proxy else {
            let connecting = self.tcp.call(destination);
            return Box::pin(async move { Ok(MaybeHttpsStream::Http(connecting.await?)) });
        };
        match proxy.uri().scheme_str() {
            Some("http" | "https") => {}
            _ => {
                let message = "only http and https proxies are supported (HTTPS_PROXY, ALL_PROXY)";
                return Box::pin(async move { Err(io::Error::other(message).into()) });
            }
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.to_proxy.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let connecting = tunnel.call(destination);
        Box::pin(async move { Ok(connecting.await?) })
    }
}
