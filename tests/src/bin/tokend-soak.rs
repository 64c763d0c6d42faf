//! tokend-soak: a bounded soak test of the real daemon.
//!
//!     cargo run --release -p tokend-e2e --bin tokend-soak -- [--duration 10m] [--clients 100]
//!
//! It starts the fake provider and the real `tokend` (a client_credentials profile and a
//! logged-in authorization_code profile, both with two-second tokens), then runs `--clients`
//! concurrent clients that ask for tokens non-stop while the provider fails at random: 503s,
//! garbage bodies, dropped connections, `Retry-After`, slow answers. It checks every token it
//! is served against the provider, and reports:
//!
//! - tokens served, and tokens served that the provider would not accept (must be 0);
//! - errors served while the provider was healthy (must be 0): a request counts as made while
//!   healthy if no fault was active during the backoff and lifetime window before it;
//! - errors served during or just after outages (expected: no valid token was left);
//! - upstream requests;
//! - tokend's resident memory over time (must stay flat).
//!
//! It exits non-zero if a must-be-zero count is not zero or memory grew by more than a third.
//!
//!     tokend-soak --revoking [--clients 50] [--refreshes 50] [--lifetime 8s] [--max-hold 500ms]
//!                            [--revoke at-refresh|on-first-use]
//!
//! measures instead how often a token fails when it is used against a server that revokes the
//! old token when it issues a new one, with the quiet window off and on, and with `with_token`
//! (see `revoking.rs`).

#[path = "tokend-soak/revoking.rs"]
mod revoking;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokend_e2e::fake::{Client, ClientAuth, Fault, RevokeOnRefresh, Style};
use tokend_e2e::{FakeProvider, Tokend, free_port};

/// How long after an outage errors are expected: the longest retry delay plus one token
/// lifetime plus slack.
const RECOVERY: Duration = Duration::from_millis(1000 + 2000 + 1500);

#[derive(Default)]
struct Counts {
    served: AtomicU64,
    rejected_by_provider: AtomicU64,
    errors_healthy: AtomicU64,
    errors_outage: AtomicU64,
}

/// The outages so far: when each began, and when it ended (`None` while it lasts).
#[derive(Default)]
struct Health {
    outages: Mutex<Vec<(Instant, Option<Instant>)>>,
}

impl Health {
    /// Whether the provider was healthy from `RECOVERY` before a request was made until it was
    /// answered: then the request must have succeeded.
    fn healthy_throughout(&self, asked: Instant, answered: Instant) -> bool {
        let from = asked.checked_sub(RECOVERY).unwrap_or(asked);
        self.outages.lock().unwrap().iter().all(|&(start, end)| start > answered || end.is_some_and(|end| end < from))
    }

    fn begin(&self) {
        self.outages.lock().unwrap().push((Instant::now(), None));
    }

    fn end(&self) {
        if let Some(last) = self.outages.lock().unwrap().last_mut() {
            last.1 = Some(Instant::now());
        }
    }
}

const USAGE: &str = "usage: tokend-soak [--duration 10m] [--clients 100]
       tokend-soak --revoking [--clients 50] [--refreshes 50] [--lifetime 8s] [--max-hold 500ms] [--revoke at-refresh|on-first-use]";

/// What to run.
enum Soak {
    /// The daemon under load while the provider fails at random.
    Chaos { duration: Duration, clients: usize },
    /// Uses of tokens against a provider that revokes replaced tokens.
    Revoking(revoking::Plan),
}

fn parse_args() -> Result<Soak, String> {
    let mut duration = Duration::from_secs(600);
    let mut clients = None;
    let mut revoking = false;
    let mut plan = revoking::Plan {
        clients: 50,
        refreshes: 50,
        lifetime: Duration::from_secs(8),
        max_hold: Duration::from_millis(500),
        revoke: RevokeOnRefresh::AtRefresh,
    };
    let duration_of = |name: &str, text: String| humantime::parse_duration(&text).map_err(|e| format!("{name}: {e}"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--duration" => duration = duration_of("--duration", value("--duration")?)?,
            "--clients" => {
                clients = Some(value("--clients")?.parse().map_err(|e| format!("--clients: {e}"))?);
            }
            "--revoking" => revoking = true,
            "--refreshes" => {
                plan.refreshes = value("--refreshes")?.parse().map_err(|e| format!("--refreshes: {e}"))?;
            }
            "--lifetime" => plan.lifetime = duration_of("--lifetime", value("--lifetime")?)?,
            "--max-hold" => plan.max_hold = duration_of("--max-hold", value("--max-hold")?)?,
            "--revoke" => {
                plan.revoke = match value("--revoke")?.as_str() {
                    "at-refresh" => RevokeOnRefresh::AtRefresh,
                    "on-first-use" => RevokeOnRefresh::OnFirstUse,
                    other => return Err(format!("--revoke: {other:?} is not at-refresh or on-first-use")),
                };
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if revoking {
        plan.clients = clients.unwrap_or(plan.clients);
        Ok(Soak::Revoking(plan))
    } else {
        Ok(Soak::Chaos { duration, clients: clients.unwrap_or(100) })
    }
}

fn main() -> ExitCode {
    let soak = match parse_args() {
        Ok(soak) => soak,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    tokend_e2e::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match soak {
        Soak::Chaos { duration, clients } => runtime.block_on(chaos(duration, clients)),
        Soak::Revoking(plan) => {
            if runtime.block_on(revoking::run(plan)) {
                println!("PASS");
                ExitCode::SUCCESS
            } else {
                println!("FAIL");
                ExitCode::FAILURE
            }
        }
    }
}

async fn chaos(duration: Duration, clients: usize) -> ExitCode {
    let fake = FakeProvider::start().await;
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    fake.client("cc", "s", ClientAuth::Basic);
    fake.register(
        "ac",
        Client {
            secret: Some("s".into()),
            auth: ClientAuth::Post,
            required_params: vec![],
            redirect_uri: Some(redirect.clone()),
        },
    );
    fake.set_style(Style::Movemint);
    fake.set_lifetime(Duration::from_secs(2));
    let config = format!(
        r#"
[profiles.cc]
grant = "client_credentials"
token_url = "{base}/oauth/token"
client_id = "cc"
client_secret = "s"
retry_min = "100ms"
retry_max = "1s"

[profiles.ac]
grant = "authorization_code"
token_url = "{base}/oauth/token"
authorize_url = "{base}/oauth/authorize"
redirect_uri = "{redirect}"
client_id = "ac"
client_secret = "s"
client_auth = "post"
retry_min = "100ms"
retry_max = "1s"
"#,
        base = fake.base
    );
    let mut tokend = Tokend::start_with(
        &config,
        tokend_e2e::Options { env: vec![("RUST_LOG".into(), "warn".into())], ..Default::default() },
    )
    .await;
    tokend.log_in("ac").await;
    let pid = tokend.pid();

    let counts = Arc::new(Counts::default());
    let health = Arc::new(Health::default());
    let started = Instant::now();
    let deadline = started + duration;
    println!("soak: {clients} clients for {}, tokend pid {pid}", humantime::format_duration(duration));

    let mut tasks = Vec::new();
    for i in 0..clients {
        let (socket, counts, health, fake) = (tokend.socket.clone(), counts.clone(), health.clone(), fake.fake.clone());
        let profile = if i % 2 == 0 { "cc" } else { "ac" };
        tasks.push(tokio::spawn(async move {
            let mut client = tokend_client::Client::connect_to(tokend_client::Endpoint::new(socket))
                .await
                .expect("connect")
                .with_timeout(Duration::from_secs(30));
            while Instant::now() < deadline {
                let asked = Instant::now();
                match client.token(profile).await {
                    Ok(token) => {
                        counts.served.fetch_add(1, Ordering::Relaxed);
                        if !fake.accepts(token.access_token.expose()) {
                            counts.rejected_by_provider.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        if health.healthy_throughout(asked, Instant::now()) {
                            counts.errors_healthy.fetch_add(1, Ordering::Relaxed);
                            eprintln!("error while the provider was healthy: {e}");
                        } else {
                            counts.errors_outage.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..40))).await;
            }
        }));
    }

    let injector = {
        let (fake, health) = (fake.fake.clone(), health.clone());
        tokio::spawn(async move {
            let mut outages = 0u32;
            while Instant::now() + Duration::from_secs(12) < deadline {
                tokio::time::sleep(Duration::from_millis(rand::random_range(3000..8000))).await;
                let fault = match rand::random_range(0..5) {
                    0 => Fault::Status(503, "{}".into()),
                    1 => Fault::Garbage,
                    2 => Fault::Hangup,
                    3 => Fault::RetryAfter(1),
                    _ => Fault::Status(502, "<html>bad gateway</html>".into()),
                };
                health.begin();
                fake.fail_always(Some(fault));
                tokio::time::sleep(Duration::from_millis(rand::random_range(500..3000))).await;
                fake.fail_always(None);
                health.end();
                outages += 1;
            }
            outages
        })
    };

    let mut samples = Vec::new();
    let every = (duration / 10).max(Duration::from_secs(2));
    while Instant::now() < deadline {
        tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
        let rss = rss_kib(pid);
        samples.push(rss);
        println!(
            "  t={:>5}s  served={:>9}  upstream={:>6}  rss={} KiB",
            started.elapsed().as_secs(),
            counts.served.load(Ordering::Relaxed),
            fake.token_requests(),
            rss
        );
    }
    for task in tasks {
        let _ = task.await;
    }
    let outages = injector.await.unwrap_or(0);
    let stopped = tokend.stop().await;

    let served = counts.served.load(Ordering::Relaxed);
    let rejected = counts.rejected_by_provider.load(Ordering::Relaxed);
    let errors_healthy = counts.errors_healthy.load(Ordering::Relaxed);
    let errors_outage = counts.errors_outage.load(Ordering::Relaxed);
    let baseline = samples.get(samples.len() / 4).copied().unwrap_or_default().max(1);
    let last = samples.last().copied().unwrap_or_default();
    let growth = (last as f64 - baseline as f64) / baseline as f64;
    println!(
        "\nsoak report ({}; {clients} clients; 2-second tokens; {outages} outages)",
        humantime::format_duration(duration)
    );
    println!("  tokens served                         {served}");
    println!("  ... not accepted by the provider      {rejected}   (must be 0)");
    println!("  errors served while upstream healthy  {errors_healthy}   (must be 0)");
    println!("  errors served during/after outages    {errors_outage}");
    println!("  upstream token requests               {}", fake.token_requests());
    println!("  tokend RSS (KiB) over time            {samples:?}");
    println!("  RSS change after warm-up              {:+.1}%", growth * 100.0);
    println!("  tokend stopped on SIGTERM with        {stopped}");
    let memory_ok = growth < 0.34 || last.saturating_sub(baseline) < 2048;
    if rejected == 0 && errors_healthy == 0 && memory_ok && stopped.success() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAIL");
        ExitCode::FAILURE
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
