//! The info endpoint: a GET with the access token that describes the token or its owner
//! (Minut's `/v8/users/me`, Doorkeeper's `/oauth/token/info`).
//!
//! The answer is passed on to `tokenctl info` in one frame, so a body larger than
//! [`MAX_INFO_BODY`] bytes of text is an upstream error rather than a frame that cannot be sent.
//! The body is passed on as it came (control characters and all): escaping it for a terminal
//! is the client's job, and scripts get what the server sent.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use tokend_proto::Secret;
use url::Url;

use super::{Answer, Http, UpstreamError};
use crate::limits::MAX_INFO_BODY;

/// What the info endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InfoAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// GETs `url` with `token` as a bearer token. Any HTTP answer is returned, so that the caller
/// can react to a 401; only transport failures are errors.
pub(crate) async fn fetch(http: &Http, url: &Url, token: &Secret) -> Result<InfoAnswer, UpstreamError> {
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
    let answer = Answer::read("the info endpoint", response, MAX_INFO_BODY).await?;
    InfoAnswer::from_answer(&answer)
}

impl InfoAnswer {
    /// The answer as text. Bytes that are not UTF-8 become U+FFFD, which can triple the size,
    /// so the limit is checked again on the text.
    pub(super) fn from_answer(answer: &Answer) -> Result<InfoAnswer, UpstreamError> {
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        if body.len() > MAX_INFO_BODY {
            return Err(UpstreamError::malformed(
                answer.status,
                format!(
                    "the info endpoint sent a response that is not UTF-8 text, and as text it is larger than {} KiB",
                    MAX_INFO_BODY / 1024
                ),
            ));
        }
        Ok(InfoAnswer { status: answer.status, body })
    }
}
