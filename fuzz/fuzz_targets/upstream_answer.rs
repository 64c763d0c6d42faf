//! What an OAuth server can send tokend: a status, headers and a body, read as a token response
//! or error, as a device authorization (RFC 8628) and as an info answer (`tokend::fuzz_upstream_answer`, which checks what must hold
//! of the outcome). Nothing may panic, and a token that passes must fit a frame and a header.
//!
//! Input: two bytes of status (folded into 100..=599), then header lines `name: value` up to an
//! empty line, then the body. The seeds in `fuzz/seeds/upstream_answer/` are written that way.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((status, rest)) = data.split_first_chunk::<2>() else { return };
    let status = 100 + u16::from_be_bytes(*status) % 500;
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(end) => (&rest[..end], &rest[end + 2..]),
        None => (&[][..], rest),
    };
    let headers: Vec<(&[u8], &[u8])> = head
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let value = &line[colon + 1..];
            Some((&line[..colon], value.strip_prefix(b" ").unwrap_or(value)))
        })
        .collect();
    tokend::fuzz_upstream_answer(status, &headers, body);
});
