//! The device authorization request of RFC 8628 (§3.1, §3.2): the first half of a device login.
//!
//! tokend asks the device authorization endpoint for a code, with the profile's client
//! authentication and scopes (and `authorize_params`, the extra parameters of a login's first
//! request). The answer names the `user_code` the user types in, the `verification_uri` where
//! they type it (and, optionally, `verification_uri_complete`, which carries the code), and the
//! `device_code` that tokend then polls the token endpoint with ([`super::token`],
//! [`crate::login`]).
//!
//! The answer is read as leniently as a token answer (JSON or form-encoded, numbers as strings,
//! Google's older `verification_url`), and as strictly where it reaches people or the network:
//! the user code must be short and free of control and bidirectional-override characters, the
//! URIs must be https (http only on this machine) and fit [`limits::MAX_VERIFICATION_URI_LEN`],
//! the device code must pass [`limits::check_device_code`], and `expires_in` and `interval` are
//! clamped. A bad `verification_uri_complete` is dropped (the user can still type the code); a
//! bad anything else makes the answer unusable.

use std::time::Duration;

use reqwest::header::ACCEPT;
use tokend_proto::Secret;
use url::Url;

use super::{Answer, Fields, Http, MAX_BODY, UpstreamError};
use crate::config::Profile;
use crate::limits;

/// The polling interval when the server names none (RFC 8628 §3.2).
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// How much a `slow_down` answer adds to the polling interval (RFC 8628 §3.5).
pub(crate) const SLOW_DOWN: Duration = Duration::from_secs(5);

/// A device authorization the server granted: what to show the user and what to poll with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceAuthorization {
    /// The code tokend polls the token endpoint with.
    pub device_code: Secret,
    /// The code the user enters.
    pub user_code: String,
    /// Where the user enters it.
    pub verification_uri: Url,
    /// The verification URI with the code in it, if the server sent a usable one.
    pub verification_uri_complete: Option<Url>,
    /// How long the codes live, if the server said; at most
    /// [`limits::MAX_DEVICE_CODE_LIFETIME`].
    pub expires_in: Option<Duration>,
    /// How long to wait between polls: 1 s to [`limits::MAX_POLL_INTERVAL`].
    pub interval: Duration,
}

const WHAT: &str = "the device authorization endpoint";

/// Asks the profile's device authorization endpoint for a code.
pub(crate) async fn authorize(http: &Http, profile: &Profile) -> Result<DeviceAuthorization, UpstreamError> {
    let Some(url) = profile.device_authorization_url() else {
        return Err(UpstreamError::unresolved(WHAT));
    };
    let mut form: Vec<(&str, &str)> = Vec::with_capacity(6);
    let scope = profile.scope_param();
    if let Some(scope) = &scope {
        form.push(("scope", scope));
    }
    for (key, value) in &profile.authorize_params {
        form.push((key, value));
    }
    let builder = http.client().post(url.clone()).header(ACCEPT, "application/json");
    let builder = super::token::authenticate(builder, profile, &mut form);
    let response = builder.form(&form).send().await.map_err(|e| UpstreamError::transport(WHAT, &e))?;
    let answer = Answer::read(WHAT, response, MAX_BODY).await?;
    if !answer.is_success() {
        return Err(answer.to_error(WHAT));
    }
    parse(&answer)
}

/// Reads a 2xx answer of the device authorization endpoint.
pub(crate) fn parse(answer: &Answer) -> Result<DeviceAuthorization, UpstreamError> {
    let malformed = |what: String| {
        let kind = answer.content_type.as_deref().map(super::sanitize).unwrap_or_else(|| "no content type".into());
        UpstreamError::malformed(
            answer.status,
            format!("{WHAT} answered HTTP {} {what} ({kind}, {} bytes)", answer.status, answer.body.len()),
        )
    };
    let Some(mut fields) = Fields::parse(&answer.body) else {
        return Err(malformed("with a body that is neither JSON nor form-encoded".into()));
    };
    if let Some(error) = fields.string("error") {
        let description = fields.string("error_description").map(|d| super::sanitize(&d));
        let error = super::sanitize(&error);
        return Err(UpstreamError {
            retry: super::classify(400, Some(&error)),
            status: Some(answer.status),
            message: format!("{WHAT} answered HTTP {} with an error", answer.status),
            error: Some(error),
            description,
            retry_after: answer.retry_after,
            rotated_refresh_token: None,
        });
    }
    let device_code = match fields.string("device_code").map(|c| c.trim().to_owned()) {
        Some(code) if !code.is_empty() => {
            limits::check_device_code(&code).map_err(|why| malformed(format!("with an unusable device_code {why}")))?;
            Secret::new(code)
        }
        _ => return Err(malformed("without a device_code".into())),
    };
    let user_code = match fields.string("user_code") {
        Some(code) => check_user_code(code.trim()).map_err(|why| malformed(format!("with a user_code {why}")))?,
        None => return Err(malformed("without a user_code".into())),
    };
    // Google's device endpoint says `verification_url`, from a draft of the RFC.
    let verification_uri = match fields.string("verification_uri").or_else(|| fields.string("verification_url")) {
        Some(uri) => check_uri(&uri).map_err(|why| malformed(format!("with a verification_uri that {why}")))?,
        None => return Err(malformed("without a verification_uri".into())),
    };
    let verification_uri_complete = fields.string("verification_uri_complete").and_then(|uri| match check_uri(&uri) {
        Ok(url) => Some(url),
        Err(why) => {
            tracing::debug!("ignoring the device authorization's verification_uri_complete, which {why}");
            None
        }
    });
    let expires_in = match fields.seconds("expires_in") {
        Ok(Some(secs)) if secs > 0 => Some(Duration::from_secs(secs).min(limits::MAX_DEVICE_CODE_LIFETIME)),
        Ok(_) => None,
        Err(why) => return Err(malformed(format!("with an unusable expires_in ({why})"))),
    };
    let interval = match fields.seconds("interval") {
        Ok(Some(secs)) => Duration::from_secs(secs).clamp(Duration::from_secs(1), limits::MAX_POLL_INTERVAL),
        Ok(None) => DEFAULT_INTERVAL,
        Err(why) => return Err(malformed(format!("with an unusable interval ({why})"))),
    };
    Ok(DeviceAuthorization {
        device_code,
        user_code,
        verification_uri,
        verification_uri_complete,
        expires_in,
        interval,
    })
}

/// A user code fit for a terminal: not empty, short, no control or bidirectional-override
/// characters (which could make the code read other than it is). Never shortened: a code cut
/// to fit would be a wrong code.
fn check_user_code(code: &str) -> Result<String, String> {
    if code.is_empty() {
        return Err("that is empty".into());
    }
    if code.chars().count() > limits::MAX_USER_CODE_LEN {
        return Err(format!("longer than {} characters", limits::MAX_USER_CODE_LEN));
    }
    if code.chars().any(|c| c.is_control() || super::is_bidi_control(c)) {
        return Err("containing control characters".into());
    }
    Ok(code.to_owned())
}

/// A verification URI the user can be sent to: an https URL (http only on this machine), of
/// bounded length. A parsed URL is ASCII throughout (the host in punycode, the rest
/// percent-encoded), so it prints as it reads.
fn check_uri(text: &str) -> Result<Url, String> {
    if text.len() > limits::MAX_VERIFICATION_URI_LEN {
        return Err(format!("is {} bytes long; tokend accepts {}", text.len(), limits::MAX_VERIFICATION_URI_LEN));
    }
    let url = crate::config::check_endpoint(text)
        .map_err(|why| format!("is not usable: {}", super::sanitize(&why.to_string())))?;
    if url.as_str().len() > limits::MAX_VERIFICATION_URI_LEN {
        return Err(format!("is longer than {} bytes once encoded", limits::MAX_VERIFICATION_URI_LEN));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Retry;

    fn answer(body: &str) -> Answer {
        Answer {
            status: 200,
            content_type: Some("application/json".into()),
            location: None,
            retry_after: None,
            body: zeroize::Zeroizing::new(body.as_bytes().to_vec()),
        }
    }

    #[test]
    fn an_rfc_8628_answer_is_read_in_full() {
        let d = parse(&answer(
            r#"{"device_code":"GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS","user_code":"WDJB-MJHT",
                "verification_uri":"https://example.com/device",
                "verification_uri_complete":"https://example.com/device?user_code=WDJB-MJHT",
                "expires_in":1800,"interval":5}"#,
        ))
        .unwrap();
        assert_eq!(d.device_code.expose(), "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS");
        assert_eq!(d.user_code, "WDJB-MJHT");
        assert_eq!(d.verification_uri.as_str(), "https://example.com/device");
        assert_eq!(d.verification_uri_complete.unwrap().as_str(), "https://example.com/device?user_code=WDJB-MJHT");
        assert_eq!(d.expires_in, Some(Duration::from_secs(1800)));
        assert_eq!(d.interval, Duration::from_secs(5));
    }

    #[test]
    fn the_interval_defaults_to_five_seconds_and_is_clamped() {
        let base = r#""device_code":"dc","user_code":"ABCD","verification_uri":"https://as.example/device""#;
        assert_eq!(parse(&answer(&format!("{{{base}}}"))).unwrap().interval, DEFAULT_INTERVAL);
        assert_eq!(parse(&answer(&format!(r#"{{{base},"interval":0}}"#))).unwrap().interval, Duration::from_secs(1));
        assert_eq!(
            parse(&answer(&format!(r#"{{{base},"interval":"1e300"}}"#))).unwrap().interval,
            limits::MAX_POLL_INTERVAL
        );
        let long = parse(&answer(&format!(r#"{{{base},"expires_in":99999999999}}"#))).unwrap();
        assert_eq!(long.expires_in, Some(limits::MAX_DEVICE_CODE_LIFETIME));
    }

    #[test]
    fn googles_verification_url_is_accepted() {
        let d = parse(&answer(
            r#"{"device_code":"dc","user_code":"ABCD","verification_url":"https://www.google.com/device"}"#,
        ))
        .unwrap();
        assert_eq!(d.verification_uri.as_str(), "https://www.google.com/device");
    }

    #[test]
    fn hostile_answers_are_refused_without_showing_secrets() {
        for (body, why) in [
            (r#"{"user_code":"A","verification_uri":"https://a.example/"}"#, "without a device_code"),
            (
                r#"{"device_code":"d c","user_code":"A","verification_uri":"https://a.example/"}"#,
                "unusable device_code",
            ),
            (r#"{"device_code":"dc","verification_uri":"https://a.example/"}"#, "without a user_code"),
            (r#"{"device_code":"dc","user_code":"A\u001b[2J","verification_uri":"https://a.example/"}"#, "control"),
            (r#"{"device_code":"dc","user_code":"A\u202eB","verification_uri":"https://a.example/"}"#, "control"),
            (r#"{"device_code":"dc","user_code":"A"}"#, "without a verification_uri"),
            (r#"{"device_code":"dc","user_code":"A","verification_uri":"http://evil.example/"}"#, "plain http"),
            (r#"{"device_code":"dc","user_code":"A","verification_uri":"javascript:alert(1)"}"#, "not an https URL"),
            (
                r#"{"device_code":"dc","user_code":"A","verification_uri":"https://a.example/","interval":"soon"}"#,
                "interval",
            ),
            ("<html>maintenance</html>", "neither JSON nor form-encoded"),
        ] {
            let err = parse(&answer(body)).unwrap_err();
            assert_eq!(err.retry, Retry::Transient, "{body}");
            assert!(err.message.contains(why), "{body}: {}", err.message);
            assert!(!err.message.contains("d c"), "{}", err.message);
        }
        let long = format!(
            r#"{{"device_code":"dc","user_code":"{}","verification_uri":"https://a.example/"}}"#,
            "A".repeat(65)
        );
        assert!(parse(&answer(&long)).unwrap_err().message.contains("longer than 64"));
    }

    #[test]
    fn a_bad_complete_uri_is_dropped_and_the_code_still_works() {
        let d = parse(&answer(
            r#"{"device_code":"dc","user_code":"ABCD","verification_uri":"https://a.example/d","verification_uri_complete":"http://evil.example/?code=ABCD"}"#,
        ))
        .unwrap();
        assert_eq!(d.verification_uri_complete, None);
    }

    /// The fuzz target's checks, on its device seeds (written as `fuzz/fuzz_targets/upstream_answer.rs`
    /// reads them: two bytes of status, header lines, an empty line, the body).
    #[test]
    fn the_fuzz_checks_hold_for_the_device_seeds() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/upstream_answer");
        for name in ["device_authorization", "device_hostile"] {
            let data = std::fs::read(seeds.join(name)).unwrap();
            let (status, rest) = data.split_first_chunk::<2>().unwrap();
            let status = 100 + u16::from_be_bytes(*status) % 500;
            let end = rest.windows(2).position(|w| w == b"\n\n").unwrap();
            let (head, body) = (&rest[..end], &rest[end + 2..]);
            let headers: Vec<(&[u8], &[u8])> = head
                .split(|&b| b == b'\n')
                .filter_map(|line| {
                    let colon = line.iter().position(|&b| b == b':')?;
                    Some((&line[..colon], line[colon + 1..].trim_ascii_start()))
                })
                .collect();
            crate::oauth::fuzz_upstream_answer(status, &headers, body);
            let answer =
                Answer { status, content_type: None, location: None, retry_after: None, body: body.to_vec().into() };
            assert_eq!(parse(&answer).is_ok(), name == "device_authorization", "{name}");
        }
    }

    #[test]
    fn an_error_in_a_200_answer_is_an_error() {
        let err = parse(&answer(r#"{"error":"invalid_client","error_description":"unknown client"}"#)).unwrap_err();
        assert_eq!(err.error.as_deref(), Some("invalid_client"));
        assert!(err.is_permanent());
    }
}
