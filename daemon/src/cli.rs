//! The `tokend` command line.

use std::path::PathBuf;

use clap::Parser;

/// tokend: a per-user daemon that owns OAuth 2.0 access tokens, refreshes them before they
/// expire, and serves them to local programs over a Unix socket. Talk to it with `tokenctl`.
///
/// It runs in the foreground and logs to stderr; run it as a systemd user service for normal
/// use (see the README).
#[derive(Debug, Parser)]
#[command(name = "tokend", version, max_term_width = 100)]
pub struct Cli {
    /// The config file [default: $XDG_CONFIG_HOME/tokend/config.toml, or $TOKEND_CONFIG]
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Where to listen [default: $TOKEND_SOCKET, else the config's [daemon] socket, else
    /// $XDG_RUNTIME_DIR/tokend/tokend.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Where to serve the HTTP API [default: $TOKEND_HTTP_SOCKET, else the config's [daemon]
    /// http_socket, else http.sock beside the socket]
    #[arg(long, value_name = "PATH")]
    pub http_socket: Option<PathBuf>,

    /// Where to keep tokens across restarts [default: the config's [daemon] state_dir, else
    /// $XDG_STATE_HOME/tokend]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Log filter, such as `info`, `debug` or `tokend=trace` [default: $RUST_LOG, else the
    /// config's [daemon] log_level, else info]
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    pub log_level: Option<String>,

    /// Check a config file (this one, or the one --config names) and exit: 0 if it is valid,
    /// 78 if not. Also prints each profile's endpoints and where each came from: the config,
    /// or, for a profile with `issuer`, the server's metadata fetched now (5 s timeout per
    /// document) or, when that fails, the copy cached in the state directory. Writes nothing
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub check_config: Option<Option<PathBuf>>,
}

fn parse_level(level: &str) -> Result<String, crate::logging::BadLevel> {
    crate::logging::parse_filter(level).map(|()| level.to_owned())
}
