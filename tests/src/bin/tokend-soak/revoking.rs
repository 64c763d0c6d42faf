//! `tokend-soak --revoking`: how often a token fails when it is *used*, against a server that
//! revokes the old access token when it issues a new one.
//!
//! For each of four setups — the quiet window off or at its default, and programs that fetch a
//! token then use it, or that use `with_token` (one retry after a 401) — it starts the fake
//! provider revoking replaced tokens (at the refresh, or on the new token's first use), the
//! real `tokend` with a logged-in `authorization_code` profile of short-lived tokens, and
//! `--clients` programs that each, over and over: ask tokend for a token, hold it for a random
//! time up to `--max-hold` (what a program does between asking and calling), and use it at the
//! provider's token info endpoint. After `--refreshes` refreshes it reports the uses the server
//! refused, per 10,000, how long asking for a token took, how late uses came (beyond the hold:
//! the time to wake up and make the call, which the window must cover too), and the machine's
//! load average, because on a busy machine lateness is what decides.
//!
//! A setup during which the machine's wall clock jumped (another test setting the clock, NTP
//! stepping it) is run again, up to three times: tokens expire by the wall clock, so a jump
//! makes the provider refuse tokens for reasons that have nothing to do with refreshes.
//!
//! It fails if any use made through `with_token` was refused, or if plain fetch-then-use with
//! the default window was refused once or more per 10,000 uses.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokend_client::{Attempt, TokenExt};
use tokend_e2e::fake::RevokeOnRefresh;
use tokend_e2e::{FakeProvider, Movemint, Options, Tokend, eventually};

/// What to measure.
pub(crate) struct Plan {
    /// Concurrent programs.
    pub clients: usize,
    /// Refreshes per setup.
    pub refreshes: usize,
    /// The lifetime of the provider's tokens.
    pub lifetime: Duration,
    /// The longest a program holds a token before using it.
    pub max_hold: Duration,
    /// When the provider revokes a replaced token.
    pub revoke: RevokeOnRefresh,
}

/// One setup measured.
struct Outcome {
    name: &'static str,
    uses: u64,
    refused: u64,
    retried: u64,
    waits: Vec<Duration>,
    lateness: Vec<Duration>,
    elapsed: Duration,
    load: (String, String),
    clock_jumps: u64,
    warnings: Vec<String>,
}

impl Outcome {
    fn per_10k(&self) -> f64 {
        self.refused as f64 * 10_000.0 / self.uses.max(1) as f64
    }
}

/// Runs every setup and prints the report; returns whether the goals were met.
pub(crate) async fn run(plan: Plan) -> bool {
    println!(
        "revoking server ({}): {} clients, tokens living {}, holds of 0-{}, {} refreshes per setup",
        match plan.revoke {
            RevokeOnRefresh::AtRefresh => "revokes the old token at the refresh",
            RevokeOnRefresh::OnFirstUse => "revokes the old token when the new one is first used",
            RevokeOnRefresh::Never => "never revokes",
        },
        plan.clients,
        humantime::format_duration(plan.lifetime),
        humantime::format_duration(plan.max_hold),
        plan.refreshes
    );
    let setups = [
        ("fetch, then use; quiet window off", "quiet_window = \"0s\"", false),
        ("fetch, then use; default quiet window", "", false),
        ("with_token; quiet window off", "quiet_window = \"0s\"", true),
        ("with_token; default quiet window", "", true),
    ];
    let mut outcomes = Vec::new();
    for (name, setting, retrying) in setups {
        let mut outcome = measure(&plan, name, setting, retrying).await;
        for _ in 1..3 {
            if outcome.clock_jumps == 0 {
                break;
            }
            println!("  {name:<40} the wall clock jumped {} times; measuring again", outcome.clock_jumps);
            outcome = measure(&plan, name, setting, retrying).await;
        }
        println!(
            "  {name:<40} {:>7} uses  {:>5} refused  ({:.2} per 10,000)  in {}, load average {} -> {}",
            outcome.uses,
            outcome.refused,
            outcome.per_10k(),
            humantime::format_duration(Duration::from_secs(outcome.elapsed.as_secs())),
            outcome.load.0,
            outcome.load.1
        );
        for warning in &outcome.warnings {
            println!("      tokend: {warning}");
        }
        outcomes.push(outcome);
    }
    println!("\nrevoking-server report");
    println!(
        "  {:<40} {:>8} {:>8} {:>11} {:>8} {:>20} {:>20}",
        "setup", "uses", "refused", "per 10,000", "retried", "token wait p99/max", "use late p99/max"
    );
    for o in &outcomes {
        println!(
            "  {:<40} {:>8} {:>8} {:>11.2} {:>8} {:>20} {:>20}",
            o.name,
            o.uses,
            o.refused,
            o.per_10k(),
            if o.name.starts_with("with_token") { o.retried.to_string() } else { "-".into() },
            percentiles(&o.waits),
            percentiles(&o.lateness),
        );
    }
    let jumps: u64 = outcomes.iter().map(|o| o.clock_jumps).sum();
    if jumps > 0 {
        println!("  the wall clock jumped {jumps} times during the setups above: their numbers are not to be trusted");
    }
    let retrying_ok = outcomes.iter().filter(|o| o.name.starts_with("with_token")).all(|o| o.refused == 0);
    let window_ok = outcomes[1].per_10k() < 1.0;
    println!("  with_token refused nothing                              {}", if retrying_ok { "yes" } else { "NO" });
    println!("  default window: under 1 refused use per 10,000          {}", if window_ok { "yes" } else { "NO" });
    retrying_ok && window_ok
}

/// "p99 / max" in milliseconds.
fn percentiles(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    format!("{} / {} ms", p99.as_millis(), sorted.last().unwrap().as_millis())
}

/// The one-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Refresh grants the provider has answered.
fn refreshes(fake: &FakeProvider) -> usize {
    fake.requests().iter().filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token")).count()
}

async fn measure(plan: &Plan, name: &'static str, setting: &str, retrying: bool) -> Outcome {
    let fake = Movemint::with_client("mm", "s").await;
    fake.set_lifetime(plan.lifetime);
    fake.set_revoke_on_refresh(plan.revoke);
    let config = fake.profile(setting);
    let mut tokend =
        Tokend::start_with(&config, Options { env: vec![("RUST_LOG".into(), "warn".into())], ..Default::default() })
            .await;
    tokend.log_in("mm").await;

    let load_before = load_average();
    let stop = Arc::new(AtomicBool::new(false));
    let clock_jumps = tokio::spawn(watch_the_clock(stop.clone()));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let url = fake.url("/oauth/token/info");
    let started = Instant::now();
    let mut programs = Vec::new();
    for _ in 0..plan.clients {
        let mut client = tokend.client().await.with_timeout(Duration::from_secs(60));
        let (stop, counts, url, max_hold) = (stop.clone(), counts.clone(), url.clone(), plan.max_hold);
        programs.push(tokio::spawn(async move {
            let http = tokend_e2e::http().build().unwrap();
            let mut waits = Vec::new();
            let lateness = &Mutex::new(Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let (status, runs) = if retrying {
                    let runs = &AtomicU64::new(0);
                    let http = &http;
                    let url = &url;
                    let status = client
                        .with_token("mm", |token| async move {
                            runs.fetch_add(1, Ordering::Relaxed);
                            let (status, late) = hold_then_use(http, url, &token, max_hold).await;
                            lateness.lock().unwrap().push(late);
                            if status == 401 { Attempt::Rejected(status) } else { Attempt::Done(status) }
                        })
                        .await
                        .expect("tokend answers");
                    (status, runs.load(Ordering::Relaxed))
                } else {
                    let asked = Instant::now();
                    let token = client.token("mm").await.expect("tokend answers");
                    waits.push(asked.elapsed());
                    let (status, late) = hold_then_use(&http, &url, &token, max_hold).await;
                    lateness.lock().unwrap().push(late);
                    (status, 1)
                };
                counts[0].fetch_add(1, Ordering::Relaxed);
                match status {
                    200 => {}
                    401 => {
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("the info endpoint answered {other}"),
                }
                counts[2].fetch_add(runs - 1, Ordering::Relaxed);
            }
            let lateness = std::mem::take(&mut *lateness.lock().unwrap());
            (waits, lateness)
        }));
    }
    let limit = plan.lifetime * (u32::try_from(plan.refreshes).expect("a sane number of refreshes") + 2)
        + Duration::from_secs(60);
    let reached = eventually(limit, || refreshes(&fake) >= plan.refreshes).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let load_after = load_average();
    let clock_jumps = clock_jumps.await.expect("the clock watcher");
    let (mut waits, mut lateness) = (Vec::new(), Vec::new());
    for program in programs {
        let (w, l) = program.await.expect("a program panicked");
        waits.extend(w);
        lateness.extend(l);
    }
    assert!(reached, "{name}: only {} refreshes in {}", refreshes(&fake), humantime::format_duration(limit));
    let stopped = tokend.stop().await;
    assert!(stopped.success(), "{name}: tokend stopped with {stopped}:\n{}", tokend.log());
    // tokend logs warnings only (a failed token request, say): each one explains an outlier.
    let warnings: Vec<String> =
        tokend.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).map(str::to_owned).collect();
    Outcome {
        name,
        uses: counts[0].load(Ordering::Relaxed),
        refused: counts[1].load(Ordering::Relaxed),
        retried: counts[2].load(Ordering::Relaxed),
        waits,
        lateness,
        elapsed,
        load: (load_before, load_after),
        clock_jumps,
        warnings,
    }
}

/// Counts the times the wall clock moved more than 100 ms away from the monotonic clock, until
/// `stop`.
async fn watch_the_clock(stop: Arc<AtomicBool>) -> u64 {
    let (wall, mono) = (SystemTime::now(), Instant::now());
    // How far the wall clock has moved from the monotonic one since the start, in seconds.
    let drift = || {
        let walled = match SystemTime::now().duration_since(wall) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        walled - mono.elapsed().as_secs_f64()
    };
    let mut last = drift();
    let mut jumps = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = drift();
        if (now - last).abs() > 0.1 {
            jumps += 1;
        }
        last = now;
    }
    jumps
}

/// What a program does with a token: something else for a while, then the API call. Returns
/// the status, and how much later than the hold the answer came.
async fn hold_then_use(
    http: &reqwest::Client,
    url: &str,
    token: &tokend_client::Token,
    max_hold: Duration,
) -> (u16, Duration) {
    let started = Instant::now();
    let hold = max_hold.mul_f64(rand::random::<f64>());
    tokio::time::sleep(hold).await;
    let response = http.get(url).header("Authorization", token.header_value()).send().await;
    let status = response.expect("the provider answers").status().as_u16();
    (status, started.elapsed().saturating_sub(hold))
}
