//! Speaking tokend's protocol by hand, frame by frame, for tests that need to control exactly
//! what goes over the socket.

use std::path::Path;
use std::time::Duration;

use tokend_proto::codec::{self, HEADER_LEN};
use tokend_proto::{Hello, HelloReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// `message` as one frame.
pub fn frame<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode(message, &mut out).unwrap();
    out
}

/// Reads one frame (waiting at most 30 s), or `None` if the daemon closed the connection first.
pub async fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut UnixStream) -> Option<T> {
    let mut header = [0u8; HEADER_LEN];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut header))
        .await
        .expect("an answer in time")
        .ok()?;
    let mut payload = vec![0; codec::payload_len(header).unwrap()];
    stream.read_exact(&mut payload).await.ok()?;
    Some(codec::decode(&payload).unwrap())
}

/// Connects to `socket` and completes the handshake.
pub async fn handshake(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(&frame(&Hello::new())).await.unwrap();
    let reply: HelloReply = read_frame(&mut stream).await.unwrap();
    assert_eq!(reply.refusal, None);
    stream
}
