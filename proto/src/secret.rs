//! Types that carry secrets, and the non-secret handle used to talk about them.
//!
//! Every access token, refresh token and client secret in tokend lives in a [`Secret`]: its
//! `Debug` output is redacted, it has no `Display`, and its memory is wiped when it is dropped.
//! Reading the value takes an explicit [`Secret::expose`], which makes every place a secret
//! leaves its box easy to find.
//!
//! A [`Fingerprint`] names a token without revealing it: clients use it to say *which* token a
//! server rejected, and logs and status output use it to tell tokens apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// A secret string: redacted in `Debug`, wiped from memory on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `value`, taking ownership so that no unwiped copy is left behind.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret value. Call this only where the value must leave tokend's hands: an HTTP
    /// request, a frame to a client, a state file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fingerprint of this secret.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.expose())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = String::deserialize(deserializer)?;
        let secret = Secret::new(std::mem::take(&mut value));
        value.zeroize();
        Ok(secret)
    }
}

/// A short, non-secret name for a token: the first 16 bytes of its SHA-256.
///
/// Tokens are high-entropy strings chosen by the server, so a truncated hash reveals nothing
/// useful about them, yet two different tokens never share a fingerprint in practice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of `token`.
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The error for a string that is not 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token fingerprint is 32 hexadecimal digits, as printed by `tokenctl token --format json`")]
pub struct ParseFingerprintError;

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 32 || !s.is_ascii() {
            return Err(ParseFingerprintError);
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| ParseFingerprintError)?;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let secret = Secret::from("hunter2-very-secret");
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn fingerprint_round_trips_through_its_hex_form() {
        let fp = Fingerprint::of("token-a");
        let text = fp.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert_ne!(Fingerprint::of("token-b"), fp);
    }

    #[test]
    fn malformed_fingerprints_are_rejected() {
        for bad in ["", "abc", &"g".repeat(32), &"é".repeat(16), &"a".repeat(33)] {
            assert_eq!(bad.parse::<Fingerprint>(), Err(ParseFingerprintError), "{bad:?}");
        }
    }
}
