//! The floor of the proxy: the smallest forwarding proxy that makes the same hops as tokend's
//! (client → Unix socket → proxy → TCP loopback → upstream) with the same parts — hyper's
//! HTTP/1.1 server on a tokio runtime with tokend's worker count, and hyper-util's pooled
//! client with keep-alive and `TCP_NODELAY`, as under reqwest — and none of tokend's work: no
//! token, no checks, no header filtering. The client brings its own `Authorization`, and the
//! request goes upstream with its path, headers and body as they came.
//!
//! What separates tokend's proxy from the direct request is then split in two: what the extra
//! hop costs on this machine (this proxy against the direct request), and what tokend adds
//! (tokend against this proxy).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixListener;

/// Serves at `socket`, forwarding every request to `upstream`, until killed. Prints a line
/// once it listens.
pub(crate) fn serve(socket: &Path, upstream: SocketAddr, workers: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    let _ = std::fs::remove_file(socket);
    let listener = runtime.block_on(async { UnixListener::bind(socket).expect("bind the minimal proxy's socket") });
    println!("listening");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> =
        Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
    // The accept loop runs on a worker, as tokend's does.
    let accept = runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let client = client.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut request: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                        let uri: Uri = format!("http://{upstream}{path}").parse().expect("a valid URI");
                        *request.uri_mut() = uri;
                        // The client sets the upstream's own.
                        request.headers_mut().remove(HOST);
                        client.request(request).await
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    let _ = runtime.block_on(accept);
}
