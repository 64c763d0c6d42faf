//! The setup most login tests share: the fake provider in the Movemint style (Doorkeeper), with
//! one confidential client registered for the authorization code grant, and the profile that
//! logs in to it.

use crate::fake::{Client, ClientAuth, Style};
use crate::{FakeProvider, free_port};

/// A Movemint-style fake provider with one client, whose id is also the profile's name: body
/// authentication (`client_auth = "post"`), a loopback redirect URI registered, refresh tokens
/// rotated on every refresh (the provider's default).
pub struct Movemint {
    /// The provider.
    pub fake: FakeProvider,
    /// The redirect URI registered for the client, on a port that was free a moment ago.
    pub redirect: String,
    /// The client's id, and the profile's name.
    pub client_id: String,
    /// The client's secret.
    pub secret: String,
}

impl std::ops::Deref for Movemint {
    type Target = FakeProvider;
    fn deref(&self) -> &FakeProvider {
        &self.fake
    }
}

impl Movemint {
    /// The provider with client and profile `mm`, secret `mm-secret`.
    pub async fn start() -> Movemint {
        Movemint::with_client("mm", "mm-secret").await
    }

    /// The provider with client and profile `client_id`, whose secret is `secret`.
    pub async fn with_client(client_id: &str, secret: &str) -> Movemint {
        let fake = FakeProvider::start().await;
        let redirect = format!("http://127.0.0.1:{}/callback", free_port());
        fake.register(
            client_id,
            Client {
                secret: Some(secret.into()),
                auth: ClientAuth::Post,
                required_params: vec![],
                redirect_uri: Some(redirect.clone()),
            },
        );
        fake.set_style(Style::Movemint);
        Movemint { fake, redirect, client_id: client_id.into(), secret: secret.into() }
    }

    /// The profile's table, with every endpoint the provider has (token, authorize, revoke,
    /// info), followed by `extra` (more keys of the profile, one per line).
    pub fn profile(&self, extra: &str) -> String {
        format!(
            r#"
[profiles.{id}]
grant = "authorization_code"
token_url = "{base}/oauth/token"
authorize_url = "{base}/oauth/authorize"
redirect_uri = "{redirect}"
revoke_url = "{base}/oauth/revoke"
info_url = "{base}/oauth/token/info"
client_id = "{id}"
client_secret = "{secret}"
client_auth = "post"
{extra}
"#,
            id = self.client_id,
            base = self.fake.base,
            redirect = self.redirect,
            secret = self.secret,
        )
    }

    /// A config with the profile alone.
    pub fn config(&self) -> String {
        self.profile("")
    }
}
