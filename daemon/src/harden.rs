//! Process hardening applied before anything else runs, as ssh-agent does:
//!
//! - `PR_SET_DUMPABLE` 0: other processes of the same user cannot ptrace tokend or read its
//!   memory through `/proc/PID/mem`, and `/proc/PID` files become owned by root;
//! - `RLIMIT_CORE` 0: a crash leaves no core dump holding tokens;
//! - `RLIMIT_NOFILE` raised to its hard limit, so thousands of clients can connect at once.

/// What hardening achieved, to log once logging is set up.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Problems worth a warning.
    pub warnings: Vec<String>,
    /// The open-file limit now in force.
    pub max_files: Option<u64>,
}

/// Applies every hardening step this platform supports.
pub(crate) fn apply() -> Report {
    let mut report = Report::default();
    platform::apply(&mut report);
    report
}

#[cfg(unix)]
mod platform {
    use super::Report;
    use std::io;

    pub(super) fn apply(report: &mut Report) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers.
            if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
                report.warnings.push(format!("cannot disable ptrace and core dumps: {}", io::Error::last_os_error()));
            }
        }
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `no_core` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
            report.warnings.push(format!("cannot disable core dumps: {}", io::Error::last_os_error()));
        }
        let mut files = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `files` is a valid rlimit to write into.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) } == 0 {
            let wanted = files.rlim_max.min(1 << 20);
            if files.rlim_cur < wanted {
                let raised = libc::rlimit { rlim_cur: wanted, rlim_max: files.rlim_max };
                // SAFETY: `raised` is a valid rlimit.
                if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                    files.rlim_cur = wanted;
                }
            }
            #[allow(clippy::unnecessary_cast, reason = "rlim_t is not u64 on every Unix")]
            let current = files.rlim_cur as u64;
            report.max_files = Some(current);
        }
    }
}

#[cfg(not(unix))]
mod platform {
    pub fn apply(_report: &mut super::Report) {}
}
