//! RFC 7009 token revocation, authenticated like token requests.
//!
//! The Movemint-style API takes `token`, `client_id` and `client_secret` in the body, which is
//! `client_auth = "post"`; servers that want HTTP Basic get it with the default.

use reqwest::header::ACCEPT;
use tokend_proto::Secret;
use url::Url;

use super::{Answer, Http, MAX_BODY, UpstreamError};
use crate::config::Profile;

/// Which kind of token is being revoked (RFC 7009 §2.1 `token_type_hint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// A refresh token; most servers then revoke its access tokens too.
    RefreshToken,
    /// An access token.
    AccessToken,
}

/// Asks the server at `url` to revoke `token`. The server answers 200 even for tokens it does
/// not know (RFC 7009 §2.2), so any 2xx is success.
pub(crate) async fn revoke(
    http: &Http,
    profile: &Profile,
    url: &Url,
    token: &Secret,
    hint: Hint,
) -> Result<(), UpstreamError> {
    let hint = match hint {
        Hint::RefreshToken => "refresh_token",
        Hint::AccessToken => "access_token",
    };
    let mut form: Vec<(&str, &str)> = vec![("token", token.expose()), ("token_type_hint", hint)];
    let builder = http.client().post(url.clone()).header(ACCEPT, "application/json");
    let builder = super::token::authenticate(builder, profile, &mut form);
    let response =
        builder.form(&form).send().await.map_err(|e| UpstreamError::transport("the revocation endpoint", &e))?;
    let answer = Answer::read("the revocation endpoint", response, MAX_BODY).await?;
    if answer.is_success() { Ok(()) } else { Err(answer.to_error("the revocation endpoint")) }
}
