//! The async client, for tokio programs.

use std::io;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::Stream as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokend_proto::codec::{self, HEADER_LEN};
use tokend_proto::{
    Endpoint, Event, Fingerprint, FrameError, Hello, HelloReply, Pong, ProfileStatus, ProfileSummary, ReloadSummary,
    Request, Response, RevocationReport, Secret, Token,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::protocol::{self, LoginStarted};
use crate::trust;
use crate::{Attempt, DEFAULT_TIMEOUT, Error, Info, Result};

/// An async connection to tokend that reconnects when the daemon restarts.
///
/// Requests on one client run one at a time (`&mut self`); for concurrent requests, use one
/// client per task — connections are cheap.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    stream: Stream,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
}

/// Why one attempt at a request failed.
enum Failure {
    /// The connection was dead before the daemon answered: retrying is safe.
    Stale,
    /// Anything else.
    Fatal(Error),
}

impl Client {
    /// Connects to the default endpoint (see [`default_endpoint`](crate::default_endpoint)).
    pub async fn connect() -> Result<Client> {
        Client::connect_to(crate::default_endpoint()).await
    }

    /// Connects to `endpoint`.
    pub async fn connect_to(endpoint: Endpoint) -> Result<Client> {
        let conn = Conn::open(&endpoint).await?;
        Ok(Client { endpoint, timeout: DEFAULT_TIMEOUT, conn: Some(conn) })
    }

    /// Sets how long a request may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Checks that the daemon is alive.
    pub async fn ping(&mut self) -> Result<Pong> {
        protocol::pong(self.call(&Request::Ping).await?)
    }

    /// The current token of `profile`, valid for at least the daemon's default margin.
    pub async fn token(&mut self, profile: &str) -> Result<Token> {
        self.token_with(profile, None).await
    }

    /// The current token of `profile`, valid for at least `min_valid`.
    pub async fn token_with(&mut self, profile: &str, min_valid: Option<Duration>) -> Result<Token> {
        protocol::token(self.call(&Request::Token { profile: profile.to_owned(), min_valid }).await?)
    }

    /// Reports that a server rejected `rejected` (answered 401) and returns a new token.
    pub async fn invalidate(&mut self, profile: &str, rejected: &Token) -> Result<Token> {
        self.invalidate_fingerprint(profile, Some(rejected.fingerprint)).await
    }

    /// Like [`Client::invalidate`], naming the token by fingerprint; `None` means the current one.
    pub async fn invalidate_fingerprint(&mut self, profile: &str, rejected: Option<Fingerprint>) -> Result<Token> {
        protocol::token(self.call(&Request::Invalidate { profile: profile.to_owned(), rejected }).await?)
    }

    /// Runs `request` with `profile`'s current token. If it comes back [`Attempt::Rejected`],
    /// reports exactly that token as rejected (as [`Client::invalidate`] does; however many
    /// programs report it, tokend refreshes once) and runs `request` once more with the new
    /// token. Returns the answer of the last run, whatever it is: a second rejection is
    /// returned, not retried.
    ///
    /// The error is tokend's (not running, login needed, upstream down, …); your request's own
    /// failures are part of `T`.
    ///
    /// ```no_run
    /// use reqwest::StatusCode;
    /// use tokend_client::{Attempt, TokenExt};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let http = &reqwest::Client::new();
    /// let mut tokend = tokend_client::Client::connect().await?;
    /// let response = tokend
    ///     .with_token("minut", |token| async move {
    ///         let url = "https://api.minut.com/v8/users/me";
    ///         match http.get(url).header("Authorization", token.header_value()).send().await {
    ///             Ok(response) if response.status() == StatusCode::UNAUTHORIZED => Attempt::Rejected(Ok(response)),
    ///             answer => Attempt::Done(answer),
    ///         }
    ///     })
    ///     .await??;
    /// println!("{}", response.text().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_token<T, F, Fut>(&mut self, profile: &str, mut request: F) -> Result<T>
    where
        F: FnMut(Token) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let token = self.token(profile).await?;
        let fingerprint = token.fingerprint;
        match request(token).await {
            Attempt::Done(answer) => Ok(answer),
            Attempt::Rejected(_) => {
                let fresh = self.invalidate_fingerprint(profile, Some(fingerprint)).await?;
                Ok(request(fresh).await.into_inner())
            }
        }
    }

    /// Refreshes `profile` now and returns the new token.
    pub async fn refresh(&mut self, profile: &str) -> Result<Token> {
        protocol::token(self.call(&Request::Refresh { profile: profile.to_owned() }).await?)
    }

    /// The status of one profile, or of all.
    pub async fn status(&mut self, profile: Option<&str>) -> Result<Vec<ProfileStatus>> {
        protocol::status(self.call(&Request::Status { profile: profile.map(str::to_owned) }).await?)
    }

    /// The configured profiles.
    pub async fn list(&mut self) -> Result<Vec<ProfileSummary>> {
        protocol::list(self.call(&Request::List).await?)
    }

    /// Makes the daemon re-read its config.
    pub async fn reload(&mut self) -> Result<ReloadSummary> {
        protocol::reloaded(self.call(&Request::Reload).await?)
    }

    /// Stops the daemon.
    pub async fn shutdown(&mut self) -> Result<()> {
        protocol::shutting_down(self.call(&Request::Shutdown).await?)
    }

    /// Starts a login for `profile`; then call [`Client::finish_login`] on this client.
    pub async fn begin_login(&mut self, profile: &str) -> Result<LoginStarted> {
        protocol::login_started(self.call(&Request::Login { profile: profile.to_owned() }).await?)
    }

    /// Waits for the login started by [`Client::begin_login`] to complete.
    pub async fn finish_login(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or_else(|| Error::Protocol("no login was started on this client".into()))?;
        match conn.recv().await {
            Ok(response) => protocol::login_done(response),
            Err(failure) => {
                self.conn = None;
                Err(failure.into_error())
            }
        }
    }

    /// Completes `profile`'s pending login with the URL the browser was redirected to.
    pub async fn login_redirect(&mut self, profile: &str, url: &str) -> Result<()> {
        let request = Request::LoginRedirect { profile: profile.to_owned(), url: Secret::from(url) };
        protocol::login_done(self.call(&request).await?)
    }

    /// Revokes `profile`'s tokens and makes the daemon forget them.
    pub async fn logout(&mut self, profile: &str) -> Result<RevocationReport> {
        protocol::logged_out(self.call(&Request::Logout { profile: profile.to_owned() }).await?)
    }

    /// Fetches `profile`'s info endpoint with its token.
    pub async fn info(&mut self, profile: &str) -> Result<Info> {
        protocol::info(self.call(&Request::Info { profile: profile.to_owned() }).await?)
    }

    /// Subscribes to new tokens and state changes of one profile, or of all.
    pub async fn watch(mut self, profile: Option<&str>) -> Result<Watch> {
        let request = Request::Watch { profile: profile.map(str::to_owned) };
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => Conn::open(&self.endpoint).await?,
        };
        if let Err(Failure::Stale) = conn.send(&request).await {
            conn = Conn::open(&self.endpoint).await?;
            conn.send(&request).await.map_err(Failure::into_error)?;
        }
        Ok(Watch { conn })
    }

    async fn call(&mut self, request: &Request) -> Result<Response> {
        match tokio::time::timeout(self.timeout, self.attempt(request)).await {
            Ok(result) => result,
            Err(_) => {
                self.conn = None;
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    async fn attempt(&mut self, request: &Request) -> Result<Response> {
        let reused = self.conn.is_some();
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(Conn::open(&self.endpoint).await?),
        };
        let outcome = match conn.round_trip(request).await {
            Err(Failure::Stale) if reused => {
                let conn = self.conn.insert(Conn::open(&self.endpoint).await?);
                conn.round_trip(request).await
            }
            other => other,
        };
        outcome.map_err(|failure| {
            self.conn = None;
            failure.into_error()
        })
    }
}

/// A stream of [`Event`]s from [`Client::watch`].
#[derive(Debug)]
pub struct Watch {
    conn: Conn,
}

impl Watch {
    /// The next event; `None` when the daemon closed the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        match self.conn.recv().await {
            Ok(response) => Some(protocol::event(response)),
            Err(Failure::Stale) => None,
            Err(failure) => Some(Err(failure.into_error())),
        }
    }
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Stale => Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "tokend closed the connection")),
            Failure::Fatal(e) => e,
        }
    }
}

impl Conn {
    async fn open(endpoint: &Endpoint) -> Result<Conn> {
        trust::check_directory(endpoint)?;
        let name = endpoint.name().map_err(|e| protocol::connect_error(endpoint, e))?;
        let stream = Stream::connect(name).await.map_err(|e| protocol::connect_error(endpoint, e))?;
        trust::check_peer(endpoint, &stream)?;
        let mut conn = Conn { stream, read_buf: Vec::with_capacity(4096), write_buf: Vec::with_capacity(256) };
        let sent = conn.send(&Hello::new()).await;
        let hello = protocol::hello_outcome(sent, conn.recv_frame::<HelloReply>().await);
        match hello {
            Ok(reply) => protocol::check_hello(reply)?,
            Err(Failure::Stale) => {
                return Err(Error::Refused { message: "tokend closed the connection during the handshake".into() });
            }
            Err(failure) => return Err(failure.into_error()),
        }
        Ok(conn)
    }

    async fn round_trip(&mut self, request: &Request) -> Result<Response, Failure> {
        self.send(request).await?;
        self.recv().await
    }

    async fn send(&mut self, message: &impl Serialize) -> Result<(), Failure> {
        self.write_buf.clear();
        codec::encode(message, &mut self.write_buf).map_err(|e| Failure::Fatal(Error::Protocol(e.to_string())))?;
        self.stream.write_all(&self.write_buf).await.map_err(io_failure)
    }

    async fn recv(&mut self) -> Result<Response, Failure> {
        self.recv_frame().await
    }

    async fn recv_frame<T: DeserializeOwned>(&mut self) -> Result<T, Failure> {
        loop {
            if let Some(len) = codec::complete_frame(&self.read_buf).map_err(frame_failure)? {
                let message = codec::decode(&self.read_buf[HEADER_LEN..len]).map_err(frame_failure);
                self.read_buf.drain(..len);
                return message;
            }
            // Read in large pieces: a token frame then arrives in one read, not in 64-byte steps.
            if self.read_buf.capacity() - self.read_buf.len() < 1024 {
                self.read_buf.reserve(4096);
            }
            let read = self.stream.read_buf(&mut self.read_buf).await.map_err(io_failure)?;
            if read == 0 {
                return Err(if self.read_buf.is_empty() {
                    Failure::Stale
                } else {
                    frame_failure(FrameError::Truncated { got: self.read_buf.len(), expected: HEADER_LEN })
                });
            }
        }
    }
}

fn io_failure(e: io::Error) -> Failure {
    if protocol::is_stale(&e) { Failure::Stale } else { Failure::Fatal(Error::Io(e)) }
}

fn frame_failure(e: FrameError) -> Failure {
    Failure::Fatal(Error::Protocol(e.to_string()))
}
