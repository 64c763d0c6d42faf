//! Running a `client_secret_command` and reading the secret it prints.
//!
//! The command runs as `/bin/sh -c COMMAND`, with nothing on stdin, in a process group of its
//! own, and it is bounded:
//!
//! - **in time, as a whole**: it is done when the shell has exited *and* its output has closed,
//!   and all of that must happen within the limit (`client_secret_command_timeout`, 30 s by
//!   default). Something it left in the background that still holds its output open
//!   (`sleep 45 & echo s`) keeps it from being done; at the deadline the whole process group is
//!   killed, not just the shell, and the config is refused. What it leaves running with its
//!   output closed is not waited for.
//! - **in output**: stdout is read into a fixed 64 KiB buffer, and a command that prints more is
//!   killed at once; stderr is drained, and its first 4 KiB kept for the error message.
//!
//! Config loading is synchronous: it runs before the daemon's runtime exists (at start and for
//! `--check-config`) and on a blocking thread during a reload. So the command gets a
//! current-thread runtime of its own while it runs, and tokio's process handling waits for the
//! exit, both pipes and the deadline at once, with no helper threads and no polling.

use std::process::Stdio;
use std::time::Duration;

use tokend_proto::Secret;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

/// How long a `client_secret_command` may run, unless its profile says otherwise.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a `client_secret_command` may print.
pub(super) const MAX_OUTPUT: usize = 64 * 1024;
/// How much of the command's stderr is kept for the error message.
const STDERR_KEPT: usize = 4096;

/// Why a `client_secret_command` gave no secret. Never shows what it printed on stdout.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// It could not be started.
    #[error("cannot run the command: {0}")]
    Start(std::io::Error),
    /// Waiting for it failed.
    #[error("cannot wait for the command: {0}")]
    Wait(std::io::Error),
    /// Reading its output failed.
    #[error("cannot read the command's output: {0}")]
    Read(std::io::Error),
    /// It was not done by the deadline.
    #[error(
        "the command did not finish within {}: it was still running, or something it started in the background still held its output open; all of it was stopped. Send a background process's output elsewhere (`… >/dev/null 2>&1 &`), or raise client_secret_command_timeout",
        humantime::format_duration(*.0)
    )]
    TimedOut(Duration),
    /// It printed too much.
    #[error("the command printed more than {} KiB; it must print only the client secret", MAX_OUTPUT / 1024)]
    TooMuchOutput,
    /// It exited unsuccessfully; `detail` is the first line of its stderr, if any.
    #[error("the command failed ({status}){detail}")]
    Failed { status: std::process::ExitStatus, detail: String },
    /// Its output is not text.
    #[error("the command printed something that is not UTF-8 text")]
    NotUtf8,
}

/// Runs `command` and returns what it printed, within `limit`. Errors say what went wrong and
/// how to fix it, never what the command printed on stdout.
///
/// Call it off any async runtime: it runs one of its own.
pub(super) fn run(command: &str, limit: Duration) -> Result<Secret, CommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CommandError::Start)?;
    runtime.block_on(run_bounded(command, limit))
}

async fn run_bounded(command: &str, limit: Duration) -> Result<Secret, CommandError> {
    let mut shell = Command::new("/bin/sh");
    shell.arg("-c").arg(command).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    platform::own_group(&mut shell);
    let mut child = shell.spawn().map_err(CommandError::Start)?;
    // The shell's PID is also its process group's ID; taken now, because `Child::id` forgets it
    // once the shell has been reaped.
    let group = child.id();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut output = Zeroizing::new(vec![0u8; MAX_OUTPUT + 1]);

    let finished = tokio::time::timeout(limit, async {
        tokio::try_join!(read_bounded(&mut stdout, &mut output), async { Ok(keep_start(&mut stderr).await) }, async {
            child.wait().await.map_err(CommandError::Wait)
        },)
    })
    .await;
    let (len, stderr, status) = match finished {
        Ok(Ok(done)) => done,
        Ok(Err(error)) => {
            platform::kill_group(group, &mut child).await;
            return Err(error);
        }
        Err(_) => {
            platform::kill_group(group, &mut child).await;
            return Err(CommandError::TimedOut(limit));
        }
    };
    if !status.success() {
        let stderr = stderr.trim();
        let detail = if stderr.is_empty() { String::new() } else { format!(": {}", first_line(stderr)) };
        return Err(CommandError::Failed { status, detail });
    }
    let text = std::str::from_utf8(&output[..len]).map_err(|_| CommandError::NotUtf8)?;
    Ok(Secret::from(text))
}

/// Reads `pipe` to its end into `buf`; fails as soon as it holds more than [`MAX_OUTPUT`]. The
/// buffer never grows, so the secret is never copied into memory that is freed unwiped.
async fn read_bounded(pipe: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Result<usize, CommandError> {
    let mut len = 0;
    loop {
        if len > MAX_OUTPUT {
            return Err(CommandError::TooMuchOutput);
        }
        match pipe.read(&mut buf[len..]).await {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(e) => return Err(CommandError::Read(e)),
        }
    }
}

/// Reads `pipe` to its end, keeping the first [`STDERR_KEPT`] bytes: a command that writes a lot
/// to stderr must not block on a full pipe.
async fn keep_start(pipe: &mut (impl AsyncRead + Unpin)) -> String {
    let mut kept = Vec::new();
    let _ = pipe.take(STDERR_KEPT as u64).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(pipe, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&kept).into_owned()
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    line.char_indices().nth(200).map_or(line, |(end, _)| &line[..end])
}

#[cfg(unix)]
mod platform {
    use super::*;

    /// Puts the command in a process group of its own, so that everything it starts can be
    /// stopped together.
    pub(super) fn own_group(command: &mut Command) {
        command.process_group(0);
    }

    /// Kills every process of the command's group, then reaps the shell.
    ///
    /// The group's ID cannot name anyone else's processes here: it is killed only while the
    /// shell is unreaped or while a process of its group still runs (one holding the output
    /// open), and an ID in use by a process group is never handed to a new process.
    pub(super) async fn kill_group(group: Option<u32>, child: &mut Child) {
        if let Some(group) = group.and_then(|g| libc::pid_t::try_from(g).ok()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = child.kill().await;
    }
}

#[cfg(not(unix))]
mod platform {
    use super::*;

    pub fn own_group(_command: &mut Command) {}

    pub async fn kill_group(_group: Option<u32>, child: &mut Child) {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_s_output_is_its_secret() {
        assert_eq!(run("printf 'from-cmd'", DEFAULT_TIMEOUT).unwrap().expose(), "from-cmd");
    }

    #[test]
    fn output_up_to_the_bound_is_read_and_more_is_refused() {
        let at_bound = format!("head -c {MAX_OUTPUT} /dev/zero | tr '\\0' a");
        assert_eq!(run(&at_bound, DEFAULT_TIMEOUT).unwrap().expose().len(), MAX_OUTPUT);
        let over = format!("head -c {} /dev/zero | tr '\\0' a", MAX_OUTPUT + 1);
        assert!(run(&over, DEFAULT_TIMEOUT).unwrap_err().to_string().contains("more than 64 KiB"));
    }

    #[test]
    fn a_command_that_writes_much_to_stderr_is_not_blocked() {
        let noisy = "head -c 1000000 /dev/zero >&2; echo s";
        assert_eq!(run(noisy, DEFAULT_TIMEOUT).unwrap().expose(), "s\n");
    }

    #[test]
    fn it_runs_on_a_blocking_thread_of_a_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let secret =
            runtime.block_on(async { tokio::task::spawn_blocking(|| run("echo s", DEFAULT_TIMEOUT)).await }).unwrap();
        assert_eq!(secret.unwrap().expose(), "s\n");
    }
}
