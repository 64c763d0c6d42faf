//! `tokenctl login`: show the URL, open the browser, and wait for whichever comes first — the
//! browser reaching tokend's loopback listener, or the user pasting the address the browser
//! was sent to (for logins over SSH, where the browser cannot reach this machine).
//!
//! A profile with the device authorization grant shows a code to enter on any device instead
//! (with a QR code of the verification URI when stdout is a terminal), and waits while tokend
//! polls the server.

use std::io::{BufRead, IsTerminal};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::SystemTime;

use tokend_client::blocking::Client;
use tokend_client::{DeviceCode, Endpoint, Error, LoginStarted};

use crate::output;
use crate::term::{errln, outln};

enum Input {
    Finished(Result<(), Error>),
    Pasted(String),
}

pub fn run(mut client: Client, endpoint: Endpoint, profile: &str, no_browser: bool, json: bool) -> Result<(), Error> {
    let started = client.begin_login(profile)?;
    if let Some(device) = started.device.clone() {
        return device_login(client, profile, &started, &device, no_browser, json);
    }
    let until = output::left(started.expires_at, SystemTime::now());
    if json {
        outln!(
            "{}",
            serde_json::json!({ "profile": profile, "url": started.url, "expires_at": output::rfc3339(started.expires_at) })
        );
    }
    errln!("To log in to profile `{profile}`, open this URL in a browser:\n\n    {}\n", started.url);
    let browsers = if no_browser { Vec::new() } else { browsers() };
    if !browsers.is_empty() {
        match open_browser(&browsers, &started.url) {
            Ok(()) => errln!("(A browser should have opened it.)"),
            Err(e) => errln!("(Could not open a browser: {e}.)"),
        }
    }
    errln!(
        "Waiting for the browser for up to {until}. If the browser runs on another machine and its last page failed to load,\npaste that page's address here and press Enter."
    );

    let (tx, rx) = mpsc::channel();
    let finished = tx.clone();
    std::thread::spawn(move || {
        let _ = finished.send(Input::Finished(client.finish_login()));
    });
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(Input::Pasted(line)).is_err() {
                break;
            }
        }
    });

    loop {
        match rx.recv() {
            Ok(Input::Finished(result)) => {
                result?;
                if !json {
                    errln!("Logged in: tokend now holds tokens for `{profile}`.");
                }
                return Ok(());
            }
            Ok(Input::Pasted(line)) => {
                let url = line.trim();
                if url.is_empty() {
                    continue;
                }
                // The paste goes over a second connection; the first one reports the outcome.
                match Client::connect_to(endpoint.clone()).and_then(|mut c| c.login_redirect(profile, url)) {
                    Ok(()) => {}
                    Err(e) => errln!(
                        "tokenctl: {e}\nPaste the complete address, starting with http://, or wait for the browser."
                    ),
                }
            }
            Err(_) => return Err(Error::Protocol("the login waiter stopped".into())),
        }
    }
}

/// Shows the code of a device login and waits for the outcome.
fn device_login(
    mut client: Client,
    profile: &str,
    started: &LoginStarted,
    device: &DeviceCode,
    no_browser: bool,
    json: bool,
) -> Result<(), Error> {
    let until = output::left(started.expires_at, SystemTime::now());
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "profile": profile,
                "user_code": device.user_code,
                "verification_uri": device.verification_uri,
                "verification_uri_complete": device.verification_uri_complete,
                "expires_at": output::rfc3339(started.expires_at),
            })
        );
    }
    errln!(
        "To log in to profile `{profile}`, open this address on any device:\n\n    {}\n\nand enter the code\n\n    {}\n",
        device.verification_uri,
        device.user_code
    );
    if let Some(complete) = &device.verification_uri_complete {
        errln!("Or open this address, which carries the code:\n\n    {complete}\n");
    }
    if !json && std::io::stdout().is_terminal() {
        if let Some(qr) = crate::qr::render(&started.url) {
            errln!("Or scan this with a phone:\n");
            outln!("{qr}");
        }
    }
    let browsers = if no_browser { Vec::new() } else { browsers() };
    if !browsers.is_empty() {
        match open_browser(&browsers, &started.url) {
            Ok(()) => errln!("(A browser should have opened it.)"),
            Err(e) => errln!("(Could not open a browser: {e}.)"),
        }
    }
    errln!("Waiting for the code to be entered, for up to {until}.");
    client.finish_login()?;
    if json {
        outln!("{}", serde_json::json!({ "profile": profile, "logged_in": true }));
    } else {
        errln!("Logged in: tokend now holds tokens for `{profile}`.");
    }
    Ok(())
}

/// No graphical session to open a browser in (an SSH login, a console).
fn headless() -> bool {
    if cfg!(any(target_os = "macos", windows)) {
        return std::env::var_os("SSH_CONNECTION").is_some();
    }
    std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none()
}

/// The programs to try, in order: each of `$BROWSER`'s, then the platform's opener. `$BROWSER`
/// is the user's own choice and is honoured even without a graphical session (a text browser
/// works over SSH); the opener is tried only in a graphical session.
fn browsers() -> Vec<String> {
    let mut candidates: Vec<String> = std::env::var("BROWSER")
        .map(|b| b.split(':').filter(|c| !c.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if !headless() {
        candidates.push(
            if cfg!(target_os = "macos") {
                "open"
            } else if cfg!(windows) {
                "explorer"
            } else {
                "xdg-open"
            }
            .to_owned(),
        );
    }
    candidates
}

/// Opens `url` with the first of `candidates` that starts, without a shell.
fn open_browser(candidates: &[String], url: &str) -> Result<(), String> {
    let mut last = String::new();
    for candidate in candidates {
        let spawned =
            Command::new(candidate).arg(url).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        match spawned {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{candidate}: {e}"),
        }
    }
    Err(last)
}
