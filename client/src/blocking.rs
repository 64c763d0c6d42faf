//! The blocking client: the same requests as the async [`Client`](crate::Client), with no
//! runtime. `tokenctl` uses it.

use std::io::{self, Write};
use std::time::Duration;

use interprocess::local_socket::Stream;
use interprocess::local_socket::traits::Stream as _;
use tokend_proto::codec::{self, ReadError};
use tokend_proto::{
    Endpoint, Event, Fingerprint, Hello, HelloReply, Pong, ProfileStatus, ProfileSummary, ReloadSummary, Request,
    Response, RevocationReport, Secret, Token,
};

use crate::protocol::{self, LoginStarted};
use crate::trust;
use crate::{Attempt, DEFAULT_TIMEOUT, Error, Info, Result};

/// A blocking connection to tokend that reconnects when the daemon restarts.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    stream: Stream,
    /// Bytes read but not yet decoded.
    read_buf: Vec<u8>,
    /// Scratch space for encoding; between connecting and the first request it holds the
    /// hello, which goes out with that request.
    write_buf: Vec<u8>,
    /// The hello has not been sent yet: it goes out with the first request, and its answer is
    /// read before that request's.
    hello_unsent: bool,
}

/// Why one attempt at a request failed.
enum Failure {
    /// The connection was dead before the daemon answered (it restarted): retrying on a new
    /// connection is safe.
    Stale,
    /// The daemon did not answer in time.
    TimedOut,
    /// Anything else.
    Fatal(Error),
}

impl Failure {
    fn into_error(self, timeout: Duration) -> Error {
        match self {
            Failure::Stale => Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "tokend closed the connection")),
            Failure::TimedOut => Error::Timeout(timeout),
            Failure::Fatal(e) => e,
        }
    }
}

impl Client {
    /// Connects to the default endpoint (see [`default_endpoint`](crate::default_endpoint)).
    pub fn connect() -> Result<Client> {
        Client::connect_to(crate::default_endpoint())
    }

    /// Connects to `endpoint`, and checks that what listens there is this user's tokend.
    ///
    /// The handshake travels with the first request (one round trip instead of two), so a
    /// daemon that refuses the connection — another protocol version, its connection limit —
    /// is reported by that request.
    pub fn connect_to(endpoint: Endpoint) -> Result<Client> {
        let conn = Conn::open(&endpoint, DEFAULT_TIMEOUT)?;
        Ok(Client { endpoint, timeout: DEFAULT_TIMEOUT, conn: Some(conn) })
    }

    /// Sets how long a request may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        if timeout != self.timeout {
            self.timeout = timeout;
            if let Some(conn) = &self.conn {
                let _ = conn.set_timeout(Some(timeout));
            }
        }
        self
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Checks that the daemon is alive.
    pub fn ping(&mut self) -> Result<Pong> {
        protocol::pong(self.call(&Request::Ping)?)
    }

    /// The current token of `profile`, valid for at least the daemon's default margin.
    pub fn token(&mut self, profile: &str) -> Result<Token> {
        self.token_with(profile, None)
    }

    /// The current token of `profile`, valid for at least `min_valid` (waiting for a refresh if
    /// need be).
    pub fn token_with(&mut self, profile: &str, min_valid: Option<Duration>) -> Result<Token> {
        protocol::token(self.call(&Request::Token { profile: profile.to_owned(), min_valid })?)
    }

    /// Reports that a server rejected `rejected` (answered 401) and returns a new token. However
    /// many clients report the same token, the daemon refreshes once.
    pub fn invalidate(&mut self, profile: &str, rejected: &Token) -> Result<Token> {
        self.invalidate_fingerprint(profile, Some(rejected.fingerprint))
    }

    /// Like [`Client::invalidate`], naming the token by fingerprint; `None` means the current
    /// token, whatever it is.
    pub fn invalidate_fingerprint(&mut self, profile: &str, rejected: Option<Fingerprint>) -> Result<Token> {
        protocol::token(self.call(&Request::Invalidate { profile: profile.to_owned(), rejected })?)
    }

    /// Runs `request` with `profile`'s current token. If it comes back [`Attempt::Rejected`],
    /// reports exactly that token as rejected (as [`Client::invalidate`] does; however many
    /// programs report it, tokend refreshes once) and runs `request` once more with the new
    /// token. Returns the answer of the last run, whatever it is: a second rejection is
    /// returned, not retried.
    ///
    /// The error is tokend's (not running, login needed, upstream down, …); your request's own
    /// failures are part of `T`. See the [crate docs](crate) for an example.
    pub fn with_token<T>(&mut self, profile: &str, mut request: impl FnMut(Token) -> Attempt<T>) -> Result<T> {
        let token = self.token(profile)?;
        let fingerprint = token.fingerprint;
        match request(token) {
            Attempt::Done(answer) => Ok(answer),
            Attempt::Rejected(_) => {
                let fresh = self.invalidate_fingerprint(profile, Some(fingerprint))?;
                Ok(request(fresh).into_inner())
            }
        }
    }

    /// Refreshes `profile` now and returns the new token.
    pub fn refresh(&mut self, profile: &str) -> Result<Token> {
        protocol::token(self.call(&Request::Refresh { profile: profile.to_owned() })?)
    }

    /// The status of one profile, or of all.
    pub fn status(&mut self, profile: Option<&str>) -> Result<Vec<ProfileStatus>> {
        protocol::status(self.call(&Request::Status { profile: profile.map(str::to_owned) })?)
    }

    /// The configured profiles.
    pub fn list(&mut self) -> Result<Vec<ProfileSummary>> {
        protocol::list(self.call(&Request::List)?)
    }

    /// Makes the daemon re-read its config.
    pub fn reload(&mut self) -> Result<ReloadSummary> {
        protocol::reloaded(self.call(&Request::Reload)?)
    }

    /// Stops the daemon.
    pub fn shutdown(&mut self) -> Result<()> {
        protocol::shutting_down(self.call(&Request::Shutdown)?)
    }

    /// Starts a login for `profile`: send the user's browser to the returned URL, then call
    /// [`Client::finish_login`] on this same client.
    pub fn begin_login(&mut self, profile: &str) -> Result<LoginStarted> {
        protocol::login_started(self.call(&Request::Login { profile: profile.to_owned() })?)
    }

    /// Waits for the login started by [`Client::begin_login`] to complete.
    pub fn finish_login(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or_else(|| Error::Protocol("no login was started on this client".into()))?;
        conn.set_timeout(None)?;
        let result = conn.recv().map_err(|f| f.into_error(self.timeout));
        let _ = conn.set_timeout(Some(self.timeout));
        protocol::login_done(result?)
    }

    /// Completes `profile`'s pending login with the URL the browser was redirected to (for when
    /// the browser could not reach this machine).
    pub fn login_redirect(&mut self, profile: &str, url: &str) -> Result<()> {
        protocol::login_done(
            self.call(&Request::LoginRedirect { profile: profile.to_owned(), url: Secret::from(url) })?,
        )
    }

    /// Revokes `profile`'s tokens and makes the daemon forget them.
    pub fn logout(&mut self, profile: &str) -> Result<RevocationReport> {
        protocol::logged_out(self.call(&Request::Logout { profile: profile.to_owned() })?)
    }

    /// Fetches `profile`'s info endpoint with its token.
    pub fn info(&mut self, profile: &str) -> Result<Info> {
        protocol::info(self.call(&Request::Info { profile: profile.to_owned() })?)
    }

    /// Subscribes to new tokens and state changes of one profile, or of all.
    pub fn watch(mut self, profile: Option<&str>) -> Result<Watch> {
        let request = Request::Watch { profile: profile.map(str::to_owned) };
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => Conn::open(&self.endpoint, self.timeout)?,
        };
        if let Err(Failure::Stale) = conn.send(&request) {
            conn = Conn::open(&self.endpoint, self.timeout)?;
            conn.send(&request).map_err(|f| f.into_error(self.timeout))?;
        }
        conn.set_timeout(None)?;
        Ok(Watch { conn })
    }

    fn call(&mut self, request: &Request) -> Result<Response> {
        let reused = self.conn.is_some();
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(Conn::open(&self.endpoint, self.timeout)?),
        };
        let outcome = match conn.round_trip(request) {
            Err(Failure::Stale) if reused => {
                let conn = self.conn.insert(Conn::open(&self.endpoint, self.timeout)?);
                conn.round_trip(request)
            }
            other => other,
        };
        outcome.map_err(|failure| {
            self.conn = None;
            failure.into_error(self.timeout)
        })
    }
}

/// A stream of [`Event`]s from [`Client::watch`].
#[derive(Debug)]
pub struct Watch {
    conn: Conn,
}

impl Iterator for Watch {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        match self.conn.recv() {
            Ok(response) => Some(protocol::event(response)),
            Err(Failure::Stale) => None,
            Err(failure) => Some(Err(failure.into_error(Duration::ZERO))),
        }
    }
}

impl Conn {
    /// Connects and checks the peer; the hello is encoded, to be sent with the first request.
    fn open(endpoint: &Endpoint, timeout: Duration) -> Result<Conn> {
        trust::check_directory(endpoint)?;
        let name = endpoint.name().map_err(|e| protocol::connect_error(endpoint, e))?;
        let stream = Stream::connect(name).map_err(|e| protocol::connect_error(endpoint, e))?;
        trust::check_peer(endpoint, &stream)?;
        let mut conn =
            Conn { stream, read_buf: Vec::with_capacity(4096), write_buf: Vec::with_capacity(256), hello_unsent: true };
        conn.set_timeout(Some(timeout))?;
        codec::encode(&Hello::new(), &mut conn.write_buf).map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(conn)
    }

    fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.stream.set_recv_timeout(timeout)?;
        self.stream.set_send_timeout(timeout)?;
        Ok(())
    }

    fn round_trip(&mut self, request: &Request) -> Result<Response, Failure> {
        self.send(request)?;
        self.recv()
    }

    /// Sends `request`, behind the hello if this is the connection's first: both in one write.
    fn send(&mut self, request: &impl serde::Serialize) -> Result<(), Failure> {
        if !self.hello_unsent {
            self.write_buf.clear();
        }
        codec::encode(request, &mut self.write_buf).map_err(|e| read_failure(e.into()))?;
        let sent = self.stream.write_all(&self.write_buf).map_err(|e| read_failure(e.into()));
        self.write_buf.clear();
        if !std::mem::take(&mut self.hello_unsent) {
            return sent;
        }
        // A daemon that refuses answers and closes without reading, so the write can fail while
        // the refusal is there to be read: the reply wins.
        let reply = protocol::hello_outcome(sent, self.recv_frame::<HelloReply>())?;
        protocol::check_hello(reply).map_err(Failure::Fatal)
    }

    fn recv(&mut self) -> Result<Response, Failure> {
        self.recv_frame()
    }

    fn recv_frame<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Failure> {
        match codec::read_frame(&mut self.stream, &mut self.read_buf) {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(Failure::Stale),
            Err(e) => Err(read_failure(e)),
        }
    }
}

fn read_failure(error: ReadError) -> Failure {
    match error {
        ReadError::Io(e) if protocol::is_stale(&e) => Failure::Stale,
        ReadError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            Failure::TimedOut
        }
        ReadError::Io(e) => Failure::Fatal(Error::Io(e)),
        ReadError::Frame(e) => Failure::Fatal(Error::Protocol(e.to_string())),
    }
}
