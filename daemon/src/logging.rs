//! Logging to stderr with tracing-subscriber.
//!
//! The filter comes from `--log-level`, else `RUST_LOG`, else the config's `[daemon]
//! log_level`, else `info`; a reload applies a changed `log_level` when neither of the first two
//! was given. Under systemd (stderr connected to the journal, per `JOURNAL_STREAM`) lines carry
//! no timestamp — the journal adds its own — and start with the syslog priority (`<3>` for
//! errors … `<7>` for debug), which journald turns into the entry's level.
//!
//! Secrets never reach the log: they live in types whose `Debug` is redacted, and tokens are
//! logged by fingerprint only.

use std::fmt;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Registry, reload};

struct Logging {
    handle: reload::Handle<Targets, Registry>,
    /// Whether `--log-level` or `RUST_LOG` chose the filter, which then beats the config.
    fixed: bool,
}

static LOGGING: OnceLock<Logging> = OnceLock::new();

/// Checks a filter given on the command line.
pub(crate) fn parse_filter(level: &str) -> Result<(), BadLevel> {
    level.parse::<Targets>().map(|_| ()).map_err(|e| BadLevel { level: level.to_owned(), why: e.to_string() })
}

/// A log level or filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid log level {level:?}: {why}")]
pub(crate) struct BadLevel {
    level: String,
    why: String,
}

/// `info` for every target: the filter when none is given, or the one given does not parse.
fn default_filter() -> Targets {
    Targets::new().with_default(Level::INFO)
}

/// Installs the global subscriber.
pub(crate) fn init(cli_level: Option<&str>, config_level: Option<&str>) {
    let env_level = std::env::var("RUST_LOG").ok().filter(|l| !l.trim().is_empty());
    let fixed = cli_level.is_some() || env_level.is_some();
    let level = cli_level.map(str::to_owned).or(env_level).or(config_level.map(str::to_owned));
    let filter = level.as_deref().and_then(|l| l.parse::<Targets>().ok()).unwrap_or_else(default_filter);
    let (filter, handle) = reload::Layer::new(filter);
    let journal = under_journald();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if journal {
        registry
            .with(
                fmt.without_time()
                    .with_level(false)
                    .event_format(JournalPrefix(format::format().without_time().with_level(false).with_target(false))),
            )
            .init();
    } else {
        registry.with(fmt).init();
    }
    let _ = LOGGING.set(Logging { handle, fixed });
}

/// Applies the config's `log_level` after a reload, unless the command line or `RUST_LOG` set
/// the level.
pub(crate) fn set_config_level(level: Option<&str>) {
    let Some(logging) = LOGGING.get() else { return };
    if logging.fixed {
        return;
    }
    let filter = level.and_then(|l| l.parse::<Targets>().ok()).unwrap_or_else(default_filter);
    let _ = logging.handle.reload(filter);
}

/// Whether stderr is the journal's stream (see systemd.exec(5), `$JOURNAL_STREAM`).
fn under_journald() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    platform::stderr_is(&stream.to_string_lossy())
}

#[cfg(unix)]
mod platform {
    pub(super) fn stderr_is(journal_stream: &str) -> bool {
        let Some((dev, ino)) = journal_stream.split_once(':') else { return false };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes a `stat` into the provided buffer; the result is checked.
        if unsafe { libc::fstat(2, stat.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: fstat succeeded, so the buffer is initialized.
        let stat = unsafe { stat.assume_init() };
        #[allow(clippy::unnecessary_cast, reason = "dev_t and ino_t are not u64 on every Unix")]
        let (st_dev, st_ino) = (stat.st_dev as u64, stat.st_ino as u64);
        st_dev == dev && st_ino == ino
    }
}

#[cfg(not(unix))]
mod platform {
    pub fn stderr_is(_journal_stream: &str) -> bool {
        false
    }
}

/// Prefixes each line with its syslog priority, as sd-daemon(3) describes.
struct JournalPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
