//! `tokenctl login`: show the URL, open the browser, and wait for whichever comes first — the
//! browser reaching tokend's loopback listener, or the user pasting the address the browser
//! was sent to (for logins over SSH, where the browser cannot reach this machine).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::SystemTime;

use tokend_client::blocking::Client;
use tokend_client::{Endpoint, Error};

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
    let until = output::left(started.expires_at, SystemTime::now());
    if json {
        outln!(
            "{}",
            serde_json::json!({ "profile": profile, "url": started.url, "expires_at": output::rfc3339(started.expires_at) })
        );
    }
    errln!("To log in to profile `{profile}`, open this URL in a browser:\n\n    {}\n", started.url);
    if !no_browser && !headless() {
        match open_browser(&started.url) {
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

/// No graphical session to open a browser in (an SSH login, a console).
fn headless() -> bool {
    if cfg!(any(target_os = "macos", windows)) {
        return std::env::var_os("SSH_CONNECTION").is_some();
    }
    std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none()
}

/// Opens `url` with `$BROWSER` or the platform's opener, without a shell.
fn open_browser(url: &str) -> Result<(), String> {
    let browser = std::env::var("BROWSER").ok();
    let mut last = String::new();
    for command in browser_commands(browser.as_deref(), url) {
        let (program, args) = command.split_first().expect("a command has a program");
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
/// platform's opener. `$BROWSER` follows the usual convention: a colon-separated list of
/// commands, each split on white space, with `%s` in its arguments replaced by the URL (and
/// `%%` by `%`), or the URL appended as the last argument when there is no `%s`.
fn browser_commands(browser: Option<&str>, url: &str) -> Vec<Vec<String>> {
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
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    commands.push(vec![opener.to_owned(), url.to_owned()]);
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
        browser_commands(None, URL).pop().unwrap()
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn without_browser_the_platform_opener_gets_the_url() {
        assert_eq!(browser_commands(None, URL), vec![opener()]);
        assert_eq!(browser_commands(Some(""), URL), vec![opener()]);
        assert_eq!(opener()[1], URL);
    }

    #[test]
    fn a_browser_with_arguments_gets_the_url_appended() {
        let commands = browser_commands(Some("firefox --new-window"), URL);
        assert_eq!(commands, vec![strings(&["firefox", "--new-window", URL]), opener()]);
        let commands = browser_commands(Some("  firefox   -P  work "), URL);
        assert_eq!(commands[0], strings(&["firefox", "-P", "work", URL]));
    }

    #[test]
    fn percent_s_is_replaced_by_the_url_and_nothing_is_appended() {
        let commands = browser_commands(Some("chromium --app=%s --incognito"), URL);
        assert_eq!(commands[0], strings(&["chromium", &format!("--app={URL}"), "--incognito"]));
        let commands = browser_commands(Some("echo 100%% %s"), URL);
        assert_eq!(commands[0], strings(&["echo", "100%", URL]), "%% is a percent sign");
    }

    #[test]
    fn the_url_s_own_percent_signs_are_kept() {
        assert_eq!(substitute("%s", URL), URL);
        assert_eq!(substitute("%d %", URL), "%d %");
    }

    #[test]
    fn a_colon_separated_list_is_tried_in_order() {
        let commands = browser_commands(Some("missing-browser --x:w3m:firefox %s:"), URL);
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
