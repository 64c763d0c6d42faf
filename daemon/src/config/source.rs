//! Where a client secret comes from: inline, a file, an environment variable or a command.
//!
//! Secrets are resolved when the configuration is loaded (at start and on every reload), so a
//! missing file or a failing command is reported as a config error instead of surfacing later
//! as a failed refresh.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokend_proto::Secret;

/// The configured source of a client secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretSource {
    /// A public client: no secret.
    None,
    /// `client_secret`: the secret itself, in the config file.
    Inline(Secret),
    /// `client_secret_file`: a file holding the secret.
    File(PathBuf),
    /// `client_secret_env`: an environment variable of the daemon holding the secret.
    Env(String),
    /// `client_secret_command`: a shell command that prints the secret.
    Command {
        /// The command, for `/bin/sh -c`.
        command: String,
        /// How long it and everything it starts may run (`client_secret_command_timeout`).
        timeout: Duration,
    },
}

/// Why a client secret cannot be read. Never shows the secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    /// The secret file cannot be opened.
    #[error("cannot open {}: {source}", .path.display())]
    Open { path: PathBuf, source: std::io::Error },
    /// Others may read or write the secret file.
    #[error(transparent)]
    Refused(#[from] crate::fsperm::Refused),
    /// The secret file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The variable is not set.
    #[error(
        "environment variable {0} is not set in tokend's environment (under systemd, set it with Environment= or EnvironmentFile=)"
    )]
    EnvNotSet(String),
    /// The variable is not text.
    #[error("environment variable {0} is not valid UTF-8")]
    EnvNotUnicode(String),
    /// The command failed.
    #[error(transparent)]
    Command(#[from] super::command::CommandError),
    /// The source gave nothing.
    #[error("the client secret is empty")]
    Empty,
}

/// `~` cannot be expanded.
#[derive(Debug, thiserror::Error)]
#[error("cannot expand `~`: no home directory")]
pub(super) struct NoHome;

impl SecretSource {
    /// A stable description of the source (not of the secret it yields) for fingerprints. An
    /// inline secret is its own source, so it is represented by its digest.
    pub(crate) fn identity(&self) -> String {
        match self {
            SecretSource::None => "none".to_owned(),
            SecretSource::Inline(secret) => {
                let digest = Sha256::digest(secret.expose().as_bytes());
                format!("inline:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
            SecretSource::File(path) => format!("file:{}", path.display()),
            SecretSource::Env(var) => format!("env:{var}"),
            SecretSource::Command { command, .. } => format!("command:{command}"),
        }
    }

    /// Reads the secret. Errors say what failed and how to fix it, never what the secret is.
    pub(crate) fn resolve(&self) -> Result<Option<Secret>, SecretError> {
        let value = match self {
            SecretSource::None => return Ok(None),
            SecretSource::Inline(secret) => secret.clone(),
            SecretSource::File(path) => read_secret_file(path)?,
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(value) => Secret::new(value),
                Err(std::env::VarError::NotPresent) => return Err(SecretError::EnvNotSet(var.clone())),
                Err(std::env::VarError::NotUnicode(_)) => return Err(SecretError::EnvNotUnicode(var.clone())),
            },
            SecretSource::Command { command, timeout } => super::command::run(command, *timeout)?,
        };
        let trimmed = value.expose().trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Some(if trimmed.len() == value.expose().len() { value } else { Secret::from(trimmed) }))
    }
}

/// Resolves `~/` and paths relative to the config file's directory.
pub(super) fn expand_path(path: &Path, base: &Path) -> Result<PathBuf, NoHome> {
    if let Ok(rest) = path.strip_prefix("~") {
        let home = directories::BaseDirs::new().ok_or(NoHome)?;
        return Ok(home.home_dir().join(rest));
    }
    Ok(if path.is_absolute() { path.to_owned() } else { base.join(path) })
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let mut file = std::fs::File::open(path).map_err(|source| SecretError::Open { path: path.to_owned(), source })?;
    crate::fsperm::refuse_unless_private(&file, path, "client secret file")?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|source| SecretError::Read { path: path.to_owned(), source })?;
    Ok(Secret::new(text))
}
