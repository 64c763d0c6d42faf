//! The info endpoint: a GET with the access token that describes the token or its owner
//! (Minut's `/v8/users/me`, Doorkeeper's `/oauth/token/info`).

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use tokend_proto::Secret;
use url::Url;

use super::{Answer, Http, UpstreamError};

/// What the info endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// GETs `url` with `token` as a bearer token. Any HTTP answer is returned, so that the caller
/// can react to a 401; only transport failures are errors.
pub async fn fetch(http: &Http, url: &Url, token: &Secret) -> Result<InfoAnswer, UpstreamError> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| UpstreamError::malformed(0, "the access token cannot be sent in an HTTP header".into()))?;
    auth.set_sensitive(true);
    let response = http
        .client()
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .header(AUTHORIZATION, auth)
        .send()
        .await
        .map_err(|e| UpstreamError::transport("the info endpoint", &e))?;
    let answer = Answer::read("the info endpoint", response).await?;
    Ok(InfoAnswer { status: answer.status, body: String::from_utf8_lossy(&answer.body).into_owned() })
}
