//! One client connection as a sequence of frames: reads and writes whole messages, with the
//! bounds that keep a misbehaving client from costing more than its own connection.
//!
//! - A frame's length prefix is checked before its payload is buffered (see
//!   `tokend_proto::codec`), so a client can make the daemon buffer at most one maximal frame.
//! - A frame must be complete within [`FRAME_TIMEOUT`] of its first byte, however its bytes are
//!   spread out: a client that stops mid-frame, or trickles a frame a byte at a time, is dropped
//!   then. The deadline belongs to the frame, not to each read, so that a partly read frame (up
//!   to 64 KiB of buffer) cannot be kept alive indefinitely. Between frames a client may idle as
//!   long as it likes.
//! - Every write must complete within [`WRITE_TIMEOUT`]; a client that stops reading is
//!   dropped.
//!
//! Reads go into one buffer and each response is encoded into another, both reused for the
//! connection's life, so a request costs one read and one write system call in the common case.
//! A message can also be queued, to go out with the next one: the answer to a hello that came
//! together with the first request (see `tokend_proto`'s conversation) is sent with that
//! request's answer, so a client's whole first exchange is one read and one write here. Queued
//! bytes are flushed before a read waits, so a client that waits for the hello's answer gets it.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokend_proto::FrameError;
use tokend_proto::codec::{self, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use zeroize::Zeroize;

/// How long a frame may take to arrive, from its first byte to its last.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may take to write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What ended a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The client stopped in the middle of a frame, or stopped reading.
    #[error("timed out {0}")]
    Timeout(&'static str),
}

/// A framed connection.
pub struct Connection<S> {
    stream: S,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    /// When the frame being read must be complete: set when its first byte arrives, so it is
    /// `Some` exactly while `read_buf` holds part of a frame. It lives here, not in
    /// [`Connection::read`], because that future is dropped and called again (the handler
    /// selects on shutdown), and a new call must not restart the frame's clock.
    frame_deadline: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        // Requests are a few dozen bytes and tokens are answered from pre-encoded frames, so
        // buffers start small: thousands of idle connections cost little.
        Connection { stream, read_buf: Vec::with_capacity(256), write_buf: Vec::new(), frame_deadline: None }
    }

    /// Wraps a stream from which `read` was already read (by the short-request path), to be
    /// taken as the start of what the client sent. The bytes are copied into a buffer sized as
    /// [`Connection::new`] sizes it, not kept in `read`, whose capacity is the short path's
    /// whole read size: a connection that stays open must not keep that for its lifetime.
    pub(crate) fn with_read(stream: S, mut read: Vec<u8>) -> Self {
        let mut conn = Connection::new(stream);
        if !read.is_empty() {
            conn.read_buf.extend_from_slice(&read);
            conn.frame_deadline = Some(Instant::now() + FRAME_TIMEOUT);
        }
        read.zeroize();
        conn
    }

    /// Reads the next message. `Ok(None)` means the client closed the connection between
    /// frames. Cancel-safe: bytes already read stay buffered.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnError> {
        loop {
            if let Some(len) = codec::complete_frame(&self.read_buf)? {
                let message = codec::decode(&self.read_buf[HEADER_LEN..len]);
                self.read_buf[..len].zeroize();
                self.read_buf.drain(..len);
                // Bytes already here begin the next frame, whose clock starts now.
                self.frame_deadline = (!self.read_buf.is_empty()).then(|| Instant::now() + FRAME_TIMEOUT);
                return Ok(Some(message?));
            }
            // Grow only for what the frame being read needs (its length is checked against the
            // limit first); small requests never make the buffer grow.
            if self.read_buf.capacity() - self.read_buf.len() < 64 {
                let frame = match self.read_buf.first_chunk::<HEADER_LEN>() {
                    Some(header) => HEADER_LEN + codec::payload_len(*header)?,
                    None => HEADER_LEN,
                };
                self.read_buf.reserve(frame.saturating_sub(self.read_buf.len()).max(256));
            }
            if !self.write_buf.is_empty() {
                self.flush().await?;
            }
            let read = match self.frame_deadline {
                None => self.stream.read_buf(&mut self.read_buf).await?,
                Some(deadline) => tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf))
                    .await
                    .map_err(|_| ConnError::Timeout("waiting for the rest of a frame"))??,
            };
            if read > 0 && self.frame_deadline.is_none() {
                self.frame_deadline = Some(Instant::now() + FRAME_TIMEOUT);
            }
            if read == 0 {
                if self.read_buf.is_empty() {
                    return Ok(None);
                }
                let expected = match self.read_buf.first_chunk::<HEADER_LEN>() {
                    Some(header) => HEADER_LEN + codec::payload_len(*header)?,
                    None => HEADER_LEN,
                };
                return Err(FrameError::Truncated { got: self.read_buf.len(), expected }.into());
            }
        }
    }

    /// Writes one message as one frame (after anything queued).
    pub async fn write<T: Serialize>(&mut self, message: &T) -> Result<(), ConnError> {
        // On error nothing is added, and what was queued still goes out with the next write.
        codec::encode(message, &mut self.write_buf)?;
        self.flush().await
    }

    /// Queues one message, to be written with the next one or before the next read waits.
    pub fn queue<T: Serialize>(&mut self, message: &T) -> Result<(), ConnError> {
        codec::encode(message, &mut self.write_buf)?;
        Ok(())
    }

    /// Writes a frame that is already encoded (after anything queued).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        if self.write_buf.is_empty() {
            return tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(frame))
                .await
                .map_err(|_| ConnError::Timeout("writing a response"))?
                .map_err(ConnError::from);
        }
        self.write_buf.extend_from_slice(frame);
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&self.write_buf)).await;
        self.write_buf.zeroize();
        written.map_err(|_| ConnError::Timeout("writing a response"))??;
        Ok(())
    }
}

impl<S> Drop for Connection<S> {
    fn drop(&mut self) {
        self.read_buf.zeroize();
        self.write_buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use tokend_proto::{Request, codec};

    use super::*;

    #[tokio::test]
    async fn bytes_read_before_are_the_start_of_the_next_message_in_a_small_buffer() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut frame = Vec::new();
        codec::encode(&Request::Ping, &mut frame).unwrap();
        // As the short-request path hands them over: its whole read buffer, the message split.
        let mut read = Vec::with_capacity(1024);
        read.extend_from_slice(&frame[..3]);
        let mut conn = Connection::with_read(ours, read);
        assert!(conn.read_buf.capacity() <= 256, "kept a buffer of {} bytes", conn.read_buf.capacity());
        theirs.write_all(&frame[3..]).await.unwrap();
        assert!(matches!(conn.read::<Request>().await.unwrap(), Some(Request::Ping)));
    }
}
