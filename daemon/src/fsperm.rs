//! File-system permission rules, in the spirit of ssh: tokend refuses to read secrets from, or
//! put its socket and state in, places that other users can read or enter; refuses to take its
//! configuration or a secret from a file that another user could have written; and says how to
//! fix them instead of silently loosening or tightening anything the user made.

use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

/// A file or directory tokend refuses, and what to do about it. `what` names it for people
/// ("config file", "state directory").
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Its metadata could not be read.
    #[error("cannot inspect {}: {source}", .path.display())]
    Inspect { path: PathBuf, source: io::Error },
    /// It could not be created.
    #[error("cannot create {}: {source}", .path.display())]
    CreateParent { path: PathBuf, source: io::Error },
    /// The directory could not be created.
    #[error("cannot create the {what} {}: {source}", .path.display())]
    Create { what: String, path: PathBuf, source: io::Error },
    /// Another user owns the file.
    #[error(
        "the {what} {p} belongs to uid {owner}, not to uid {me} who runs tokend (or root), so another user could have written it; check what it says, then replace it with a copy of your own (`cp {p} {p}.mine && mv {p}.mine {p}`)",
        p = .path.display()
    )]
    ForeignOwner { what: String, path: PathBuf, owner: u32, me: u32 },
    /// Others may write to the file.
    #[error(
        "the {what} {p} can be changed by other users (mode {mode:04o}), so another user could have written it; check what it says, then run `chmod go-w {p}`",
        p = .path.display()
    )]
    WritableByOthers { what: String, path: PathBuf, mode: u32 },
    /// Others may read the file.
    #[error("the {what} {p} is readable by other users (mode {mode:04o}); run `chmod 600 {p}`{advice}", p = .path.display())]
    ReadableByOthers { what: String, path: PathBuf, mode: u32, advice: &'static str },
    /// The directory is something else.
    #[error(
        "the {what} {} is not a directory{}; remove it or choose another path",
        .path.display(),
        if *.symlink { " (it is a symbolic link)" } else { "" }
    )]
    NotADirectory { what: String, path: PathBuf, symlink: bool },
    /// Another user owns the directory.
    #[error(
        "the {what} {} belongs to uid {owner}, not to uid {me} who runs tokend; another user may have created it to intercept tokens — remove it, or choose another path",
        .path.display()
    )]
    ForeignDirectory { what: String, path: PathBuf, owner: u32, me: u32 },
    /// Others may enter the directory.
    #[error("the {what} {p} can be entered by other users (mode {mode:04o}); run `chmod 700 {p}`", p = .path.display())]
    OpenDirectory { what: String, path: PathBuf, mode: u32 },
}

/// Refuses a file that tokend takes its configuration from if someone other than the user
/// running tokend could have written it: another user owns it (root aside), or its group or
/// others may write to it. This is OpenSSH's rule for its own files: a config names commands
/// that run as this user and says where secrets are sent, so what it says must be the user's own.
///
/// The check is made on the opened file, so it applies to exactly what is read. A directory
/// others can write in is not refused: they could swap the file only for one they own (refused
/// here) or for a link to a file that is not theirs to write.
pub(crate) fn refuse_if_others_could_have_written(file: &File, path: &Path, what: &str) -> Result<(), Refused> {
    let meta = inspect(file, path)?;
    platform::refuse_foreign_owner(&meta, path, what)?;
    platform::refuse_writable_by_others(&meta, path, what)
}

/// Refuses a file holding a secret (a client secret file, the state encryption key) if another
/// user could have written it, as [`refuse_if_others_could_have_written`] does, or if its group
/// or others may read it.
pub(crate) fn refuse_unless_private(file: &File, path: &Path, what: &str) -> Result<(), Refused> {
    let meta = inspect(file, path)?;
    platform::refuse_foreign_owner(&meta, path, what)?;
    // Before the write check: `chmod 600` fixes both.
    platform::refuse_readable_by_others(&meta, path, what)?;
    platform::refuse_writable_by_others(&meta, path, what)
}

fn inspect(file: &File, path: &Path) -> Result<Metadata, Refused> {
    file.metadata().map_err(|source| Refused::Inspect { path: path.to_owned(), source })
}

#[cfg(unix)]
mod platform {
    use std::fs::Metadata;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use super::Refused;

    pub(super) fn refuse_foreign_owner(meta: &Metadata, path: &Path, what: &str) -> Result<(), Refused> {
        let me = super::current_euid();
        let owner = meta.uid();
        if owner != me && owner != 0 {
            return Err(Refused::ForeignOwner { what: what.to_owned(), path: path.to_owned(), owner, me });
        }
        Ok(())
    }

    pub(super) fn refuse_writable_by_others(meta: &Metadata, path: &Path, what: &str) -> Result<(), Refused> {
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(Refused::WritableByOthers { what: what.to_owned(), path: path.to_owned(), mode });
        }
        Ok(())
    }

    pub(super) fn refuse_readable_by_others(meta: &Metadata, path: &Path, what: &str) -> Result<(), Refused> {
        let mode = meta.mode() & 0o7777;
        if mode & 0o044 != 0 {
            return Err(Refused::ReadableByOthers { what: what.to_owned(), path: path.to_owned(), mode, advice: "" });
        }
        Ok(())
    }
}

/// Without Unix owners and modes there is nothing to check here; a Windows install relies on
/// the ACLs of the user's profile directory.
#[cfg(not(unix))]
mod platform {
    use std::fs::Metadata;
    use std::path::Path;

    use super::Refused;

    pub fn refuse_foreign_owner(_meta: &Metadata, _path: &Path, _what: &str) -> Result<(), Refused> {
        Ok(())
    }

    pub fn refuse_writable_by_others(_meta: &Metadata, _path: &Path, _what: &str) -> Result<(), Refused> {
        Ok(())
    }

    pub fn refuse_readable_by_others(_meta: &Metadata, _path: &Path, _what: &str) -> Result<(), Refused> {
        Ok(())
    }
}

/// Creates `dir` (and its parents) if needed, with mode 0700 for the directory itself, then
/// checks that it belongs to the current user and that nobody else may enter it.
#[cfg(unix)]
pub(crate) fn ensure_private_dir(dir: &Path, what: &str) -> Result<(), Refused> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| Refused::CreateParent { path: parent.to_owned(), source })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(Refused::Create { what: what.to_owned(), path: dir.to_owned(), source }),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| Refused::Inspect { path: dir.to_owned(), source })?;
    if !meta.is_dir() {
        let symlink = meta.file_type().is_symlink();
        return Err(Refused::NotADirectory { what: what.to_owned(), path: dir.to_owned(), symlink });
    }
    let me = current_euid();
    if meta.uid() != me {
        return Err(Refused::ForeignDirectory { what: what.to_owned(), path: dir.to_owned(), owner: meta.uid(), me });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Refused::OpenDirectory { what: what.to_owned(), path: dir.to_owned(), mode });
    }
    Ok(())
}

/// Creates `dir` (and its parents) if needed.
#[cfg(not(unix))]
pub fn ensure_private_dir(dir: &Path, what: &str) -> Result<(), Refused> {
    std::fs::create_dir_all(dir).map_err(|source| Refused::Create {
        what: what.to_owned(),
        path: dir.to_owned(),
        source,
    })
}

/// The effective user ID of this process.
#[cfg(unix)]
pub(crate) fn current_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a config file that carries an inline secret if others may read it.
pub(crate) fn refuse_inline_secret_in_shared_file(file: &File, path: &Path) -> Result<(), Refused> {
    let meta = inspect(file, path)?;
    platform::refuse_readable_by_others(&meta, path, "config file, which contains an inline client_secret,").map_err(
        |refused| match refused {
            Refused::ReadableByOthers { what, path, mode, .. } => Refused::ReadableByOthers {
                what,
                path,
                mode,
                advice: ", or move the secret to client_secret_file, client_secret_env or client_secret_command",
            },
            other => other,
        },
    )
}
