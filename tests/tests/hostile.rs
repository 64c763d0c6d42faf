//! Hostile and broken clients: each gets an error or a timeout — never a panic or an unbounded
//! allocation — and well-behaved clients are answered meanwhile.

use std::time::Duration;

use tokend::server::connection::FRAME_TIMEOUT;
use tokend_e2e::wire::{self, frame, read_frame};
use tokend_e2e::{FakeProvider, Tokend, eventually};
use tokend_proto::message::Refusal;
use tokend_proto::{Hello, HelloReply, PROTOCOL_VERSION, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn daemon() -> (FakeProvider, Tokend) {
    let fake = FakeProvider::with_basic_client().await;
    let tokend = Tokend::start(&fake.cc_profile("p", "")).await;
    (fake, tokend)
}

/// Waits (at most 30 s) for the daemon to close the connection.
async fn closed_by_daemon(stream: &mut UnixStream) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

async fn handshake(tokend: &Tokend) -> UnixStream {
    wire::handshake(&tokend.socket).await
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A well-behaved client is served, and soon: within [`PROMPTLY`].
async fn still_serves(tokend: &Tokend, fake: &FakeProvider) {
    let token = tokio::time::timeout(PROMPTLY, tokend.tokenctl_ok(&["token", "p"]))
        .await
        .unwrap_or_else(|_| panic!("a well-behaved client waited longer than {PROMPTLY:?}:\n{}", tokend.log()));
    assert!(fake.accepts(token.trim()));
}

/// How long a well-behaved client may wait while hostile ones are connected: far longer than
/// answering takes, far shorter than any of the daemon's timeouts that would end a hold-up.
const PROMPTLY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_length_prefix_is_refused_before_anything_is_allocated() {
    let (fake, tokend) = daemon().await;
    let before = rss_kib(tokend.pid());
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut stream = UnixStream::connect(&tokend.socket).await.unwrap();
        stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        streams.push(stream);
    }
    for stream in &mut streams {
        let reply: HelloReply = read_frame(stream).await.expect("a refusal before closing");
        assert_eq!(reply.refusal, Some(Refusal::NotAClient));
        assert!(reply.message.contains("exceeds"), "{}", reply.message);
        assert!(closed_by_daemon(stream).await);
    }
    // After the handshake, too.
    let mut stream = handshake(&tokend).await;
    stream.write_all(&(64 * 1024 * 1024u32).to_be_bytes()).await.unwrap();
    let answer: Response = read_frame(&mut stream).await.unwrap();
    assert!(matches!(answer, Response::Error(tokend_proto::Error::BadRequest { .. })), "{answer:?}");
    assert!(closed_by_daemon(&mut stream).await);
    let after = rss_kib(tokend.pid());
    assert!(after < before + 32 * 1024, "50 claims of 4 GiB cost no memory: {before} KiB -> {after} KiB");
    still_serves(&tokend, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_are_refused() {
    let (fake, tokend) = daemon().await;
    for garbage in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0, 0, 0, 3, 0xff, 0xfe, 0xfd], &[0, 0, 0, 0], &[7; 64]]
    {
        let mut stream = UnixStream::connect(&tokend.socket).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        if let Some(reply) = read_frame::<HelloReply>(&mut stream).await {
            assert_eq!(reply.refusal, Some(Refusal::NotAClient), "{garbage:?}");
        }
        assert!(closed_by_daemon(&mut stream).await, "{garbage:?}");
    }
    // A well-formed frame with a garbage payload after the handshake.
    let mut stream = handshake(&tokend).await;
    stream.write_all(&[0, 0, 0, 4, 0xee, 0xee, 0xee, 0xee]).await.unwrap();
    let answer: Response = read_frame(&mut stream).await.unwrap();
    match answer {
        Response::Error(tokend_proto::Error::BadRequest { message }) => {
            assert!(message.contains("malformed"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    still_serves(&tokend, &fake).await;
    assert!(tokend.log().lines().all(|l| !l.contains("panicked")), "{}", tokend.log());
}

/// A request that comes with the hello (as tokenctl sends it) is answered with the hello's
/// answer, and the connection goes on: requests after it, and several requests in one write,
/// are answered in order, whichever of the daemon's paths takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_the_hello_and_after_it_are_answered_in_order() {
    let (fake, tokend) = daemon().await;
    // The token is fetched and held, so that it can be answered at once.
    still_serves(&tokend, &fake).await;
    let ask = Request::Token { profile: "p".into(), min_valid: None };
    let token = |answer: Option<Response>| match answer {
        Some(Response::Token(token)) => token,
        other => panic!("{other:?}\n{}", tokend.log()),
    };
    let pong = |answer: Option<Response>| assert!(matches!(answer, Some(Response::Pong(_))), "{answer:?}");

    let mut stream = UnixStream::connect(&tokend.socket).await.unwrap();
    stream.write_all(&[frame(&Hello::new()), frame(&ask)].concat()).await.unwrap();
    assert_eq!(read_frame::<HelloReply>(&mut stream).await.unwrap().refusal, None);
    let first = token(read_frame(&mut stream).await);
    assert!(fake.accepts(first.access_token.expose()));
    stream.write_all(&frame(&Request::Ping)).await.unwrap();
    pong(read_frame(&mut stream).await);
    stream.write_all(&[frame(&ask), frame(&Request::Ping), frame(&ask)].concat()).await.unwrap();
    assert_eq!(token(read_frame(&mut stream).await).fingerprint, first.fingerprint);
    pong(read_frame(&mut stream).await);
    assert_eq!(token(read_frame(&mut stream).await).fingerprint, first.fingerprint);

    // More than the first request with the hello.
    let mut stream = UnixStream::connect(&tokend.socket).await.unwrap();
    stream.write_all(&[frame(&Hello::new()), frame(&ask), frame(&Request::Ping)].concat()).await.unwrap();
    assert_eq!(read_frame::<HelloReply>(&mut stream).await.unwrap().refusal, None);
    assert_eq!(token(read_frame(&mut stream).await).fingerprint, first.fingerprint);
    pong(read_frame(&mut stream).await);

    // A first request that is not for a token, and one for a profile that does not exist.
    let mut stream = UnixStream::connect(&tokend.socket).await.unwrap();
    let unknown = Request::Token { profile: "nope".into(), min_valid: None };
    stream.write_all(&[frame(&Hello::new()), frame(&Request::Ping), frame(&unknown)].concat()).await.unwrap();
    assert_eq!(read_frame::<HelloReply>(&mut stream).await.unwrap().refusal, None);
    pong(read_frame(&mut stream).await);
    let answer: Option<Response> = read_frame(&mut stream).await;
    assert!(
        matches!(&answer, Some(Response::Error(tokend_proto::Error::UnknownProfile { profile, .. })) if profile == "nope"),
        "{answer:?}"
    );
    still_serves(&tokend, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_protocol_version_is_told_so() {
    let (_fake, tokend) = daemon().await;
    let mut stream = UnixStream::connect(&tokend.socket).await.unwrap();
    let hello = Hello { version: 99, client: "tokenctl/9.0.0".into(), ..Hello::new() };
    stream.write_all(&frame(&hello)).await.unwrap();
    let reply: HelloReply = read_frame(&mut stream).await.unwrap();
    assert_eq!(reply.refusal, Some(Refusal::VersionMismatch));
    assert!(
        reply.message.contains("protocol 99") && reply.message.contains(&format!("protocol {PROTOCOL_VERSION}")),
        "{}",
        reply.message
    );
    assert!(closed_by_daemon(&mut stream).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_says_nothing_is_disconnected() {
    let (fake, tokend) = daemon().await;
    let mut silent = UnixStream::connect(&tokend.socket).await.unwrap();
    still_serves(&tokend, &fake).await;
    assert!(closed_by_daemon(&mut silent).await, "dropped after the handshake timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_times_out() {
    let (fake, tokend) = daemon().await;
    let mut stream = handshake(&tokend).await;
    let whole = frame(&Request::Token { profile: "p".into(), min_valid: None });
    stream.write_all(&whole[..whole.len() - 2]).await.unwrap();
    still_serves(&tokend, &fake).await;
    assert!(closed_by_daemon(&mut stream).await, "dropped once the rest of the frame is overdue");
}

/// Whether the daemon has closed `stream` (it reads as ended, or a write fails).
async fn is_closed(stream: &mut UnixStream) -> bool {
    let mut sink = [0u8; 64];
    loop {
        match stream.try_read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return true,
        }
    }
    stream.write_all(&[0]).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_frame_trickled_a_byte_at_a_time_is_dropped_at_the_frame_timeout() {
    let (_fake, tokend) = daemon().await;
    let mut client = tokend.client().await;
    client.token("p").await.unwrap();
    // Each connection sends half of a 60,000-byte frame, then one more byte every half second:
    // every read is quick, but the frame never ends.
    let mut tricklers = Vec::new();
    for _ in 0..8 {
        let mut stream = handshake(&tokend).await;
        let mut start = 60_000u32.to_be_bytes().to_vec();
        start.resize(4 + 30_000, 0);
        stream.write_all(&start).await.unwrap();
        tricklers.push(Some(stream));
    }
    let began = std::time::Instant::now();
    let bound = FRAME_TIMEOUT + Duration::from_secs(5);
    while tricklers.iter().any(Option::is_some) {
        let open = tricklers.iter().flatten().count();
        assert!(
            began.elapsed() < bound,
            "{open} connections still open {:?} after their frames began (the frame timeout is {FRAME_TIMEOUT:?})",
            began.elapsed()
        );
        // The trickle's pace is the behaviour under test: each connection gets a byte every
        // half second (`is_closed` writes it), quicker than any read timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for slot in &mut tricklers {
            if let Some(stream) = slot
                && is_closed(stream).await
            {
                *slot = None;
            }
        }
        // A well-behaved client on another connection is served all along.
        let token = tokio::time::timeout(PROMPTLY, client.token("p")).await;
        token.expect("served promptly while others trickle").expect("a token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_dropped_while_others_are_served() {
    let (fake, tokend) = daemon().await;
    tokend.tokenctl_ok(&["token", "p"]).await;
    let mut greedy = handshake(&tokend).await;
    let request = frame(&Request::Token { profile: "p".into(), min_valid: None });
    let burst: Vec<u8> = request.iter().copied().cycle().take(request.len() * 20_000).collect();
    // Write as much as the daemon accepts; it stops reading once its answers back up.
    let _ = tokio::time::timeout(Duration::from_secs(3), greedy.write_all(&burst)).await;
    for _ in 0..5 {
        still_serves(&tokend, &fake).await;
    }
    // Not reading until the daemon has given up on writing to it (at its write timeout, 10 s):
    // then what is buffered ends in EOF rather than in more answers.
    let gave_up = "connection ended: timed out writing a response";
    assert!(
        eventually(Duration::from_secs(30), || tokend.log().contains(gave_up)).await,
        "the daemon gave up writing to the client that does not read:\n{}",
        tokend.log()
    );
    assert!(closed_by_daemon(&mut greedy).await, "dropped once its answers could not be written in time");
    still_serves(&tokend, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_hold_anyone_up() {
    tokend_e2e::raise_fd_limit();
    let (fake, tokend) = daemon().await;
    let mut idle = Vec::new();
    for i in 0..4000 {
        let stream =
            if i % 2 == 0 { handshake(&tokend).await } else { UnixStream::connect(&tokend.socket).await.unwrap() };
        idle.push(stream);
    }
    for _ in 0..5 {
        still_serves(&tokend, &fake).await;
    }
    let mut client = tokio::time::timeout(PROMPTLY, tokend.client()).await.expect("a new client connects promptly");
    for _ in 0..100 {
        let token = tokio::time::timeout(PROMPTLY, client.token("p")).await;
        token.expect("answered promptly with 4000 idle connections open").expect("a token");
    }
}
