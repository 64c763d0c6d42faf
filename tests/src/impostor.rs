//! A fake tokend run as another user (the `tokend-impostor` binary), and a way to learn exactly
//! what clients sent it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokend_proto::{Hello, HelloReply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdout, Command};

use crate::wire::{frame, read_frame};

/// The access token the impostor hands out.
pub const PLANTED_TOKEN: &str = "planted-by-another-user";

/// A running impostor.
pub struct Impostor {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line it printed so far.
    seen: Vec<String>,
    /// The connections that were this kit's own controls.
    controls: BTreeSet<u64>,
    /// Where it listens.
    socket: PathBuf,
}

impl Impostor {
    /// Starts the impostor as `uid`:`gid` at `socket` (creating its directory, owned by that
    /// user, if missing) and waits until it listens.
    pub async fn start_as(uid: u32, gid: u32, socket: &Path) -> Impostor {
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(crate::bin("tokend-impostor"))
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run tokend-impostor through setpriv");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut impostor =
            Impostor { child, lines, seen: Vec::new(), controls: BTreeSet::new(), socket: socket.to_owned() };
        impostor.next_line().await;
        assert_eq!(impostor.seen, ["listening"], "the impostor started");
        impostor
    }

    /// Moves the impostor's socket to `to` (a listening socket keeps working under a new name).
    pub fn move_socket(&mut self, to: &Path) {
        std::fs::rename(&self.socket, to).expect("move the impostor's socket");
        self.socket = to.to_owned();
    }

    /// What every connection made before this call sent, one line per event (`conn N accepted`,
    /// `conn N hello from CLIENT`, `conn N token PROFILE`, `conn N redirect URL`, `conn N closed
    /// after B bytes`). Complete: a control connection made now is accepted after every earlier
    /// one, so once it is greeted and every earlier connection has closed, nothing is missing.
    /// Clients of earlier connections must have exited.
    pub async fn transcript(&mut self) -> Vec<String> {
        let mut control = UnixStream::connect(&self.socket).await.expect("connect to the impostor");
        let hello = Hello { client: "control".into(), ..Hello::new() };
        control.write_all(&frame(&hello)).await.unwrap();
        let _: HelloReply = read_frame(&mut control).await.expect("the impostor greets its control");
        let done = tokio::time::timeout(Duration::from_secs(20), async {
            let mut this_control = None;
            loop {
                if this_control.is_none() {
                    this_control = self
                        .seen
                        .iter()
                        .filter(|line| line.ends_with(" hello from control"))
                        .filter_map(|line| conn_id(line))
                        .find(|id| !self.controls.contains(id));
                    self.controls.extend(this_control);
                }
                if this_control.is_some_and(|id| self.all_closed_before(id)) {
                    return;
                }
                self.next_line().await;
            }
        })
        .await;
        assert!(done.is_ok(), "the impostor's transcript did not settle within 20s: {:?}", self.seen);
        self.seen.iter().filter(|line| conn_id(line).is_some_and(|id| !self.controls.contains(&id))).cloned().collect()
    }

    fn all_closed_before(&self, control: u64) -> bool {
        let with = |suffix: &str| -> BTreeSet<u64> {
            self.seen
                .iter()
                .filter(|line| line.contains(suffix))
                .filter_map(|line| conn_id(line))
                .filter(|id| *id < control)
                .collect()
        };
        with(" accepted") == with(" closed after ")
    }

    async fn next_line(&mut self) {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("the impostor printed within 20s")
            .expect("read the impostor's output")
            .expect("the impostor is running");
        self.seen.push(line);
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn conn_id(line: &str) -> Option<u64> {
    line.strip_prefix("conn ")?.split(' ').next()?.parse().ok()
}
