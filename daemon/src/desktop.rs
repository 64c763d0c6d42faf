//! Desktop notifications: when a profile needs a login, or its login ends soon, and no
//! `notify_command` applies, the user is told on their desktop, through `org.freedesktop.Notifications` on the session bus
//! (the Desktop Notifications Specification's `Notify` method, signature `susssasa{sv}i`).
//!
//! The bus is `$DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus` when that socket exists.
//! Without either — a server, a container, a session with no bus — nothing is sent and the
//! only trace is a debug log line: the notification is a courtesy, `tokenctl status` and the
//! log say the same thing. A bus without a notification server is treated the same way.
//!
//! Each notification opens its own connection (authenticate, `Hello`, one call) and closes it,
//! so tokend holds nothing open on the bus and nothing on it can wake an idle tokend. The whole
//! exchange runs in the background, bounded by [`TIMEOUT`]: a bus that does not answer never
//! holds up the daemon. The D-Bus client is our own ([`dbus`]): one call did not justify
//! zbus's size (DEVELOPERS.md, "Decisions").

mod dbus;

use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long one notification may take, from connecting to the answer.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// The well-known name, object and interface of the notification server.
const NAME: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// The text of the notification that `profile` needs a login, for `reason`: a summary and a
/// body that name the profile and the command to run.
pub(crate) fn login_needed_text(profile: &str, reason: &str) -> (String, String) {
    // Servers may read the body as markup; the reason can carry a server's words.
    // D-Bus strings cannot carry NUL.
    let reason: String = reason.chars().filter(|c| !matches!(c, '<' | '>' | '&' | '\0')).collect();
    (format!("tokend: profile {profile} needs a login"), format!("{reason}. Run: tokenctl login {profile}"))
}

/// The text of the warning that `profile`'s login ends at `expires_at`.
pub(crate) fn login_expiring_text(profile: &str, expires_at: SystemTime) -> (String, String) {
    let left = expires_at.duration_since(SystemTime::now()).unwrap_or_default();
    let left = humantime::format_duration(Duration::from_secs(left.as_secs()));
    (
        format!("tokend: the login of profile {profile} expires in {left}"),
        format!("It ends at {}. Run: tokenctl login {profile}", tokend_proto::time::rfc3339(expires_at)),
    )
}

/// Shows that `profile` needs a login, in the background; returns at once.
pub(crate) fn login_needed(profile: &str, reason: &str) {
    let (summary, body) = login_needed_text(profile, reason);
    show(profile, summary, body);
}

/// Shows that `profile`'s login ends at `expires_at`, in the background; returns at once.
pub(crate) fn login_expiring(profile: &str, expires_at: SystemTime) {
    let (summary, body) = login_expiring_text(profile, expires_at);
    show(profile, summary, body);
}

fn show(profile: &str, summary: String, body: String) {
    let name = profile.to_owned();
    let Some(address) = session_bus_address() else {
        tracing::debug!(profile = %name, "no session bus (DBUS_SESSION_BUS_ADDRESS unset, no $XDG_RUNTIME_DIR/bus); no desktop notification");
        return;
    };
    tokio::spawn(async move {
        match tokio::time::timeout(TIMEOUT, notify(&address, &summary, &body)).await {
            Ok(Ok(id)) => tracing::debug!(profile = %name, id, "desktop notification sent"),
            Ok(Err(dbus::Error::Method { name, .. }))
                if name == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
            {
                tracing::debug!(profile = %name, "no notification server on the session bus; no desktop notification");
            }
            Ok(Err(e)) => tracing::warn!(profile = %name, "cannot send a desktop notification: {e}"),
            Err(_) => tracing::warn!(
                profile = %name,
                "the session bus did not take the desktop notification within {}s; gave up",
                TIMEOUT.as_secs()
            ),
        }
    });
}

/// Sends one notification over the bus at `address`; returns its id.
async fn notify(address: &str, summary: &str, body: &str) -> Result<u32, dbus::Error> {
    let mut bus = dbus::connect(address).await?;
    // app_name, replaces_id, app_icon, summary, body, actions, hints, expire_timeout (-1: the
    // server's default).
    let arguments = dbus::Body::new()
        .string("tokend")?
        .u32(0)
        .string("dialog-password")?
        .string(summary)?
        .string(body)?
        .empty_array("s")
        .empty_array("{sv}")
        .i32(-1);
    let call = dbus::Call { destination: NAME, path: PATH, interface: NAME, member: "Notify", body: arguments };
    bus.call(&call).await?.u32()
}

/// The session bus's address: `$DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus` if it
/// exists (where systemd user sessions put the bus).
fn session_bus_address() -> Option<String> {
    if let Some(address) = std::env::var("DBUS_SESSION_BUS_ADDRESS").ok().filter(|a| !a.trim().is_empty()) {
        return Some(address);
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")?;
    let socket = Path::new(&runtime).join("bus");
    socket.exists().then(|| format!("unix:path={}", escape(&socket.to_string_lossy())))
}

/// Escapes a value for a D-Bus address: bytes outside `[-0-9A-Za-z_/.\*]` become `%XX`.
fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'-' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'/' | b'.' | b'\\' | b'*' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02x}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_profile_and_the_command() {
        let (summary, body) = login_needed_text("mm", "the server no longer accepts the refresh token");
        assert!(summary.contains("mm"), "{summary}");
        assert!(body.contains("tokenctl login mm"), "{body}");
        let (_, body) = login_needed_text("mm", "revoked: <b>bad</b> & gone");
        assert!(!body.contains(['<', '>', '&']), "no markup from a server reaches the desktop: {body}");
    }

    #[test]
    fn the_warning_names_the_profile_the_time_left_and_the_command() {
        let (summary, body) = login_expiring_text("mm", SystemTime::now() + Duration::from_secs(3 * 3600 + 30));
        assert!(summary.contains("mm") && summary.contains("3h"), "{summary}");
        assert!(body.contains("tokenctl login mm"), "{body}");
    }

    #[test]
    fn socket_paths_are_escaped_for_a_bus_address() {
        assert_eq!(escape("/run/user/1000/bus"), "/run/user/1000/bus");
        assert_eq!(escape("/tmp/a b;c=d"), "/tmp/a%20b%3bc%3dd");
    }
}
