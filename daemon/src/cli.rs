//! The `tokend` command line: six options, read with lexopt.
//!
//! Not clap: it was 309 KiB of the executable's code, and nearly all of tokend's code pages stay
//! resident at rest (BENCHMARKS.md). The rules are the ones clap applied before, so every
//! command line means what it meant then:
//!
//! - a value is joined to its option (`--socket=PATH`, `-cPATH`, `-c=PATH`) or is the next
//!   argument, unless that one starts with `-` (other than `-` alone): then it is an option and
//!   the value is missing (`--socket --state-dir DIR` does not use `--state-dir` as a path);
//! - `--check-config` takes a value only by the same rules, so `--check-config --socket x`
//!   checks the default config;
//! - an empty path is refused; each option may be given once;
//! - `--help` and `--version` answer at once, whatever follows them, and the log level is
//!   checked only after all arguments are read, so `--log-level bad --help` prints the help.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::Arg::{Long, Short, Value};

/// The options `tokend` was started with.
#[derive(Debug, Default)]
pub struct Cli {
    /// `-c`/`--config`: the config file.
    pub config: Option<PathBuf>,
    /// `--socket`: where to listen.
    pub socket: Option<PathBuf>,
    /// `--http-socket`: where to serve the HTTP API.
    pub http_socket: Option<PathBuf>,
    /// `--state-dir`: where to keep tokens across restarts.
    pub state_dir: Option<PathBuf>,
    /// `--log-level`: a log filter, already checked.
    pub log_level: Option<String>,
    /// `--check-config [PATH]`: check a config file and exit; `Some(None)` checks the one
    /// `--config` names, or the default one.
    pub check_config: Option<Option<PathBuf>>,
}

/// What a command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the daemon, or check a config, with these options.
    Run(Cli),
    /// Print [`HELP`] and exit.
    Help,
    /// Print [`VERSION`] and exit.
    Version,
}

/// What `tokend --help` (and `-h`) prints.
pub const HELP: &str = "\
tokend: a per-user daemon that owns OAuth 2.0 access tokens, refreshes them before they expire, and
serves them to local programs over a Unix socket. Talk to it with `tokenctl`.

It runs in the foreground and logs to stderr; run it as a systemd user service for normal use (see
the README).

Usage: tokend [OPTIONS]

Options:
  -c, --config <PATH>
          The config file [default: $XDG_CONFIG_HOME/tokend/config.toml, or $TOKEND_CONFIG]

      --socket <PATH>
          Where to listen [default: $TOKEND_SOCKET, else the config's [daemon] socket, else
          $XDG_RUNTIME_DIR/tokend/tokend.sock]

      --http-socket <PATH>
          Where to serve the HTTP API [default: $TOKEND_HTTP_SOCKET, else the config's [daemon]
          http_socket, else http.sock beside the socket]

      --state-dir <DIR>
          Where to keep tokens across restarts [default: the config's [daemon] state_dir, else
          $XDG_STATE_HOME/tokend]

      --log-level <LEVEL>
          Log filter, such as `info`, `debug` or `tokend=trace` [default: $RUST_LOG, else the
          config's [daemon] log_level, else info]

      --check-config [<PATH>]
          Check a config file (this one, or the one --config names) and exit: 0 if it is valid, 78
          if not. Also prints each profile's endpoints and where each came from: the config, or, for
          a profile with `issuer`, the server's metadata fetched now (5 s timeout per document) or,
          when that fails, the copy cached in the state directory. Writes nothing

  -h, --help
          Print help

  -V, --version
          Print version
";

/// What `tokend --version` (and `-V`) prints.
pub const VERSION: &str = concat!("tokend ", env!("CARGO_PKG_VERSION"), "\n");

/// What follows a usage error on stderr.
pub const USAGE: &str = "Usage: tokend [OPTIONS]\n\nFor more information, try '--help'.";

/// A command line tokend does not take; `tokend` prints it with [`USAGE`] and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// An option tokend does not have, or an argument that is not an option's value.
    #[error("unexpected argument '{}' found", .0.to_string_lossy())]
    Unexpected(OsString),
    /// An option that needs a value came without one, or with an empty one.
    #[error("a value is required for '{0}' but none was supplied")]
    MissingValue(&'static str),
    /// An option given twice: which one to use would be a guess.
    #[error("the argument '{0}' cannot be used multiple times")]
    Repeated(&'static str),
    /// `--help=x` or `--version=x`.
    #[error("unexpected value '{}' for '{option}' found; no more were expected", value.to_string_lossy())]
    UnexpectedValue {
        /// The option.
        option: &'static str,
        /// What was joined to it.
        value: OsString,
    },
    /// A log level that is not UTF-8 or not a filter tokend understands.
    #[error("invalid value for '--log-level <LEVEL>': {0}")]
    BadLevel(String),
    /// What lexopt itself refuses.
    #[error(transparent)]
    Lexopt(#[from] lexopt::Error),
}

const CONFIG: &str = "--config <PATH>";
const SOCKET: &str = "--socket <PATH>";
const HTTP_SOCKET: &str = "--http-socket <PATH>";
const STATE_DIR: &str = "--state-dir <DIR>";
const LOG_LEVEL: &str = "--log-level <LEVEL>";
const CHECK_CONFIG: &str = "--check-config [<PATH>]";

/// Reads the arguments after the program's name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut cli = Cli::default();
    let mut log_level = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') => return Ok(Command::Help),
            Short('V') => return Ok(Command::Version),
            Long("help") => return nothing_joined(&mut parser, "--help").map(|()| Command::Help),
            Long("version") => return nothing_joined(&mut parser, "--version").map(|()| Command::Version),
            Short('c') | Long("config") => set(&mut cli.config, CONFIG, path(&mut parser, CONFIG)?)?,
            Long("socket") => set(&mut cli.socket, SOCKET, path(&mut parser, SOCKET)?)?,
            Long("http-socket") => set(&mut cli.http_socket, HTTP_SOCKET, path(&mut parser, HTTP_SOCKET)?)?,
            Long("state-dir") => set(&mut cli.state_dir, STATE_DIR, path(&mut parser, STATE_DIR)?)?,
            Long("log-level") => {
                let level = value(&mut parser)?.ok_or(UsageError::MissingValue(LOG_LEVEL))?;
                set(&mut log_level, LOG_LEVEL, level)?;
            }
            Long("check-config") => {
                let path = value(&mut parser)?.map(|p| non_empty(p, CHECK_CONFIG)).transpose()?;
                set(&mut cli.check_config, CHECK_CONFIG, path)?;
            }
            Short(short) => return Err(UsageError::Unexpected(format!("-{short}").into())),
            Long(long) => return Err(UsageError::Unexpected(format!("--{long}").into())),
            Value(value) => return Err(UsageError::Unexpected(value)),
        }
    }
    cli.log_level = log_level.map(checked_level).transpose()?;
    Ok(Command::Run(cli))
}

/// The option's value, joined to it or the next argument, if there is one by the rules above.
fn value(parser: &mut lexopt::Parser) -> Result<Option<OsString>, UsageError> {
    if let Some(joined) = parser.optional_value() {
        return Ok(Some(joined));
    }
    Ok(parser.raw_args()?.next_if(|next| next == "-" || !next.as_encoded_bytes().starts_with(b"-")))
}

fn path(parser: &mut lexopt::Parser, option: &'static str) -> Result<PathBuf, UsageError> {
    non_empty(value(parser)?.ok_or(UsageError::MissingValue(option))?, option)
}

fn non_empty(path: OsString, option: &'static str) -> Result<PathBuf, UsageError> {
    if path.is_empty() { Err(UsageError::MissingValue(option)) } else { Ok(PathBuf::from(path)) }
}

fn set<T>(slot: &mut Option<T>, option: &'static str, value: T) -> Result<(), UsageError> {
    match slot.replace(value) {
        Some(_) => Err(UsageError::Repeated(option)),
        None => Ok(()),
    }
}

fn nothing_joined(parser: &mut lexopt::Parser, option: &'static str) -> Result<(), UsageError> {
    match parser.optional_value() {
        Some(value) => Err(UsageError::UnexpectedValue { option, value }),
        None => Ok(()),
    }
}

fn checked_level(level: OsString) -> Result<String, UsageError> {
    let level = level.into_string().map_err(|level| UsageError::BadLevel(format!("{level:?} is not UTF-8")))?;
    crate::logging::parse_filter(&level).map_err(|e| UsageError::BadLevel(e.to_string()))?;
    Ok(level)
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[track_caller]
    fn run(args: &[&str]) -> Cli {
        match parse_strs(args) {
            Ok(Command::Run(cli)) => cli,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[track_caller]
    fn usage_error(args: &[&str]) -> String {
        match parse_strs(args) {
            Err(e) => e.to_string(),
            Ok(other) => panic!("{args:?} was taken: {other:?}"),
        }
    }

    #[test]
    fn no_arguments_runs_with_every_default() {
        let cli = run(&[]);
        assert_eq!((cli.config, cli.socket, cli.http_socket, cli.state_dir), (None, None, None, None));
        assert_eq!((cli.log_level, cli.check_config), (None, None));
    }

    #[test]
    fn each_option_takes_its_value_in_every_form() {
        for args in [&["-c", "/a"][..], &["-c/a"], &["-c=/a"], &["--config", "/a"], &["--config=/a"]] {
            assert_eq!(run(args).config, Some("/a".into()), "{args:?}");
        }
        for (option, get) in [
            ("--socket", (|c: Cli| c.socket) as fn(Cli) -> Option<PathBuf>),
            ("--http-socket", |c| c.http_socket),
            ("--state-dir", |c| c.state_dir),
        ] {
            assert_eq!(get(run(&[option, "/b"])), Some("/b".into()), "{option}");
            assert_eq!(get(run(&[&format!("{option}=/c")])), Some("/c".into()), "{option}");
            assert_eq!(get(run(&[option, "-"])), Some("-".into()), "{option}: `-` is a value");
        }
        assert_eq!(run(&["--log-level", "debug"]).log_level.as_deref(), Some("debug"));
        assert_eq!(run(&["--log-level=tokend=trace,info"]).log_level.as_deref(), Some("tokend=trace,info"));
    }

    #[test]
    fn all_options_together() {
        let cli = run(&[
            "--socket=/s",
            "-c",
            "/c",
            "--http-socket",
            "/h",
            "--state-dir",
            "/d",
            "--log-level",
            "warn",
            "--check-config",
        ]);
        assert_eq!(cli.config, Some("/c".into()));
        assert_eq!(cli.socket, Some("/s".into()));
        assert_eq!(cli.http_socket, Some("/h".into()));
        assert_eq!(cli.state_dir, Some("/d".into()));
        assert_eq!(cli.log_level.as_deref(), Some("warn"));
        assert_eq!(cli.check_config, Some(None));
    }

    #[test]
    fn check_config_takes_a_path_only_when_one_follows() {
        assert_eq!(run(&["--check-config"]).check_config, Some(None));
        assert_eq!(run(&["--check-config", "/a.toml"]).check_config, Some(Some("/a.toml".into())));
        assert_eq!(run(&["--check-config=/a.toml"]).check_config, Some(Some("/a.toml".into())));
        assert_eq!(run(&["--check-config", "-"]).check_config, Some(Some("-".into())));
        let cli = run(&["--check-config", "--socket", "/x"]);
        assert_eq!((cli.check_config, cli.socket), (Some(None), Some("/x".into())));
        let cli = run(&["--check-config", "-c", "/e.toml"]);
        assert_eq!((cli.check_config, cli.config), (Some(None), Some("/e.toml".into())));
        let cli = run(&["-c", "/e.toml", "--check-config"]);
        assert_eq!((cli.check_config, cli.config), (Some(None), Some("/e.toml".into())));
    }

    #[test]
    fn help_and_version_answer_whatever_follows() {
        for args in [&["-h"][..], &["--help"], &["--help", "--bogus"], &["-hx"], &["--socket", "/s", "--help"]] {
            assert!(matches!(parse_strs(args), Ok(Command::Help)), "{args:?}");
        }
        for args in [&["-V"][..], &["--version"], &["--version", "--help"], &["-Vh"]] {
            assert!(matches!(parse_strs(args), Ok(Command::Version)), "{args:?}");
        }
        assert!(matches!(parse_strs(&["--help", "--version"]), Ok(Command::Help)));
        // The level is checked after every argument is read, as clap did.
        assert!(matches!(parse_strs(&["--log-level", "a=b=c", "--help"]), Ok(Command::Help)));
        // But what comes before them is read first.
        assert_eq!(usage_error(&["--bogus", "--help"]), "unexpected argument '--bogus' found");
    }

    #[test]
    fn help_and_version_take_no_value() {
        assert_eq!(usage_error(&["--help=x"]), "unexpected value 'x' for '--help' found; no more were expected");
        assert_eq!(usage_error(&["--version=1"]), "unexpected value '1' for '--version' found; no more were expected");
    }

    #[test]
    fn unknown_options_and_stray_arguments_are_refused() {
        assert_eq!(usage_error(&["--bogus"]), "unexpected argument '--bogus' found");
        assert_eq!(usage_error(&["--bogus=1"]), "unexpected argument '--bogus' found");
        assert_eq!(usage_error(&["--check"]), "unexpected argument '--check' found", "no abbreviations");
        assert_eq!(usage_error(&["-x"]), "unexpected argument '-x' found");
        assert_eq!(usage_error(&["stray"]), "unexpected argument 'stray' found");
        assert_eq!(usage_error(&["-"]), "unexpected argument '-' found");
        assert_eq!(usage_error(&["--check-config", "/a.toml", "stray"]), "unexpected argument 'stray' found");
        assert_eq!(usage_error(&["--check-config", "--", "/a.toml"]), "unexpected argument '/a.toml' found");
        assert_eq!(usage_error(&["--", "--check-config"]), "unexpected argument '--check-config' found");
    }

    #[test]
    fn a_missing_or_empty_value_is_refused() {
        for (args, option) in [
            (&["-c"][..], "--config <PATH>"),
            (&["--config"], "--config <PATH>"),
            (&["--socket", "--check-config"], "--socket <PATH>"),
            (&["--socket", "-x"], "--socket <PATH>"),
            (&["--socket="], "--socket <PATH>"),
            (&["--http-socket", ""], "--http-socket <PATH>"),
            (&["--state-dir"], "--state-dir <DIR>"),
            (&["--log-level"], "--log-level <LEVEL>"),
            (&["--log-level", "--socket", "/s"], "--log-level <LEVEL>"),
            (&["--check-config="], "--check-config [<PATH>]"),
            (&["--check-config", ""], "--check-config [<PATH>]"),
        ] {
            assert_eq!(
                usage_error(args),
                format!("a value is required for '{option}' but none was supplied"),
                "{args:?}"
            );
        }
        // A value that starts with `-` can still be given joined.
        assert_eq!(run(&["--socket=-x"]).socket, Some("-x".into()));
    }

    #[test]
    fn an_option_given_twice_is_refused() {
        for (args, option) in [
            (&["-c", "/a", "--config", "/b"][..], "--config <PATH>"),
            (&["--socket=/a", "--socket=/a"], "--socket <PATH>"),
            (&["--http-socket=/a", "--http-socket=/b"], "--http-socket <PATH>"),
            (&["--state-dir=/a", "--state-dir=/b"], "--state-dir <DIR>"),
            (&["--log-level=info", "--log-level=debug"], "--log-level <LEVEL>"),
            (&["--check-config", "--check-config"], "--check-config [<PATH>]"),
            (&["--check-config", "/a", "--check-config=/b"], "--check-config [<PATH>]"),
        ] {
            assert_eq!(usage_error(args), format!("the argument '{option}' cannot be used multiple times"), "{args:?}");
        }
    }

    #[test]
    fn a_bad_log_level_is_refused_naming_it() {
        let e = usage_error(&["--log-level", "a=b=c"]);
        assert!(e.starts_with("invalid value for '--log-level <LEVEL>': invalid log level \"a=b=c\": "), "{e}");
        let e = parse(["--log-level".into(), OsString::from_vec(b"de\xffbug".to_vec())]).unwrap_err().to_string();
        assert_eq!(e, "invalid value for '--log-level <LEVEL>': \"de\\xFFbug\" is not UTF-8");
    }

    #[test]
    fn paths_need_not_be_utf8() {
        let raw = OsString::from_vec(b"/tmp/\xff.toml".to_vec());
        let joined = |prefix: &[u8]| OsString::from_vec([prefix, raw.as_encoded_bytes()].concat());
        let cli =
            match parse(["--config".into(), raw.clone(), joined(b"--socket="), "--check-config".into(), raw.clone()]) {
                Ok(Command::Run(cli)) => cli,
                other => panic!("{other:?}"),
            };
        assert_eq!(cli.config, Some(PathBuf::from(&raw)));
        assert_eq!(cli.socket, Some(PathBuf::from(&raw)));
        assert_eq!(cli.check_config, Some(Some(PathBuf::from(&raw))));
        match parse([joined(b"-c")]) {
            Ok(Command::Run(cli)) => assert_eq!(cli.config, Some(PathBuf::from(&raw))),
            other => panic!("{other:?}"),
        }
        let e = parse([OsString::from_vec(b"st\xffray".to_vec())]).unwrap_err().to_string();
        assert_eq!(e, "unexpected argument 'st\u{fffd}ray' found");
    }

    #[test]
    fn the_help_names_every_option_within_100_columns() {
        for option in ["-c, --config <PATH>", "--socket <PATH>", "--http-socket <PATH>", "--state-dir <DIR>"] {
            assert!(HELP.contains(option), "{option}");
        }
        for option in ["--log-level <LEVEL>", "--check-config [<PATH>]", "-h, --help", "-V, --version"] {
            assert!(HELP.contains(option), "{option}");
        }
        for line in HELP.lines() {
            assert!(line.chars().count() <= 100, "{line}");
        }
    }
}
