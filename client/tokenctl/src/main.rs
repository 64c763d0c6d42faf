//! tokenctl: the command-line client of tokend. A thin layer over `tokend_client::blocking`;
//! every decision about tokens is the daemon's.

mod cli;
mod login;
mod output;
mod qr;
mod term;

use std::io::Read;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{CommandFactory, Parser};
use tokend_client::blocking::Client;
use tokend_client::{Error, ErrorClass, Event, Fingerprint, RevocationOutcome, Token, TokenExt};

use crate::cli::{Cli, Command, ExecFormat, Format};
use crate::output::{StatusView, TokenView};
use crate::term::{errln, outln};

fn main() -> ExitCode {
    let cli = cli::token_shortcut(std::env::args_os()).unwrap_or_else(Cli::parse);
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let class = e.class();
            if json {
                let error = serde_json::json!({ "error": { "class": class_name(class), "message": e.to_string() } });
                errln!("{error}");
            } else {
                errln!("tokenctl: {e}");
            }
            ExitCode::from(exit_code(class))
        }
    }
}

/// The documented exit status of each class of failure (see `cli::EXIT_CODES`).
fn exit_code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Other => 1,
        ErrorClass::Usage => 2,
        ErrorClass::NotReachable => 3,
        ErrorClass::UnknownProfile => 4,
        ErrorClass::LoginNeeded => 5,
        ErrorClass::Upstream => 6,
        ErrorClass::Config => 7,
        ErrorClass::Protocol => 8,
        ErrorClass::Untrusted => 9,
    }
}

/// The class's name in JSON errors: the daemon's classes are named as in its HTTP API.
fn class_name(class: ErrorClass) -> &'static str {
    use tokend_proto::ErrorClass as Daemon;
    match class {
        ErrorClass::Other => Daemon::Other.as_str(),
        ErrorClass::Usage => Daemon::Usage.as_str(),
        ErrorClass::NotReachable => "not_reachable",
        ErrorClass::UnknownProfile => Daemon::UnknownProfile.as_str(),
        ErrorClass::LoginNeeded => Daemon::LoginNeeded.as_str(),
        ErrorClass::Upstream => Daemon::Upstream.as_str(),
        ErrorClass::Config => Daemon::Config.as_str(),
        ErrorClass::Protocol => "protocol",
        ErrorClass::Untrusted => "untrusted",
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let endpoint = tokend_client::endpoint_for(cli.socket.as_deref(), cli.config.as_deref());
    let connect = || Client::connect_to(endpoint.clone()).map(|c| c.with_timeout(cli.timeout));
    let json = cli.json;
    let now = SystemTime::now;
    match cli.command {
        Command::Token { profile, min_valid, format } => {
            let token = connect()?.token_with(&profile, min_valid)?;
            print_token(&token, if json { Format::Json } else { format });
        }
        Command::Status { profile } => {
            let statuses = connect()?.status(profile.as_deref())?;
            let now = now();
            if json {
                let views: Vec<StatusView> = statuses.iter().map(|s| StatusView::new(s, now)).collect();
                print_json(&if profile.is_some() {
                    serde_json::to_value(&views[0])
                } else {
                    serde_json::to_value(&views)
                });
            } else if profile.is_some() {
                term::out(&output::status_detail(&statuses[0], now));
            } else if statuses.is_empty() {
                outln!("no profiles are configured");
            } else {
                term::out(&output::status_table(&statuses, now));
            }
        }
        Command::List => {
            let profiles = connect()?.list()?;
            if json {
                let views: Vec<_> = profiles
                    .iter()
                    .map(
                        |p| serde_json::json!({ "name": p.name, "grant": p.grant.as_str(), "state": p.state.as_str() }),
                    )
                    .collect();
                print_json(&Ok(serde_json::Value::Array(views)));
            } else {
                let width = profiles.iter().map(|p| p.name.len()).max().unwrap_or(0);
                for p in &profiles {
                    outln!("{:<width$}  {:<18}  {}", p.name, p.grant.as_str(), p.state.as_str());
                }
            }
        }
        Command::Refresh { profile, format } => {
            let token = connect()?.refresh(&profile)?;
            print_token(&token, if json { Format::Json } else { format });
        }
        Command::Invalidate { profile, token_stdin, fingerprint, format } => {
            let rejected = if token_stdin { Some(read_token_from_stdin()?) } else { fingerprint };
            let token = connect()?.invalidate_fingerprint(&profile, rejected)?;
            print_token(&token, if json { Format::Json } else { format });
        }
        Command::Login { profile, no_browser } => {
            login::run(connect()?, endpoint.clone(), &profile, no_browser, json)?;
        }
        Command::Logout { profile } => {
            let report = connect()?.logout(&profile)?;
            if json {
                print_json(&Ok(serde_json::json!({
                    "profile": report.profile,
                    "refresh_token": outcome_json(&report.refresh_token),
                    "access_token": outcome_json(&report.access_token),
                })));
            } else {
                outln!("Logged out of `{}`; its tokens are forgotten.", report.profile);
                outln!("  refresh token: {}", outcome_text(&report.refresh_token));
                outln!("  access token:  {}", outcome_text(&report.access_token));
            }
        }
        Command::Info { profile } => {
            let info = connect()?.info(&profile)?;
            let ok = (200..300).contains(&info.status);
            if json || !ok {
                outln!("{}", info.body);
            } else {
                match serde_json::from_str::<serde_json::Value>(&info.body) {
                    Ok(value) => outln!("{}", serde_json::to_string_pretty(&value).unwrap_or(info.body)),
                    Err(_) => outln!("{}", info.body),
                }
            }
            if !ok {
                errln!("tokenctl: the info endpoint of `{profile}` answered HTTP {}", info.status);
                return Ok(ExitCode::from(exit_code(ErrorClass::Upstream)));
            }
        }
        Command::Reload => {
            let summary = connect()?.reload()?;
            if json {
                print_json(&Ok(serde_json::json!({
                    "added": summary.added, "changed": summary.changed,
                    "removed": summary.removed, "unchanged": summary.unchanged,
                })));
            } else {
                let mut parts = Vec::new();
                for (what, names) in
                    [("added", &summary.added), ("changed", &summary.changed), ("removed", &summary.removed)]
                {
                    if !names.is_empty() {
                        parts.push(format!("{what} {}", names.join(", ")));
                    }
                }
                parts.push(format!("{} unchanged", summary.unchanged.len()));
                outln!("Reloaded: {}", parts.join("; "));
            }
        }
        Command::Shutdown => {
            connect()?.shutdown()?;
            if !json {
                outln!("tokend is shutting down");
            }
        }
        Command::Ping => {
            let pong = connect()?.ping()?;
            if json {
                print_json(&Ok(serde_json::json!({
                    "daemon_version": pong.daemon_version, "pid": pong.pid,
                    "started_at": output::rfc3339(pong.started_at), "profiles": pong.profiles,
                })));
            } else {
                let up = output::short(now().duration_since(pong.started_at).unwrap_or_default());
                outln!(
                    "tokend {} is running (pid {}, up {up}, {} profiles) at {endpoint}",
                    pong.daemon_version,
                    pong.pid,
                    pong.profiles
                );
            }
        }
        Command::Watch { profile } => watch(connect()?, profile.as_deref(), json)?,
        Command::Exec { profile, env, format, min_valid, retry_on_exit, command } => {
            let mut tokend = connect()?;
            let token = tokend.token_with(&profile, min_valid)?;
            let Some(rejected) = retry_on_exit else {
                return Ok(exec(&token, &env, format, &command));
            };
            let status = match with_token(&token, &env, format, &command).status() {
                Ok(status) => status,
                Err(error) => return Ok(cannot_run(&command[0], &error)),
            };
            if status.code() != Some(i32::from(rejected)) {
                return Ok(ExitCode::from(exit_status(status)));
            }
            let fresh = tokend.invalidate_fingerprint(&profile, Some(token.fingerprint))?;
            return Ok(exec(&fresh, &env, format, &command));
        }
        Command::Completions { shell } => {
            // Generated whole first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tokenctl", &mut script);
            term::out(&String::from_utf8_lossy(&script));
        }
        Command::Man { dir } => man(dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_token(token: &Token, format: Format) {
    match format {
        Format::Raw => outln!("{}", token.access_token.expose()),
        Format::Header => outln!("Authorization: {}", token.header_value()),
        Format::Json => print_json(&serde_json::to_value(TokenView::new(token, SystemTime::now()))),
    }
}

fn print_json(value: &Result<serde_json::Value, serde_json::Error>) {
    match value {
        Ok(value) => outln!("{value}"),
        Err(e) => errln!("tokenctl: cannot format JSON: {e}"),
    }
}

fn read_token_from_stdin() -> Result<Fingerprint, Error> {
    let mut text = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut text)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(tokend_proto::Error::BadRequest { message: "no token on standard input".into() }.into());
    }
    Ok(Fingerprint::of(token))
}

fn outcome_json(outcome: &RevocationOutcome) -> serde_json::Value {
    match outcome {
        RevocationOutcome::Revoked => serde_json::json!({ "outcome": "revoked" }),
        RevocationOutcome::NoToken => serde_json::json!({ "outcome": "none" }),
        RevocationOutcome::NotConfigured => serde_json::json!({ "outcome": "not_configured" }),
        RevocationOutcome::Failed(why) => serde_json::json!({ "outcome": "failed", "message": why }),
    }
}

fn outcome_text(outcome: &RevocationOutcome) -> String {
    match outcome {
        RevocationOutcome::Revoked => "revoked at the server".into(),
        RevocationOutcome::NoToken => "none held".into(),
        RevocationOutcome::NotConfigured => "forgotten only (the profile has no revoke_url)".into(),
        RevocationOutcome::Failed(why) => format!("forgotten only; the server could not revoke it: {why}"),
    }
}

fn watch(client: Client, profile: Option<&str>, json: bool) -> Result<(), Error> {
    let mut states = std::collections::HashMap::new();
    for event in client.watch(profile)? {
        let now = output::rfc3339(SystemTime::now());
        let line = match event? {
            Event::Token(token) if json => {
                let mut value = serde_json::to_value(TokenView::new(&token, SystemTime::now())).unwrap_or_default();
                value["event"] = "token".into();
                value.to_string()
            }
            Event::Token(token) => format!(
                "{now} {}: new token {} (expires in {}): {}",
                token.profile,
                token.fingerprint,
                output::short(token.remaining()),
                token.access_token.expose()
            ),
            Event::Status(status) => {
                if states.insert(status.name.clone(), status.state) == Some(status.state) {
                    continue;
                }
                if json {
                    let mut value =
                        serde_json::to_value(StatusView::new(&status, SystemTime::now())).unwrap_or_default();
                    value["event"] = "status".into();
                    value.to_string()
                } else {
                    let mut line = format!("{now} {}: {}", status.name, status.state.as_str());
                    if let Some(action) = &status.action {
                        line.push_str(&format!(" — {action}"));
                    }
                    line
                }
            }
            Event::Removed { profile } if json => {
                serde_json::json!({ "event": "removed", "profile": profile }).to_string()
            }
            Event::Removed { profile } => format!("{now} {profile}: removed from the configuration"),
            Event::LoginExpiring { profile, expires_at } if json => serde_json::json!({
                "event": "login_expiring",
                "profile": profile,
                "expires_at": output::rfc3339(expires_at),
                "expires_in": tokend_proto::json::seconds_from_now(expires_at, SystemTime::now()),
            })
            .to_string(),
            Event::LoginExpiring { profile, expires_at } => format!(
                "{now} {profile}: the login expires in {} ({}): run `tokenctl login {profile}` before then",
                output::left(expires_at, SystemTime::now()),
                output::rfc3339(expires_at)
            ),
        };
        // A reader that went away (e.g. `| head`) ends tokenctl quietly here.
        outln!("{line}");
    }
    Err(Error::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tokend closed the watch stream")))
}

fn exec(token: &Token, var: &str, format: ExecFormat, command: &[std::ffi::OsString]) -> ExitCode {
    exec_command(with_token(token, var, format, command), &command[0])
}

/// `command` with the token in the environment variable `var`.
fn with_token(token: &Token, var: &str, format: ExecFormat, command: &[std::ffi::OsString]) -> std::process::Command {
    let value = match format {
        ExecFormat::Raw => token.access_token.expose().to_owned(),
        ExecFormat::Header => token.header_value(),
    };
    let mut child = std::process::Command::new(&command[0]);
    child.args(&command[1..]).env(var, value);
    child
}

/// The shell's exit status for a command that could not be started.
fn cannot_run(program: &std::ffi::OsStr, error: &std::io::Error) -> ExitCode {
    errln!("tokenctl: cannot run {}: {error}", program.to_string_lossy());
    ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

/// A finished command's status as the shell reports it: its exit code, or 128 plus the signal
/// that killed it.
fn exit_status(status: std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return 128u8.saturating_add(u8::try_from(signal).unwrap_or(u8::MAX));
    }
    status.code().map_or(1, |code| u8::try_from(code).unwrap_or(1))
}

#[cfg(unix)]
fn exec_command(mut command: std::process::Command, program: &std::ffi::OsStr) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let error = command.exec();
    cannot_run(program, &error)
}

#[cfg(not(unix))]
fn exec_command(mut command: std::process::Command, program: &std::ffi::OsStr) -> ExitCode {
    match command.status() {
        Ok(status) => ExitCode::from(exit_status(status)),
        Err(error) => cannot_run(program, &error),
    }
}

fn man(dir: Option<std::path::PathBuf>) -> Result<(), Error> {
    let command = Cli::command();
    let Some(dir) = dir else {
        return match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        };
    };
    std::fs::create_dir_all(&dir)?;
    let mut written = Vec::new();
    let mut render = |name: String, cmd: clap::Command| -> std::io::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut file = std::fs::File::create(&path)?;
        clap_mangen::Man::new(cmd).render(&mut file)?;
        written.push(path);
        Ok(())
    };
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("tokenctl-{}", sub.get_name());
        render(name.clone(), sub.clone().name(name))?;
    }
    render("tokenctl".into(), command)?;
    for path in written {
        outln!("{}", path.display());
    }
    Ok(())
}
