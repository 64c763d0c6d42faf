//! The floor for one request made by a process of its own: a Rust program that connects to a
//! Unix socket, writes a request and reads the answer, with the standard library only and no
//! decoding. The suite runs it against the raw baseline server beside `tokenctl token`, so that
//! what `tokenctl` adds above a process start and one round trip shows.
//!
//!     tokend-floor SOCKET REQUEST_LEN RESPONSE_LEN

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, request_len, response_len] = args.as_slice() else {
        eprintln!("usage: tokend-floor SOCKET REQUEST_LEN RESPONSE_LEN");
        return ExitCode::from(2);
    };
    let (Ok(request_len), Ok(response_len)) = (request_len.parse::<usize>(), response_len.parse::<usize>()) else {
        eprintln!("tokend-floor: the lengths must be numbers");
        return ExitCode::from(2);
    };
    let mut response = vec![0u8; response_len];
    let answered = UnixStream::connect(socket).and_then(|mut stream| {
        stream.write_all(&vec![1u8; request_len])?;
        stream.read_exact(&mut response)
    });
    match answered {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokend-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
