//! A fake tokend, for the tests that run it as *another* user: what an attacker would start at
//! the socket path a victim's `tokenctl` uses (for instance `/tmp/tokend-UID/tokend.sock`, which
//! anyone can create first when `XDG_RUNTIME_DIR` is unset).
//!
//! It speaks enough of the protocol to do harm: it accepts the handshake, hands out its own token,
//! starts logins with its own URL and keeps the redirect URL (with the authorization code) that
//! `tokenctl login` sends when the user pastes it. Every connection is served on its own thread
//! and everything it receives is printed on stdout, one line per event:
//!
//! ```text
//! listening
//! conn 1 accepted
//! conn 1 hello from tokenctl/0.1.0
//! conn 1 token p
//! conn 1 closed after 42 bytes
//! ```
//!
//! Usage: `tokend-impostor SOCKET` (the socket's directory is created, mode 0755, if missing).

use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokend_proto::codec;
use tokend_proto::{Fingerprint, Hello, HelloReply, Request, Response, Secret, Token};

/// The token the impostor hands out.
const PLANTED_TOKEN: &str = "planted-by-another-user";

static STDOUT: Mutex<()> = Mutex::new(());

fn say(line: &str) {
    let _one_at_a_time = STDOUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    let socket = std::env::args_os().nth(1).expect("usage: tokend-impostor SOCKET");
    let socket = std::path::PathBuf::from(socket);
    if let Some(dir) = socket.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).expect("create the socket directory");
    }
    let listener = UnixListener::bind(&socket).expect("bind the socket");
    say("listening");
    for (n, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        let id = n + 1;
        say(&format!("conn {id} accepted"));
        std::thread::spawn(move || serve(id, stream));
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    bytes: usize,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n;
        Ok(n)
    }
}

fn serve(id: usize, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = Counting { inner: stream, bytes: 0 };
    let (mut read_buf, mut write_buf) = (Vec::new(), Vec::new());
    if let Ok(Some(hello)) = codec::read_frame::<Hello>(&mut reader, &mut read_buf) {
        say(&format!("conn {id} hello from {}", hello.client));
        let _ = codec::write_frame(&mut writer, &HelloReply::accept(), &mut write_buf);
        while let Ok(Some(request)) = codec::read_frame::<Request>(&mut reader, &mut read_buf) {
            let answer = match request {
                Request::Token { profile, .. } => {
                    say(&format!("conn {id} token {profile}"));
                    Response::Token(Token {
                        profile,
                        access_token: Secret::from(PLANTED_TOKEN),
                        token_type: "Bearer".into(),
                        expires_at: SystemTime::now() + Duration::from_secs(3600),
                        fingerprint: Fingerprint::of(PLANTED_TOKEN),
                        scope: None,
                    })
                }
                Request::Login { profile } => {
                    say(&format!("conn {id} login {profile}"));
                    Response::LoginUrl {
                        profile,
                        url: "http://127.0.0.1:9/authorize?client_id=impostor".into(),
                        expires_at: SystemTime::now() + Duration::from_secs(600),
                    }
                }
                Request::LoginRedirect { profile, url } => {
                    say(&format!("conn {id} redirect {}", url.expose()));
                    Response::LoginDone { profile }
                }
                other => {
                    say(&format!("conn {id} request {other:?}"));
                    continue;
                }
            };
            if codec::write_frame(&mut writer, &answer, &mut write_buf).is_err() {
                break;
            }
        }
    }
    say(&format!("conn {id} closed after {} bytes", reader.bytes));
}
