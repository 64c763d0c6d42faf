//! File-system permission rules, in the spirit of ssh: tokend refuses to read secrets from, or
//! put its socket and state in, places that other users can read or enter, and says how to fix
//! them instead of silently loosening or tightening anything the user made.

use std::fs::File;
use std::io;
use std::path::Path;

/// Refuses a file holding a secret if its group or others may read it.
#[cfg(unix)]
pub fn refuse_if_readable_by_others(file: &File, path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata().map_err(|e| format!("cannot inspect {}: {e}", path.display()))?.permissions().mode();
    if mode & 0o044 != 0 {
        return Err(format!(
            "the {what} {} is readable by other users (mode {:04o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

/// Refuses a file holding a secret if its group or others may read it.
#[cfg(not(unix))]
pub fn refuse_if_readable_by_others(_file: &File, _path: &Path, _what: &str) -> Result<(), String> {
    Ok(())
}

/// Creates `dir` (and its parents) if needed, with mode 0700 for the directory itself, then
/// checks that it belongs to the current user and that nobody else may enter it.
#[cfg(unix)]
pub fn ensure_private_dir(dir: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create the {what} {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "the {what} {} is not a directory{}; remove it or choose another path",
            dir.display(),
            if meta.file_type().is_symlink() { " (it is a symbolic link)" } else { "" }
        ));
    }
    let me = current_euid();
    if meta.uid() != me {
        return Err(format!(
            "the {what} {} belongs to uid {}, not to uid {me} who runs tokend; another user may have created it to intercept tokens — remove it, or choose another path",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the {what} {} can be entered by other users (mode {mode:04o}); run `chmod 700 {}`",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Creates `dir` (and its parents) if needed.
#[cfg(not(unix))]
pub fn ensure_private_dir(dir: &Path, what: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the {what} {}: {e}", dir.display()))
}

/// The effective user ID of this process.
#[cfg(unix)]
pub fn current_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a config file that carries an inline secret if others may read it.
pub fn refuse_inline_secret_in_shared_file(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    refuse_if_readable_by_others(&file, path, "config file, which contains an inline client_secret,").map_err(|m| {
        format!("{m}, or move the secret to client_secret_file, client_secret_env or client_secret_command")
    })
}
