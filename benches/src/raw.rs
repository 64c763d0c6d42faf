//! The physical limit to compare against: a minimal server and client that exchange frames of
//! exactly the sizes tokend's token request and response have, with no decoding and no logic.
//!
//! The server runs in its own process (like tokend) on a tokio runtime with the same number of
//! worker threads, so the two differ only in what tokend does per request.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Serves raw frames at `socket` until killed: for every `request_len` bytes read, writes
/// `response_len` bytes.
pub(crate) fn serve(socket: &Path, request_len: usize, response_len: usize, workers: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    let _ = std::fs::remove_file(socket);
    let listener = runtime.block_on(async { UnixListener::bind(socket).expect("bind the raw baseline socket") });
    // The accept loop runs on a worker, as tokend's does, so that each connection's task
    // starts where it was accepted rather than being handed over from the main thread.
    let accept = runtime.spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut request = vec![0u8; request_len];
                let response = vec![7u8; response_len];
                while stream.read_exact(&mut request).await.is_ok() {
                    if stream.write_all(&response).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let _ = runtime.block_on(accept);
}

/// A client of the raw server.
pub(crate) struct RawClient {
    stream: UnixStream,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl RawClient {
    /// Connects.
    pub(crate) async fn connect(socket: &Path, request_len: usize, response_len: usize) -> RawClient {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("the raw baseline server is not up: {e}"),
            }
        };
        RawClient { stream, request: vec![1u8; request_len], response: vec![0u8; response_len] }
    }

    /// One round trip.
    pub(crate) async fn round_trip(&mut self) {
        self.stream.write_all(&self.request).await.unwrap();
        self.stream.read_exact(&mut self.response).await.unwrap();
    }
}
