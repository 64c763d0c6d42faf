//! What tokend accepts from an OAuth server, in one place.
//!
//! Every value a server sends is checked here before tokend stores it, serves it or does
//! arithmetic with it, so that no answer — however large, strangely written or malicious — can
//! make tokend panic, fill a frame past its limit, or put something into a header or onto a
//! terminal that does not belong there. A value that fails is an upstream error saying what
//! was wrong (never the value itself: it may be a secret); a lifetime that is merely too long
//! is clamped.
//!
//! The same checks apply to tokens read back from the state directory, which an older tokend
//! may have written without them.

use std::time::{Duration, SystemTime};

/// The longest access or refresh token tokend accepts, in bytes.
///
/// A token is served in one frame of at most 64 KiB ([`tokend_proto::MAX_FRAME_LEN`]), which
/// also carries the profile name, token type and scope; and a token must fit in an HTTP header
/// to be of any use, where common servers stop at 8 to 16 KiB for a header line. Real tokens
/// stay far below (a JWT with many claims is a few KiB), so 16 KiB refuses nothing that works
/// and leaves the frame three quarters empty.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The longest lifetime tokend believes, whatever `expires_in` says: a year and a day.
///
/// A longer lifetime is clamped, so that expiry and refresh times stay within what clocks and
/// date formats can hold (`expires_in = 1e300`, or 2^63 seconds). A token that really lives
/// longer is simply refreshed once a year.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The largest info answer tokend passes on to `tokenctl info`, in bytes of text. It must fit in
/// one frame with room to spare; user and token-info documents are a few KiB.
pub(crate) const MAX_INFO_BODY: usize = 32 * 1024;

/// The longest `token_type` accepted.
pub(crate) const MAX_TOKEN_TYPE_LEN: usize = 128;

/// What is wrong with a token or a token type, said without showing it. It completes a phrase
/// such as "an access token …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unacceptable {
    /// A token longer than [`MAX_TOKEN_LEN`].
    #[error("of {0} bytes; tokend accepts at most {MAX_TOKEN_LEN}")]
    TokenTooLong(usize),
    /// A token that is empty, padding aside.
    #[error("that is empty")]
    Empty,
    /// A token with a character outside RFC 6750's `b64token`.
    #[error(
        "containing {0}, which a bearer token cannot contain (RFC 6750 allows letters, digits, `-._~+/` and trailing `=`)"
    )]
    TokenCharacter(&'static str),
    /// A token type that is empty or longer than [`MAX_TOKEN_TYPE_LEN`].
    #[error("of {0} bytes; tokend accepts 1 to {MAX_TOKEN_TYPE_LEN}")]
    TypeLength(usize),
    /// A token type with a character a header cannot carry.
    #[error("containing {0}, which an HTTP header cannot carry there")]
    TypeCharacter(&'static str),
}

/// Checks a token from a server: at most [`MAX_TOKEN_LEN`] bytes of RFC 6750 `b64token`
/// (letters, digits and `-._~+/`, then any `=` padding), the characters a bearer token may have
/// in an `Authorization` header. The error says what is wrong without showing the token.
pub(crate) fn check_token(token: &str) -> Result<(), Unacceptable> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Unacceptable::TokenTooLong(token.len()));
    }
    let body = token.trim_end_matches('=');
    if body.is_empty() {
        return Err(Unacceptable::Empty);
    }
    match body.chars().find(|&c| !(c.is_ascii_alphanumeric() || "-._~+/".contains(c))) {
        None => Ok(()),
        Some(c) => Err(Unacceptable::TokenCharacter(describe(c))),
    }
}

/// Checks a `token_type`: 1 to [`MAX_TOKEN_TYPE_LEN`] visible ASCII characters, as in
/// `Bearer`, `DPoP` or a URI, since it starts the `Authorization` header.
pub(crate) fn check_token_type(token_type: &str) -> Result<(), Unacceptable> {
    if token_type.is_empty() || token_type.len() > MAX_TOKEN_TYPE_LEN {
        return Err(Unacceptable::TypeLength(token_type.len()));
    }
    match token_type.chars().find(|c| !c.is_ascii_graphic()) {
        None => Ok(()),
        Some(c) => Err(Unacceptable::TypeCharacter(describe(c))),
    }
}

/// The longest `user_code` of a device login accepted, in characters. RFC 8628 §6.1 suggests
/// about eight; anything much longer is no code a person would type.
pub(crate) const MAX_USER_CODE_LEN: usize = 64;

/// The longest verification URI of a device login accepted, in bytes.
pub(crate) const MAX_VERIFICATION_URI_LEN: usize = 2048;

/// The longest a device code is honoured (`expires_in` of a device authorization): a day.
pub(crate) const MAX_DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The longest polling interval of a device login honoured: ten minutes, so that a server's
/// `interval` (and its `slow_down`s) cannot put the next poll beyond any device code's life.
pub(crate) const MAX_POLL_INTERVAL: Duration = Duration::from_secs(600);

/// Checks a device code (RFC 8628 §3.2): at most [`MAX_TOKEN_LEN`] bytes of visible ASCII. It
/// only travels in a form body, so any such character will do; the error does not show it.
pub(crate) fn check_device_code(code: &str) -> Result<(), String> {
    if code.is_empty() || code.len() > MAX_TOKEN_LEN {
        return Err(format!("of {} bytes; tokend accepts 1 to {MAX_TOKEN_LEN}", code.len()));
    }
    match code.chars().find(|c| !c.is_ascii_graphic()) {
        None => Ok(()),
        Some(c) => Err(format!("containing {}", describe(c))),
    }
}

/// A lifetime as tokend believes it: at most [`MAX_LIFETIME`].
pub(crate) fn lifetime(claimed: Duration) -> Duration {
    claimed.min(MAX_LIFETIME)
}

/// `t + d`, or the latest time `SystemTime` can hold near that: never a panic.
pub(crate) fn after(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or_else(|| t + MAX_LIFETIME.min(d))
}

/// A character class, for error messages that must not show the secret the character is in.
fn describe(c: char) -> &'static str {
    match c {
        '\r' | '\n' => "a line break",
        ' ' | '\t' => "white space",
        c if c.is_control() => "a control character",
        c if !c.is_ascii() => "a non-ASCII character",
        '=' => "`=` before the end",
        _ => "punctuation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_b64token_characters_are_accepted() {
        for token in ["at", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "eyJhbGciOi.J9.x-_~+/", "YWJj==", "a"] {
            assert_eq!(check_token(token), Ok(()), "{token}");
        }
        assert_eq!(check_token(&"a".repeat(MAX_TOKEN_LEN)), Ok(()));
    }

    #[test]
    fn tokens_that_could_break_a_header_or_a_frame_are_refused_without_being_shown() {
        for (token, why) in [
            ("at\r\nX-Injected: yes", "a line break"),
            ("at x", "white space"),
            ("at\u{1b}[2J", "a control character"),
            ("atö", "a non-ASCII character"),
            ("a=b", "`=` before the end"),
            ("a|b", "punctuation"),
            ("", "empty"),
            ("==", "empty"),
        ] {
            let err = check_token(token).unwrap_err().to_string();
            assert!(err.contains(why), "{token:?}: {err}");
            assert!(token.len() < 3 || !err.contains(token), "{err}");
        }
        let err = check_token(&"a".repeat(70_000)).unwrap_err().to_string();
        assert!(err.contains("of 70000 bytes"), "{err}");
    }

    #[test]
    fn token_types_must_be_visible_ascii() {
        assert_eq!(check_token_type("DPoP"), Ok(()));
        assert_eq!(check_token_type("urn:ietf:params:oauth:token-type:jwt"), Ok(()));
        assert!(check_token_type("Bearer\r\nX: y").unwrap_err().to_string().contains("a line break"));
        assert!(check_token_type("").is_err());
        assert!(check_token_type(&"x".repeat(200)).is_err());
    }

    #[test]
    fn lifetimes_and_times_never_overflow() {
        assert_eq!(lifetime(Duration::from_secs(3600)), Duration::from_secs(3600));
        assert_eq!(lifetime(Duration::MAX), MAX_LIFETIME);
        let now = SystemTime::now();
        assert_eq!(after(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        assert_eq!(after(now, Duration::MAX), now + MAX_LIFETIME);
    }
}
