//! The short-request path (Unix): one thread accepts the protocol socket's connections and
//! answers a connection's first request itself when that request is for a token tokend holds
//! (what `tokenctl token` and every new blocking `Client` do: connect, send the hello and the
//! request in one write, read the answer, close; the async `Client` sends its hello alone, and
//! the runtime answers it). Any other connection, and any connection once it asks for more, is
//! handed to a task on the runtime, which serves it exactly as it serves a connection it
//! accepted itself ([`handler::resume`]).
//!
//! Why a thread of its own: on the runtime, each short connection costs more than the request
//! itself — registering the socket with epoll and deregistering it, a task, a second `accept`
//! that finds the backlog empty, reads that find nothing yet, and the workers' parking and
//! waking. Here a connection costs `poll`, `accept`, the peer check, one read, one write, and
//! the read that sees the client close (BENCHMARKS.md, "One request per process").
//!
//! The thread never waits for one client: it polls the listening socket together with the
//! connections it holds, and holds one only until its first request is answered and the client
//! closes, for at most [`HOLD`]; past that, or with [`MAX_HELD`] connections held, connections
//! go to the runtime. With no connection held it sleeps in `poll` without a timeout, so an idle
//! daemon is not woken. It checks each peer before reading a byte, and takes the same permit
//! under `max_connections` that the runtime's connection tasks take (a connection beyond the
//! limit is handed over at once, to be refused there). On shutdown it stops accepting, hands
//! over what it holds, and closes the listening socket.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use interprocess::os::unix::uds_local_socket::tokio::Stream as UdsStream;
use tokend_proto::codec::{self, HEADER_LEN};
use tokend_proto::message::Refusal;
use tokend_proto::{Hello, HelloReply, MAGIC, PROTOCOL_VERSION, Request};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use zeroize::{Zeroize, Zeroizing};

use super::handler::{self, Resume};
use crate::daemon::Daemon;

/// How long a connection is held waiting for its first request, or for the client to close
/// after its answer, before it is handed to the runtime.
pub(crate) const HOLD: Duration = Duration::from_millis(100);
/// How many connections are held at once; more are handed to the runtime at once.
pub(crate) const MAX_HELD: usize = 64;
/// The most bytes read for a first request here: a hello and a token request take about a
/// hundred. A longer first request is handed over.
const READ_MAX: usize = 1024;

/// What the thread shares with the runtime's side of the server.
pub(crate) struct Shared {
    pub daemon: Arc<Daemon>,
    pub runtime: Handle,
    pub limit: Arc<Semaphore>,
    /// Cloned into every connection task, so that the server can wait for them all.
    pub open: mpsc::Sender<()>,
}

/// The listening socket, and the path to remove when it closes (none when systemd passed it:
/// then the socket unit owns the file).
pub(crate) struct Socket {
    pub listener: OwnedFd,
    pub remove: Option<PathBuf>,
}

/// One connection the thread holds.
struct Held {
    stream: UnixStream,
    permit: OwnedSemaphorePermit,
    read: Vec<u8>,
    answered: bool,
    until: Instant,
}

impl Held {
    /// Where the connection stands, for its task to go on from.
    fn resume(&mut self) -> Resume {
        let read = std::mem::take(&mut self.read);
        if self.answered { Resume::Answered { unwritten: Zeroizing::default(), read } } else { Resume::Fresh(read) }
    }
}

/// What to do with a held connection after it was readable.
enum Next {
    Keep,
    Close,
    HandOver(Resume),
}

/// Serves `socket` until a byte arrives on `stop` (or it closes).
pub(crate) fn run(socket: Socket, stop: UnixStream, shared: Shared) {
    let listener = UnixListener::from(socket.listener);
    let mut accept_reply = Vec::new();
    if let Err(e) = codec::encode(&HelloReply::accept(), &mut accept_reply) {
        // Cannot happen (the reply is a few dozen bytes); every connection then goes over.
        tracing::error!("cannot encode the hello's answer: {e}");
    }
    let server = Server { shared, accept_reply };
    let mut held: Vec<Held> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        fds.clear();
        fds.push(pollfd(stop.as_raw_fd()));
        fds.push(pollfd(listener.as_raw_fd()));
        fds.extend(held.iter().map(|h| pollfd(h.stream.as_raw_fd())));
        let timeout = held.iter().map(|h| h.until).min().map_or(-1, |until| {
            let ms = until.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        });
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a live, initialised array of `nfds` pollfd entries, and every
        // descriptor in it stays open during the call (owned by `stop`, `listener`, `held`).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!("waiting for connections failed: {e}");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if fds[0].revents != 0 {
            break;
        }
        let now = Instant::now();
        // From the end, so that removing one leaves the indices of those before it.
        for i in (0..held.len()).rev() {
            let next = if fds[i + 2].revents != 0 {
                server.step(&mut held[i], now)
            } else if held[i].until <= now {
                Next::HandOver(held[i].resume())
            } else {
                Next::Keep
            };
            match next {
                Next::Keep => {}
                Next::Close => drop(held.swap_remove(i)),
                Next::HandOver(resume) => {
                    let h = held.swap_remove(i);
                    server.hand_over(h.stream, Ok(h.permit), resume);
                }
            }
        }
        if fds[1].revents != 0 {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(h) = server.admit(stream, held.len(), now) {
                        held.push(h);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    if super::is_resource_exhaustion(&e) {
                        // Out of file descriptors: back off instead of spinning.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }
    drop(listener);
    if let Some(path) = socket.remove {
        let _ = std::fs::remove_file(path);
    }
    // What shutdown does to a connection (idle ones close, a request being answered finishes)
    // is the runtime's to do.
    for mut h in held {
        let resume = h.resume();
        server.hand_over(h.stream, Ok(h.permit), resume);
    }
}

struct Server {
    shared: Shared,
    /// The encoded answer to an accepted hello.
    accept_reply: Vec<u8>,
}

impl Server {
    /// Takes a new connection: held (with its first request answered if it was already there),
    /// handed over, or closed.
    fn admit(&self, stream: UnixStream, held: usize, now: Instant) -> Option<Held> {
        let Ok(permit) = self.shared.limit.clone().try_acquire_owned() else {
            self.hand_over(stream, Err(Refusal::TooManyConnections), Resume::Fresh(Vec::new()));
            return None;
        };
        // Another user's connection, or one the peer check cannot vouch for, is refused by the
        // runtime's side, with the reason.
        if held >= MAX_HELD || !super::listener::is_own_user(&stream) {
            self.hand_over(stream, Ok(permit), Resume::Fresh(Vec::new()));
            return None;
        }
        let mut h = Held { stream, permit, read: Vec::new(), answered: false, until: now + HOLD };
        // The client usually sent its hello and request before it was accepted.
        match self.step(&mut h, now) {
            Next::Keep => Some(h),
            Next::Close => None,
            Next::HandOver(resume) => {
                self.hand_over(h.stream, Ok(h.permit), resume);
                None
            }
        }
    }

    /// Reads what a held connection sent, and answers it if it is a first request this path
    /// answers.
    fn step(&self, h: &mut Held, now: Instant) -> Next {
        if h.read.capacity() == 0 {
            h.read.reserve_exact(READ_MAX);
        }
        let start = h.read.len();
        h.read.resize(READ_MAX, 0);
        let got = recv(&h.stream, &mut h.read[start..]);
        h.read.truncate(start + got.as_ref().map_or(0, |n| *n));
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Next::Keep,
            Err(e) => {
                tracing::debug!("connection ended: {e}");
                Next::Close
            }
            // The client closed: after its answer, or before saying anything (the runtime
            // would close it too, without a word). Anything else that ends here is for the
            // runtime to report.
            Ok(0) if h.read.is_empty() => Next::Close,
            Ok(0) => Next::HandOver(h.resume()),
            Ok(_) if h.answered => Next::HandOver(h.resume()),
            Ok(_) => self.answer(h, now),
        }
    }

    /// Answers a first request that is a valid hello and a token request that can be served
    /// at once; anything else goes to the runtime as it came.
    fn answer(&self, h: &mut Held, now: Instant) -> Next {
        let hand_over = |h: &mut Held| Next::HandOver(Resume::Fresh(std::mem::take(&mut h.read)));
        let (hello_len, request_len) = match frames(&h.read) {
            Frames::Two(hello, request) => (hello, request),
            Frames::Partial if h.read.len() < READ_MAX => return Next::Keep,
            // A client that sent its hello alone waits for the answer before it asks.
            Frames::Partial | Frames::HelloAlone | Frames::Other => return hand_over(h),
        };
        let hello: Option<Hello> = codec::decode(&h.read[HEADER_LEN..hello_len]).ok();
        if !hello.is_some_and(|hello| hello.magic == MAGIC && hello.version == PROTOCOL_VERSION)
            || self.accept_reply.is_empty()
        {
            return hand_over(h);
        }
        let request = &h.read[hello_len + HEADER_LEN..hello_len + request_len];
        let Ok(Request::Token { profile, min_valid }) = codec::decode::<Request>(request) else {
            return hand_over(h);
        };
        let served = self.shared.daemon.profiles().get(&profile).and_then(|handle| handle.token_now(min_valid));
        let Some(served) = served else {
            return hand_over(h);
        };
        h.read.zeroize();
        h.read.clear();
        h.answered = true;
        h.until = now + HOLD;
        let answer = [self.accept_reply.as_slice(), served.frame()];
        match send(&h.stream, answer) {
            Ok(n) if n == answer.iter().map(|part| part.len()).sum::<usize>() => Next::Keep,
            Ok(n) => {
                let mut unwritten = Zeroizing::new(answer.concat());
                unwritten.drain(..n);
                Next::HandOver(Resume::Answered { unwritten, read: Vec::new() })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Next::HandOver(Resume::Answered { unwritten: Zeroizing::new(answer.concat()), read: Vec::new() })
            }
            Err(e) => {
                tracing::debug!("connection ended: {e}");
                Next::Close
            }
        }
    }

    /// Gives a held connection (and its permit) to a task on the runtime.
    fn hand_over(&self, stream: UnixStream, permit: Result<OwnedSemaphorePermit, Refusal>, resume: Resume) {
        let admitted = permit.as_ref().map(|_| ()).map_err(|r| *r);
        let (daemon, open) = (self.shared.daemon.clone(), self.shared.open.clone());
        if let Err(e) = stream.set_nonblocking(true) {
            tracing::debug!("connection ended: {e}");
            return;
        }
        self.shared.runtime.spawn(async move {
            match UdsStream::try_from(OwnedFd::from(stream)) {
                Ok(stream) => handler::resume(daemon, stream.into(), admitted, resume).await,
                Err(e) => tracing::warn!("cannot serve a connection: {e}"),
            }
            drop(permit);
            drop(open);
        });
    }
}

/// What a connection's first bytes hold.
enum Frames {
    /// Exactly two complete frames, of these lengths: the hello and a request.
    Two(usize, usize),
    /// One complete frame and nothing after it.
    HelloAlone,
    /// Less than two frames, with more to come.
    Partial,
    /// Anything else: a bad length, or more than two frames.
    Other,
}

fn frames(read: &[u8]) -> Frames {
    let first = match codec::complete_frame(read) {
        Ok(Some(len)) => len,
        Ok(None) => return Frames::Partial,
        Err(_) => return Frames::Other,
    };
    if first == read.len() {
        return Frames::HelloAlone;
    }
    match codec::complete_frame(&read[first..]) {
        Ok(Some(second)) if first + second == read.len() => Frames::Two(first, second),
        Ok(None) => Frames::Partial,
        Ok(Some(_)) | Err(_) => Frames::Other,
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

/// Reads without waiting.
fn recv(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and the descriptor is open.
    let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Writes the parts in one system call, without waiting; returns how many bytes went out.
fn send(stream: &UnixStream, parts: [&[u8]; 2]) -> io::Result<usize> {
    let mut iov = parts.map(|part| libc::iovec { iov_base: part.as_ptr().cast_mut().cast(), iov_len: part.len() });
    // SAFETY: an all-zero msghdr is valid (no name, no control data); only the iovecs are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at two iovecs describing live buffers that are only read, and the
    // descriptor is open.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
