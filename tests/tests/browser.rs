//! `tokenctl login` opens the browser `$BROWSER` names, with the arguments it gives: a stand-in
//! browser (a script that records its argv) gets the URL, and the login completes from what it
//! was given.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokend_e2e::{Movemint, Tokend, bin, eventually};

/// A stand-in browser in `dir`: a script that writes its arguments, one per line, to `argv`.
fn recording_browser(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("browser");
    let argv = dir.join("argv");
    std::fs::write(&script, format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}.tmp && mv {0}.tmp {0}\n", argv.display()))
        .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, argv)
}

/// Runs `tokenctl login mm` in a graphical session with `BROWSER=browser`, plays the user's
/// browser with the URL the stand-in was given, and returns the stand-in's arguments.
async fn log_in_with(tokend: &Tokend, browser: &str, argv: &Path) -> Vec<String> {
    let mut login = tokio::process::Command::new(bin("tokenctl"))
        .args(["login", "mm"])
        .env("TOKEND_SOCKET", &tokend.socket)
        .env("DISPLAY", ":0")
        .env("BROWSER", browser)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let opened = eventually(Duration::from_secs(20), || argv.exists()).await;
    if !opened {
        let _ = login.start_kill();
        let out = login.wait_with_output().await.unwrap();
        panic!("the browser was not started: {}\n{}", String::from_utf8_lossy(&out.stderr), tokend.log());
    }
    let args: Vec<String> = std::fs::read_to_string(argv).unwrap().lines().map(str::to_owned).collect();
    let url = args.iter().find(|a| a.contains("/oauth/authorize")).expect("the browser got the URL").clone();
    let url = url.strip_prefix("--app=").unwrap_or(&url).to_owned();
    let http = tokend_e2e::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let approved = http.get(&url).send().await.unwrap();
    let location = approved.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(http.get(&location).send().await.unwrap().status(), 200, "{}", tokend.log());
    let out = tokio::time::timeout(Duration::from_secs(30), login.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", tokend.log());
    assert!(stderr.contains("A browser should have opened it"), "{stderr}");
    assert!(stderr.contains("Logged in"), "{stderr}");
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_arguments_is_given_them_and_the_url() {
    let fake = Movemint::start().await;
    let tokend = Tokend::start(&fake.config()).await;
    let (script, argv) = recording_browser(tokend.dir.path());
    let browser = format!("{} --new-window  -P work", script.display());
    let args = log_in_with(&tokend, &browser, &argv).await;
    assert_eq!(args.len(), 4, "{args:?}");
    assert_eq!(args[..3], ["--new-window", "-P", "work"], "the arguments, split on white space");
    assert!(args[3].starts_with(&format!("{}/oauth/authorize?", fake.base)), "then the URL: {args:?}");
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "mm"]).await.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_s_places_the_url_and_a_colon_list_falls_through_to_a_browser_that_runs() {
    let fake = Movemint::start().await;
    let tokend = Tokend::start(&fake.config()).await;
    let (script, argv) = recording_browser(tokend.dir.path());
    let missing = tokend.dir.path().join("no-such-browser");
    let browser = format!("{} --x:{} --app=%s --incognito", missing.display(), script.display());
    let args = log_in_with(&tokend, &browser, &argv).await;
    assert_eq!(args.len(), 2, "nothing appended when %s places the URL: {args:?}");
    assert!(args[0].starts_with(&format!("--app={}/oauth/authorize?", fake.base)), "{args:?}");
    assert_eq!(args[1], "--incognito");
    assert!(fake.accepts(tokend.tokenctl_ok(&["token", "mm"]).await.trim()));
}
