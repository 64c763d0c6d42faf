//! Authorization server metadata: finding a server's endpoints from its issuer identifier
//! (RFC 8414, and OpenID Connect Discovery 1.0, which most servers implement instead).
//!
//! Two documents are tried, in this order:
//!
//! 1. RFC 8414 §3.1: `/.well-known/oauth-authorization-server` inserted *between* the host and
//!    the issuer's path, so the issuer `https://as.example/tenant/a` is looked up at
//!    `https://as.example/.well-known/oauth-authorization-server/tenant/a`;
//! 2. OpenID Connect Discovery §4: `/.well-known/openid-configuration` *appended* to the issuer,
//!    `https://as.example/tenant/a/.well-known/openid-configuration`.
//!
//! A document is used only if its `issuer` is identical to the configured one (RFC 8414 §3.3;
//! otherwise a server could hand out endpoints for another). A refused or missing document moves
//! on to the next; when none is usable, the error names what each attempt found. The endpoints a
//! document lists are held to the same rules as endpoints in the config file (https, or http to
//! this machine only), and the answer is read like every other upstream answer: no redirects
//! followed, bounded in time and in size, and any shape of body turned into an error rather than
//! a panic.

use std::fmt;

use reqwest::header::ACCEPT;
use url::Url;

use super::{Answer, Http, MAX_BODY, UpstreamError, sanitize};
use crate::config::{Endpoints, check_endpoint};

/// A server's metadata, checked: the endpoints tokend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metadata {
    /// The issuer, identical to the configured one.
    pub issuer: String,
    /// The endpoints it lists.
    pub endpoints: Endpoints,
}

/// A metadata document found and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// What it says.
    pub metadata: Metadata,
    /// The document, as received (so it can be cached and checked again when read back).
    pub document: serde_json::Map<String, serde_json::Value>,
    /// Where it was found.
    pub url: Url,
}

/// Why no usable metadata was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiscoveryError {
    /// The issuer asked about.
    pub issuer: String,
    /// What each attempt found, in order.
    pub attempts: Vec<String>,
    /// Whether trying again later can help: the server could not be reached or failed, rather
    /// than answering with something tokend refuses.
    pub transient: bool,
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot discover the endpoints of issuer {}: {}", self.issuer, self.attempts.join("; then "))
    }
}

impl std::error::Error for DiscoveryError {}

/// Where in [`Endpoints`] a metadata field goes.
type Slot = fn(&mut Endpoints) -> &mut Option<Url>;

/// The metadata document fields tokend reads, and where each goes.
const FIELDS: &[(&str, Slot)] = &[
    ("token_endpoint", |e| &mut e.token),
    ("authorization_endpoint", |e| &mut e.authorization),
    ("device_authorization_endpoint", |e| &mut e.device_authorization),
    ("revocation_endpoint", |e| &mut e.revocation),
    ("userinfo_endpoint", |e| &mut e.info),
];

/// The URLs to look for `issuer`'s metadata at, in order: RFC 8414's, then OpenID Connect's.
pub(crate) fn well_known_urls(issuer: &str) -> Result<[Url; 2], String> {
    let url = Url::parse(issuer).map_err(|e| format!("the issuer {issuer:?} is not a URL: {e}"))?;
    let path = url.path().trim_end_matches('/').to_owned();
    let mut rfc8414 = url.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut openid = url;
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    Ok([rfc8414, openid])
}

/// Looks up `issuer`'s metadata: RFC 8414's document first, then OpenID Connect's.
pub(crate) async fn discover(http: &Http, issuer: &str) -> Result<Found, DiscoveryError> {
    let failed =
        |attempts: Vec<String>, transient: bool| DiscoveryError { issuer: issuer.to_owned(), attempts, transient };
    let urls = well_known_urls(issuer).map_err(|e| failed(vec![e], false))?;
    let mut attempts: Vec<(Vec<Url>, String)> = Vec::new();
    let mut transient = false;
    for url in urls {
        let why = match fetch(http, &url, issuer).await {
            Ok(found) => return Ok(found),
            Err(Attempt::Unusable(why)) => why,
            Err(Attempt::Unreachable(why)) => {
                transient = true;
                why
            }
        };
        // Both documents often fail the same way; say so once.
        match attempts.last_mut() {
            Some((urls, last)) if *last == why => urls.push(url),
            _ => attempts.push((vec![url], why)),
        }
    }
    let attempts = attempts
        .into_iter()
        .map(|(urls, why)| {
            let urls: Vec<String> = urls.iter().map(Url::to_string).collect();
            format!("{}: {why}", urls.join(" and "))
        })
        .collect();
    Err(failed(attempts, transient))
}

/// Why one document could not be used.
enum Attempt {
    /// The server could not be reached, timed out or failed (5xx, 429): may work later.
    Unreachable(String),
    /// The server answered with something that is not usable metadata for this issuer.
    Unusable(String),
}

async fn fetch(http: &Http, url: &Url, issuer: &str) -> Result<Found, Attempt> {
    const WHAT: &str = "the metadata endpoint";
    let response = http
        .client()
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| Attempt::Unreachable(UpstreamError::transport(WHAT, &e).message))?;
    let answer = Answer::read(WHAT, response, MAX_BODY).await.map_err(|e| match e.status {
        Some(_) => Attempt::Unusable(e.message),
        None => Attempt::Unreachable(e.message),
    })?;
    if !answer.is_success() {
        let error = answer.to_error(WHAT);
        let message = match answer.status {
            404 => "not found (HTTP 404)".to_owned(),
            _ => error.message,
        };
        return Err(if error.retry == super::Retry::Transient {
            Attempt::Unreachable(message)
        } else {
            Attempt::Unusable(message)
        });
    }
    let document = match serde_json::from_slice::<serde_json::Value>(&answer.body) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => return Err(Attempt::Unusable("the answer is JSON but not an object".into())),
        Err(_) => return Err(Attempt::Unusable("the answer is not JSON".into())),
    };
    let metadata = check(&document, issuer).map_err(|e| Attempt::Unusable(e.to_string()))?;
    Ok(Found { metadata, document, url: url.clone() })
}

/// Why a metadata document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadMetadata {
    /// It names another issuer (shown sanitized).
    #[error(
        "the metadata names issuer {named:?}, not {issuer:?}, so it is refused (RFC 8414 §3.3); if the server's issuer really is {named:?}, set `issuer` to exactly that"
    )]
    OtherIssuer { named: String, issuer: String },
    /// Its `issuer` is not a string.
    #[error("the metadata's `issuer` is not a string")]
    IssuerNotString,
    /// It has no `issuer`.
    #[error("the metadata has no `issuer`")]
    NoIssuer,
    /// An endpoint breaks the rules (the reason sanitized).
    #[error("the metadata's `{field}` is refused: {why}")]
    Endpoint { field: &'static str, why: String },
    /// An endpoint is not a string.
    #[error("the metadata's `{0}` is not a string")]
    EndpointNotString(&'static str),
}

/// Checks a metadata document against the configured `issuer` and the endpoint rules.
pub(crate) fn check(
    document: &serde_json::Map<String, serde_json::Value>,
    issuer: &str,
) -> Result<Metadata, BadMetadata> {
    match document.get("issuer") {
        Some(serde_json::Value::String(named)) if named == issuer => {}
        Some(serde_json::Value::String(named)) => {
            return Err(BadMetadata::OtherIssuer { named: sanitize(named), issuer: issuer.to_owned() });
        }
        Some(_) => return Err(BadMetadata::IssuerNotString),
        None => return Err(BadMetadata::NoIssuer),
    }
    let mut endpoints = Endpoints::default();
    for (field, slot) in FIELDS {
        match document.get(*field) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(text)) => {
                let url = check_endpoint(text)
                    .map_err(|why| BadMetadata::Endpoint { field, why: sanitize(&why.to_string()) })?;
                *slot(&mut endpoints) = Some(url);
            }
            Some(_) => return Err(BadMetadata::EndpointNotString(field)),
        }
    }
    Ok(Metadata { issuer: issuer.to_owned(), endpoints })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn an_issuer_without_a_path_gets_both_documents_at_the_root() {
        let [a, b] = well_known_urls("https://as.example").unwrap();
        assert_eq!(a.as_str(), "https://as.example/.well-known/oauth-authorization-server");
        assert_eq!(b.as_str(), "https://as.example/.well-known/openid-configuration");
        let [a, _] = well_known_urls("https://as.example/").unwrap();
        assert_eq!(a.as_str(), "https://as.example/.well-known/oauth-authorization-server");
    }

    #[test]
    fn rfc_8414_inserts_the_well_known_segment_before_the_issuer_path_and_oidc_appends_it() {
        let [a, b] = well_known_urls("https://as.example:8443/tenant/a").unwrap();
        assert_eq!(a.as_str(), "https://as.example:8443/.well-known/oauth-authorization-server/tenant/a");
        assert_eq!(b.as_str(), "https://as.example:8443/tenant/a/.well-known/openid-configuration");
        let [a, b] = well_known_urls("https://as.example/realms/x/").unwrap();
        assert_eq!(a.as_str(), "https://as.example/.well-known/oauth-authorization-server/realms/x");
        assert_eq!(b.as_str(), "https://as.example/realms/x/.well-known/openid-configuration");
    }

    #[test]
    fn a_document_for_the_issuer_yields_its_endpoints() {
        let m = check(
            &doc(serde_json::json!({
                "issuer": "https://as.example",
                "token_endpoint": "https://as.example/token",
                "authorization_endpoint": "https://as.example/auth",
                "device_authorization_endpoint": "https://as.example/device",
                "revocation_endpoint": "https://as.example/revoke",
                "userinfo_endpoint": "https://as.example/me",
                "jwks_uri": 42,
            })),
            "https://as.example",
        )
        .unwrap();
        assert_eq!(m.endpoints.token.unwrap().as_str(), "https://as.example/token");
        assert_eq!(m.endpoints.authorization.unwrap().as_str(), "https://as.example/auth");
        assert_eq!(m.endpoints.device_authorization.unwrap().as_str(), "https://as.example/device");
        assert_eq!(m.endpoints.revocation.unwrap().as_str(), "https://as.example/revoke");
        assert_eq!(m.endpoints.info.unwrap().as_str(), "https://as.example/me");
    }

    #[test]
    fn another_issuer_is_refused_even_if_it_differs_only_by_a_slash() {
        for named in ["https://evil.example", "https://as.example/"] {
            let err =
                check(&doc(serde_json::json!({ "issuer": named })), "https://as.example").unwrap_err().to_string();
            assert!(err.contains("RFC 8414 §3.3"), "{err}");
        }
        let err = check(&doc(serde_json::json!({ "token_endpoint": "https://x" })), "https://as.example")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `issuer`"), "{err}");
    }

    #[test]
    fn endpoints_are_held_to_the_config_rules() {
        for (bad, why) in [
            ("http://as.example/token", "plain http"),
            ("ftp://as.example/token", "not an https URL"),
            ("https://u:p@as.example/token", "credentials"),
            ("not a url", "invalid URL"),
        ] {
            let err = check(
                &doc(serde_json::json!({ "issuer": "https://as.example", "token_endpoint": bad })),
                "https://as.example",
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("token_endpoint") && err.contains(why), "{bad}: {err}");
        }
        let ok = check(
            &doc(serde_json::json!({ "issuer": "http://127.0.0.1:9", "token_endpoint": "http://127.0.0.1:9/t" })),
            "http://127.0.0.1:9",
        );
        assert!(ok.is_ok(), "http to this machine is allowed, as in the config");
    }

    #[test]
    fn odd_shapes_are_errors_not_panics() {
        for value in [
            serde_json::json!({ "issuer": 7 }),
            serde_json::json!({ "issuer": "https://as.example", "token_endpoint": ["https://as.example/t"] }),
            serde_json::json!({ "issuer": "https://as.example", "userinfo_endpoint": {} }),
        ] {
            assert!(check(&doc(value.clone()), "https://as.example").is_err(), "{value}");
        }
        let text = "\u{1b}[31m".repeat(200);
        let err = check(&doc(serde_json::json!({ "issuer": text })), "https://as.example").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "server text is sanitized");
    }
}
