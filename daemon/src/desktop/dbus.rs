//! The little of D-Bus that a desktop notification needs, written by hand: a client that
//! connects to a bus, authenticates, says `Hello` and makes method calls, one at a time.
//!
//! What it does (the D-Bus Specification's sections in brackets):
//! - addresses ("Server Addresses"): a `;`-separated list of `transport:key=value,…`, values
//!   %-unescaped, tried in order; `unix:path=` and, on Linux, `unix:abstract=` connect, every
//!   other form (`tcp:`, `unix:dir=`, which only a server can listen on, …) is skipped with the
//!   reason, which ends up in the error if nothing connects;
//! - authentication ("Authentication Protocol"): `EXTERNAL` with our uid, nothing else, no file
//!   descriptor passing;
//! - messages ("Message Protocol"): method calls written little-endian, replies read in either
//!   byte order. The bodies written are the few types the caller needs ([`Body`]); anything
//!   the bus sends is walked by its signature, so an unknown header field or type is skipped.
//!
//! Everything the bus sends is untrusted: each length and offset is checked before use, a
//! message above [`MAX_MESSAGE`] is refused, and at most [`MAX_SKIPPED`] unrelated messages
//! (signals, other replies) are read while waiting for a reply. Time is the caller's bound.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The largest message read or written. The replies we wait for are a few dozen bytes, and a
/// bus only sends us signals addressed to us; anything bigger is not worth the memory.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// How many messages that are not the awaited reply are read before giving up.
pub(crate) const MAX_SKIPPED: usize = 64;

/// The longest line of the authentication exchange we accept (its `OK` is about 40 bytes).
const MAX_LINE: usize = 1024;

/// How deep signatures may nest (the specification allows 32 arrays and 32 structs).
const MAX_DEPTH: u32 = 64;

/// Why talking to the bus failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No entry of the address led to a connection.
    #[error("cannot connect to the session bus at {address:?}: {tried}")]
    Connect {
        /// The whole address.
        address: String,
        /// What each entry gave, in order.
        tried: String,
    },
    /// Reading or writing the socket failed.
    #[error("the session bus connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bus hung up.
    #[error("the session bus closed the connection")]
    Closed,
    /// The bus refused our authentication.
    #[error("the session bus refused authentication as uid {uid} (it accepts: {accepts})")]
    Rejected {
        /// Whom we said we are.
        uid: u32,
        /// The mechanisms it offered instead.
        accepts: String,
    },
    /// The authentication exchange went wrong.
    #[error("the session bus answered authentication with {0}")]
    Auth(String),
    /// A message bigger than we read or write.
    #[error("a D-Bus message of {0} bytes is larger than the {MAX_MESSAGE} bytes allowed")]
    TooLarge(u64),
    /// A message that does not follow the specification.
    #[error("the session bus sent a malformed message: {0}")]
    Malformed(&'static str),
    /// A string we were asked to send that D-Bus cannot carry.
    #[error("a D-Bus string cannot contain a NUL character")]
    Nul,
    /// Too many messages came before the reply.
    #[error("no reply among the first {MAX_SKIPPED} messages from the session bus")]
    NoReply,
    /// The call was answered with an error.
    #[error("{name}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Method {
        /// The error's name, such as `org.freedesktop.DBus.Error.ServiceUnknown`.
        name: String,
        /// Its message, when it has one.
        message: Option<String>,
    },
    /// The reply carried other values than expected.
    #[error("the reply has signature {found:?}, not {expected:?}")]
    Signature {
        /// What the caller expected.
        expected: &'static str,
        /// What came.
        found: String,
    },
}

/// Where one address entry leads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket in the file system.
    Path(PathBuf),
    /// A socket in Linux's abstract namespace (the name without its leading NUL).
    Abstract(Vec<u8>),
}

/// Each entry of a D-Bus address list in order: where it leads, or why it cannot be used.
fn targets(address: &str) -> Vec<Result<Target, String>> {
    address.split(';').filter(|entry| !entry.is_empty()).map(target).collect()
}

/// One entry (`transport:key=value,…`): where it leads, or why it cannot be used.
fn target(entry: &str) -> Result<Target, String> {
    let Some((transport, pairs)) = entry.split_once(':') else {
        return Err(format!("{entry:?} has no transport (`unix:path=…`)"));
    };
    let mut keys = Vec::new();
    for pair in pairs.split(',').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{entry:?}: {pair:?} is not key=value"));
        };
        keys.push((key, unescape(value).map_err(|e| format!("{entry:?}: {e}"))?));
    }
    if transport != "unix" {
        return Err(format!("{entry:?}: only the unix transport is supported"));
    }
    let mut found = None;
    for (key, value) in keys {
        let this = match key {
            "path" => Target::Path(PathBuf::from(OsString::from_vec(value))),
            "abstract" if cfg!(any(target_os = "linux", target_os = "android")) => Target::Abstract(value),
            "abstract" => return Err(format!("{entry:?}: abstract sockets exist only on Linux")),
            "dir" | "tmpdir" | "runtime" => {
                return Err(format!("{entry:?}: `{key}=` is for a bus to listen on, not to connect to"));
            }
            "guid" => continue,
            _ => return Err(format!("{entry:?}: unknown key `{key}`")),
        };
        if found.replace(this).is_some() {
            return Err(format!("{entry:?}: both a path and an abstract name"));
        }
    }
    found.ok_or_else(|| format!("{entry:?}: neither `path=` nor `abstract=`"))
}

/// The bytes of an address value: `%XX` is the byte XX; everything else stands for itself.
fn unescape(value: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next().unwrap_or_default(), bytes.next().unwrap_or_default()];
            let byte = std::str::from_utf8(&hex)
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = byte else {
                return Err(format!("{value:?} has a `%` not followed by two hex digits"));
            };
            out.push(byte);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// Connects to the first entry of `address` that accepts, authenticates and says `Hello`.
pub(crate) async fn connect(address: &str) -> Result<Connection<tokio::net::UnixStream>, Error> {
    let mut tried = Vec::new();
    for target in targets(address) {
        let result = match target {
            Ok(Target::Path(path)) => {
                tokio::net::UnixStream::connect(&path).await.map_err(|e| format!("{}: {e}", path.display()))
            }
            // tokio reads a leading NUL as Linux's abstract namespace.
            Ok(Target::Abstract(name)) => {
                let path = OsString::from_vec([&[0][..], &name].concat());
                let shown = String::from_utf8_lossy(&name).into_owned();
                tokio::net::UnixStream::connect(path).await.map_err(|e| format!("abstract {shown}: {e}"))
            }
            Err(reason) => Err(reason),
        };
        match result {
            Ok(stream) => return Connection::open(stream).await,
            Err(reason) => {
                tracing::debug!("session bus address skipped: {reason}");
                tried.push(reason);
            }
        }
    }
    if tried.is_empty() {
        tried.push("the address is empty".to_owned());
    }
    Err(Error::Connect { address: address.to_owned(), tried: tried.join("; ") })
}

/// An authenticated connection to a bus that has said `Hello`.
#[derive(Debug)]
pub(crate) struct Connection<S> {
    /// The socket; buffered for reading the authentication's lines and the messages' headers.
    stream: BufReader<S>,
    /// The serial of the last call sent (serials start at 1).
    serial: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Authenticates as this process's uid on a freshly connected `stream` and says `Hello`,
    /// which the bus requires before anything else.
    pub(crate) async fn open(stream: S) -> Result<Self, Error> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        Self::open_as(stream, uid).await
    }

    async fn open_as(stream: S, uid: u32) -> Result<Self, Error> {
        let mut connection = Connection { stream: BufReader::new(stream), serial: 0 };
        let hex: String = uid.to_string().bytes().map(|b| format!("{b:02x}")).collect();
        // The NUL first is where a bus would read passed credentials; the bus learns the uid
        // from the socket itself and checks it against the one we claim.
        connection.write(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes()).await?;
        let line = connection.line().await?;
        match line.split_once(' ').map_or((line.as_str(), ""), |(command, rest)| (command, rest)) {
            ("OK", guid) if !guid.is_empty() => {}
            ("REJECTED", accepts) => return Err(Error::Rejected { uid, accepts: printable(accepts) }),
            _ => return Err(Error::Auth(format!("{:?} instead of OK", printable(&line)))),
        }
        connection.write(b"BEGIN\r\n").await?;
        connection
            .call(&Call {
                destination: "org.freedesktop.DBus",
                path: "/org/freedesktop/DBus",
                interface: "org.freedesktop.DBus",
                member: "Hello",
                body: Body::new(),
            })
            .await?;
        Ok(connection)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    /// One line of the authentication exchange, without its `\r\n`.
    async fn line(&mut self) -> Result<String, Error> {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        (&mut self.stream).take(limit).read_until(b'\n', &mut line).await?;
        if line.is_empty() {
            return Err(Error::Closed);
        }
        let Some(line) = line.strip_suffix(b"\r\n") else {
            return Err(Error::Auth(if line.len() >= MAX_LINE {
                format!("a line longer than {MAX_LINE} bytes")
            } else if line.ends_with(b"\n") {
                "a line that does not end in \\r\\n".to_owned()
            } else {
                "an unfinished line before hanging up".to_owned()
            }));
        };
        String::from_utf8(line.to_vec()).map_err(|_| Error::Auth("a line that is not text".to_owned()))
    }

    /// Sends `call` and waits for its reply, skipping signals and other messages.
    pub(crate) async fn call(&mut self, call: &Call<'_>) -> Result<Reply, Error> {
        self.serial = self.serial.checked_add(1).ok_or(Error::Malformed("out of serial numbers"))?;
        let message = call.marshal(self.serial)?;
        self.write(&message).await?;
        for _ in 0..MAX_SKIPPED {
            let message = self.read().await?;
            if let Some(reply) = Reply::answering(self.serial, &message)? {
                return reply;
            }
        }
        Err(Error::NoReply)
    }

    /// Reads one whole message.
    async fn read(&mut self) -> Result<Vec<u8>, Error> {
        let mut fixed = [0u8; 16];
        self.stream.read_exact(&mut fixed).await.map_err(closed)?;
        let size = message_size(&fixed)?;
        let mut message = vec![0u8; size];
        message.get_mut(..16).ok_or(Error::Malformed("shorter than its fixed header"))?.copy_from_slice(&fixed);
        let rest = message.get_mut(16..).ok_or(Error::Malformed("shorter than its fixed header"))?;
        self.stream.read_exact(rest).await.map_err(closed)?;
        Ok(message)
    }
}

/// A hang-up in the middle of a message is the bus closing on us.
fn closed(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { Error::Closed } else { Error::Io(e) }
}

/// Text from the bus, fit for a log line: no control characters, at most 200 characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The whole size of a message, from its first 16 bytes.
fn message_size(fixed: &[u8; 16]) -> Result<usize, Error> {
    let reader = Reader::new(fixed)?;
    if fixed[3] != 1 {
        return Err(Error::Malformed("not protocol version 1"));
    }
    let body = u64::from(reader.u32_at(4)?);
    let fields = u64::from(reader.u32_at(12)?);
    // The fields end at 16 + their length; the body starts at the next multiple of 8.
    let size = (16 + fields).next_multiple_of(8) + body;
    match usize::try_from(size) {
        Ok(size) if size <= MAX_MESSAGE => Ok(size),
        _ => Err(Error::TooLarge(size)),
    }
}

/// A method call to send.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// The bus name it goes to.
    pub(crate) destination: &'a str,
    /// The object.
    pub(crate) path: &'a str,
    /// The interface of the method.
    pub(crate) interface: &'a str,
    /// The method.
    pub(crate) member: &'a str,
    /// Its arguments.
    pub(crate) body: Body,
}

/// The header fields' codes ("Header Fields").
mod field {
    pub(super) const PATH: u8 = 1;
    pub(super) const INTERFACE: u8 = 2;
    pub(super) const MEMBER: u8 = 3;
    pub(super) const ERROR_NAME: u8 = 4;
    pub(super) const REPLY_SERIAL: u8 = 5;
    pub(super) const DESTINATION: u8 = 6;
    pub(super) const SENDER: u8 = 7;
    pub(super) const SIGNATURE: u8 = 8;
    pub(super) const UNIX_FDS: u8 = 9;
}

/// Message types.
const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

impl Call<'_> {
    /// The call as a little-endian message with `serial`.
    fn marshal(&self, serial: u32) -> Result<Vec<u8>, Error> {
        let mut fields = Writer::default();
        // Each field is a struct (yv), so 8-aligned; positions count from the message's start,
        // and the fields start at 16, which is 8-aligned too.
        let mut field = |code: u8, signature: u8, value: &str| -> Result<(), Error> {
            fields.pad(8);
            fields.bytes(&[code, 1, signature, 0]);
            if signature == b'g' { fields.signature(value) } else { fields.string(value) }
        };
        field(field::PATH, b'o', self.path)?;
        field(field::INTERFACE, b's', self.interface)?;
        field(field::MEMBER, b's', self.member)?;
        field(field::DESTINATION, b's', self.destination)?;
        if !self.body.signature.is_empty() {
            field(field::SIGNATURE, b'g', &self.body.signature)?;
        }
        let too_large = |len: usize| Error::TooLarge(u64::try_from(len).unwrap_or(u64::MAX));
        let body_len = u32::try_from(self.body.bytes.0.len()).map_err(|_| too_large(self.body.bytes.0.len()))?;
        let fields_len = u32::try_from(fields.0.len()).map_err(|_| too_large(fields.0.len()))?;
        let mut message = Writer::default();
        message.bytes(&[b'l', METHOD_CALL, 0, 1]);
        message.u32(body_len);
        message.u32(serial);
        message.u32(fields_len);
        message.bytes(&fields.0);
        message.pad(8);
        message.bytes(&self.body.bytes.0);
        if message.0.len() > MAX_MESSAGE {
            return Err(too_large(message.0.len()));
        }
        Ok(message.0)
    }
}

/// Little-endian bytes being written; alignment is relative to the start.
#[derive(Debug, Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn pad(&mut self, alignment: usize) {
        let len = self.0.len().next_multiple_of(alignment);
        self.0.resize(len, 0);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn u32(&mut self, value: u32) {
        self.pad(4);
        self.bytes(&value.to_le_bytes());
    }

    /// A string or an object path: length, bytes, NUL.
    fn string(&mut self, value: &str) -> Result<(), Error> {
        if value.contains('\0') {
            return Err(Error::Nul);
        }
        let len = u32::try_from(value.len()).map_err(|_| Error::TooLarge(u64::MAX))?;
        self.u32(len);
        self.bytes(value.as_bytes());
        self.bytes(&[0]);
        Ok(())
    }

    /// A signature: one byte of length, bytes, NUL.
    fn signature(&mut self, value: &str) -> Result<(), Error> {
        let len = u8::try_from(value.len()).map_err(|_| Error::Malformed("a signature longer than 255 bytes"))?;
        self.bytes(&[len]);
        self.bytes(value.as_bytes());
        self.bytes(&[0]);
        Ok(())
    }
}

/// The arguments of a call, in order, with their signature.
#[derive(Debug, Default)]
pub(crate) struct Body {
    signature: String,
    bytes: Writer,
}

impl Body {
    /// No arguments.
    pub(crate) fn new() -> Body {
        Body::default()
    }

    /// A string (`s`).
    pub(crate) fn string(mut self, value: &str) -> Result<Body, Error> {
        self.signature.push('s');
        self.bytes.string(value)?;
        Ok(self)
    }

    /// A `u32` (`u`).
    pub(crate) fn u32(mut self, value: u32) -> Body {
        self.signature.push('u');
        self.bytes.u32(value);
        self
    }

    /// An `i32` (`i`).
    pub(crate) fn i32(mut self, value: i32) -> Body {
        self.signature.push('i');
        self.bytes.pad(4);
        self.bytes.bytes(&value.to_le_bytes());
        self
    }

    /// An empty array of `element` (`as` for `"s"`, `a{sv}` for `"{sv}"`).
    pub(crate) fn empty_array(mut self, element: &str) -> Body {
        self.signature.push('a');
        self.signature.push_str(element);
        self.bytes.u32(0);
        // The padding to the elements' alignment follows the length even with no elements.
        self.bytes.pad(element.bytes().next().map_or(1, alignment));
        self
    }
}

/// The alignment of a type by the first character of its signature.
fn alignment(code: u8) -> usize {
    match code {
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 1,
    }
}

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    signature: String,
    body: Vec<u8>,
    big_endian: bool,
}

impl Reply {
    /// `message` read as the answer to the call with `serial`: `None` if it answers
    /// something else (or is a signal), the reply or the error it carries if it is the one.
    fn answering(serial: u32, message: &[u8]) -> Result<Option<Result<Reply, Error>>, Error> {
        let header = Header::parse(message)?;
        if !matches!(header.kind, METHOD_RETURN | ERROR) || header.reply_serial != Some(serial) {
            return Ok(None);
        }
        let body = message.get(header.body_start..).ok_or(Error::Malformed("the body lies outside the message"))?;
        let reply = Reply { signature: header.signature, body: body.to_vec(), big_endian: header.big_endian };
        if header.kind == METHOD_RETURN {
            return Ok(Some(Ok(reply)));
        }
        let name = printable(&header.error_name.ok_or(Error::Malformed("an error without a name"))?);
        // An error's first argument, when it is a string, is its message.
        let message = if reply.signature.starts_with('s') {
            Some(printable(&Reader { data: &reply.body, at: 0, big_endian: reply.big_endian }.string()?))
        } else {
            None
        };
        Ok(Some(Err(Error::Method { name, message })))
    }

    /// The reply's one `u32`.
    pub(crate) fn u32(&self) -> Result<u32, Error> {
        if self.signature != "u" {
            return Err(Error::Signature { expected: "u", found: printable(&self.signature) });
        }
        Reader { data: &self.body, at: 0, big_endian: self.big_endian }.u32()
    }
}

/// What a received message's header says that matters to us.
#[derive(Debug)]
struct Header {
    kind: u8,
    big_endian: bool,
    reply_serial: Option<u32>,
    error_name: Option<String>,
    signature: String,
    /// Where the body starts in the message.
    body_start: usize,
}

impl Header {
    fn parse(message: &[u8]) -> Result<Header, Error> {
        let mut reader = Reader::new(message)?;
        let kind = *message.get(1).ok_or(Error::Malformed("shorter than its fixed header"))?;
        let fields_len = usize::try_from(reader.u32_at(12)?).map_err(|_| Error::Malformed("header fields too long"))?;
        let fields_end = fields_len.checked_add(16).ok_or(Error::Malformed("header fields too long"))?;
        let mut header = Header {
            kind,
            big_endian: reader.big_endian,
            reply_serial: None,
            error_name: None,
            signature: String::new(),
            body_start: fields_end.next_multiple_of(8),
        };
        reader.at = 16;
        while reader.at < fields_end {
            reader.align(8)?;
            let code = reader.byte()?;
            let signature = reader.signature()?;
            let expected: &[u8] = match code {
                field::PATH => b"o",
                field::INTERFACE | field::MEMBER | field::ERROR_NAME | field::DESTINATION | field::SENDER => b"s",
                field::REPLY_SERIAL | field::UNIX_FDS => b"u",
                field::SIGNATURE => b"g",
                // Fields this version of the specification does not know are to be ignored.
                _ => {
                    if reader.value(signature.as_bytes(), 0)? != signature.len() {
                        return Err(Error::Malformed("a header field's variant holds more than one type"));
                    }
                    continue;
                }
            };
            if signature.as_bytes() != expected {
                return Err(Error::Malformed("a header field of the wrong type"));
            }
            match code {
                field::ERROR_NAME => header.error_name = Some(reader.string()?),
                field::REPLY_SERIAL => header.reply_serial = Some(reader.u32()?),
                field::SIGNATURE => header.signature = reader.signature()?,
                _ => {
                    reader.value(expected, 0)?;
                }
            }
        }
        if reader.at != fields_end {
            return Err(Error::Malformed("the header fields overrun their length"));
        }
        Ok(header)
    }
}

/// Reads values from a message's bytes, in its byte order; positions and alignment count from
/// the start of `data`. Every read is checked against the end.
#[derive(Debug)]
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    /// A reader of a message, in the byte order its first byte names.
    fn new(message: &'a [u8]) -> Result<Reader<'a>, Error> {
        let big_endian = match message.first() {
            Some(b'l') => false,
            Some(b'B') => true,
            _ => return Err(Error::Malformed("neither little- nor big-endian")),
        };
        Ok(Reader { data: message, at: 0, big_endian })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).ok_or(Error::Malformed("a length beyond the message"))?;
        let bytes = self.data.get(self.at..end).ok_or(Error::Malformed("a value runs past the end of the message"))?;
        self.at = end;
        Ok(bytes)
    }

    fn align(&mut self, alignment: usize) -> Result<(), Error> {
        let padding = self.at.next_multiple_of(alignment) - self.at;
        self.take(padding).map(drop)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u32_at(&self, at: usize) -> Result<u32, Error> {
        Reader { data: self.data, at, big_endian: self.big_endian }.u32()
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.align(4)?;
        let bytes: [u8; 4] = self.take(4)?.try_into().map_err(|_| Error::Malformed("a short u32"))?;
        Ok(if self.big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
    }

    /// A string or object path: a u32 length, the bytes, a NUL.
    fn string(&mut self) -> Result<String, Error> {
        let len = usize::try_from(self.u32()?).map_err(|_| Error::Malformed("a string too long"))?;
        self.text(len)
    }

    /// A signature: a byte of length, the bytes, a NUL.
    fn signature(&mut self) -> Result<String, Error> {
        let len = usize::from(self.byte()?);
        self.text(len)
    }

    fn text(&mut self, len: usize) -> Result<String, Error> {
        let text = self.take(len)?;
        if self.byte()? != 0 {
            return Err(Error::Malformed("a string not ended by NUL"));
        }
        String::from_utf8(text.to_vec()).map_err(|_| Error::Malformed("a string that is not UTF-8"))
    }

    /// Skips one value of the first complete type in `signature`; returns how many bytes of
    /// the signature that type took.
    fn value(&mut self, signature: &[u8], depth: u32) -> Result<usize, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::Malformed("types nested too deeply"));
        }
        let code = *signature.first().ok_or(Error::Malformed("an empty signature"))?;
        match code {
            b'y' => self.take(1).map(|_| 1),
            b'n' | b'q' => self.align(2).and_then(|()| self.take(2)).map(|_| 1),
            b'b' | b'i' | b'u' | b'h' => self.u32().map(|_| 1),
            b'x' | b't' | b'd' => self.align(8).and_then(|()| self.take(8)).map(|_| 1),
            b's' | b'o' => self.string().map(|_| 1),
            b'g' => self.signature().map(|_| 1),
            b'v' => {
                let inner = self.signature()?;
                if self.value(inner.as_bytes(), depth + 1)? != inner.len() {
                    return Err(Error::Malformed("a variant holds more than one type"));
                }
                Ok(1)
            }
            b'a' => {
                let element = signature.get(1..).ok_or(Error::Malformed("an array without an element type"))?;
                let element_len = complete_type_len(element, depth + 1)?;
                let len = usize::try_from(self.u32()?).map_err(|_| Error::Malformed("an array too long"))?;
                self.align(element.first().map_or(1, |&c| alignment(c)))?;
                // The elements need not be looked at to be skipped: the length covers them.
                self.take(len)?;
                Ok(1 + element_len)
            }
            b'(' | b'{' => {
                let close = if code == b'(' { b')' } else { b'}' };
                self.align(8)?;
                let mut at = 1;
                loop {
                    match signature.get(at) {
                        Some(&c) if c == close && at > 1 => return Ok(at + 1),
                        Some(_) => {
                            let rest = signature.get(at..).ok_or(Error::Malformed("an unclosed struct"))?;
                            at += self.value(rest, depth + 1)?;
                        }
                        None => return Err(Error::Malformed("an unclosed struct")),
                    }
                }
            }
            _ => Err(Error::Malformed("an unknown type in a signature")),
        }
    }
}

/// How many bytes of `signature` its first complete type takes.
fn complete_type_len(signature: &[u8], depth: u32) -> Result<usize, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::Malformed("types nested too deeply"));
    }
    match signature.first() {
        Some(b'y' | b'n' | b'q' | b'b' | b'i' | b'u' | b'h' | b'x' | b't' | b'd' | b's' | b'o' | b'g' | b'v') => Ok(1),
        Some(b'a') => Ok(1 + complete_type_len(signature.get(1..).unwrap_or_default(), depth + 1)?),
        Some(&open @ (b'(' | b'{')) => {
            let close = if open == b'(' { b')' } else { b'}' };
            let mut at = 1;
            loop {
                match signature.get(at) {
                    Some(&c) if c == close && at > 1 => return Ok(at + 1),
                    Some(_) => at += complete_type_len(signature.get(at..).unwrap_or_default(), depth + 1)?,
                    None => return Err(Error::Malformed("an unclosed struct")),
                }
            }
        }
        Some(_) => Err(Error::Malformed("an unknown type in a signature")),
        None => Err(Error::Malformed("an empty signature")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn hello() -> Call<'static> {
        Call {
            destination: "org.freedesktop.DBus",
            path: "/org/freedesktop/DBus",
            interface: "org.freedesktop.DBus",
            member: "Hello",
            body: Body::new(),
        }
    }

    fn notify_body() -> Body {
        Body::new()
            .string("tokend")
            .unwrap()
            .u32(0)
            .string("dialog-password")
            .unwrap()
            .string("S")
            .unwrap()
            .string("B")
            .unwrap()
            .empty_array("s")
            .empty_array("{sv}")
            .i32(-1)
    }

    #[test]
    fn hello_is_the_message_every_d_bus_client_sends() {
        // The specification's rules by hand: fixed header (l, METHOD_CALL, no flags, version 1,
        // body length, serial, fields length), then each field 8-aligned as (code, signature,
        // value), then padding to 8. libdbus and sd-bus send these same 128 bytes.
        let expected: Vec<u8> = [
            &b"l\x01\x00\x01"[..],
            &0u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &109u32.to_le_bytes(),
            b"\x01\x01o\x00",
            &21u32.to_le_bytes(),
            b"/org/freedesktop/DBus\x00",
            b"\x00\x00",
            b"\x02\x01s\x00",
            &20u32.to_le_bytes(),
            b"org.freedesktop.DBus\x00",
            b"\x00\x00\x00",
            b"\x03\x01s\x00",
            &5u32.to_le_bytes(),
            b"Hello\x00",
            b"\x00\x00",
            b"\x06\x01s\x00",
            &20u32.to_le_bytes(),
            b"org.freedesktop.DBus\x00",
            b"\x00\x00\x00",
        ]
        .concat();
        assert_eq!(expected.len(), 128);
        assert_eq!(hello().marshal(1).unwrap(), expected);
    }

    #[test]
    fn the_notify_arguments_are_aligned_as_the_specification_says() {
        let body = notify_body();
        assert_eq!(body.signature, "susssasa{sv}i");
        let expected: Vec<u8> = [
            &6u32.to_le_bytes()[..],
            b"tokend\x00",
            b"\x00",
            &0u32.to_le_bytes(),
            &15u32.to_le_bytes(),
            b"dialog-password\x00",
            &1u32.to_le_bytes(),
            b"S\x00\x00\x00",
            &1u32.to_le_bytes(),
            b"B\x00\x00\x00",
            // as: an empty array is its length, 0.
            &0u32.to_le_bytes(),
            // a{sv}: its length, then padding to the dict entries' 8 though there are none.
            &0u32.to_le_bytes(),
            b"\x00\x00\x00\x00",
            &(-1i32).to_le_bytes(),
        ]
        .concat();
        assert_eq!(body.bytes.0, expected);
    }

    #[test]
    fn a_call_reads_back_with_its_signature_and_arguments() {
        let call = Call { destination: "d.e", path: "/p", interface: "i.f", member: "M", body: notify_body() };
        let message = call.marshal(7).unwrap();
        assert_eq!(message_size(message[..16].try_into().unwrap()).unwrap(), message.len());
        let header = Header::parse(&message).unwrap();
        assert_eq!((header.kind, header.signature.as_str(), header.big_endian), (METHOD_CALL, "susssasa{sv}i", false));
        let mut body = Reader { data: &message[header.body_start..], at: 0, big_endian: false };
        assert_eq!(body.string().unwrap(), "tokend");
        assert_eq!(body.u32().unwrap(), 0);
        let mut rest = "sssasa{sv}i".as_bytes();
        while !rest.is_empty() {
            rest = &rest[body.value(rest, 0).unwrap()..];
        }
        assert_eq!(body.at, body.data.len(), "the whole body is the arguments");
    }

    #[test]
    fn strings_with_nul_are_refused_not_sent() {
        assert!(matches!(Body::new().string("a\0b"), Err(Error::Nul)));
    }

    /// A message from the bus, in either byte order, with the given header fields (code,
    /// signature, value already marshalled for an 8-aligned start) and body.
    fn message(big_endian: bool, kind: u8, fields: &[(u8, &str, Vec<u8>)], body: &[u8]) -> Vec<u8> {
        let u32 = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut array = Vec::new();
        for (code, signature, value) in fields {
            array.resize((16 + array.len()).next_multiple_of(8) - 16, 0);
            array.extend_from_slice(&[*code, u8::try_from(signature.len()).unwrap()]);
            array.extend_from_slice(signature.as_bytes());
            array.push(0);
            array.resize((16 + array.len()).next_multiple_of(alignment(signature.as_bytes()[0])) - 16, 0);
            array.extend_from_slice(value);
        }
        let mut out = vec![if big_endian { b'B' } else { b'l' }, kind, 0, 1];
        out.extend_from_slice(&u32(u32::try_from(body.len()).unwrap()));
        out.extend_from_slice(&u32(99));
        out.extend_from_slice(&u32(u32::try_from(array.len()).unwrap()));
        out.extend_from_slice(&array);
        out.resize(out.len().next_multiple_of(8), 0);
        out.extend_from_slice(body);
        out
    }

    fn u32_value(big_endian: bool, v: u32) -> Vec<u8> {
        (if big_endian { v.to_be_bytes() } else { v.to_le_bytes() }).to_vec()
    }

    fn string_value(big_endian: bool, s: &str) -> Vec<u8> {
        let mut out = u32_value(big_endian, u32::try_from(s.len()).unwrap());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
        out
    }

    fn signature_value(s: &str) -> Vec<u8> {
        let mut out = vec![u8::try_from(s.len()).unwrap()];
        out.extend_from_slice(s.as_bytes());
        out.push(0);
        out
    }

    fn method_return(big_endian: bool, serial: u32, id: u32) -> Vec<u8> {
        message(
            big_endian,
            METHOD_RETURN,
            &[
                (field::REPLY_SERIAL, "u", u32_value(big_endian, serial)),
                (field::SENDER, "s", string_value(big_endian, ":1.7")),
                (field::SIGNATURE, "g", signature_value("u")),
            ],
            &u32_value(big_endian, id),
        )
    }

    fn error_reply(serial: u32, name: &str, text: &str) -> Vec<u8> {
        message(
            false,
            ERROR,
            &[
                (field::ERROR_NAME, "s", string_value(false, name)),
                (field::REPLY_SERIAL, "u", u32_value(false, serial)),
                (field::SIGNATURE, "g", signature_value("s")),
            ],
            &string_value(false, text),
        )
    }

    fn signal() -> Vec<u8> {
        message(
            false,
            4,
            &[
                (field::PATH, "o", string_value(false, "/org/freedesktop/DBus")),
                (field::MEMBER, "s", string_value(false, "NameAcquired")),
                (field::SIGNATURE, "g", signature_value("s")),
            ],
            &string_value(false, ":1.7"),
        )
    }

    #[test]
    fn a_reply_is_read_in_either_byte_order() {
        for big_endian in [false, true] {
            let reply = Reply::answering(2, &method_return(big_endian, 2, 0x0102_0304)).unwrap().unwrap().unwrap();
            assert_eq!(reply.u32().unwrap(), 0x0102_0304, "big-endian: {big_endian}");
        }
    }

    #[test]
    fn signals_and_replies_to_other_calls_are_not_the_reply() {
        assert!(Reply::answering(2, &signal()).unwrap().is_none());
        assert!(Reply::answering(2, &method_return(false, 1, 5)).unwrap().is_none());
    }

    #[test]
    fn an_error_reply_carries_its_name_and_message() {
        let error =
            Reply::answering(2, &error_reply(2, "org.freedesktop.DBus.Error.ServiceUnknown", "nobody\u{7}home"))
                .unwrap()
                .unwrap()
                .unwrap_err();
        let Error::Method { name, message } = &error else { panic!("{error:?}") };
        assert_eq!(name, "org.freedesktop.DBus.Error.ServiceUnknown");
        assert_eq!(message.as_deref(), Some("nobodyhome"), "control characters never reach the log");
        assert_eq!(error.to_string(), "org.freedesktop.DBus.Error.ServiceUnknown: nobodyhome");
    }

    #[test]
    fn a_reply_of_another_type_is_an_error() {
        let mut reply = Reply::answering(1, &method_return(false, 1, 5)).unwrap().unwrap().unwrap();
        reply.signature = "s".to_owned();
        assert!(matches!(reply.u32(), Err(Error::Signature { .. })));
    }

    #[test]
    fn unknown_header_fields_are_skipped_whatever_their_type() {
        let mut fields = vec![(200, "a(yv)", {
            // Two elements, (1, <u 5>) and (2, <s "x">).
            let mut array = u32_value(false, 0);
            array.extend_from_slice(&[0, 0, 0, 0]);
            let start = array.len();
            array.extend_from_slice(&[1, 1, b'u', 0]);
            array.extend_from_slice(&u32_value(false, 5));
            array.extend_from_slice(&[2, 1, b's', 0]);
            array.extend_from_slice(&string_value(false, "x"));
            let len = u32::try_from(array.len() - start).unwrap();
            array[..4].copy_from_slice(&len.to_le_bytes());
            array
        })];
        fields.push((field::REPLY_SERIAL, "u", u32_value(false, 3)));
        fields.push((field::SIGNATURE, "g", signature_value("u")));
        let reply = Reply::answering(3, &message(false, METHOD_RETURN, &fields, &u32_value(false, 9))).unwrap();
        assert_eq!(reply.unwrap().unwrap().u32().unwrap(), 9);
    }

    #[test]
    fn deeply_nested_types_are_refused() {
        let deep = "a".repeat(100) + "y";
        let fields = [(200, deep.as_str(), u32_value(false, 0)), (field::REPLY_SERIAL, "u", u32_value(false, 1))];
        let error = Header::parse(&message(false, METHOD_RETURN, &fields, &[])).unwrap_err();
        assert!(matches!(error, Error::Malformed("types nested too deeply")), "{error:?}");
    }

    #[test]
    fn headers_too_big_or_of_another_kind_are_refused_before_reading_on() {
        let fixed = |bytes: &[u8]| -> [u8; 16] { bytes.try_into().unwrap() };
        let mut header = fixed(&method_return(false, 1, 1)[..16]);
        header[0] = b'X';
        assert!(matches!(message_size(&header), Err(Error::Malformed(_))));
        header[0] = b'l';
        header[3] = 2;
        assert!(matches!(message_size(&header), Err(Error::Malformed(_))));
        header[3] = 1;
        header[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(message_size(&header), Err(Error::TooLarge(_))));
        header[4..8].copy_from_slice(&0u32.to_le_bytes());
        header[12..16].copy_from_slice(&u32::try_from(MAX_MESSAGE).unwrap().to_le_bytes());
        assert!(matches!(message_size(&header), Err(Error::TooLarge(_))));
    }

    #[test]
    fn truncated_or_corrupted_messages_are_errors_not_panics() {
        let good = error_reply(2, "org.example.Error", "text");
        for len in 0..good.len() {
            // Nothing but the whole message is a complete reply (the body is read through the
            // lengths, never past the end).
            let parsed = Reply::answering(2, &good[..len]);
            assert!(!matches!(parsed, Ok(Some(Err(Error::Method { message: Some(_), .. })))), "{len}");
        }
        // Every byte set to every value: whatever comes out, it comes out without a panic.
        for at in 0..good.len() {
            for value in 0..=255 {
                let mut bad = good.clone();
                bad[at] = value;
                let _ = Reply::answering(2, &bad);
            }
        }
        // And random bytes behind a valid start.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut bad = good[..4].to_vec();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bad.extend(seed.to_le_bytes().iter().cycle().take(usize::try_from(seed % 97).unwrap()));
            let _ = Reply::answering(2, &bad);
        }
    }

    #[test]
    fn address_entries_are_parsed_and_unescaped() {
        assert_eq!(targets("unix:path=/run/user/1000/bus"), [Ok(Target::Path("/run/user/1000/bus".into()))]);
        assert_eq!(
            targets("unix:abstract=/tmp/dbus-Xy,guid=0123456789abcdef0123456789abcdef"),
            [Ok(Target::Abstract(b"/tmp/dbus-Xy".to_vec()))]
        );
        assert_eq!(targets("unix:path=/tmp/a%20b%3bc%3Dd%c3%a9"), [Ok(Target::Path("/tmp/a b;c=dé".into()))]);
        let entries = targets("tcp:host=localhost,port=1234;unix:path=/a;;autolaunch:");
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert!(entries[0].as_ref().is_err_and(|e| e.contains("only the unix transport")), "{entries:?}");
        assert_eq!(entries[1], Ok(Target::Path("/a".into())));
        assert!(entries[2].is_err());
        let reason = |address: &str| targets(address).remove(0).unwrap_err();
        assert!(reason("unix:dir=/tmp").contains("listen"));
        assert!(reason("unix:runtime=yes").contains("listen"));
        assert!(reason("unix:path=/a,abstract=b").contains("both"));
        assert!(reason("unix:guid=00").contains("neither"));
        assert!(reason("unix:path").contains("key=value"));
        assert!(reason("/run/user/1000/bus").contains("no transport"));
        assert!(reason("unix:path=/a%2").contains("two hex digits"));
        assert!(reason("unix:path=/a%zz").contains("two hex digits"));
        assert!(reason("unix:path=/a%+f").contains("two hex digits"));
        assert!(reason("unix:path=/a,colour=blue").contains("unknown key"));
        assert!(targets("").is_empty());
    }

    #[test]
    fn the_fallback_address_unescapes_to_its_socket() {
        let path = "/run/user/1000/a b;c=d,é%";
        assert_eq!(targets(&format!("unix:path={}", super::super::escape(path))), [Ok(Target::Path(path.into()))]);
    }

    /// A fake bus on the other end of a pipe: reads the client's authentication (checking it
    /// claims `uid`), answers with `answer`, and then runs `serve` on each message it reads,
    /// writing back what it returns. After an answer that is not whole, it hangs up.
    fn fake_bus(
        uid: u32,
        answer: &'static [u8],
        mut serve: impl FnMut(u32, &[u8]) -> Vec<u8> + Send + 'static,
    ) -> DuplexStream {
        let (client, mut bus) = tokio::io::duplex(MAX_MESSAGE * 2);
        tokio::spawn(async move {
            let mut auth = [0u8; 1];
            bus.read_exact(&mut auth).await.unwrap();
            assert_eq!(auth, [0]);
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                line.push(bus.read_u8().await.unwrap());
            }
            let hex: String = uid.to_string().bytes().map(|b| format!("{b:02x}")).collect();
            assert_eq!(String::from_utf8(line).unwrap(), format!("AUTH EXTERNAL {hex}\r\n"));
            bus.write_all(answer).await.unwrap();
            if !answer.ends_with(b"\r\n") {
                return;
            }
            let mut begin = [0u8; 7];
            if bus.read_exact(&mut begin).await.is_err() {
                return;
            }
            assert_eq!(&begin, b"BEGIN\r\n");
            loop {
                let mut fixed = [0u8; 16];
                if bus.read_exact(&mut fixed).await.is_err() {
                    return;
                }
                let mut message = vec![0u8; message_size(&fixed).unwrap()];
                message[..16].copy_from_slice(&fixed);
                bus.read_exact(&mut message[16..]).await.unwrap();
                let serial = Reader::new(&message).unwrap().u32_at(8).unwrap();
                let reply = serve(serial, &message);
                if bus.write_all(&reply).await.is_err() || !whole_messages(&reply) {
                    return;
                }
            }
        });
        client
    }

    /// Whether `bytes` are whole messages, which a fake bus that means to hang up does not send.
    fn whole_messages(mut bytes: &[u8]) -> bool {
        while let Some(fixed) = bytes.get(..16) {
            match message_size(fixed.try_into().unwrap()) {
                Ok(size) if size <= bytes.len() => bytes = &bytes[size..],
                _ => return false,
            }
        }
        bytes.is_empty()
    }

    const OK: &[u8] = b"OK 0123456789abcdef0123456789abcdef\r\n";

    #[tokio::test]
    async fn a_call_gets_its_reply_past_signals_in_either_byte_order() {
        let stream = fake_bus(1000, OK, |serial, message| {
            let header = Header::parse(message).unwrap();
            if serial == 1 {
                assert_eq!(header.signature, "", "Hello has no arguments");
                return [method_return(false, 1, 0), signal()].concat();
            }
            assert_eq!(header.signature, "susssasa{sv}i");
            [signal(), method_return(false, 1, 3), method_return(true, serial, 42)].concat()
        });
        let mut bus = Connection::open_as(stream, 1000).await.unwrap();
        let call = Call { destination: "d.e", path: "/p", interface: "d.e", member: "Notify", body: notify_body() };
        assert_eq!(bus.call(&call).await.unwrap().u32().unwrap(), 42);
    }

    #[tokio::test]
    async fn an_error_reply_is_the_calls_error() {
        let stream = fake_bus(0, OK, |serial, _| {
            if serial == 1 {
                method_return(false, 1, 0)
            } else {
                error_reply(serial, "org.freedesktop.DBus.Error.ServiceUnknown", "The name is not activatable")
            }
        });
        let mut bus = Connection::open_as(stream, 0).await.unwrap();
        let error = bus.call(&hello()).await.unwrap_err();
        assert!(matches!(&error, Error::Method { name, .. } if name.ends_with("ServiceUnknown")), "{error:?}");
    }

    async fn open_fails(answer: &'static [u8], serve: impl FnMut(u32, &[u8]) -> Vec<u8> + Send + 'static) -> Error {
        Connection::open_as(fake_bus(1000, answer, serve), 1000).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_or_garbled_authentication_is_a_clear_error() {
        let no_messages = |_: u32, _: &[u8]| -> Vec<u8> { panic!("no message after a failed authentication") };
        let error = open_fails(b"REJECTED DBUS_COOKIE_SHA1 ANONYMOUS\r\n", no_messages).await;
        assert!(matches!(&error, Error::Rejected { uid: 1000, accepts } if accepts == "DBUS_COOKIE_SHA1 ANONYMOUS"));
        assert!(error.to_string().contains("refused authentication"), "{error}");
        let error = open_fails(b"ERROR \"no\"\r\n", no_messages).await;
        assert!(matches!(&error, Error::Auth(what) if what.contains("ERROR")), "{error:?}");
        let error = open_fails(b"HTTP/1.1 200 OK\r\n", no_messages).await;
        assert!(matches!(&error, Error::Auth(what) if what.contains("HTTP")), "{error:?}");
        let error = open_fails(b"OK\r\n", no_messages).await;
        assert!(matches!(error, Error::Auth(_)), "{error:?}");
        let error = open_fails(b"OK 0123\n", no_messages).await;
        assert!(matches!(&error, Error::Auth(what) if what.contains("\\r\\n")), "{error:?}");
        let error = open_fails(b"OK \xff\xfe\r\n", no_messages).await;
        assert!(matches!(&error, Error::Auth(what) if what.contains("not text")), "{error:?}");
        let long: &'static [u8] = Box::leak([&[b'x'; 5000][..], b"\r\n"].concat().into_boxed_slice());
        let error = open_fails(long, no_messages).await;
        assert!(matches!(&error, Error::Auth(what) if what.contains("longer than")), "{error:?}");
    }

    #[tokio::test]
    async fn a_bus_that_hangs_up_is_an_error() {
        let (client, bus) = tokio::io::duplex(64);
        drop(bus);
        let error = Connection::open_as(client, 1000).await.unwrap_err();
        assert!(matches!(error, Error::Closed | Error::Io(_)), "{error:?}");
        let error = open_fails(b"OK 01", |_, _| Vec::new()).await;
        assert!(matches!(&error, Error::Auth(what) if what.contains("unfinished")), "{error:?}");
        // Authenticated, then gone in the middle of the reply.
        let error = open_fails(OK, |_, _| method_return(false, 1, 0)[..20].to_vec()).await;
        assert!(matches!(error, Error::Closed), "{error:?}");
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused() {
        let error = open_fails(OK, |_, _| {
            let mut header = method_return(false, 1, 0)[..16].to_vec();
            header[4..8].copy_from_slice(&u32::try_from(MAX_MESSAGE).unwrap().to_le_bytes());
            header
        })
        .await;
        assert!(matches!(error, Error::TooLarge(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_bus_that_sends_only_signals_is_given_up_on() {
        let error = open_fails(OK, |_, _| signal().repeat(MAX_SKIPPED + 1)).await;
        assert!(matches!(error, Error::NoReply), "{error:?}");
    }

    /// Accepts one connection and refuses its authentication, which tells that it was reached.
    async fn refuse(listener: &tokio::net::UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = Vec::new();
        stream.read_until(b'\n', &mut line).await.unwrap();
        assert!(line.starts_with(b"\0AUTH EXTERNAL "), "{line:?}");
        stream.get_mut().write_all(b"REJECTED EXTERNAL\r\n").await.unwrap();
    }

    #[tokio::test]
    async fn the_first_address_that_accepts_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus,1");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let missing = dir.path().join("none");
        let address = format!(
            "tcp:host=127.0.0.1,port=1;unix:path={};unix:path={}",
            super::super::escape(&missing.to_string_lossy()),
            super::super::escape(&socket.to_string_lossy())
        );
        let (connected, ()) = tokio::join!(connect(&address), refuse(&listener));
        assert!(matches!(connected, Err(Error::Rejected { .. })), "the listening socket answered: {connected:?}");

        let error =
            connect(&format!("unix:path={}", super::super::escape(&missing.to_string_lossy()))).await.unwrap_err();
        assert!(error.to_string().contains(&*missing.to_string_lossy()), "{error}");
        let error = connect("tcp:host=127.0.0.1,port=1").await.unwrap_err();
        assert!(error.to_string().contains("only the unix transport"), "{error}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_abstract_socket_is_connected_to() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tokend-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::UnixListener::from_std(listener).unwrap();
        let bus = format!("unix:abstract={name}");
        let (connected, ()) = tokio::join!(connect(&bus), refuse(&listener));
        assert!(matches!(connected, Err(Error::Rejected { .. })), "{connected:?}");
    }
}
