//! The times inside a token that is a JWT, read for scheduling only.
//!
//! Some servers say when a token ends only inside the token: Minut's access tokens are JWTs
//! that come without `expires_in`, and Keycloak's refresh tokens are JWTs whose `exp` is when
//! the login ends. tokend reads `exp` and `iat` from the payload of a JWS in compact form
//! (RFC 7519 §7.2, RFC 7515 §7.1) *without verifying the signature*. It has no key to verify
//! with and needs none: the claims only decide when tokend asks the server again, and the
//! server stays the judge of whether a token works. A wrong `exp` can make tokend refresh early
//! or late, or warn about a login at the wrong time; it cannot make tokend serve a token the
//! server did not issue, nor hold one past the lifetime limits of [`crate::limits`].
//!
//! Reading is bounded and total: a token reaching here passed [`crate::limits::check_token`]
//! (at most 16 KiB), only the header and payload are decoded, each at most [`MAX_PART`] bytes
//! of Base64, and every failure is a value. A token that is not three Base64url parts with a
//! JSON object for a header is not a JWT ([`Read::NotJwt`]: opaque tokens are the norm); one
//! that is, but whose payload or claims cannot be read, is [`Read::Unusable`] with the reason,
//! for a log line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The longest header or payload decoded, in bytes of Base64url; tokens are at most 16 KiB.
pub(crate) const MAX_PART: usize = 16 * 1024;

/// The latest `exp` or `iat` believed: the end of year 9999, the last instant RFC 3339 (and so
/// `tokenctl`'s output) can write. Anything later is nonsense, not a long lifetime.
const LATEST: u64 = 253_402_300_799;

/// Base64url, with or without padding: RFC 7515 says without, some issuers pad.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims tokend reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claims {
    /// `exp`: when the token expires.
    pub exp: Option<SystemTime>,
    /// `iat`: when it was issued.
    pub iat: Option<SystemTime>,
}

/// What a token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// Not a JWT: an opaque token, as most are.
    NotJwt,
    /// A JWT with these claims (each absent if the token has none).
    Claims(Claims),
    /// A JWT whose payload or claims cannot be read; why, without the token's content.
    Unusable(String),
}

/// Reads the `exp` and `iat` claims of `token`, without verifying it.
pub(crate) fn read(token: &str) -> Read {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Read::NotJwt;
    };
    match decode_object(header) {
        Ok(header) if header.contains_key("alg") => {}
        _ => return Read::NotJwt,
    }
    let payload = match decode_object(payload) {
        Ok(payload) => payload,
        Err(why) => return Read::Unusable(format!("its payload {why}")),
    };
    let time = |claim: &str| match payload.get(claim) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => numeric_date(value).map(Some).map_err(|why| format!("its `{claim}` claim {why}")),
    };
    match (time("exp"), time("iat")) {
        (Ok(exp), Ok(iat)) => Read::Claims(Claims { exp, iat }),
        (Err(why), _) | (_, Err(why)) => Read::Unusable(why),
    }
}

/// A Base64url part that must hold a JSON object.
fn decode_object(part: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if part.len() > MAX_PART {
        return Err(format!("is {} bytes long; tokend reads at most {MAX_PART}", part.len()));
    }
    let bytes = BASE64URL.decode(part).map_err(|_| "is not Base64url".to_owned())?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("is JSON but not an object".to_owned()),
        Err(_) => Err("is not JSON".to_owned()),
    }
}

/// An RFC 7519 NumericDate: seconds since the epoch, possibly fractional.
fn numeric_date(value: &serde_json::Value) -> Result<SystemTime, String> {
    let serde_json::Value::Number(n) = value else {
        return Err("is not a number".to_owned());
    };
    let secs = match (n.as_u64(), n.as_f64()) {
        (Some(secs), _) => secs,
        (None, Some(f)) if f.is_finite() && f >= 0.0 && f <= LATEST as f64 => {
            Duration::try_from_secs_f64(f).map_or(LATEST, |d| d.as_secs())
        }
        (None, Some(f)) if f < 0.0 => return Err("is before 1970".to_owned()),
        _ => return Err("is after the year 9999".to_owned()),
    };
    if secs > LATEST {
        return Err("is after the year 9999".to_owned());
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn jwt(payload: &str) -> String {
        format!("{}.{}.c2lnbmF0dXJl", part(r#"{"alg":"RS256","typ":"JWT"}"#), part(payload))
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn exp_and_iat_are_read_without_a_key() {
        let read = read(&jwt(r#"{"sub":"u","exp":1700003600,"iat":1700000000}"#));
        assert_eq!(read, Read::Claims(Claims { exp: Some(at(1_700_003_600)), iat: Some(at(1_700_000_000)) }));
    }

    #[test]
    fn claims_may_be_missing_fractional_or_padded() {
        assert_eq!(read(&jwt(r#"{"sub":"u"}"#)), Read::Claims(Claims { exp: None, iat: None }));
        assert_eq!(
            read(&jwt(r#"{"exp":1700003600.75,"iat":null}"#)),
            Read::Claims(Claims { exp: Some(at(1_700_003_600)), iat: None })
        );
        let padded = format!(
            "{}.{}.sig",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"alg":"none"}"#),
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":5}"#)
        );
        assert_eq!(read(&padded), Read::Claims(Claims { exp: Some(at(5)), iat: None }));
    }

    #[test]
    fn opaque_tokens_are_not_jwts() {
        for token in [
            "at_1234",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
            "a.b.c",
            "eyJhbGciOi.J9.x-_~+/",
            &format!("{}.{}", part(r#"{"alg":"none"}"#), part(r#"{"exp":5}"#)),
            &format!("{}.{}.s.t.u", part(r#"{"alg":"none"}"#), part(r#"{"exp":5}"#)),
            &format!("{}.{}.s", part(r#"{"typ":"JWT"}"#), part(r#"{"exp":5}"#)),
            &format!("{}.{}.s", part("[1]"), part(r#"{"exp":5}"#)),
        ] {
            assert_eq!(read(token), Read::NotJwt, "{token}");
        }
    }

    #[test]
    fn a_jwt_with_garbage_claims_is_unusable_and_says_why() {
        let header = part(r#"{"alg":"HS256"}"#);
        for (payload, why) in [
            ("%%%".to_owned(), "payload is not Base64url"),
            (part("not json"), "payload is not JSON"),
            (part("[1,2]"), "not an object"),
            (part(r#"{"exp":"tomorrow"}"#), "`exp` claim is not a number"),
            (part(r#"{"exp":-5}"#), "`exp` claim is before 1970"),
            (part(r#"{"exp":1e300}"#), "`exp` claim is after the year 9999"),
            (part(r#"{"exp":18446744073709551615}"#), "`exp` claim is after the year 9999"),
            (part(r#"{"exp":5,"iat":{"a":1}}"#), "`iat` claim is not a number"),
            ("A".repeat(MAX_PART + 4), "payload is 16388 bytes long"),
        ] {
            match read(&format!("{header}.{payload}.sig")) {
                Read::Unusable(reason) => assert!(reason.contains(why), "{reason} / {why}"),
                other => panic!("{payload}: {other:?}"),
            }
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_input() {
        let header = part(r#"{"alg":"none"}"#);
        let mut inputs = vec![String::new(), ".".into(), "..".into(), "...".into(), format!("{header}..")];
        for n in [0u64, 1, 9_999_999_999, 253_402_300_799, 253_402_300_800] {
            inputs.push(jwt(&format!(r#"{{"exp":{n},"iat":{n}}}"#)));
        }
        inputs.push(jwt(r#"{"exp":1e-300}"#));
        inputs.push(jwt(&format!(r#"{{"exp":{}}}"#, "9".repeat(400))));
        for input in inputs {
            let _ = read(&input);
        }
    }
}
