//! Tokens on disk, so that a restart needs neither a login nor, while the access token lasts,
//! a request to the server.
//!
//! One file per profile, `STATE_DIR/NAME.json`, mode 0600 in a 0700 directory, in a versioned
//! format. Writes are atomic and durable: a temporary file is written, flushed to disk, renamed
//! over the old one, and the directory is flushed too; a crash at any moment leaves either the
//! old file or the new one, never a mix, so a refresh token once written is never lost.
//!
//! Each file records the profile's security fingerprint (see
//! [`Profile::security_fingerprint`]); tokens stored under other settings (another server,
//! client, secret source or scopes) are not reused.
//!
//! Tokens read back pass the same checks as tokens from a server ([`crate::limits`]): an older
//! tokend may have saved one that cannot be served (a token no frame can carry, say). The
//! file is then reported as needing to be set aside, and the parts that can be used are kept.
//!
//! With a state encryption key ([`crate::seal`]), the JSON is sealed inside an envelope,
//! `{"format": "tokend-state-sealed", "version": 1, "profile": NAME, "sealed": BASE64}`.
//! Plain files written before a key was configured are still read, and sealed when next saved.
//!
//! What tokend knows about the login (when it began, when it ends, whether the user was warned:
//! [`Login`]) is saved beside the tokens in an optional `login` object, left out when there is
//! nothing to say, so files from before it still load, and files without it stay as they were.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokend_proto::{LoginExpirySource, Secret};
use zeroize::Zeroizing;

use crate::config::Profile;
use crate::expiry::Login;
use crate::fsperm::Refused;
use crate::held::Current;
use crate::limits::Unacceptable;
use crate::oauth::token::RefreshExpiry;
use crate::seal::{OpenError, Sealer};

/// Why a state file cannot be read. Each names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// Reading it failed.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// It is not JSON of the expected shape.
    #[error("{} is not a tokend state file: {source}", .path.display())]
    NotJson { path: PathBuf, source: serde_json::Error },
    /// It names another format.
    #[error("{} is not a tokend state file", .path.display())]
    NotStateFile { path: PathBuf },
    /// A newer tokend wrote it.
    #[error("{} was written in state format {version} by a newer tokend; this one reads format {FORMAT_VERSION}", .path.display())]
    Newer { path: PathBuf, version: u32 },
    /// It has no format version.
    #[error("{} has no format version", .path.display())]
    NoVersion { path: PathBuf },
    /// It has the right format but does not parse.
    #[error("{} is damaged: {source}", .path.display())]
    Damaged { path: PathBuf, source: serde_json::Error },
    /// It is encrypted, and there is no key.
    #[error(
        "{} is encrypted, and no state encryption key is configured ([daemon] encryption_key_file or encryption_key_credential)",
        .path.display()
    )]
    NoKey { path: PathBuf },
    /// Its envelope has another version.
    #[error("{} was written in state format {version} by another tokend", .path.display())]
    OtherSealedFormat { path: PathBuf, version: u32 },
    /// Its sealed part is not Base64.
    #[error("{} is damaged: its sealed part is not Base64", .path.display())]
    NotBase64 { path: PathBuf },
    /// Its sealed part does not open.
    #[error("{}: {source}", .path.display())]
    Sealed { path: PathBuf, source: OpenError },
}

/// Why a saved access token cannot be served; completes "an access token …".
#[derive(Debug, thiserror::Error)]
enum Unservable {
    /// The token itself.
    #[error(transparent)]
    Token(#[from] Unacceptable),
    /// Its type.
    #[error("whose type is {0}")]
    Type(Unacceptable),
    /// It does not fit in a frame.
    #[error("that cannot be sent to clients ({0})")]
    Frame(String),
}

/// The version of the state file format this build writes.
pub(crate) const FORMAT_VERSION: u32 = 1;

const FORMAT_NAME: &str = "tokend-state";
const SEALED_FORMAT_NAME: &str = "tokend-state-sealed";

/// The tokens restored for a profile.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// The access token, if one was saved (it may have expired since).
    pub token: Option<Current>,
    /// The refresh token, if one was saved.
    pub refresh_token: Option<Secret>,
    /// What is known about the login.
    pub login: Login,
    /// Why part of the file could not be used, if so: the caller sets the file aside for the
    /// user and saves what could be used in its place.
    pub unusable: Option<String>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
    sealer: Option<Sealer>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFile {
    format: String,
    version: u32,
    profile: String,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    version: u32,
    profile: String,
    config_fingerprint: String,
    saved_at_ms: u64,
    refresh_token: Option<Secret>,
    access_token: Option<SavedAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    login: Option<SavedLogin>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SavedLogin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lifetime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<LoginExpirySource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warned_for_ms: Option<u64>,
}

impl SavedLogin {
    fn from(login: &Login) -> Option<SavedLogin> {
        let saved = SavedLogin {
            at_ms: login.at.map(to_ms),
            expires_at_ms: login.stated.map(|s| to_ms(s.expires_at)),
            lifetime_ms: login.stated.map(|s| s.lifetime.as_millis().try_into().unwrap_or(u64::MAX)),
            source: login.stated.map(|s| s.source),
            warned_for_ms: login.warned_for.map(to_ms),
        };
        (login != &Login::default()).then_some(saved)
    }

    /// The login, as far as the file says it consistently (times past what clocks hold are
    /// clamped like a server's lifetimes).
    fn login(&self) -> Login {
        let time = |ms: u64| crate::limits::after(UNIX_EPOCH, Duration::from_millis(ms));
        let stated = match (self.expires_at_ms, self.lifetime_ms, self.source) {
            (Some(expires), Some(lifetime), Some(source)) => Some(RefreshExpiry {
                expires_at: time(expires),
                lifetime: crate::limits::lifetime(Duration::from_millis(lifetime)),
                source,
            }),
            _ => None,
        };
        Login { at: self.at_ms.map(time), stated, warned_for: self.warned_for_ms.map(time) }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedAccess {
    token: Secret,
    token_type: String,
    obtained_at_ms: u64,
    expires_at_ms: u64,
    scope: Option<String>,
}

/// Only the version field, read first so that a newer format is reported as such.
#[derive(Deserialize)]
struct VersionProbe {
    format: Option<String>,
    version: Option<u32>,
}

impl Store {
    /// Opens (creating if needed) the state directory, refusing one that others can enter.
    /// With a `sealer`, state is encrypted at rest.
    pub(crate) fn open(dir: &Path, sealer: Option<Sealer>) -> Result<Store, Refused> {
        crate::fsperm::ensure_private_dir(dir, "state directory")?;
        let store = Store { dir: dir.to_owned(), sealer };
        store.remove_leftover_temporaries();
        Ok(store)
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of profile `name`.
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Loads the tokens saved for `profile`. A missing file, or one saved under other security
    /// settings, yields `Ok(None)`; an unreadable one is an error and is left in place.
    pub(crate) fn load(&self, profile: &Profile) -> Result<Option<Restored>, LoadError> {
        let path = self.path_of(&profile.name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LoadError::Read { path, source }),
        };
        let probe: VersionProbe =
            serde_json::from_slice(&bytes).map_err(|source| LoadError::NotJson { path: path.clone(), source })?;
        let bytes = match probe.format.as_deref() {
            Some(FORMAT_NAME) => bytes,
            Some(SEALED_FORMAT_NAME) => self.unseal(&path, &profile.name, &bytes)?,
            _ => return Err(LoadError::NotStateFile { path }),
        };
        let probe: VersionProbe =
            serde_json::from_slice(&bytes).map_err(|source| LoadError::NotJson { path: path.clone(), source })?;
        match probe.version {
            Some(FORMAT_VERSION) => {}
            Some(version) => return Err(LoadError::Newer { path, version }),
            None => return Err(LoadError::NoVersion { path }),
        }
        let file: StateFile =
            serde_json::from_slice(&bytes).map_err(|source| LoadError::Damaged { path: path.clone(), source })?;
        if file.config_fingerprint != profile.security_fingerprint() {
            tracing::info!(
                profile = %profile.name,
                "not reusing stored tokens: the profile's server, client, secret source or scopes changed"
            );
            return Ok(None);
        }
        let mut unusable = Vec::new();
        let refresh_token = file.refresh_token.filter(|t| match crate::limits::check_token(t.expose()) {
            Ok(()) => true,
            Err(why) => {
                unusable.push(format!("a refresh token {why}"));
                false
            }
        });
        let token = file.access_token.and_then(|a| match servable(&profile.name, &a) {
            Ok(token) => Some(token),
            Err(why) => {
                unusable.push(format!("an access token {why}"));
                None
            }
        });
        let unusable = (!unusable.is_empty()).then(|| unusable.join(" and "));
        let login = file.login.as_ref().map(SavedLogin::login).unwrap_or_default();
        Ok(Some(Restored { token, refresh_token, login, unusable }))
    }

    /// Saves `profile`'s tokens atomically and durably. With no tokens at all, the file is
    /// removed instead.
    pub(crate) fn save(
        &self,
        profile: &Profile,
        token: Option<&Current>,
        refresh_token: Option<&Secret>,
        login: &Login,
    ) -> io::Result<()> {
        let token = token.filter(|t| !t.rejected);
        if token.is_none() && refresh_token.is_none() {
            return self.remove(&profile.name);
        }
        let file = StateFile {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            profile: profile.name.clone(),
            config_fingerprint: profile.security_fingerprint(),
            saved_at_ms: to_ms(SystemTime::now()),
            refresh_token: refresh_token.cloned(),
            access_token: token.map(|t| SavedAccess {
                token: t.access_token.clone(),
                token_type: t.token_type.clone(),
                obtained_at_ms: to_ms(t.obtained_at),
                expires_at_ms: to_ms(t.expires_at),
                scope: t.scope.clone(),
            }),
            login: refresh_token.and(SavedLogin::from(login)),
        };
        let mut bytes = Zeroizing::new(serde_json::to_vec_pretty(&file).map_err(io::Error::other)?);
        if let Some(sealer) = &self.sealer {
            let envelope = SealedFile {
                format: SEALED_FORMAT_NAME.to_owned(),
                version: FORMAT_VERSION,
                profile: profile.name.clone(),
                sealed: base64::engine::general_purpose::STANDARD.encode(sealer.seal(&profile.name, &bytes)),
            };
            bytes = Zeroizing::new(serde_json::to_vec_pretty(&envelope).map_err(io::Error::other)?);
        }
        write_atomically(&self.dir, &self.path_of(&profile.name), &bytes)
    }

    fn unseal(&self, path: &Path, profile: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, LoadError> {
        let path = || path.to_owned();
        let Some(sealer) = &self.sealer else {
            return Err(LoadError::NoKey { path: path() });
        };
        let envelope: SealedFile =
            serde_json::from_slice(bytes).map_err(|source| LoadError::Damaged { path: path(), source })?;
        if envelope.version != FORMAT_VERSION {
            return Err(LoadError::OtherSealedFormat { path: path(), version: envelope.version });
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(envelope.sealed.as_bytes())
            .map_err(|_| LoadError::NotBase64 { path: path() })?;
        sealer.open(profile, &sealed).map_err(|source| LoadError::Sealed { path: path(), source })
    }

    /// Forgets profile `name`'s tokens.
    pub(crate) fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path_of(name)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves profile `name`'s file aside as `NAME.json.damaged-UNIXTIME`, so that a file that
    /// could not be read is kept for inspection and not overwritten by the next save.
    pub(crate) fn quarantine(&self, name: &str) -> io::Result<PathBuf> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let aside = self.dir.join(format!("{name}.json.damaged-{now}"));
        fs::rename(self.path_of(name), &aside)?;
        sync_dir(&self.dir)?;
        Ok(aside)
    }

    fn remove_leftover_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The saved access token as tokend holds tokens, if it passes the checks a token from a
/// server does and can be sent to clients. Its lifetime is clamped as a server's would be.
fn servable(profile: &str, saved: &SavedAccess) -> Result<Current, Unservable> {
    crate::limits::check_token(saved.token.expose())?;
    crate::limits::check_token_type(&saved.token_type).map_err(Unservable::Type)?;
    let obtained_at = from_ms(saved.obtained_at_ms);
    let claimed = from_ms(saved.expires_at_ms).duration_since(obtained_at).unwrap_or_default();
    let token = Current {
        fingerprint: saved.token.fingerprint(),
        access_token: saved.token.clone(),
        token_type: saved.token_type.clone(),
        obtained_at,
        expires_at: crate::limits::after(obtained_at, crate::limits::lifetime(claimed)),
        scope: saved.scope.clone(),
        rejected: false,
    };
    let served = tokend_proto::Response::Token(tokend_proto::Token {
        profile: profile.to_owned(),
        access_token: token.access_token.clone(),
        token_type: token.token_type.clone(),
        expires_at: token.expires_at,
        fingerprint: token.fingerprint,
        scope: token.scope.clone(),
    });
    tokend_proto::codec::encode(&served, &mut Zeroizing::new(Vec::new()))
        .map_err(|e| Unservable::Frame(e.to_string()))?;
    Ok(token)
}

/// Writes `bytes` to `path` so that a crash leaves either the old content or the new one.
pub(crate) fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".tmp-{}-{:016x}", std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut file = private_file(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(unix)]
fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn to_ms(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn profile(client_id: &str) -> Profile {
        let text = format!(
            "[profiles.mm]\ngrant = \"authorization_code\"\ntoken_url = \"http://127.0.0.1:1/token\"\nauthorize_url = \"http://127.0.0.1:1/authorize\"\nredirect_uri = \"http://127.0.0.1:2/cb\"\nclient_id = \"{client_id}\"\n"
        );
        let config = Config::parse(Path::new("/x/config.toml"), &text).unwrap();
        (*config.profiles["mm"]).clone()
    }

    fn token(value: &str) -> Current {
        let now = UNIX_EPOCH + Duration::from_millis(1_900_000_000_123);
        Current {
            access_token: Secret::from(value),
            token_type: "Bearer".into(),
            obtained_at: now,
            expires_at: now + Duration::from_secs(3600),
            scope: Some("read".into()),
            fingerprint: Fingerprint::of(value),
            rejected: false,
        }
    }

    use tokend_proto::Fingerprint;

    #[test]
    fn saved_tokens_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        let p = profile("abc");
        store.save(&p, Some(&token("at")), Some(&Secret::from("rt")), &Login::default()).unwrap();
        let restored = store.load(&p).unwrap().unwrap();
        assert_eq!(restored.token.unwrap(), token("at"));
        assert_eq!(restored.refresh_token.unwrap().expose(), "rt");
    }

    #[cfg(unix)]
    #[test]
    fn state_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open(&state, None).unwrap();
        store.save(&profile("abc"), None, Some(&Secret::from("rt")), &Login::default()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&store.path_of("mm")), 0o600);
    }

    #[test]
    fn tokens_saved_under_other_settings_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        store.save(&profile("abc"), Some(&token("at")), Some(&Secret::from("rt")), &Login::default()).unwrap();
        assert!(store.load(&profile("other-client")).unwrap().is_none());
    }

    #[test]
    fn a_damaged_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        fs::write(store.path_of("mm"), b"{\"format\":\"tokend-state\",\"version\":1,").unwrap();
        let err = store.load(&profile("abc")).unwrap_err().to_string();
        assert!(err.contains("not a tokend state file") || err.contains("damaged"), "{err}");
        assert!(store.path_of("mm").exists());
    }

    #[test]
    fn a_saved_token_that_cannot_be_served_is_reported_and_the_refresh_token_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        let p = profile("abc");
        for (bad, why) in [(&"a".repeat(70_000)[..], "of 70000 bytes"), ("at\r\nX: y", "a line break")] {
            store.save(&p, Some(&token(bad)), Some(&Secret::from("rt")), &Login::default()).unwrap();
            let restored = store.load(&p).unwrap().unwrap();
            assert!(restored.token.is_none());
            assert_eq!(restored.refresh_token.unwrap().expose(), "rt");
            let unusable = restored.unusable.unwrap();
            assert!(unusable.contains("an access token") && unusable.contains(why), "{unusable}");
        }
        store.save(&p, Some(&token("at")), Some(&Secret::from("r t")), &Login::default()).unwrap();
        let restored = store.load(&p).unwrap().unwrap();
        assert!(restored.refresh_token.is_none());
        assert_eq!(restored.token.unwrap().access_token.expose(), "at");
        assert!(restored.unusable.unwrap().contains("a refresh token"));
    }

    #[test]
    fn a_saved_lifetime_too_long_for_a_clock_is_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        let p = profile("abc");
        let mut forever = token("at");
        forever.expires_at = UNIX_EPOCH + Duration::from_millis(u64::MAX);
        store.save(&p, Some(&forever), None, &Login::default()).unwrap();
        let restored = store.load(&p).unwrap().unwrap();
        assert!(restored.unusable.is_none());
        assert_eq!(restored.token.unwrap().lifetime(), crate::limits::MAX_LIFETIME);
    }

    #[test]
    fn a_newer_format_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        fs::write(store.path_of("mm"), br#"{"format":"tokend-state","version":99}"#).unwrap();
        assert!(store.load(&profile("abc")).unwrap_err().to_string().contains("newer tokend"));
    }

    #[test]
    fn saving_nothing_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        let p = profile("abc");
        store.save(&p, Some(&token("at")), None, &Login::default()).unwrap();
        store.save(&p, None, None, &Login::default()).unwrap();
        assert!(!store.path_of("mm").exists());
        assert!(store.load(&p).unwrap().is_none());
    }

    #[test]
    fn leftover_temporary_files_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Store::open(&state, None).unwrap();
        fs::write(state.join(".tmp-1-abc"), b"partial").unwrap();
        Store::open(&state, None).unwrap();
        assert!(!state.join(".tmp-1-abc").exists());
    }

    #[test]
    fn sealed_state_hides_the_tokens_and_comes_back_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = Sealer::from_key_bytes(&[9; 32]).unwrap();
        let store = Store::open(&dir.path().join("state"), Some(key.clone())).unwrap();
        let p = profile("abc");
        store
            .save(&p, Some(&token("at-secret-value")), Some(&Secret::from("rt-secret-value")), &Login::default())
            .unwrap();
        let on_disk = fs::read_to_string(store.path_of("mm")).unwrap();
        assert!(on_disk.contains("tokend-state-sealed"));
        assert!(!on_disk.contains("secret-value"), "{on_disk}");
        let restored = store.load(&p).unwrap().unwrap();
        assert_eq!(restored.refresh_token.unwrap().expose(), "rt-secret-value");

        let wrong = Store::open(&dir.path().join("state"), Some(Sealer::from_key_bytes(&[8; 32]).unwrap())).unwrap();
        assert!(wrong.load(&p).unwrap_err().to_string().contains("key is wrong"));
        let none = Store::open(&dir.path().join("state"), None).unwrap();
        assert!(none.load(&p).unwrap_err().to_string().contains("no state encryption key"));
    }

    #[test]
    fn plain_state_is_read_and_sealed_once_a_key_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let p = profile("abc");
        let plain = Store::open(&dir.path().join("state"), None).unwrap();
        plain.save(&p, None, Some(&Secret::from("rt")), &Login::default()).unwrap();
        let sealed = Store::open(&dir.path().join("state"), Some(Sealer::from_key_bytes(&[9; 32]).unwrap())).unwrap();
        assert_eq!(sealed.load(&p).unwrap().unwrap().refresh_token.unwrap().expose(), "rt");
        sealed.save(&p, None, Some(&Secret::from("rt")), &Login::default()).unwrap();
        assert!(fs::read_to_string(sealed.path_of("mm")).unwrap().contains("tokend-state-sealed"));
    }

    #[cfg(unix)]
    #[test]
    fn a_state_directory_others_can_enter_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let err = Store::open(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
    }

    #[test]
    fn the_login_is_saved_with_the_tokens_and_files_without_it_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        let p = profile("abc");
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let login = Login {
            at: Some(at),
            stated: Some(RefreshExpiry {
                expires_at: at + Duration::from_secs(1800),
                lifetime: Duration::from_secs(1800),
                source: LoginExpirySource::RefreshTokenExp,
            }),
            warned_for: Some(at + Duration::from_secs(1800)),
        };
        store.save(&p, Some(&token("at")), Some(&Secret::from("rt")), &login).unwrap();
        assert_eq!(store.load(&p).unwrap().unwrap().login, login);

        store.save(&p, Some(&token("at")), Some(&Secret::from("rt")), &Login::default()).unwrap();
        let text = fs::read_to_string(store.path_of("mm")).unwrap();
        assert!(!text.contains("login"), "nothing to say, nothing written: {text}");
        assert_eq!(store.load(&p).unwrap().unwrap().login, Login::default());
    }
}
