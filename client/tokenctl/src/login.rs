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

pub(crate) fn run(
    mut client: Client,
    endpoint: Endpoint,
    profile: &str,
    no_browser: bool,
    json: bool,
) -> Result<(), Error> {
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
    let browsers = if no_browser { Vec::new() } else { browsers(&started.url) };
    if !browsers.is_empty() {
        match open_browser(&browsers) {
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
    let browsers = if no_browser { Vec::new() } else { browsers(&started.url) };
    if !browsers.is_empty() {
        match open_browser(&browsers) {
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

/// The commands to try, in order, to open `url`: `$BROWSER`'s, then the platform's opener.
/// `$BROWSER` is the user's own choice and is honoured even without a graphical session (a text
/// browser works over SSH); the opener is tried only in a graphical session.
fn browsers(url: &str) -> Vec<Vec<String>> {
    browser_commands(std::env::var("BROWSER").ok().as_deref(), url, !headless())
}

/// Runs the first of `commands` that starts, without a shell.
fn open_browser(commands: &[Vec<String>]) -> Result<(), String> {
    let mut last = String::new();
    for command in commands {
        let Some((program, args)) = command.split_first() else { continue };
        let spawned =
            Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        match spawned {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{program}: {e}"),
        }
    }
    Err(last)
}

/// The commands to try, in order, to open `url`: those `browser` (`$BROWSER`) lists, then the
/// platform's opener when `opener` says so. `$BROWSER` follows the usual convention: a colon-separated list of
/// commands, each split on white space, with `%s` in its arguments replaced by the URL (and
/// `%%` by `%`), or the URL appended as the last argument when there is no `%s`.
fn browser_commands(browser: Option<&str>, url: &str, opener: bool) -> Vec<Vec<String>> {
    let mut commands: Vec<Vec<String>> = browser
        .unwrap_or_default()
        .split(':')
        .filter_map(|entry| {
            let mut words = entry.split_whitespace();
            let program = words.next()?.to_owned();
            let args: Vec<&str> = words.collect();
            let mut command = vec![program];
            if args.iter().any(|arg| arg.contains("%s")) {
                command.extend(args.iter().map(|arg| substitute(arg, url)));
            } else {
                command.extend(args.iter().map(|arg| (*arg).to_owned()));
                command.push(url.to_owned());
            }
            Some(command)
        })
        .collect();
    if opener {
        let program = if cfg!(target_os = "macos") {
            "open"
        } else if cfg!(windows) {
            "explorer"
        } else {
            "xdg-open"
        };
        commands.push(vec![program.to_owned(), url.to_owned()]);
    }
    commands
}

/// `arg` with `%s` replaced by `url` and `%%` by `%`; any other `%` stays as it is.
fn substitute(arg: &str, url: &str) -> String {
    let mut out = String::with_capacity(arg.len() + url.len());
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('s') => {
                chars.next();
                out.push_str(url);
            }
            Some('%') => {
                chars.next();
                out.push('%');
            }
            _ => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://as.example/authorize?a=1&b=%41";

    fn opener() -> Vec<String> {
        browser_commands(None, URL, true).pop().unwrap()
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn without_browser_the_platform_opener_gets_the_url() {
        assert_eq!(browser_commands(None, URL, true), vec![opener()]);
        assert_eq!(browser_commands(Some(""), URL, true), vec![opener()]);
        assert_eq!(opener()[1], URL);
    }

    #[test]
    fn a_browser_with_arguments_gets_the_url_appended() {
        let commands = browser_commands(Some("firefox --new-window"), URL, true);
        assert_eq!(commands, vec![strings(&["firefox", "--new-window", URL]), opener()]);
        let commands = browser_commands(Some("  firefox   -P  work "), URL, true);
        assert_eq!(commands[0], strings(&["firefox", "-P", "work", URL]));
    }

    #[test]
    fn percent_s_is_replaced_by_the_url_and_nothing_is_appended() {
        let commands = browser_commands(Some("chromium --app=%s --incognito"), URL, true);
        assert_eq!(commands[0], strings(&["chromium", &format!("--app={URL}"), "--incognito"]));
        let commands = browser_commands(Some("echo 100%% %s"), URL, true);
        assert_eq!(commands[0], strings(&["echo", "100%", URL]), "%% is a percent sign");
    }

    #[test]
    fn the_url_s_own_percent_signs_are_kept() {
        assert_eq!(substitute("%s", URL), URL);
        assert_eq!(substitute("%d %", URL), "%d %");
    }

    #[test]
    fn a_colon_separated_list_is_tried_in_order() {
        let commands = browser_commands(Some("missing-browser --x:w3m:firefox %s:"), URL, true);
        assert_eq!(
            commands,
            vec![
                strings(&["missing-browser", "--x", URL]),
                strings(&["w3m", URL]),
                strings(&["firefox", URL]),
                opener()
            ]
        );
    }
}
