//! The configuration file: one `[daemon]` table and one `[profiles.NAME]` table per token
//! source.
//!
//! Loading is all-or-nothing. The file is parsed, every key is checked (unknown keys are
//! errors, URLs must be https unless they point at this machine, the redirect URI must be
//! loopback, …) and every client secret is resolved from its source. Only a configuration
//! that passed all of that reaches the rest of the daemon, which is what lets a reload keep
//! the old configuration running when the new one is broken. Every error names the file, the
//! line and the key.

mod command;
mod source;
mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokend_proto::{Grant, Secret};
use toml::Spanned;
use url::Url;

pub(crate) use source::SecretSource;
use value::{HumanDuration, LogLevel, RawGrant};
pub(crate) use value::{MAX_DURATION, check_endpoint};

/// How long before expiry a token is refreshed, unless the profile says otherwise.
pub(crate) const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The lifetime assumed for a token whose response has no `expires_in`.
pub(crate) const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60 * 60);
/// The least a served token has left by default (capped at a quarter of its lifetime).
pub(crate) const DEFAULT_MIN_VALID: Duration = Duration::from_secs(30);
/// The first retry delay after a transient failure.
pub(crate) const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest retry delay after repeated transient failures.
pub(crate) const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// How long a request to an OAuth server may take in all.
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `tokenctl login` waits for the browser.
pub(crate) const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long an `authorization_code` profile's token must not have been handed out before a
/// refresh replaces it (capped at an eighth of the token's lifetime), unless the profile says
/// otherwise. `client_credentials` profiles have no quiet window unless they set one.
pub(crate) const DEFAULT_QUIET_WINDOW: Duration = Duration::from_secs(2);
/// How many client connections are served at once.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The `[daemon]` table.
    pub daemon: DaemonSettings,
    /// The profiles, by name.
    pub profiles: BTreeMap<String, Arc<Profile>>,
}

/// The `[daemon]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DaemonSettings {
    /// Socket path override.
    pub socket: Option<PathBuf>,
    /// Where the HTTP API listens, if anywhere.
    pub http_socket: HttpSocket,
    /// State directory override.
    pub state_dir: Option<PathBuf>,
    /// Log filter (for example `info` or `tokend=debug`).
    pub log_level: Option<String>,
    /// Command run when a profile needs a login, unless the profile has its own.
    pub notify_command: Option<String>,
    /// Connection limit.
    pub max_connections: usize,
    /// Per-request timeout for OAuth servers.
    pub http_timeout: Duration,
    /// Where the state encryption key comes from, if state is encrypted.
    pub encryption_key: Option<KeySource>,
}

/// Where the HTTP API listens (`[daemon] http_socket`); `--http-socket` and
/// `TOKEND_HTTP_SOCKET` override it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum HttpSocket {
    /// `http.sock` in the socket's directory (the default).
    #[default]
    BesideSocket,
    /// At this path.
    At(PathBuf),
    /// Nowhere: no HTTP API.
    Off,
}

/// Where the state encryption key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// `encryption_key_file`: a file (mode 0600).
    File(PathBuf),
    /// `encryption_key_credential`: a systemd credential in `$CREDENTIALS_DIRECTORY`.
    Credential(String),
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// One `[profiles.NAME]` table, checked and with its secret resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    /// The table's name.
    pub name: String,
    /// The grant.
    pub grant: Grant,
    /// The endpoints the file sets. Read them through [`Profile::token_url`] and its siblings,
    /// which fall back to the discovered ones.
    pub configured: Endpoints,
    /// The endpoints discovered from `issuer` (RFC 8414 / OpenID Connect Discovery), once known;
    /// always `None` in a freshly loaded config, which does no network I/O (see
    /// [`crate::endpoints`]).
    pub discovered: Option<Endpoints>,
    /// The loopback redirect URI (authorization_code only).
    pub redirect_uri: Option<Url>,
    /// The authorization server's issuer identifier: an https URL (http for loopback) without
    /// query or fragment. Checked against `iss` in redirects (RFC 9207), and the source of every
    /// endpoint the file does not set. Without it, `iss` must have the authorize URL's origin.
    pub issuer: Option<String>,
    /// The API the token is for: the proxy sends requests there, and only there.
    pub api_base: Option<Url>,
    /// The client identifier.
    pub client_id: String,
    /// Where the client secret comes from.
    pub client_secret_source: SecretSource,
    /// The resolved client secret; `None` for a public client.
    pub client_secret: Option<Secret>,
    /// How the client authenticates.
    pub client_auth: ClientAuth,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// Extra form parameters for token requests.
    pub token_params: BTreeMap<String, String>,
    /// Extra query parameters for the authorization URL, or extra form parameters for the
    /// device authorization request.
    pub authorize_params: BTreeMap<String, String>,
    /// How long before expiry to refresh.
    pub refresh_margin: Duration,
    /// Lifetime assumed when the server sends no `expires_in`.
    pub default_expires_in: Duration,
    /// The least a served token has left by default.
    pub min_valid: Duration,
    /// The first retry delay after a transient failure.
    pub retry_min: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// How long a login waits for the browser.
    pub login_timeout: Duration,
    /// How long the token must not have been handed out before a refresh replaces it, for
    /// servers that revoke the old access token when they issue a new one; zero for none.
    pub quiet_window: Duration,
    /// How long a login lasts when the server does not say, counted from the login; for the
    /// warning before it ends, and its end.
    pub login_lifetime: Option<Duration>,
    /// Command run when this profile needs a login.
    pub notify_command: Option<String>,
}

impl Profile {
    /// A digest of the settings that decide *whose* tokens these are. Stored tokens are only
    /// reused by a profile with the same fingerprint, so that changing the server, the client
    /// or the scopes never serves tokens obtained under the old ones.
    pub(crate) fn security_fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        let mut field = |name: &str, value: &str| {
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        };
        // Discovered endpoints are not part of it: the issuer vouches for them (RFC 8414 §3.3),
        // so a server that moves its token endpoint keeps its users logged in.
        let issuer = self.issuer.as_deref().unwrap_or_default();
        let discovered = |url: &Option<Url>| match url {
            Some(url) => url.as_str().to_owned(),
            None if issuer.is_empty() => String::new(),
            None => format!("discovered from {issuer}"),
        };
        field("grant", self.grant.as_str());
        field("token_url", &discovered(&self.configured.token));
        field("client_id", &self.client_id);
        field("client_secret_source", &self.client_secret_source.identity());
        let mut scopes = self.scopes.clone();
        scopes.sort();
        field("scopes", &scopes.join(" "));
        let authorize = match self.grant {
            Grant::AuthorizationCode => discovered(&self.configured.authorization),
            Grant::ClientCredentials | Grant::DeviceCode => String::new(),
        };
        field("authorize_url", &authorize);
        field("redirect_uri", self.redirect_uri.as_ref().map_or("", Url::as_str));
        let digest = hasher.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The scopes as the space-separated `scope` parameter, if any were configured.
    pub(crate) fn scope_param(&self) -> Option<String> {
        (!self.scopes.is_empty()).then(|| self.scopes.join(" "))
    }

    /// The token endpoint: configured, else discovered. `None` only while discovery is pending.
    pub(crate) fn token_url(&self) -> Option<&Url> {
        self.endpoint(|e| e.token.as_ref())
    }

    /// The authorization endpoint (authorization_code only): configured, else discovered.
    pub(crate) fn authorize_url(&self) -> Option<&Url> {
        self.endpoint(|e| e.authorization.as_ref()).filter(|_| self.grant == Grant::AuthorizationCode)
    }

    /// The RFC 8628 device authorization endpoint: configured (device_code only), else
    /// discovered.
    pub(crate) fn device_authorization_url(&self) -> Option<&Url> {
        self.endpoint(|e| e.device_authorization.as_ref())
    }

    /// The RFC 7009 revocation endpoint: configured, else discovered.
    pub(crate) fn revoke_url(&self) -> Option<&Url> {
        self.endpoint(|e| e.revocation.as_ref())
    }

    /// The info endpoint: configured, else the discovered `userinfo_endpoint`.
    pub(crate) fn info_url(&self) -> Option<&Url> {
        self.endpoint(|e| e.info.as_ref())
    }

    fn endpoint(&self, pick: impl Fn(&Endpoints) -> Option<&Url>) -> Option<&Url> {
        pick(&self.configured).or_else(|| self.discovered.as_ref().and_then(pick))
    }

    /// Whether the profile cannot make a request before discovery finds an endpoint the file
    /// leaves out: the token endpoint, or the authorization endpoint of a login profile.
    pub(crate) fn needs_discovery(&self) -> bool {
        self.issuer.is_some() && self.missing_endpoint().is_some()
    }

    /// The first endpoint the profile needs and does not know yet, as the metadata names it and
    /// as the config file does: the token endpoint, or the endpoint a login starts at.
    pub(crate) fn missing_endpoint(&self) -> Option<(&'static str, &'static str)> {
        if self.token_url().is_none() {
            Some(("token_endpoint", "token_url"))
        } else if self.grant == Grant::AuthorizationCode && self.authorize_url().is_none() {
            Some(("authorization_endpoint", "authorize_url"))
        } else if self.grant == Grant::DeviceCode && self.device_authorization_url().is_none() {
            Some(("device_authorization_endpoint", "device_authorization_url"))
        } else {
            None
        }
    }

    /// Whether discovery has anything to add: an `issuer` is set and the file leaves out at
    /// least one endpoint.
    pub(crate) fn wants_discovery(&self) -> bool {
        let c = &self.configured;
        self.issuer.is_some()
            && (c.token.is_none()
                || (self.grant == Grant::AuthorizationCode && c.authorization.is_none())
                || c.device_authorization.is_none()
                || c.revocation.is_none()
                || c.info.is_none())
    }

    /// Whether `other` has the same settings from the file, whatever either discovered.
    pub(crate) fn same_settings(&self, other: &Profile) -> bool {
        Profile { discovered: None, ..self.clone() } == Profile { discovered: None, ..other.clone() }
    }

    /// This profile with `discovered` as its discovered endpoints.
    pub(crate) fn with_discovered(&self, discovered: Option<Endpoints>) -> Profile {
        Profile { discovered, ..self.clone() }
    }
}

/// A profile's endpoints, each set or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Endpoints {
    /// The token endpoint (`token_url`, `token_endpoint`).
    pub token: Option<Url>,
    /// The authorization endpoint (`authorize_url`, `authorization_endpoint`).
    pub authorization: Option<Url>,
    /// The RFC 8628 device authorization endpoint (`device_authorization_endpoint`).
    pub device_authorization: Option<Url>,
    /// The RFC 7009 revocation endpoint (`revoke_url`, `revocation_endpoint`).
    pub revocation: Option<Url>,
    /// The info endpoint (`info_url`, OpenID Connect's `userinfo_endpoint`).
    pub info: Option<Url>,
}

/// A configuration that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// The dotted key, when the problem has one.
    pub key: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The default config file location.
    pub(crate) fn default_path() -> Option<PathBuf> {
        tokend_proto::endpoint::default_config_path()
    }

    /// Reads, checks and resolves the configuration at `path`.
    ///
    /// A file that another user could have written is refused before anything in it runs (see
    /// [`crate::fsperm::refuse_if_others_could_have_written`]). Loading may run
    /// `client_secret_command`s, so call it off the async runtime.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError { path: path.to_owned(), line: None, key: None, message };
        let mut file = std::fs::File::open(path).map_err(|e| {
            error(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "no such file; create it (see `examples/` and the README's config reference) or pass --config PATH"
                        .to_owned()
                }
                _ => format!("cannot read: {e}"),
            })
        })?;
        crate::fsperm::refuse_if_others_could_have_written(&file, path, "config file")
            .map_err(|e| error(e.to_string()))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| error(format!("cannot read: {e}")))?;
        let config = Config::parse(path, &text)?;
        let inline = config.profiles.values().any(|p| matches!(p.client_secret_source, SecretSource::Inline(_)));
        if inline {
            crate::fsperm::refuse_inline_secret_in_shared_file(&file, path).map_err(|e| error(e.to_string()))?;
        }
        Ok(config)
    }

    /// Checks and resolves a configuration given as text; `path` is used for error messages and
    /// to resolve relative `client_secret_file` paths.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let located = Locator { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| located.toml_error(&e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let daemon = match raw.daemon {
            Some(d) => {
                let line = located.line_of(d.span().start);
                d.into_inner().into_settings(base).map_err(|(key, message)| ConfigError {
                    path: path.to_owned(),
                    line: key.line.map(|span_start| located.line_of(span_start)).or(Some(line)),
                    key: key.name.map(|k| format!("daemon.{k}")),
                    message,
                })?
            }
            None => DaemonSettings::default(),
        };
        let mut profiles = BTreeMap::new();
        for (name, table) in raw.profiles {
            let line = located.line_of(table.span().start);
            let profile = table.into_inner().check(&name, base).map_err(|(key, message)| ConfigError {
                path: path.to_owned(),
                line: key.line.map(|span_start| located.line_of(span_start)).or(Some(line)),
                key: Some(format!("profiles.{name}{}", key.name.map(|k| format!(".{k}")).unwrap_or_default())),
                message,
            })?;
            profiles.insert(name, Arc::new(profile));
        }
        Ok(Config { path: path.to_owned(), daemon, profiles })
    }
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            socket: None,
            http_socket: HttpSocket::default(),
            state_dir: None,
            log_level: None,
            notify_command: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            encryption_key: None,
        }
    }
}

/// Turns byte offsets into line numbers of the file being loaded.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            line: error.span().map(|span| self.line_of(span.start)),
            key: error.span().and_then(|span| self.key_at(span.start)),
            message: error.message().trim_end().to_owned(),
        }
    }

    /// The key (or table) on the line holding `offset`. Only the key: a value may be a secret.
    fn key_at(&self, offset: usize) -> Option<String> {
        let start = self.text[..offset.min(self.text.len())].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next()?.trim();
        if let Some(table) = line.strip_prefix('[') {
            let table = table.trim_start_matches('[').split(']').next()?.trim();
            return (!table.is_empty()).then(|| table.to_owned());
        }
        let key = line.split_once('=')?.0.trim().trim_matches('"');
        (!key.is_empty() && !key.contains(char::is_whitespace)).then(|| key.to_owned())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: Option<Spanned<RawDaemon>>,
    #[serde(default)]
    profiles: BTreeMap<String, Spanned<RawProfile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: Option<PathBuf>,
    http_socket: Option<value::HttpSocketValue>,
    state_dir: Option<PathBuf>,
    log_level: Option<LogLevel>,
    notify_command: Option<String>,
    max_connections: Option<value::Positive>,
    http_timeout: Option<value::PositiveDuration>,
    encryption_key_file: Option<Spanned<PathBuf>>,
    encryption_key_credential: Option<Spanned<value::NonEmpty>>,
}

impl RawDaemon {
    fn into_settings(self, base: &Path) -> Result<DaemonSettings, (KeyRef, String)> {
        let defaults = DaemonSettings::default();
        let encryption_key = match (self.encryption_key_file, self.encryption_key_credential) {
            (Some(_), Some(credential)) => {
                return Err((
                    KeyRef::at("encryption_key_credential", &credential),
                    "give at most one of encryption_key_file and encryption_key_credential".into(),
                ));
            }
            (Some(file), None) => Some(KeySource::File(
                source::expand_path(file.get_ref(), base)
                    .map_err(|e| (KeyRef::at("encryption_key_file", &file), e.to_string()))?,
            )),
            (None, Some(name)) => Some(KeySource::Credential(name.into_inner().0)),
            (None, None) => None,
        };
        Ok(DaemonSettings {
            encryption_key,
            socket: self.socket,
            http_socket: self.http_socket.map(|v| v.0).unwrap_or_default(),
            state_dir: self.state_dir,
            log_level: self.log_level.map(|l| l.0),
            notify_command: self.notify_command.filter(|c| !c.trim().is_empty()),
            max_connections: self.max_connections.map_or(defaults.max_connections, |n| n.0),
            http_timeout: self.http_timeout.map_or(defaults.http_timeout, |d| d.0),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    grant: RawGrant,
    token_url: Option<value::EndpointUrl>,
    authorize_url: Option<value::EndpointUrl>,
    device_authorization_url: Option<value::EndpointUrl>,
    redirect_uri: Option<Spanned<value::LoopbackUrl>>,
    issuer: Option<value::IssuerUrl>,
    revoke_url: Option<value::EndpointUrl>,
    info_url: Option<value::EndpointUrl>,
    api_base: Option<value::ApiBase>,
    client_id: value::NonEmpty,
    client_secret: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<PathBuf>>,
    client_secret_env: Option<Spanned<String>>,
    client_secret_command: Option<Spanned<String>>,
    client_secret_command_timeout: Option<Spanned<value::PositiveDuration>>,
    client_auth: Option<ClientAuth>,
    #[serde(default)]
    scopes: Vec<value::Scope>,
    #[serde(default)]
    token_params: BTreeMap<String, String>,
    #[serde(default)]
    authorize_params: BTreeMap<String, String>,
    refresh_margin: Option<HumanDuration>,
    default_expires_in: Option<value::PositiveDuration>,
    min_valid: Option<HumanDuration>,
    retry_min: Option<value::PositiveDuration>,
    retry_max: Option<value::PositiveDuration>,
    login_timeout: Option<value::PositiveDuration>,
    quiet_window: Option<HumanDuration>,
    login_lifetime: Option<Spanned<value::PositiveDuration>>,
    notify_command: Option<String>,
}

/// Where a profile-level error points: a key, and the offset of its value when known.
struct KeyRef {
    name: Option<&'static str>,
    line: Option<usize>,
}

impl KeyRef {
    fn key(name: &'static str) -> Self {
        KeyRef { name: Some(name), line: None }
    }

    fn at<T>(name: &'static str, spanned: &Spanned<T>) -> Self {
        KeyRef { name: Some(name), line: Some(spanned.span().start) }
    }
}

/// Form parameters that tokend sets itself; letting `token_params` override them would break
/// the grant or leak the secret into the wrong place.
const RESERVED_TOKEN_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "code",
    "code_verifier",
    "device_code",
    "redirect_uri",
    "refresh_token",
    "scope",
];

/// Query parameters of the authorization URL that tokend sets itself.
const RESERVED_AUTHORIZE_PARAMS: &[&str] =
    &["client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method"];

impl RawProfile {
    fn check(self, name: &str, base: &Path) -> Result<Profile, (KeyRef, String)> {
        value::check_profile_name(name).map_err(|e| (KeyRef { name: None, line: None }, e.to_string()))?;
        let grant = self.grant.0;

        let sources = [
            self.client_secret.as_ref().map(|s| KeyRef::at("client_secret", s)),
            self.client_secret_file.as_ref().map(|s| KeyRef::at("client_secret_file", s)),
            self.client_secret_env.as_ref().map(|s| KeyRef::at("client_secret_env", s)),
            self.client_secret_command.as_ref().map(|s| KeyRef::at("client_secret_command", s)),
        ];
        let mut given = sources.into_iter().flatten();
        if let (Some(_), Some(second)) = (given.next(), given.next()) {
            return Err((
                second,
                "give at most one of client_secret, client_secret_file, client_secret_env and client_secret_command"
                    .into(),
            ));
        }

        if let (Some(timeout), None) = (&self.client_secret_command_timeout, &self.client_secret_command) {
            return Err((
                KeyRef::at("client_secret_command_timeout", timeout),
                "only used with client_secret_command; remove it".into(),
            ));
        }
        let source = if let Some(s) = self.client_secret {
            SecretSource::Inline(Secret::new(s.into_inner()))
        } else if let Some(p) = self.client_secret_file {
            let key = KeyRef::at("client_secret_file", &p);
            let path = source::expand_path(p.get_ref(), base).map_err(|e| (key, e.to_string()))?;
            SecretSource::File(path)
        } else if let Some(v) = self.client_secret_env {
            SecretSource::Env(v.into_inner())
        } else if let Some(c) = self.client_secret_command {
            let timeout = self.client_secret_command_timeout.map_or(command::DEFAULT_TIMEOUT, |t| t.into_inner().0);
            SecretSource::Command { command: c.into_inner(), timeout }
        } else {
            SecretSource::None
        };
        let secret_key = match &source {
            SecretSource::None | SecretSource::Inline(_) => KeyRef::key("client_secret"),
            SecretSource::File(_) => KeyRef::key("client_secret_file"),
            SecretSource::Env(_) => KeyRef::key("client_secret_env"),
            SecretSource::Command { .. } => KeyRef::key("client_secret_command"),
        };
        let client_secret = source.resolve().map_err(|e| (secret_key, e.to_string()))?;

        if grant == Grant::ClientCredentials && client_secret.is_none() {
            return Err((
                KeyRef::key("client_secret"),
                "grant = \"client_credentials\" needs a client secret: set one of client_secret, client_secret_file, client_secret_env or client_secret_command".into(),
            ));
        }
        let issuer = self.issuer.map(|i| i.0);
        if self.token_url.is_none() && issuer.is_none() {
            return Err((
                KeyRef::key("token_url"),
                "required, unless `issuer` is set and the server publishes its endpoints (RFC 8414 / OpenID Connect Discovery)".into(),
            ));
        }
        let (authorize_url, redirect_uri) = match grant {
            Grant::AuthorizationCode => {
                if self.authorize_url.is_none() && issuer.is_none() {
                    return Err((
                        KeyRef::key("authorize_url"),
                        "required for grant = \"authorization_code\", unless `issuer` is set and the server publishes its endpoints".to_owned(),
                    ));
                }
                let redirect = self.redirect_uri.ok_or_else(|| {
                    (
                        KeyRef::key("redirect_uri"),
                        "required for grant = \"authorization_code\"; use a loopback URI such as \"http://127.0.0.1:8976/callback\" and register it with the server".to_owned(),
                    )
                })?;
                (self.authorize_url.map(|u| u.0), Some(redirect.into_inner().0))
            }
            Grant::ClientCredentials | Grant::DeviceCode => {
                if let Some(redirect) = &self.redirect_uri {
                    return Err((
                        KeyRef::at("redirect_uri", redirect),
                        "only used with grant = \"authorization_code\"; remove it".into(),
                    ));
                }
                if self.authorize_url.is_some() {
                    return Err((
                        KeyRef::key("authorize_url"),
                        "only used with grant = \"authorization_code\"; remove it".into(),
                    ));
                }
                (None, None)
            }
        };
        let device_authorization_url = match grant {
            Grant::DeviceCode => {
                if self.device_authorization_url.is_none() && issuer.is_none() {
                    return Err((
                        KeyRef::key("device_authorization_url"),
                        "required for grant = \"device_code\", unless `issuer` is set and the server publishes its device_authorization_endpoint".to_owned(),
                    ));
                }
                self.device_authorization_url.map(|u| u.0)
            }
            Grant::ClientCredentials | Grant::AuthorizationCode => {
                if self.device_authorization_url.is_some() {
                    return Err((
                        KeyRef::key("device_authorization_url"),
                        "only used with grant = \"device_code\"; remove it".into(),
                    ));
                }
                None
            }
        };

        for key in self.token_params.keys() {
            if RESERVED_TOKEN_PARAMS.contains(&key.as_str()) {
                return Err((
                    KeyRef::key("token_params"),
                    format!("`{key}` is set by tokend itself and cannot be overridden"),
                ));
            }
        }
        for key in self.authorize_params.keys() {
            if RESERVED_AUTHORIZE_PARAMS.contains(&key.as_str()) {
                return Err((
                    KeyRef::key("authorize_params"),
                    format!("`{key}` is set by tokend itself and cannot be overridden"),
                ));
            }
        }

        if let (Some(lifetime), Grant::ClientCredentials) = (&self.login_lifetime, grant) {
            return Err((
                KeyRef::at("login_lifetime", lifetime),
                "a client_credentials profile has no login; remove it".into(),
            ));
        }

        let retry_min = self.retry_min.map_or(DEFAULT_RETRY_MIN, |d| d.0);
        let retry_max = self.retry_max.map_or(DEFAULT_RETRY_MAX, |d| d.0);
        if retry_min > retry_max {
            return Err((KeyRef::key("retry_min"), "must not be longer than retry_max".into()));
        }

        Ok(Profile {
            name: name.to_owned(),
            grant,
            configured: Endpoints {
                token: self.token_url.map(|u| u.0),
                authorization: authorize_url,
                device_authorization: device_authorization_url,
                revocation: self.revoke_url.map(|u| u.0),
                info: self.info_url.map(|u| u.0),
            },
            discovered: None,
            redirect_uri,
            issuer,
            api_base: self.api_base.map(|u| u.0),
            client_id: self.client_id.0,
            client_secret_source: source,
            client_secret,
            client_auth: self.client_auth.unwrap_or(ClientAuth::Basic),
            scopes: self.scopes.into_iter().map(|s| s.0).collect(),
            token_params: self.token_params,
            authorize_params: self.authorize_params,
            refresh_margin: self.refresh_margin.map_or(DEFAULT_REFRESH_MARGIN, |d| d.0),
            default_expires_in: self.default_expires_in.map_or(DEFAULT_EXPIRES_IN, |d| d.0),
            min_valid: self.min_valid.map_or(DEFAULT_MIN_VALID, |d| d.0),
            retry_min,
            retry_max,
            login_timeout: self.login_timeout.map_or(DEFAULT_LOGIN_TIMEOUT, |d| d.0),
            // Servers revoke on refresh along a grant's chain of refresh tokens; a new
            // client_credentials token revokes the old one only where a server is set up so
            // (Doorkeeper's `revoke_previous_client_credentials_token`), which its users know.
            quiet_window: self.quiet_window.map_or(
                match grant {
                    Grant::AuthorizationCode | Grant::DeviceCode => DEFAULT_QUIET_WINDOW,
                    Grant::ClientCredentials => Duration::ZERO,
                },
                |d| d.0,
            ),
            login_lifetime: self.login_lifetime.map(|d| d.into_inner().0),
            notify_command: self.notify_command.filter(|c| !c.trim().is_empty()),
        })
    }
}

#[cfg(test)]
mod tests;
