//! The language tokend and its clients speak.
//!
//! This crate is pure data: it defines the messages that travel over tokend's local socket,
//! how they are framed, which protocol version they belong to, and where the socket lives by
//! default. It does no I/O of its own beyond the small blocking helpers in [`codec`], and it
//! makes no decisions about tokens: those belong to the daemon (`tokend`), while the client
//! library (`tokend-client`) only asks.
//!
//! # A conversation
//!
//! 1. The client connects to the [`endpoint`] and sends a [`Hello`] frame carrying
//!    [`PROTOCOL_VERSION`].
//! 2. The daemon answers with a [`HelloReply`]. Both handshake messages have a frozen layout so
//!    that a client and a daemon of *different* versions can still tell each other so.
//! 3. The client sends [`Request`]s; each is answered by one [`Response`], except for
//!    [`Request::Watch`] and [`Request::Login`], which are answered by a stream of responses.
//!
//! Every message is one frame: a 4-byte big-endian payload length followed by that many bytes
//! of bincode. Frames larger than [`codec::MAX_FRAME_LEN`] are refused before anything is
//! allocated for them.
//!
//! Programs that do not speak this protocol use tokend's HTTP API instead, whose JSON forms
//! live in [`json`] (shared with `tokenctl --json`).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod endpoint;
pub mod error;
pub mod json;
pub mod message;
pub mod secret;
pub mod time;

pub use codec::{FrameError, MAX_FRAME_LEN};
pub use endpoint::Endpoint;
pub use error::{Error, ErrorClass, Failure};
pub use message::{
    Event, Grant, Hello, HelloReply, LoginExpiry, LoginExpirySource, Pong, ProfileState, ProfileStatus, ProfileSummary,
    ReloadSummary, Request, Response, RevocationOutcome, RevocationReport, Token, TokenSummary,
};
pub use secret::{Fingerprint, Secret};

/// The protocol version this crate speaks.
///
/// Bump it whenever the encoding of [`Request`], [`Response`] or anything they contain changes
/// in a way an older peer would misread. The handshake messages never change.
///
/// 2: [`ProfileState::Quiet`], which a version-1 client could not decode in a status.
/// 3: [`ProfileStatus::login_expiry`] and [`Event::LoginExpiring`].
/// 4: [`Grant::DeviceCode`] and [`Response::LoginCode`], for the device authorization grant.
pub const PROTOCOL_VERSION: u32 = 4;

/// The four bytes every [`Hello`] starts with, so that a daemon can tell a tokend client from
/// a stray program that connected to its socket by mistake.
pub const MAGIC: [u8; 4] = *b"TKND";
