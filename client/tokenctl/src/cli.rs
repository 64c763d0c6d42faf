//! The `tokenctl` command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokend_client::Fingerprint;

pub(crate) const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  other failure
  2  invalid command line or request (for instance an unsatisfiable --min-valid)
  3  tokend is not reachable: not running, refused the connection, or went away
  4  no such profile
  5  the profile needs a login (run `tokenctl login PROFILE`), or a login failed
  6  the OAuth server failed or refused (see `tokenctl status PROFILE`)
  7  tokend rejected its new configuration (reload); the old one keeps running
  8  tokenctl and tokend are from different releases (protocol mismatch)
  9  what answers at the socket is not your tokend: another user runs it, or could have
     put it there (nothing was sent to it)
`tokenctl exec` exits with the command's own status (of its second run, with --retry-on-exit).";

/// Ask tokend for OAuth access tokens, and manage it.
///
/// tokend keeps every profile's token fresh; `tokenctl token PROFILE` prints the current one.
/// Typical use:
///
///   curl -H "$(tokenctl token minut --format header)" https://api.minut.com/v8/users/me
#[derive(Debug, Parser)]
#[command(name = "tokenctl", version, max_term_width = 100, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// tokend's socket [default: $TOKEND_SOCKET, else the config's [daemon] socket, else
    /// $XDG_RUNTIME_DIR/tokend/tokend.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// tokend's config file, read only to find its socket [default: $TOKEND_CONFIG, else
    /// $XDG_CONFIG_HOME/tokend/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON (errors go to stderr as JSON too)
    #[arg(long, global = true)]
    pub json: bool,

    /// How long to wait for tokend's answer
    #[arg(long, global = true, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

/// How to print a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// The token alone
    Raw,
    /// An HTTP header line: `Authorization: Bearer TOKEN`
    Header,
    /// A JSON object with the token, its type, expiry and fingerprint
    Json,
}

/// How `exec` passes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExecFormat {
    /// The token alone
    Raw,
    /// The header value: `Bearer TOKEN`
    Header,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print a profile's access token, valid for at least --min-valid
    Token {
        /// The profile, as in [profiles.NAME]
        profile: String,
        /// The least the token must have left (waits for a refresh if need be) [default: the
        /// profile's min_valid]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        min_valid: Option<Duration>,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Raw)]
        format: Format,
    },
    /// Show the state of every profile, or of one
    Status {
        /// Only this profile
        profile: Option<String>,
    },
    /// List the configured profiles
    List,
    /// Refresh a profile's token now and print the new one
    ///
    /// If the current token was handed out moments ago, the refresh waits for the profile's
    /// quiet window first (2 s by default), so that programs using it are not cut off by
    /// servers that revoke the old token when they issue a new one.
    Refresh {
        /// The profile
        profile: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Raw)]
        format: Format,
    },
    /// Report that a server rejected a token (HTTP 401) and print a new one
    ///
    /// tokend refreshes once per rejected token, however many clients report it. Say which
    /// token was rejected with --token-stdin or --fingerprint; without either, whatever token is
    /// current is treated as rejected.
    Invalidate {
        /// The profile
        profile: String,
        /// Read the rejected token from standard input
        #[arg(long, conflicts_with = "fingerprint")]
        token_stdin: bool,
        /// The rejected token's fingerprint, as printed by `tokenctl token --format json`
        #[arg(long, value_name = "HEX")]
        fingerprint: Option<Fingerprint>,
        /// Output format for the new token
        #[arg(long, value_enum, default_value_t = Format::Raw)]
        format: Format,
    },
    /// Log in to an authorization_code or device_code profile
    ///
    /// authorization_code: tokend prints the authorization URL and opens your browser: $BROWSER
    /// if set (a colon-separated list of commands with arguments, such as "firefox
    /// --new-window"; %s in them stands for the URL, which is appended otherwise), else
    /// xdg-open in a graphical session. Over SSH, or whenever the browser cannot reach this
    /// machine, open the URL anywhere, then paste the address the browser was finally sent to
    /// (it starts with the profile's redirect_uri) here.
    ///
    /// device_code (RFC 8628): tokenctl shows a code and the address where to enter it, on any
    /// device (a phone will do: on a terminal, a QR code of the address is shown too). tokend
    /// polls the server until the code is entered and approved, denied, or expires; tokenctl
    /// waits for that. With --json, one JSON object with user_code, verification_uri,
    /// verification_uri_complete and expires_at is printed as soon as the code is known, and
    /// {"profile": ..., "logged_in": true} once the login succeeds.
    Login {
        /// The profile
        profile: String,
        /// Print the URL instead of opening a browser
        #[arg(long)]
        no_browser: bool,
    },
    /// Revoke a profile's tokens at the server and forget them
    Logout {
        /// The profile
        profile: String,
    },
    /// Fetch the profile's info_url with its token and print the answer
    Info {
        /// The profile
        profile: String,
    },
    /// Make tokend re-read its config; an invalid config is rejected and the old one kept
    Reload,
    /// Stop tokend
    Shutdown,
    /// Check that tokend is running
    Ping,
    /// Print every new token and state change as tokend reports it (Ctrl-C to stop)
    Watch {
        /// Only this profile
        profile: Option<String>,
    },
    /// Run a command with a profile's token in an environment variable
    ///
    /// The command replaces tokenctl, so its exit status is tokenctl's.
    ///
    ///   tokenctl exec minut -- sh -c 'curl -H "Authorization: Bearer $TOKEN" https://…'
    ///
    /// With --retry-on-exit CODE, the command says "the server rejected the token" (HTTP 401) by
    /// exiting with CODE: tokenctl then reports exactly that token to tokend, as `invalidate`
    /// does, and runs the command once more with a new token. Any other exit status of the first
    /// run, and whatever the second run exits with, is tokenctl's: there is no third run.
    ///
    ///   tokenctl exec minut --retry-on-exit 77 -- ./sync.sh     # sync.sh exits 77 on a 401
    ///
    /// docs/recipes.md has a curl one-liner that does this.
    Exec {
        /// The profile
        profile: String,
        /// The environment variable to put the token in
        #[arg(long, value_name = "NAME", default_value = "TOKEN")]
        env: String,
        /// What to put in the variable
        #[arg(long, value_enum, default_value_t = ExecFormat::Raw)]
        format: ExecFormat,
        /// The least the token must have left
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        min_valid: Option<Duration>,
        /// If the command exits with CODE (1-255), report its token as rejected and run it once
        /// more with a new one
        #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u8).range(1..))]
        retry_on_exit: Option<u8>,
        /// The command and its arguments
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Print a shell completion script
    ///
    /// bash: tokenctl completions bash > ~/.local/share/bash-completion/completions/tokenctl
    /// zsh:  tokenctl completions zsh > ~/.zfunc/_tokenctl
    /// fish: tokenctl completions fish > ~/.config/fish/completions/tokenctl.fish
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write man pages (tokenctl.1 and one per command) into a directory, or print tokenctl.1
    Man {
        /// Where to write the pages, e.g. ~/.local/share/man/man1
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text.trim()).map_err(|e| format!("{e}; write it like 90s, 5m or 1h30m"))
}

/// The command line `tokenctl token PROFILE`, exactly, without clap: it is what programs run
/// before each request they make, and building clap's command tree to parse it costs more CPU
/// than the rest of tokenctl's own work for it (BENCHMARKS.md). `None` for anything else,
/// which clap parses; a test checks that the two agree.
pub(crate) fn token_shortcut(mut args: impl Iterator<Item = OsString>) -> Option<Cli> {
    let (_, command, profile) = (args.next()?, args.next()?, args.next()?);
    if command != "token" || args.next().is_some() {
        return None;
    }
    let profile = profile.into_string().ok().filter(|p| !p.is_empty() && !p.starts_with('-'))?;
    Some(Cli {
        socket: None,
        config: None,
        json: false,
        timeout: tokend_client::DEFAULT_TIMEOUT,
        command: Command::Token { profile, min_valid: None, format: Format::Raw },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortcut(args: &[&str]) -> Option<Cli> {
        token_shortcut(args.iter().map(OsString::from))
    }

    #[test]
    fn the_token_shortcut_means_what_clap_means() {
        for args in [["tokenctl", "token", "p"], ["tokenctl", "token", "help"], ["tokenctl", "token", "prod.eu-1"]] {
            let taken = shortcut(&args).unwrap_or_else(|| panic!("{args:?} takes the shortcut"));
            assert_eq!(format!("{taken:?}"), format!("{:?}", Cli::try_parse_from(args).unwrap()));
        }
    }

    #[test]
    fn anything_else_goes_to_clap() {
        for args in [
            &["tokenctl", "token"][..],
            &["tokenctl", "token", ""],
            &["tokenctl", "token", "-h"],
            &["tokenctl", "token", "--json"],
            &["tokenctl", "token", "p", "--format", "json"],
            &["tokenctl", "--json", "token", "p"],
            &["tokenctl", "refresh", "p"],
            &["tokenctl"],
        ] {
            assert!(shortcut(args).is_none(), "{args:?}");
        }
    }
}
