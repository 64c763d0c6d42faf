//! A private D-Bus session bus (a real `dbus-daemon` with its own config and socket) and a
//! desktop notification server registered on it, which records every `Notify` call.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A running `dbus-daemon`; killed when dropped.
pub struct SessionBus {
    /// Its address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl SessionBus {
    /// Starts a session bus listening on a socket in a fresh directory.
    pub async fn start() -> SessionBus {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket: PathBuf = dir.path().join("bus");
        let config = dir.path().join("session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("dbus-daemon runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        SessionBus { address: format!("unix:path={}", socket.display()), _child: child, _dir: dir }
    }
}

/// One `Notify` call as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `app_name`.
    pub app: String,
    /// `summary`.
    pub summary: String,
    /// `body`.
    pub body: String,
}

/// A notification server owning `org.freedesktop.Notifications` on a bus; stops when dropped.
pub struct NotificationServer {
    received: Arc<Mutex<Vec<Notification>>>,
    connection: zbus::Connection,
}

struct Server {
    received: Arc<Mutex<Vec<Notification>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut received = self.received.lock().unwrap();
        received.push(Notification { app: app_name, summary, body });
        u32::try_from(received.len()).expect("fewer than 2^32 notifications")
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("tokend-test".into(), "tokend".into(), "1".into(), "1.2".into())
    }
}

impl NotificationServer {
    /// Registers a server on the bus at `address`.
    pub async fn register(address: &str) -> NotificationServer {
        let received = Arc::new(Mutex::new(Vec::new()));
        let connection = zbus::connection::Builder::address(address)
            .unwrap()
            .name("org.freedesktop.Notifications")
            .unwrap()
            .serve_at("/org/freedesktop/Notifications", Server { received: received.clone() })
            .unwrap()
            .build()
            .await
            .expect("register the notification server");
        NotificationServer { received, connection }
    }

    /// The unique names of the bus's other connections (`ListNames`), which tells whether
    /// anyone else is still connected.
    pub async fn other_connections(&self) -> Vec<String> {
        let reply = self
            .connection
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "ListNames",
                &(),
            )
            .await
            .expect("ListNames");
        let names: Vec<String> = reply.body().deserialize().expect("a list of names");
        let mine = self.connection.unique_name().map(std::string::ToString::to_string);
        names.into_iter().filter(|n| n.starts_with(':') && Some(n) != mine.as_ref()).collect()
    }

    /// Every notification received so far.
    pub fn received(&self) -> Vec<Notification> {
        self.received.lock().unwrap().clone()
    }
}
