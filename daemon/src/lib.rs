//! tokend: a per-user daemon that owns OAuth 2.0 access tokens.
//!
//! It fetches tokens, refreshes them *before* they expire, and serves the current one to any
//! number of local programs over a Unix socket, the way ssh-agent serves keys. The pieces,
//! one concern per module:
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | the TOML file: parsing, checking, resolving client secrets |
//! | [`oauth`] | requests to OAuth servers: token, device authorization, revocation, info endpoints, metadata; the claims of JWTs, for scheduling |
//! | [`limits`] | what tokend accepts from a server: token sizes and characters, lifetimes |
//! | [`held`] | the access token as a profile holds it, shared by the machine and the store |
//! | [`expiry`] | when a login ends, and when tokend warns that it will |
//! | [`profile`] | one profile's token state machine, its actor, and the handle that serves it |
//! | [`persist`] | tokens on disk, written atomically |
//! | [`login`] | logins: the authorization code flow with PKCE and its loopback listener, and the device authorization grant's polling (RFC 8628) |
//! | [`server`] | the socket: binding, framing, the handshake, answering requests |
//! | [`http`] | the HTTP API on its own socket: the token API and the authenticating proxy |
//! | [`daemon`] | the set of running profiles and reload |
//! | [`endpoints`] | where each profile's endpoints come from: config, discovery, the cache |
//! | [`clock`] | re-arming timers when the wall clock jumps |
//! | [`signals`], [`sdnotify`], [`logging`], [`harden`], [`fsperm`], [`notify`] | the process |
//! | [`desktop`] | desktop notifications over the session bus, when no notify command is set |
//!
//! The modules form layers, and each uses only modules of lower layers (no import cycles;
//! DEVELOPERS.md has the table, and a unit test checks it): the process modules and `limits`
//! at the bottom, then `config`, `oauth`, `held`/`expiry`/`login`, `persist`, `profile`, `endpoints`,
//! `daemon`, and `server`/`signals` on top.
//!
//! The flow: [`run`] hardens the process, loads the config, opens the state directory, binds
//! the sockets (the protocol socket and the HTTP API's) and starts one actor per profile. Each
//! actor fetches or restores its token and schedules the next refresh; connections read tokens
//! from the actors' published snapshots.
//! On SIGTERM the servers stop accepting, answer what they were answering, the actors finish
//! any request in flight and persist it, and the sockets are removed.

#![warn(missing_docs)]

pub mod cli;
mod clock;
mod config;
mod daemon;
#[cfg(unix)]
mod desktop;
mod endpoints;
mod expiry;
mod fsperm;
mod harden;
mod held;
mod http;
#[cfg(test)]
mod layers;
mod limits;
mod logging;
mod login;
mod notify;
mod oauth;
mod persist;
mod profile;
mod sdnotify;
mod seal;
pub mod server;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

/// How long the HTTP API's proxy keeps an idle upstream connection (the benchmarks wait it out).
pub use http::proxy::POOL_IDLE as PROXY_POOL_IDLE;
#[doc(hidden)]
pub use oauth::fuzz_upstream_answer;
pub use oauth::install_crypto_provider;

use tokend_proto::Endpoint;

use crate::cli::Cli;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::oauth::{Http, Tls};
use crate::persist::Store;

/// Exit status for an invalid config (sysexits' `EX_CONFIG`). The systemd unit does not
/// restart on it: restarting cannot fix a config.
const EXIT_CONFIG: u8 = 78;

/// Keeps glibc's allocator to one arena. By default each thread that allocates gets an arena of
/// its own (up to eight per core), each holding on to pages of its own; tokend's threads allocate
/// little and rarely at once, and its per-thread caches serve most allocations without a lock,
/// so the extra arenas cost about 0.2 MB at rest and buy nothing (BENCHMARKS.md).
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator; it is called before tokend starts
    // any thread, and glibc takes its own lock for it anyway.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Runs the daemon (or the config check) and returns its exit status.
pub fn run(cli: Cli) -> ExitCode {
    one_malloc_arena();
    let hardening = harden::apply();

    if let Some(path) = &cli.check_config {
        return check_config(path.clone().or_else(|| cli.config.clone()), cli.state_dir.clone());
    }

    let Some(config_path) = cli.config.clone().or_else(Config::default_path) else {
        eprintln!("tokend: cannot tell where the config file is (no home directory); pass --config PATH");
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tokend: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    logging::init(cli.log_level.as_deref(), config.daemon.log_level.as_deref());
    for warning in &hardening.warnings {
        tracing::warn!("{warning}");
    }

    let endpoint = Endpoint::resolve(cli.socket.as_deref(), config.daemon.socket.as_deref());
    let http_endpoint = match http::endpoint(cli.http_socket.as_deref(), &config.daemon.http_socket, &endpoint) {
        Ok(http_endpoint) => http_endpoint,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tokend: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(state_dir) = cli.state_dir.clone().or_else(|| config.daemon.state_dir.clone()).or_else(default_state_dir)
    else {
        tracing::error!("cannot tell where to keep state (no home directory); pass --state-dir DIR");
        return ExitCode::FAILURE;
    };
    let sealer = match &config.daemon.encryption_key {
        None => None,
        Some(source) => {
            let loaded = match source {
                config::KeySource::File(path) => seal::Sealer::from_key_file(path),
                config::KeySource::Credential(name) => seal::Sealer::from_credential(name),
            };
            match loaded {
                Ok(sealer) => Some(sealer),
                Err(e) => {
                    tracing::error!("cannot load the state encryption key: {e}");
                    eprintln!("tokend: cannot load the state encryption key: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let store = match Store::open(&state_dir, sealer) {
        Ok(store) => store,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Both clients on one set of TLS settings: the system's roots are read once.
    let timeout = config.daemon.http_timeout;
    let clients = Tls::new().and_then(|tls| Ok((Http::new(timeout, &tls)?, http::proxy::Proxy::new(timeout, &tls))));
    let (http, proxy) = match clients {
        Ok(clients) => clients,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, std::num::NonZero::get).clamp(1, 4))
        .max_blocking_threads(16)
        .thread_name("tokend")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sockets = Sockets { endpoint, http: http_endpoint.map(|endpoint| (endpoint, proxy)) };
    runtime.block_on(serve(config, sockets, store, http, hardening.max_files))
}

/// Where to listen: the protocol socket, and the HTTP API's with its proxy unless it is off.
struct Sockets {
    endpoint: Endpoint,
    http: Option<(Endpoint, http::proxy::Proxy)>,
}

async fn serve(config: Config, sockets: Sockets, store: Store, http: Http, max_files: Option<u64>) -> ExitCode {
    let Sockets { endpoint, http: http_api } = sockets;
    let (bound, http_bound) = match server::listener::bind(&endpoint, http_api.as_ref().map(|(e, _)| e)) {
        Ok(bound) => bound,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tokend: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut max_connections = config.daemon.max_connections;
    let mut max_http_connections = config.daemon.max_connections;
    if let Some(files) = max_files {
        // Leave room for the state files, the HTTP client and the login listeners; with the
        // HTTP API on, half for each socket, and an HTTP connection may hold a proxied upstream
        // connection too.
        let budget = files.saturating_sub(64).max(32);
        let share = if http_api.is_some() { budget / 2 } else { budget };
        max_connections = max_connections.min(usize::try_from(share).unwrap_or(usize::MAX));
        max_http_connections = max_http_connections.min(usize::try_from(share / 2).unwrap_or(usize::MAX));
    }
    let profiles = config.profiles.len();
    let config_path = config.path.clone();
    let daemon = Daemon::start(config, store, http);
    if let Err(e) = signals::spawn(daemon.clone()) {
        tracing::error!("cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    let http_socket = http_api.as_ref().map_or_else(|| "off".to_owned(), |(e, _)| e.to_string());
    tracing::info!(
        socket = %endpoint,
        http_socket = %http_socket,
        config = %config_path.display(),
        profiles,
        "tokend {} ready{}",
        env!("CARGO_PKG_VERSION"),
        if bound.activated { " (socket activated)" } else { "" }
    );
    sdnotify::ready(&format!("serving {profiles} profile{}", if profiles == 1 { "" } else { "s" }));
    // The accept loops run as tasks on the workers, not in `block_on` on this thread: a
    // connection task an accept loop spawns then starts on the worker that accepted it, where
    // here it would wake this thread for every connection and hand each task over to a worker
    // (BENCHMARKS.md, "What each optimisation changed"). On Unix the protocol socket is
    // accepted on a thread of its own instead (`server::short`), and its task only waits.
    // The socket file is removed when the listener closes, unless systemd owns it.
    let socket_file = (!bound.activated).then(|| endpoint.path().to_owned());
    let socket_server = tokio::spawn(server::serve(daemon.clone(), bound.listener, socket_file, max_connections));
    let http_server = tokio::spawn({
        let daemon = daemon.clone();
        async move {
            match (http_bound, http_api) {
                (Some(bound), Some((_, proxy))) => {
                    http::serve(daemon, bound.listener, proxy, max_http_connections).await;
                }
                // No HTTP socket: nothing to serve, until shutdown like a server.
                _ => {
                    let _ = daemon.shutdown_signal().wait_for(|down| *down).await;
                }
            }
        }
    });
    let servers = [("socket", socket_server), ("HTTP", http_server)];
    let ok = server::supervise(servers, || daemon.is_shutting_down(), || daemon.begin_shutdown()).await;
    sdnotify::stopping();
    daemon.stop_profiles().await;
    if !ok {
        tracing::error!("tokend stopped after a failure");
        return ExitCode::FAILURE;
    }
    tracing::info!("tokend stopped");
    ExitCode::SUCCESS
}

/// How long `tokend --check-config` waits for each metadata document.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn check_config(path: Option<PathBuf>, state_dir: Option<PathBuf>) -> ExitCode {
    let Some(path) = path.or_else(Config::default_path) else {
        eprintln!("tokend: cannot tell where the config file is; pass a path");
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tokend: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let names: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
    println!(
        "{}: valid, {} profile{}{}{}",
        path.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    );
    let cache = state_dir
        .or_else(|| config.daemon.state_dir.clone())
        .or_else(default_state_dir)
        .map(|d| endpoints::Cache::new(&d));
    let reports = match (
        Tls::new().and_then(|tls| Http::new(CHECK_TIMEOUT, &tls)),
        tokio::runtime::Builder::new_current_thread().enable_all().build(),
    ) {
        (Ok(http), Ok(runtime)) => runtime.block_on(async {
            let mut reports = Vec::new();
            for profile in config.profiles.values() {
                reports.push(endpoints::report(profile, &http, cache.as_ref()).await);
            }
            reports
        }),
        (Err(e), _) => {
            eprintln!("tokend: {e}");
            return ExitCode::FAILURE;
        }
        (_, Err(e)) => {
            eprintln!("tokend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = std::time::SystemTime::now();
    for (profile, report) in config.profiles.values().zip(reports) {
        println!("\n[profiles.{}]", profile.name);
        if let Some(issuer) = &profile.issuer {
            println!("  {:<26}{issuer}", "issuer");
        }
        for (key, found) in &report.endpoints {
            match found {
                Some((url, origin)) => {
                    let from = match origin {
                        endpoints::Origin::Config => "config".to_owned(),
                        endpoints::Origin::DiscoveredNow(at) => format!("discovered now, {at}"),
                        endpoints::Origin::Cache(fetched, at) => {
                            let age = now.duration_since(*fetched).unwrap_or_default();
                            format!(
                                "cache, fetched {} ago from {at}",
                                humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
                            )
                        }
                    };
                    println!("  {key:<26}{url} ({from})");
                }
                None if *key == "device_authorization_url" => {}
                None => println!("  {key:<26}-"),
            }
        }
        if let Some(problem) = &report.problem {
            println!("  ! {problem}");
        }
        if report.endpoints.iter().any(|(key, found)| found.is_none() && matches!(*key, "token_url" | "authorize_url"))
        {
            println!(
                "  ! the profile cannot get tokens until its issuer's metadata can be fetched; tokend keeps trying"
            );
        }
    }
    ExitCode::SUCCESS
}

/// `$XDG_STATE_HOME/tokend`, or the platform's local data directory where there is no state
/// directory.
fn default_state_dir() -> Option<PathBuf> {
    let dirs = directories::BaseDirs::new()?;
    Some(dirs.state_dir().unwrap_or_else(|| dirs.data_local_dir()).join("tokend"))
}
