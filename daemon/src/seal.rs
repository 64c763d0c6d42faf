//! Encryption at rest for the state files (optional, off by default).
//!
//! With a key configured — a file, or a systemd credential (`LoadCredentialEncrypted=`, made
//! with `systemd-creds encrypt`) — every state file is sealed with XChaCha20-Poly1305 under a
//! fresh random 24-byte nonce per write, with the profile's name as associated data, so a file
//! cannot be read without the key, altered without detection, or swapped for another profile's.
//!
//! A key is 32 bytes: raw, 64 hexadecimal digits, or Base64. Make one with
//! `head -c 32 /dev/urandom > ~/.config/tokend/state.key && chmod 600 ~/.config/tokend/state.key`.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::fsperm::Refused;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Seals and opens state files with one key.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([key redacted])")
    }
}

impl Clone for Sealer {
    fn clone(&self) -> Self {
        Sealer { cipher: self.cipher.clone() }
    }
}

/// Why a state encryption key cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// The key file cannot be opened.
    #[error("cannot open the key file {}: {source}", .path.display())]
    Open { path: PathBuf, source: std::io::Error },
    /// Others may read or write the key file.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The key file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The key file does not hold a key.
    #[error("{}: {BAD_KEY}", .path.display())]
    BadKeyIn { path: PathBuf },
    /// The bytes are not a key.
    #[error("{BAD_KEY}")]
    BadKey,
    /// A credential is configured but systemd passed none.
    #[error(
        "encryption_key_credential = {name:?}, but tokend was not given credentials ($CREDENTIALS_DIRECTORY is not set); add `LoadCredentialEncrypted={name}:PATH` to the service"
    )]
    NoCredentials { name: String },
}

/// Why sealed state cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Shorter than a nonce and a tag.
    #[error("the sealed state is too short")]
    TooShort,
    /// The tag does not match.
    #[error("cannot decrypt it: the key is wrong, or the file was altered")]
    Undecryptable,
}

const BAD_KEY: &str = "a state encryption key must be 32 bytes: raw, 64 hexadecimal digits, or Base64; make one with `head -c 32 /dev/urandom > KEYFILE`";

impl Sealer {
    /// Reads a key file, which must be the user's own (or root's) and not readable or writable by
    /// other users.
    pub(crate) fn from_key_file(path: &Path) -> Result<Sealer, KeyError> {
        let mut file = std::fs::File::open(path).map_err(|source| KeyError::Open { path: path.to_owned(), source })?;
        crate::fsperm::refuse_unless_private(&file, path, "state encryption key")?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.by_ref()
            .take(4096)
            .read_to_end(&mut bytes)
            .map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        Sealer::from_key_bytes(&bytes).map_err(|_| KeyError::BadKeyIn { path: path.to_owned() })
    }

    /// Reads the systemd credential `name` from `$CREDENTIALS_DIRECTORY`.
    pub(crate) fn from_credential(name: &str) -> Result<Sealer, KeyError> {
        let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
            return Err(KeyError::NoCredentials { name: name.to_owned() });
        };
        Sealer::from_key_file(&Path::new(&dir).join(name))
    }

    /// A key given as 32 raw bytes, 64 hex digits, or Base64 of 32 bytes.
    pub(crate) fn from_key_bytes(bytes: &[u8]) -> Result<Sealer, KeyError> {
        let key = if bytes.len() == KEY_LEN {
            Zeroizing::new(bytes.to_vec())
        } else {
            let text = std::str::from_utf8(bytes).map_err(|_| bad_key())?.trim();
            decode_hex(text)
                .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
                .or_else(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
                .map(Zeroizing::new)
                .filter(|k| k.len() == KEY_LEN)
                .ok_or_else(bad_key)?
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| bad_key())?;
        Ok(Sealer { cipher })
    }

    /// Encrypts `plaintext` for `profile`: nonce followed by ciphertext and tag.
    pub(crate) fn seal(&self, profile: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: profile.as_bytes() })
            .expect("XChaCha20-Poly1305 encryption cannot fail for state-sized messages");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Sealer::seal`] produced for `profile`.
    pub(crate) fn open(&self, profile: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(OpenError::TooShort);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        self.cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: profile.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Undecryptable)
    }
}

fn bad_key() -> KeyError {
    KeyError::BadKey
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 2 * KEY_LEN || !text.is_ascii() {
        return None;
    }
    (0..KEY_LEN).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::from_key_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn sealed_state_opens_with_the_same_key_and_profile_only() {
        let sealed = sealer(1).seal("mm", b"refresh token");
        assert_eq!(&*sealer(1).open("mm", &sealed).unwrap(), b"refresh token");
        assert!(sealer(2).open("mm", &sealed).unwrap_err().to_string().contains("key is wrong"));
        assert!(sealer(1).open("other", &sealed).is_err(), "bound to its profile");
    }

    #[test]
    fn a_tampered_file_is_detected() {
        let mut sealed = sealer(1).seal("mm", b"refresh token");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(sealer(1).open("mm", &sealed).is_err());
        assert!(sealer(1).open("mm", &sealed[..10]).is_err());
    }

    #[test]
    fn every_write_uses_a_fresh_nonce() {
        let s = sealer(1);
        assert_ne!(s.seal("mm", b"x"), s.seal("mm", b"x"));
    }

    #[test]
    fn keys_may_be_raw_hex_or_base64() {
        let raw = [7u8; 32];
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let sealed = Sealer::from_key_bytes(&raw).unwrap().seal("p", b"x");
        for text in [hex.clone(), format!("{hex}\n"), b64.clone(), format!("{b64}\n")] {
            let s = Sealer::from_key_bytes(text.as_bytes()).unwrap();
            assert_eq!(&*s.open("p", &sealed).unwrap(), b"x", "{text:?}");
        }
        assert!(Sealer::from_key_bytes(b"too short").unwrap_err().to_string().contains("32 bytes"));
    }

    #[test]
    fn debug_output_hides_the_key() {
        assert_eq!(format!("{:?}", sealer(1)), "Sealer([key redacted])");
    }
}
