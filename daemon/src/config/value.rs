//! Config values that check themselves while being deserialized, so that the TOML parser
//! reports a bad value with its line, like any other syntax error.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use tokend_proto::Grant;
use url::{Host, Url};

/// A duration written the humantime way (`"90s"`, `"5m"`, `"1h 30m"`) or as whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"90s\", \"5m\" or \"1h 30m\", or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v.trim()).map(HumanDuration).map_err(|e| {
                    E::custom(format!("invalid duration {v:?} ({e}); write it like \"90s\", \"5m\" or \"1h 30m\""))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map(|s| HumanDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
        }
        let HumanDuration(d) = deserializer.deserialize_any(V)?;
        if d > MAX_DURATION {
            return Err(de::Error::custom("must be at most 100 years"));
        }
        Ok(HumanDuration(d))
    }
}

/// The longest duration any key takes: far beyond any sensible setting, and far enough from
/// the limits of time arithmetic that adding it to a date can never overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A [`HumanDuration`] that must be longer than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PositiveDuration(pub Duration);

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let HumanDuration(d) = HumanDuration::deserialize(deserializer)?;
        if d.is_zero() {
            return Err(de::Error::custom("must be longer than zero"));
        }
        Ok(PositiveDuration(d))
    }
}

/// A positive whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Positive(pub usize);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        match usize::try_from(n) {
            Ok(n) if n > 0 => Ok(Positive(n)),
            _ => Err(de::Error::custom("must be a positive whole number")),
        }
    }
}

/// The `grant` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawGrant(pub Grant);

impl<'de> Deserialize<'de> for RawGrant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "client_credentials" => Ok(RawGrant(Grant::ClientCredentials)),
            "authorization_code" => Ok(RawGrant(Grant::AuthorizationCode)),
            "device_code" => Ok(RawGrant(Grant::DeviceCode)),
            other => Err(de::Error::custom(format!(
                "unknown grant {other:?}; use \"client_credentials\", \"authorization_code\" or \"device_code\""
            ))),
        }
    }
}

/// A non-empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NonEmpty(pub String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(NonEmpty(text))
    }
}

/// One OAuth scope: no spaces, since scopes travel space-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Scope(pub String);

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\') {
            return Err(de::Error::custom(format!(
                "invalid scope {text:?}: write each scope as its own string, e.g. scopes = [\"read\", \"write\"]"
            )));
        }
        Ok(Scope(text))
    }
}

/// A log filter understood by tracing-subscriber (`info`, `debug`, `tokend=trace`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogLevel(pub String);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<tracing_subscriber::filter::Targets>().map_err(|e| {
            de::Error::custom(format!("invalid log level {text:?}: {e}; use error, warn, info, debug or trace"))
        })?;
        Ok(LogLevel(text))
    }
}

/// Whether `host` is this machine: 127.0.0.0/8, ::1 or `localhost`.
pub(super) fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// An OAuth server endpoint: https, or http to this machine only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EndpointUrl(pub Url);

impl<'de> Deserialize<'de> for EndpointUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let url = Url::parse(text.trim()).map_err(|e| de::Error::custom(format!("invalid URL {text:?}: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(de::Error::custom(
                "credentials in the URL are not allowed; use client_id and a client_secret source",
            ));
        }
        check_endpoint(&text).map(EndpointUrl).map_err(de::Error::custom)
    }
}

/// An authorization server's issuer identifier (RFC 8414 §2): an https URL (http only for this
/// machine) with no query or fragment. Kept exactly as written, because the server's metadata
/// and its redirects must name it identically (RFC 8414 §3.3, RFC 9207).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IssuerUrl(pub String);

impl<'de> Deserialize<'de> for IssuerUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let issuer = text.trim();
        let url = Url::parse(issuer).map_err(|e| {
            de::Error::custom(format!(
                "invalid issuer {text:?}: {e}; it is a URL such as \"https://login.example.com\""
            ))
        })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(de::Error::custom(format!(
                "{text:?} has a query or #fragment, which an issuer must not have (RFC 8414 §2)"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(de::Error::custom("credentials in the issuer URL are not allowed"));
        }
        match url.scheme() {
            "https" if url.host().is_some() => Ok(IssuerUrl(issuer.to_owned())),
            "http" if is_loopback(url.host()) => Ok(IssuerUrl(issuer.to_owned())),
            _ => Err(de::Error::custom(format!(
                "{text:?} is not an https URL; an issuer is https (http is allowed only for 127.0.0.1, ::1 and localhost)"
            ))),
        }
    }
}

/// Why an endpoint URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadEndpoint {
    /// Not a URL.
    #[error("invalid URL {0:?}: {1}")]
    Invalid(String, url::ParseError),
    /// It has a fragment.
    #[error("{0:?} has a #fragment, which an endpoint URL must not have")]
    Fragment(String),
    /// It has a user name or password.
    #[error("{0:?} carries credentials, which an endpoint URL must not")]
    Credentials(String),
    /// Plain http to another machine.
    #[error(
        "{0:?} uses plain http; tokens may only travel over https (http is allowed only for 127.0.0.1, ::1 and localhost)"
    )]
    PlainHttp(String),
    /// Some other scheme.
    #[error("{0:?} is not an https URL")]
    NotHttps(String),
}

/// Checks an endpoint URL by the rules [`EndpointUrl`] applies to the config file, for URLs that
/// come from elsewhere (a server's metadata).
pub(crate) fn check_endpoint(text: &str) -> Result<Url, BadEndpoint> {
    let url = Url::parse(text.trim()).map_err(|e| BadEndpoint::Invalid(text.to_owned(), e))?;
    if url.fragment().is_some() {
        return Err(BadEndpoint::Fragment(text.to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BadEndpoint::Credentials(text.to_owned()));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(url.host()) => Ok(url),
        "http" => Err(BadEndpoint::PlainHttp(text.to_owned())),
        _ => Err(BadEndpoint::NotHttps(text.to_owned())),
    }
}

/// `api_base`: the API a profile's token is for, which the proxy sends requests to. An
/// [`EndpointUrl`] without a query, so that a proxied path and query join it unambiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiBase(pub Url);

impl<'de> Deserialize<'de> for ApiBase {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let EndpointUrl(url) = EndpointUrl::deserialize(deserializer)?;
        if url.query().is_some() {
            return Err(de::Error::custom(format!(
                "{:?} has a ?query, which api_base must not have: proxied requests bring their own",
                url.as_str()
            )));
        }
        Ok(ApiBase(url))
    }
}

/// `[daemon] http_socket`: a path, `true` for the default place, or `false` for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HttpSocketValue(pub super::HttpSocket);

impl<'de> Deserialize<'de> for HttpSocketValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HttpSocketValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a socket path, or false to serve no HTTP API")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HttpSocketValue, E> {
                Ok(HttpSocketValue(if v { super::HttpSocket::BesideSocket } else { super::HttpSocket::Off }))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HttpSocketValue, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("must not be empty; give a path, or false to serve no HTTP API"));
                }
                Ok(HttpSocketValue(super::HttpSocket::At(v.into())))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A redirect URI for the authorization code grant: http on a loopback address with an
/// explicit port (RFC 8252 §7.3), which tokend listens on during a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LoopbackUrl(pub Url);

impl<'de> Deserialize<'de> for LoopbackUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let url = Url::parse(text.trim()).map_err(|e| de::Error::custom(format!("invalid URL {text:?}: {e}")))?;
        if url.scheme() != "http" || !is_loopback(url.host()) {
            return Err(de::Error::custom(format!(
                "{text:?} is not a loopback redirect URI; tokend receives the login on this machine, so use one like \"http://127.0.0.1:8976/callback\" and register it with the server"
            )));
        }
        if url.port().is_none() {
            return Err(de::Error::custom(format!(
                "{text:?} has no port; give the port registered with the server, e.g. \"http://127.0.0.1:8976/callback\""
            )));
        }
        if url.fragment().is_some() || url.query().is_some() {
            return Err(de::Error::custom(format!("{text:?} must not have a query or #fragment")));
        }
        Ok(LoopbackUrl(url))
    }
}

/// Profile names become file names and command-line arguments, so they are kept plain.
pub(super) fn check_profile_name(name: &str) -> Result<(), BadProfileName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(BadProfileName(name.to_owned())) }
}

/// A profile name that is not plain enough.
#[derive(Debug, thiserror::Error)]
#[error("invalid profile name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit")]
pub(super) struct BadProfileName(String);
