//! The access token as a profile holds it: what the state machine serves and [`crate::persist`]
//! saves. It sits below both, so that the file format does not depend on the machine.

use std::time::{Duration, SystemTime};

use tokend_proto::{Fingerprint, Secret};

use crate::oauth::token::TokenSet;

/// The access token being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Current {
    /// The token as obtained.
    pub access_token: Secret,
    /// Its type.
    pub token_type: String,
    /// When the request that obtained it was sent.
    pub obtained_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// The granted scope.
    pub scope: Option<String>,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// A server rejected it: never serve it again.
    pub rejected: bool,
}

impl Current {
    /// The access token that `set` brought.
    pub(crate) fn from_set(set: &TokenSet) -> Current {
        Current {
            fingerprint: set.access_token.fingerprint(),
            access_token: set.access_token.clone(),
            token_type: set.token_type.clone(),
            obtained_at: set.obtained_at,
            expires_at: set.expires_at,
            scope: set.scope.clone(),
            rejected: false,
        }
    }

    /// How long it lives in all.
    pub(crate) fn lifetime(&self) -> Duration {
        self.expires_at.duration_since(self.obtained_at).unwrap_or_default()
    }
}
