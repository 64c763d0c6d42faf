//! The `tokenctl` command line on its own: help, completions, man pages, and the daemon being
//! away.

use std::process::Command;

fn tokenctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokenctl"))
}

#[test]
fn help_documents_the_exit_codes() {
    let out = tokenctl().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit status:"), "{text}");
    for code in
        ["3  tokend is not reachable", "4  no such profile", "5  the profile needs a login", "6  the OAuth server"]
    {
        assert!(text.contains(code), "{code}");
    }
}

#[test]
fn every_command_has_help() {
    for command in [
        "token",
        "status",
        "list",
        "refresh",
        "invalidate",
        "login",
        "logout",
        "info",
        "reload",
        "shutdown",
        "ping",
        "watch",
        "exec",
        "completions",
        "man",
    ] {
        let out = tokenctl().args([command, "--help"]).output().unwrap();
        assert!(out.status.success(), "tokenctl {command} --help");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [("bash", "_tokenctl()"), ("zsh", "#compdef tokenctl"), ("fish", "complete -c tokenctl")] {
        let out = tokenctl().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {}", &text[..text.len().min(200)]);
        assert!(text.contains("invalidate"), "{shell} completes the commands");
    }
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokenctl().arg("man").arg("--dir").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["tokenctl.1", "tokenctl-token.1", "tokenctl-login.1", "tokenctl-exec.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let stdout = tokenctl().arg("man").output().unwrap();
    assert!(String::from_utf8_lossy(&stdout.stdout).contains(".TH tokenctl"));
}

#[test]
fn an_absent_daemon_is_exit_code_3_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokenctl().arg("ping").env("TOKEND_SOCKET", dir.path().join("none.sock")).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokend is not running"));
}

#[test]
fn the_config_files_socket_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let socket = dir.path().join("from-config.sock");
    std::fs::write(&config, format!("[daemon]\nsocket = {:?}\n", socket)).unwrap();
    let out = tokenctl().arg("--config").arg(&config).arg("ping").env_remove("TOKEND_SOCKET").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("from-config.sock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `$TOKEND_SOCKET` wins over the config file, so the file is not even opened: a config path
/// that would block whoever opens it (a FIFO with no writer) must not hold `tokenctl` up.
#[cfg(unix)]
#[test]
fn the_config_file_is_not_read_when_tokend_socket_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let path = std::ffi::CString::new(config.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut child = tokenctl()
        .args(["token", "p"])
        .env("TOKEND_SOCKET", dir.path().join("none.sock"))
        .env("TOKEND_CONFIG", &config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (exited, exit) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || exited.send(child.wait().unwrap()).unwrap());
    let status = exit.recv_timeout(std::time::Duration::from_secs(20)).ok();
    if status.is_none() {
        // A writer that opens and closes the FIFO ends the blocked read, so tokenctl can finish.
        drop(std::fs::OpenOptions::new().write(true).open(&config).unwrap());
    }
    waiter.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(3), "tokenctl opened the config file (it blocked on the FIFO)");
}
