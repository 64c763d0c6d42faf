//! The token endpoint: one function for every grant tokend uses.
//!
//! Requests follow RFC 6749 (§4.1.3 authorization code with RFC 7636 PKCE, §4.4 client
//! credentials, §6 refresh) and RFC 8628 §3.4 (the device code, polled by [`crate::login`]) with the profile's client authentication (§2.3.1): HTTP Basic with
//! the id and secret *form-urlencoded before* Base64, or both in the form body.
//!
//! Responses are read the way real servers write them, not only the way the RFC does:
//! `token_type` may be missing (LinkedIn, Slack, VK) or in any case; `expires_in` may be a
//! number, a float or a numeric string, or missing (then the access token's own `exp` claim
//! applies if it is a JWT, read but not verified by [`super::jwt`], and otherwise
//! `default_expires_in`); the
//! body may be JSON under any content type or form-encoded (GitHub without an `Accept`
//! header); `created_at` (Doorkeeper) and other extra fields are accepted. Expiry is counted
//! from when the request was *sent*, rounded down to the whole second (servers stamp tokens in
//! whole seconds, so a token issued at 10.9 s for 2 s may expire at 12 s), so the token is never
//! believed to live longer than it does, whatever the server's clock says.
//!
//! Leniency ends where safety starts: tokens and the token type must pass
//! [`crate::limits`] (no token longer than 16 KiB or outside RFC 6750's characters), and a
//! lifetime is clamped to a year and a day. An answer that fails is an [`UpstreamError`],
//! transient, that keeps any rotated refresh token it carried.
//!
//! The answer may also say when the refresh token, and with it the login, ends: Keycloak's
//! `refresh_expires_in` (where 0 means never), else the `exp` claim of a refresh token that is
//! a JWT. That becomes [`TokenSet::refresh_expiry`], for the warning before a login expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use tokend_proto::{LoginExpirySource, Secret};

use super::{Answer, Fields, Http, MAX_BODY, UpstreamError, jwt};
use crate::config::{ClientAuth, Profile};
use crate::limits;

/// What the token endpoint is asked for.
pub(crate) enum TokenGrant<'a> {
    /// `grant_type=client_credentials`.
    ClientCredentials,
    /// `grant_type=authorization_code`, with the PKCE verifier.
    AuthorizationCode {
        /// The code from the redirect.
        code: &'a Secret,
        /// The PKCE code verifier.
        verifier: &'a Secret,
    },
    /// `grant_type=refresh_token`.
    RefreshToken(&'a Secret),
    /// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4).
    DeviceCode(&'a Secret),
}

/// A successful token response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// The token type, `Bearer` when the server did not say.
    pub token_type: String,
    /// When the request that obtained it was sent.
    pub obtained_at: SystemTime,
    /// When it expires: `obtained_at` plus `expires_in`.
    pub expires_at: SystemTime,
    /// A new refresh token, if the server issued one.
    pub refresh_token: Option<Secret>,
    /// The granted scope, if the server said.
    pub scope: Option<String>,
    /// When the refresh token ends, if the answer said (grants with refresh tokens only).
    pub refresh_expiry: Option<RefreshExpiry>,
}

/// When a refresh token ends, as a token answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefreshExpiry {
    /// When it stops working.
    pub expires_at: SystemTime,
    /// How long it lives in all, for the time of the warning.
    pub lifetime: Duration,
    /// Which part of the answer said so.
    pub source: LoginExpirySource,
}

impl TokenSet {
    /// How long the token lives in all.
    pub(crate) fn lifetime(&self) -> Duration {
        self.expires_at.duration_since(self.obtained_at).unwrap_or_default()
    }
}

/// Asks the profile's token endpoint for a token.
pub(crate) async fn request(http: &Http, profile: &Profile, grant: TokenGrant<'_>) -> Result<TokenSet, UpstreamError> {
    let mut form: Vec<(&str, &str)> = Vec::with_capacity(8);
    let scope = profile.scope_param();
    match &grant {
        TokenGrant::ClientCredentials => {
            form.push(("grant_type", "client_credentials"));
            if let Some(scope) = &scope {
                form.push(("scope", scope));
            }
        }
        TokenGrant::AuthorizationCode { code, verifier } => {
            form.push(("grant_type", "authorization_code"));
            form.push(("code", code.expose()));
            form.push(("code_verifier", verifier.expose()));
            if let Some(redirect) = &profile.redirect_uri {
                form.push(("redirect_uri", redirect.as_str()));
            }
        }
        TokenGrant::RefreshToken(refresh_token) => {
            form.push(("grant_type", "refresh_token"));
            form.push(("refresh_token", refresh_token.expose()));
        }
        TokenGrant::DeviceCode(device_code) => {
            form.push(("grant_type", "urn:ietf:params:oauth:grant-type:device_code"));
            form.push(("device_code", device_code.expose()));
        }
    }
    for (key, value) in &profile.token_params {
        form.push((key, value));
    }

    let Some(token_url) = profile.token_url() else {
        return Err(UpstreamError::unresolved("the token endpoint"));
    };
    let mut builder = http.client().post(token_url.clone()).header(ACCEPT, "application/json");
    builder = authenticate(builder, profile, &mut form);
    let sent_at = SystemTime::now();
    let response = builder.form(&form).send().await.map_err(|e| UpstreamError::transport("the token endpoint", &e))?;
    let answer = Answer::read("the token endpoint", response, MAX_BODY).await?;
    if !answer.is_success() {
        return Err(answer.to_error("the token endpoint"));
    }
    let keeps_refresh_tokens = profile.grant.has_login();
    parse(&answer, sent_at, profile.default_expires_in, keeps_refresh_tokens)
}

/// Adds the client's credentials to a request, per the profile's `client_auth`. Also used for
/// revocation, which authenticates the same way (RFC 7009 §2.1).
pub(crate) fn authenticate<'a>(
    builder: reqwest::RequestBuilder,
    profile: &'a Profile,
    form: &mut Vec<(&'a str, &'a str)>,
) -> reqwest::RequestBuilder {
    match (&profile.client_secret, profile.client_auth) {
        (Some(secret), ClientAuth::Basic) => builder.header(AUTHORIZATION, basic_auth(&profile.client_id, secret)),
        (Some(secret), ClientAuth::Post) => {
            form.push(("client_id", &profile.client_id));
            form.push(("client_secret", secret.expose()));
            builder
        }
        (None, _) => {
            form.push(("client_id", &profile.client_id));
            builder
        }
    }
}

/// RFC 6749 §2.3.1: the id and secret are form-urlencoded, joined by a colon, then Base64'd.
fn basic_auth(client_id: &str, secret: &Secret) -> HeaderValue {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = zeroize::Zeroizing::new(format!("{}:{}", encode(client_id), encode(secret.expose())));
    let encoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes()));
    let mut value =
        HeaderValue::from_str(&format!("Basic {}", encoded.as_str())).expect("Base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// Reads a 2xx token response. `keeps_refresh_tokens`: whether the profile's grant uses refresh
/// tokens, so that an unusable one makes the answer unusable (otherwise it is ignored).
pub(super) fn parse(
    answer: &Answer,
    sent_at: SystemTime,
    default_expires_in: Duration,
    keeps_refresh_tokens: bool,
) -> Result<TokenSet, UpstreamError> {
    let malformed = |what: String| {
        let kind = answer.content_type.as_deref().map(super::sanitize).unwrap_or_else(|| "no content type".into());
        UpstreamError::malformed(
            answer.status,
            format!("the token endpoint answered HTTP {} {what} ({kind}, {} bytes)", answer.status, answer.body.len()),
        )
    };
    let Some(mut fields) = Fields::parse(&answer.body) else {
        return Err(malformed("with a body that is neither JSON nor form-encoded".into()));
    };
    // Some servers answer 200 with an error object.
    if let Some(error) = fields.string("error") {
        let description = fields.string("error_description").map(|d| super::sanitize(&d));
        let error = super::sanitize(&error);
        let retry = super::classify(400, Some(&error));
        return Err(UpstreamError {
            retry,
            status: Some(answer.status),
            message: format!("the token endpoint answered HTTP {} with an error", answer.status),
            error: Some(error),
            description,
            retry_after: answer.retry_after,
            rotated_refresh_token: None,
        });
    }
    // The refresh token first: an answer unusable for any other reason must still hand back a
    // rotated one, which the server has already put in place of the old.
    let refresh_token = match fields.string("refresh_token").map(|t| t.trim().to_owned()) {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(t) => match limits::check_token(&t) {
            Ok(()) => Some(Secret::new(t)),
            Err(why) if keeps_refresh_tokens => return Err(malformed(format!("with an unusable refresh_token {why}"))),
            Err(why) => {
                tracing::debug!("ignoring the token response's refresh_token {why}; this grant does not use one");
                None
            }
        },
    };
    let unusable = |error: UpstreamError| UpstreamError {
        rotated_refresh_token: refresh_token.clone().filter(|_| keeps_refresh_tokens),
        ..error
    };
    let access_token = match fields.string("access_token").map(|t| t.trim().to_owned()) {
        Some(token) if !token.is_empty() => {
            limits::check_token(&token)
                .map_err(|why| unusable(malformed(format!("with an unusable access_token {why}"))))?;
            Secret::new(token)
        }
        _ => return Err(unusable(malformed("without an access_token".into()))),
    };
    let token_type = match fields.string("token_type").map(|t| t.trim().to_owned()) {
        Some(t) if t.eq_ignore_ascii_case("bearer") || t.is_empty() => "Bearer".to_owned(),
        Some(t) => {
            limits::check_token_type(&t)
                .map_err(|why| unusable(malformed(format!("with an unusable token_type {why}"))))?;
            t
        }
        None => "Bearer".to_owned(),
    };
    let whole_second =
        UNIX_EPOCH + Duration::from_secs(sent_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let lifetime = match fields.seconds("expires_in") {
        Ok(Some(secs)) if secs > 0 => Duration::from_secs(secs),
        Ok(_) => jwt_lifetime(&access_token, whole_second).unwrap_or(default_expires_in),
        Err(why) => jwt_lifetime(&access_token, whole_second).unwrap_or_else(|| {
            tracing::warn!(
                "ignoring the token response's expires_in ({why}); assuming {}",
                humantime::format_duration(default_expires_in)
            );
            default_expires_in
        }),
    };
    if lifetime > limits::MAX_LIFETIME {
        tracing::info!(
            "the token endpoint says the token lives {}; tokend believes at most {} and refreshes it before then",
            humantime::format_duration(lifetime),
            humantime::format_duration(limits::MAX_LIFETIME)
        );
    }
    let scope = fields.scope("scope").map(|s| super::sanitize(&s));
    let refresh_expiry =
        if keeps_refresh_tokens { refresh_expiry(&mut fields, refresh_token.as_ref(), whole_second) } else { None };
    Ok(TokenSet {
        access_token,
        token_type,
        obtained_at: sent_at,
        expires_at: limits::after(whole_second, limits::lifetime(lifetime)),
        refresh_token,
        scope,
        refresh_expiry,
    })
}

/// How long an access token lives by its own `exp` claim, counted from `issued`, when it is a
/// JWT with a usable one. Used only when the answer has no usable `expires_in`.
fn jwt_lifetime(access_token: &Secret, issued: SystemTime) -> Option<Duration> {
    let exp = match jwt::read(access_token.expose()) {
        jwt::Read::NotJwt | jwt::Read::Claims(jwt::Claims { exp: None, .. }) => return None,
        jwt::Read::Unusable(why) => {
            tracing::warn!(
                "the access token looks like a JWT, but {why}; scheduling its refresh by default_expires_in"
            );
            return None;
        }
        jwt::Read::Claims(jwt::Claims { exp: Some(exp), .. }) => exp,
    };
    match exp.duration_since(issued) {
        Ok(lifetime) if !lifetime.is_zero() => Some(lifetime),
        _ => {
            tracing::warn!(
                "the access token's exp claim ({}) is not after the time it was issued (is a clock wrong?); scheduling its refresh by default_expires_in",
                tokend_proto::time::rfc3339(exp)
            );
            None
        }
    }
}

/// When the refresh token ends, if the answer says: `refresh_expires_in` (Keycloak; 0 means
/// it does not expire), else the `exp` claim of a refresh token that is a JWT. Counted from
/// `issued`, like `expires_in`, and clamped like it.
fn refresh_expiry(fields: &mut Fields, refresh_token: Option<&Secret>, issued: SystemTime) -> Option<RefreshExpiry> {
    let stated = |lifetime: Duration, source| {
        let lifetime = limits::lifetime(lifetime);
        Some(RefreshExpiry { expires_at: limits::after(issued, lifetime), lifetime, source })
    };
    match fields.seconds("refresh_expires_in") {
        Ok(Some(secs)) if secs > 0 => return stated(Duration::from_secs(secs), LoginExpirySource::RefreshExpiresIn),
        Ok(Some(_)) => return None,
        Ok(None) => {}
        Err(why) => tracing::warn!("ignoring the token response's refresh_expires_in ({why})"),
    }
    let claims = match jwt::read(refresh_token?.expose()) {
        jwt::Read::NotJwt => return None,
        jwt::Read::Unusable(why) => {
            tracing::warn!("the refresh token looks like a JWT, but {why}; its expiry is not known");
            return None;
        }
        jwt::Read::Claims(claims) => claims,
    };
    let exp = claims.exp?;
    let Ok(left) = exp.duration_since(issued) else {
        tracing::warn!(
            "the refresh token's exp claim ({}) is in the past (is a clock wrong?); its expiry is not known",
            tokend_proto::time::rfc3339(exp)
        );
        return None;
    };
    let lifetime = claims.iat.and_then(|iat| exp.duration_since(iat).ok()).filter(|l| *l >= left).unwrap_or(left);
    let lifetime = limits::lifetime(lifetime);
    Some(RefreshExpiry {
        expires_at: limits::after(issued, limits::lifetime(left)),
        lifetime,
        source: LoginExpirySource::RefreshTokenExp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Retry;

    fn answer(status: u16, content_type: &str, body: &str) -> Answer {
        Answer {
            status,
            content_type: Some(content_type.into()),
            location: None,
            retry_after: None,
            body: zeroize::Zeroizing::new(body.as_bytes().to_vec()),
        }
    }

    const SENT: SystemTime = SystemTime::UNIX_EPOCH;
    const DEFAULT: Duration = Duration::from_secs(7200);

    #[test]
    fn a_standard_response_is_read() {
        let set = parse(
            &answer(200, "application/json", r#"{"access_token":"at","token_type":"Bearer","expires_in":3600}"#),
            SENT,
            DEFAULT,
            true,
        )
        .unwrap();
        assert_eq!(set.access_token.expose(), "at");
        assert_eq!(set.token_type, "Bearer");
        assert_eq!(set.expires_at, SENT + Duration::from_secs(3600));
        assert_eq!(set.refresh_token, None);
    }

    #[test]
    fn a_doorkeeper_response_with_created_at_and_refresh_token_is_read() {
        let body = r#"{"access_token":"at","token_type":"bearer","expires_in":7200,"refresh_token":"rt","scope":"public","created_at":1700000000}"#;
        let set = parse(&answer(200, "application/json; charset=utf-8", body), SENT, DEFAULT, true).unwrap();
        assert_eq!(set.token_type, "Bearer");
        assert_eq!(set.refresh_token.unwrap().expose(), "rt");
        assert_eq!(set.scope.as_deref(), Some("public"));
    }

    #[test]
    fn expiry_counts_from_the_whole_second_the_request_was_sent_in() {
        let sent = SENT + Duration::from_millis(10_900);
        let set =
            parse(&answer(200, "application/json", r#"{"access_token":"at","expires_in":2}"#), sent, DEFAULT, true)
                .unwrap();
        assert_eq!(set.expires_at, SENT + Duration::from_secs(12));
        assert_eq!(set.obtained_at, sent);
    }

    #[test]
    fn token_type_may_be_missing() {
        let set =
            parse(&answer(200, "application/json", r#"{"access_token":"at","expires_in":60}"#), SENT, DEFAULT, true)
                .unwrap();
        assert_eq!(set.token_type, "Bearer");
    }

    #[test]
    fn expires_in_may_be_a_string_or_a_float() {
        for value in [r#""3600""#, "3600.0", r#"" 3600 ""#] {
            let body = format!(r#"{{"access_token":"at","expires_in":{value}}}"#);
            let set = parse(&answer(200, "application/json", &body), SENT, DEFAULT, true).unwrap();
            assert_eq!(set.lifetime(), Duration::from_secs(3600), "{value}");
        }
    }

    #[test]
    fn a_missing_or_unusable_expires_in_falls_back_to_the_default() {
        for body in [
            r#"{"access_token":"at"}"#,
            r#"{"access_token":"at","expires_in":null}"#,
            r#"{"access_token":"at","expires_in":0}"#,
            r#"{"access_token":"at","expires_in":"soon"}"#,
        ] {
            let set = parse(&answer(200, "application/json", body), SENT, DEFAULT, true).unwrap();
            assert_eq!(set.lifetime(), DEFAULT, "{body}");
        }
    }

    #[test]
    fn json_under_an_odd_content_type_is_read() {
        let set =
            parse(&answer(200, "text/plain", r#"{"access_token":"at","expires_in":5}"#), SENT, DEFAULT, true).unwrap();
        assert_eq!(set.access_token.expose(), "at");
    }

    #[test]
    fn a_form_encoded_response_is_read() {
        let set = parse(
            &answer(
                200,
                "application/x-www-form-urlencoded",
                "access_token=gho_abc&scope=repo%2Cgist&token_type=bearer",
            ),
            SENT,
            DEFAULT,
            true,
        )
        .unwrap();
        assert_eq!(set.access_token.expose(), "gho_abc");
        assert_eq!(set.scope.as_deref(), Some("repo,gist"));
    }

    #[test]
    fn scope_may_be_a_list() {
        let set =
            parse(&answer(200, "application/json", r#"{"access_token":"at","scope":["a","b"]}"#), SENT, DEFAULT, true)
                .unwrap();
        assert_eq!(set.scope.as_deref(), Some("a b"));
    }

    #[test]
    fn garbage_with_status_200_is_a_transient_error_that_reveals_nothing() {
        let err = parse(&answer(200, "text/html", "<html>oops access_token</html>"), SENT, DEFAULT, true).unwrap_err();
        assert_eq!(err.retry, Retry::Transient);
        assert!(err.message.contains("neither JSON nor form-encoded"), "{err}");
        assert!(!err.message.contains("oops"), "{err}");
        let err = parse(&answer(200, "application/json", r#"{"token":"x"}"#), SENT, DEFAULT, true).unwrap_err();
        assert!(err.message.contains("without an access_token"), "{err}");
    }

    #[test]
    fn an_error_object_with_status_200_is_an_error() {
        let err =
            parse(&answer(200, "application/json", r#"{"error":"invalid_grant"}"#), SENT, DEFAULT, true).unwrap_err();
        assert!(err.is_invalid_grant());
        assert!(err.is_permanent());
    }

    #[test]
    fn tokens_that_cannot_be_served_make_the_answer_unusable_and_transient() {
        let long = "a".repeat(70_000);
        for (body, why) in [
            (format!(r#"{{"access_token":"{long}"}}"#), "unusable access_token of 70000 bytes"),
            (r#"{"access_token":"at\r\nX-Injected: 1"}"#.to_owned(), "unusable access_token containing a line break"),
            (r#"{"access_token":"at","token_type":"Bearer\nX: y"}"#.to_owned(), "unusable token_type"),
            (r#"{"access_token":"at","refresh_token":"rt rt"}"#.to_owned(), "unusable refresh_token"),
        ] {
            let err = parse(&answer(200, "application/json", &body), SENT, DEFAULT, true).unwrap_err();
            assert_eq!(err.retry, Retry::Transient, "{body}");
            assert!(err.message.contains(why), "{err}");
            assert!(!err.message.contains("X-Injected") && !err.message.contains("aaaa"), "{err}");
        }
    }

    #[test]
    fn a_rotated_refresh_token_comes_back_with_an_unusable_access_token() {
        let body = r#"{"access_token":"at\n","refresh_token":"rt-new","expires_in":60}"#;
        let set = parse(&answer(200, "application/json", body), SENT, DEFAULT, true).unwrap();
        assert_eq!(set.access_token.expose(), "at", "surrounding white space is trimmed");
        let body = r#"{"access_token":"a t","refresh_token":"rt-new"}"#;
        let err = parse(&answer(200, "application/json", body), SENT, DEFAULT, true).unwrap_err();
        assert_eq!(err.rotated_refresh_token.as_ref().unwrap().expose(), "rt-new");
        assert!(!format!("{err:?} {err}").contains("rt-new"));
        let err = parse(&answer(200, "application/json", body), SENT, DEFAULT, false).unwrap_err();
        assert_eq!(err.rotated_refresh_token, None, "a grant without refresh tokens keeps none");
    }

    #[test]
    fn a_refresh_token_a_grant_does_not_use_is_ignored_when_unusable() {
        let body = r#"{"access_token":"at","refresh_token":"r\nt"}"#;
        let set = parse(&answer(200, "application/json", body), SENT, DEFAULT, false).unwrap();
        assert_eq!(set.refresh_token, None);
    }

    #[test]
    fn lifetimes_too_long_for_a_clock_are_clamped() {
        let now = SystemTime::now();
        for value in ["9223372036854775808", "18446744073709551616", "1e300", "1e12", r#""1e400""#, r#""inf""#] {
            let body = format!(r#"{{"access_token":"at","expires_in":{value}}}"#);
            let set = parse(&answer(200, "application/json", &body), now, DEFAULT, true).unwrap();
            assert!(set.lifetime() <= limits::MAX_LIFETIME, "{value}");
            assert!(set.lifetime() > limits::MAX_LIFETIME - Duration::from_secs(1), "{value}");
        }
        let body = r#"{"access_token":"at","expires_in":"NaN"}"#;
        let set = parse(&answer(200, "application/json", body), now, DEFAULT, true).unwrap();
        assert!(set.lifetime() > DEFAULT - Duration::from_secs(1), "NaN is not a lifetime: the default applies");
    }

    fn jwt(payload: &str) -> String {
        let part = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", part(r#"{"alg":"RS256"}"#), part(payload))
    }

    const NOW: u64 = 1_700_000_000;

    fn sent() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn without_expires_in_a_jwt_access_token_is_scheduled_by_its_exp() {
        let token = jwt(&format!(r#"{{"exp":{}}}"#, NOW + 900));
        let set =
            parse(&answer(200, "application/json", &format!(r#"{{"access_token":"{token}"}}"#)), sent(), DEFAULT, true)
                .unwrap();
        assert_eq!(set.lifetime(), Duration::from_secs(900));
        let body = format!(r#"{{"access_token":"{token}","expires_in":60}}"#);
        let set = parse(&answer(200, "application/json", &body), sent(), DEFAULT, true).unwrap();
        assert_eq!(set.lifetime(), Duration::from_secs(60), "expires_in wins");
    }

    #[test]
    fn a_jwt_exp_in_the_past_absurd_or_garbage_falls_back_or_is_clamped() {
        for payload in [
            format!(r#"{{"exp":{}}}"#, NOW - 10),
            format!(r#"{{"exp":{NOW}}}"#),
            r#"{"exp":"soon"}"#.to_owned(),
            r#"{"exp":1e300}"#.to_owned(),
            r#"{"sub":"no exp"}"#.to_owned(),
        ] {
            let body = format!(r#"{{"access_token":"{}"}}"#, jwt(&payload));
            let set = parse(&answer(200, "application/json", &body), sent(), DEFAULT, true).unwrap();
            assert_eq!(set.lifetime(), DEFAULT, "{payload}");
        }
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(r#"{"exp":253402300799}"#));
        let set = parse(&answer(200, "application/json", &body), sent(), DEFAULT, true).unwrap();
        assert_eq!(set.lifetime(), limits::MAX_LIFETIME, "a far exp is clamped like a far expires_in");
    }

    #[test]
    fn refresh_expires_in_says_when_the_login_ends() {
        let body = r#"{"access_token":"at","expires_in":300,"refresh_token":"rt","refresh_expires_in":1800}"#;
        let expiry =
            parse(&answer(200, "application/json", body), sent(), DEFAULT, true).unwrap().refresh_expiry.unwrap();
        assert_eq!(expiry.expires_at, sent() + Duration::from_secs(1800));
        assert_eq!(expiry.lifetime, Duration::from_secs(1800));
        assert_eq!(expiry.source, LoginExpirySource::RefreshExpiresIn);
        // Keycloak's offline tokens: 0 means the refresh token does not expire.
        let body = r#"{"access_token":"at","refresh_token":"rt","refresh_expires_in":0}"#;
        assert_eq!(parse(&answer(200, "application/json", body), sent(), DEFAULT, true).unwrap().refresh_expiry, None);
        let body = r#"{"access_token":"at","refresh_token":"rt","refresh_expires_in":"never"}"#;
        assert_eq!(parse(&answer(200, "application/json", body), sent(), DEFAULT, true).unwrap().refresh_expiry, None);
        let body = r#"{"access_token":"at","refresh_expires_in":1800}"#;
        assert_eq!(
            parse(&answer(200, "application/json", body), sent(), DEFAULT, false).unwrap().refresh_expiry,
            None,
            "a grant without refresh tokens has no login"
        );
    }

    #[test]
    fn otherwise_a_jwt_refresh_token_says_when_the_login_ends() {
        let rt = jwt(&format!(r#"{{"exp":{},"iat":{}}}"#, NOW + 3600, NOW - 600));
        let body = format!(r#"{{"access_token":"at","refresh_token":"{rt}"}}"#);
        let expiry =
            parse(&answer(200, "application/json", &body), sent(), DEFAULT, true).unwrap().refresh_expiry.unwrap();
        assert_eq!(expiry.expires_at, sent() + Duration::from_secs(3600));
        assert_eq!(expiry.lifetime, Duration::from_secs(4200), "counted from iat");
        assert_eq!(expiry.source, LoginExpirySource::RefreshTokenExp);
        let body = format!(r#"{{"access_token":"at","refresh_token":"{rt}","refresh_expires_in":60}}"#);
        let expiry =
            parse(&answer(200, "application/json", &body), sent(), DEFAULT, true).unwrap().refresh_expiry.unwrap();
        assert_eq!(expiry.source, LoginExpirySource::RefreshExpiresIn, "refresh_expires_in wins");
        for payload in [format!(r#"{{"exp":{}}}"#, NOW - 1), r#"{"exp":[]}"#.to_owned()] {
            let body = format!(r#"{{"access_token":"at","refresh_token":"{}"}}"#, jwt(&payload));
            let set = parse(&answer(200, "application/json", &body), sent(), DEFAULT, true).unwrap();
            assert_eq!(set.refresh_expiry, None, "{payload}");
            assert!(set.refresh_token.is_some(), "the refresh token itself is kept");
        }
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_before_base64() {
        let value = basic_auth("my client", &Secret::from("p@ss:wörd"));
        let text = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "my+client:p%40ss%3Aw%C3%B6rd");
        assert!(value.is_sensitive());
    }
}
