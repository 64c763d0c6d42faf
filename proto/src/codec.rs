//! Framing: how a message becomes bytes on the socket and back.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload, which is one message
//! encoded with bincode 2 (standard configuration). This module is the only place in tokend
//! that calls bincode, so the choice of encoding can change without touching anything else.
//!
//! Defences, all enforced here so that neither side can forget them:
//!
//! - a length prefix above [`MAX_FRAME_LEN`] is refused as soon as its four bytes are seen,
//!   before any buffer is grown for it;
//! - decoding runs with the same limit, so a payload cannot claim a string or vector larger
//!   than the frame that carries it;
//! - a payload must be consumed exactly: trailing bytes mean the peer speaks something else.

use std::io::{self, Read, Write};

use bincode::config::{Configuration, Limit, standard};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest payload a frame may carry, in bytes.
///
/// Tokens are a few kilobytes at most; 64 KiB leaves room for status lists of many profiles
/// while keeping what one connection can make the daemon buffer small.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// The size of the length prefix in front of every payload.
pub const HEADER_LEN: usize = 4;

const CONFIG: Configuration<bincode::config::BigEndian, bincode::config::Varint, Limit<MAX_FRAME_LEN>> =
    standard().with_big_endian().with_limit::<MAX_FRAME_LEN>();

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_LEN`] bytes.
    #[error("frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge {
        /// The announced (or, when encoding, the actual) payload length.
        len: usize,
    },
    /// The length prefix announces an empty payload; no message encodes to zero bytes.
    #[error("empty frame")]
    Empty,
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes of the frame (header included) that arrived.
        got: usize,
        /// Bytes the frame should have had.
        expected: usize,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Appends one frame carrying `message` to `out`.
///
/// On error `out` is left as it was.
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let written = bincode::serde::encode_into_std_write(message, out, CONFIG);
    let len = out.len() - start - HEADER_LEN;
    let result = match written {
        Ok(_) if len > MAX_FRAME_LEN => Err(FrameError::TooLarge { len }),
        Ok(_) => {
            let len = u32::try_from(len).expect("a frame is at most MAX_FRAME_LEN bytes, which fits in u32");
            out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
            return Ok(());
        }
        Err(e) => Err(FrameError::Encode(e.to_string())),
    };
    out.truncate(start);
    result
}

/// Decodes one message from a frame's payload (the bytes after the length prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len: payload.len() });
    }
    let (message, used) =
        bincode::serde::decode_from_slice(payload, CONFIG).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Malformed(format!("{} unexpected bytes after the message", payload.len() - used)));
    }
    Ok(message)
}

/// Reads a length prefix and checks it against the limit.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    match len {
        0 => Err(FrameError::Empty),
        len if len > MAX_FRAME_LEN => Err(FrameError::TooLarge { len }),
        len => Ok(len),
    }
}

/// Looks for a complete frame at the start of `buf`.
///
/// Returns the frame's total length (header included) when all of it is there, `None` when
/// more bytes are needed, and an error as soon as the header is known to be bad.
pub fn complete_frame(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let total = HEADER_LEN + payload_len(*header)?;
    Ok((buf.len() >= total).then_some(total))
}

/// The outcome of reading a frame from a blocking stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame from a blocking reader and decodes it.
///
/// Returns `Ok(None)` if the stream ended cleanly before the first byte of a frame. `buf` holds
/// bytes read beyond the frame for the next call, so give every call on one stream the same
/// buffer. Reads ask for as much as is available, so a frame usually costs one read.
pub fn read_frame<T: DeserializeOwned>(reader: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<T>, ReadError> {
    loop {
        if let Some(len) = complete_frame(buf)? {
            let message = decode(&buf[HEADER_LEN..len]);
            buf.drain(..len);
            return Ok(Some(message?));
        }
        let want = match buf.first_chunk::<HEADER_LEN>() {
            Some(header) => (HEADER_LEN + payload_len(*header)?).saturating_sub(buf.len()),
            None => HEADER_LEN - buf.len(),
        };
        let filled = buf.len();
        buf.resize(filled + want.max(4096), 0);
        let got = loop {
            match reader.read(&mut buf[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match got {
            Ok(0) => {
                buf.truncate(filled);
                if buf.is_empty() {
                    return Ok(None);
                }
                let expected = match buf.first_chunk::<HEADER_LEN>() {
                    Some(header) => HEADER_LEN + payload_len(*header)?,
                    None => HEADER_LEN,
                };
                return Err(FrameError::Truncated { got: buf.len(), expected }.into());
            }
            Ok(n) => buf.truncate(filled + n),
            Err(e) => {
                buf.truncate(filled);
                return Err(e.into());
            }
        }
    }
}

/// Encodes `message` as one frame and writes it with a single `write_all`.
pub fn write_frame<T: Serialize>(writer: &mut impl Write, message: &T, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    buf.clear();
    encode(message, buf)?;
    writer.write_all(buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, Response};
    use crate::{Error, Hello, HelloReply, Secret, Token};
    use std::time::{Duration, SystemTime};

    fn frame_of<T: Serialize>(message: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out).unwrap();
        out
    }

    #[test]
    fn a_request_survives_a_round_trip() {
        let request = Request::Token { profile: "minut".into(), min_valid: Some(Duration::from_secs(90)) };
        let frame = frame_of(&request);
        assert_eq!(complete_frame(&frame), Ok(Some(frame.len())));
        let back: Request = decode(&frame[HEADER_LEN..]).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn a_token_response_survives_a_round_trip() {
        let response = Response::Token(Token {
            profile: "movemint".into(),
            access_token: Secret::from("abc.def"),
            token_type: "Bearer".into(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
            fingerprint: crate::Fingerprint::of("abc.def"),
            scope: Some("read write".into()),
        });
        let frame = frame_of(&response);
        let back: Response = decode(&frame[HEADER_LEN..]).unwrap();
        assert_eq!(back, response);
    }

    #[test]
    fn the_handshake_survives_a_round_trip() {
        let hello = Hello::new();
        let back: Hello = decode(&frame_of(&hello)[HEADER_LEN..]).unwrap();
        assert_eq!(back, hello);
        let reply = HelloReply::accept();
        let back: HelloReply = decode(&frame_of(&reply)[HEADER_LEN..]).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn an_oversize_length_prefix_is_refused_before_the_payload_arrives() {
        let header = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
        assert_eq!(complete_frame(&header), Err(FrameError::TooLarge { len: MAX_FRAME_LEN + 1 }));
        assert_eq!(complete_frame(&u32::MAX.to_be_bytes()), Err(FrameError::TooLarge { len: u32::MAX as usize }));
    }

    #[test]
    fn a_zero_length_frame_is_refused() {
        assert_eq!(complete_frame(&[0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(decode::<Request>(&[]), Err(FrameError::Empty));
    }

    #[test]
    fn a_partial_frame_waits_for_more_bytes() {
        let frame = frame_of(&Request::List);
        for cut in 0..frame.len() {
            assert_eq!(complete_frame(&frame[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_truncated_frame_on_a_blocking_stream_is_reported() {
        let frame = frame_of(&Request::Status { profile: Some("a".into()) });
        let cut = &frame[..frame.len() - 1];
        let err = read_frame::<Request>(&mut &cut[..], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ReadError::Frame(FrameError::Truncated { .. })), "{err}");
        let err = read_frame::<Request>(&mut &frame[..2], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ReadError::Frame(FrameError::Truncated { got: 2, expected: 4 })));
        assert!(read_frame::<Request>(&mut &[][..], &mut Vec::new()).unwrap().is_none());
    }

    #[test]
    fn frames_read_together_are_returned_one_at_a_time() {
        let mut stream = frame_of(&Request::Ping);
        stream.extend(frame_of(&Request::List));
        let (mut reader, mut buf) = (&stream[..], Vec::new());
        assert_eq!(read_frame::<Request>(&mut reader, &mut buf).unwrap(), Some(Request::Ping));
        assert_eq!(read_frame::<Request>(&mut reader, &mut buf).unwrap(), Some(Request::List));
        assert_eq!(read_frame::<Request>(&mut reader, &mut buf).unwrap(), None);
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 1..300 {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()[0]
                })
                .collect();
            let _ = decode::<Request>(&payload);
            let _ = decode::<Response>(&payload);
            let _ = decode::<Hello>(&payload);
        }
        assert!(decode::<Request>(&[0xff; 16]).is_err());
    }

    #[test]
    fn a_payload_claiming_a_huge_string_is_refused_without_allocating_it() {
        // Variant 1 (Token) followed by a varint string length of u64::MAX / 2.
        let mut payload = vec![1u8, 0xfd];
        payload.extend_from_slice(&(u64::MAX / 2).to_be_bytes());
        let err = decode::<Request>(&payload).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn trailing_bytes_after_a_message_are_refused() {
        let mut frame = frame_of(&Request::Ping);
        frame.push(0);
        let err = decode::<Request>(&frame[HEADER_LEN..]).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn an_oversize_message_is_refused_when_encoding_and_leaves_the_buffer_alone() {
        let huge = Response::Error(Error::BadRequest { message: "x".repeat(MAX_FRAME_LEN) });
        let mut out = vec![7, 7];
        assert!(matches!(encode(&huge, &mut out), Err(FrameError::TooLarge { .. })));
        assert_eq!(out, vec![7, 7]);
    }

    #[test]
    fn several_frames_in_one_buffer_are_found_one_after_another() {
        let mut buf = frame_of(&Request::Ping);
        let first = buf.len();
        encode(&Request::List, &mut buf).unwrap();
        assert_eq!(complete_frame(&buf), Ok(Some(first)));
        let second = complete_frame(&buf[first..]).unwrap().unwrap();
        let back: Request = decode(&buf[first + HEADER_LEN..first + second]).unwrap();
        assert_eq!(back, Request::List);
    }
}
