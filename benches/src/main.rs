//! tokend-bench: measures tokend against the physical limit, in one run.
//!
//!     benches/run              # builds release binaries, then runs the whole suite
//!     benches/run --quick      # a short smoke run
//!     benches/run --json out.json
//!
//! Every tokend number is printed beside a raw Unix-socket baseline measured in the same run —
//! a minimal server (its own process, same tokio worker count) and client exchanging frames of
//! exactly the sizes of tokend's token request and response — or beside `/bin/true` for process
//! start, or (for the HTTP API, [`http`]) beside the same requests sent straight to the
//! upstream or over the protocol socket, and reported as a ratio, because these machines are too noisy for absolute numbers to
//! mean much from one run to the next. See BENCHMARKS.md.

mod http;
mod minimal;
mod raw;
mod stats;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokend_client::{Client, Endpoint};
use tokend_e2e::fake::{ClientAuth, Metadata, Style};
use tokend_e2e::{FakeProvider, Options, Tokend, bin};
use tokend_proto::{Request, Response, codec};

use stats::{Latency, ms, us, verdict};

/// tokend's tokio worker count on this machine (it uses up to four).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get).clamp(1, 4)
}

struct Plan {
    latency_samples: usize,
    throughput_for: Duration,
    process_runs: usize,
    process_repeats: usize,
    herd: usize,
    many_profiles: usize,
    many_connections: usize,
    idle_for: Duration,
    /// How much the HTTP section streams each way.
    transfer_bytes: u64,
    /// A short smoke run.
    quick: bool,
    /// Sections to run (`latency`, `throughput`, `process`, `herd`, `http`, `memory`); empty for
    /// all.
    only: Vec<String>,
}

impl Plan {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }

    fn full() -> Plan {
        Plan {
            latency_samples: 50_000,
            throughput_for: Duration::from_secs(5),
            process_runs: 1_000,
            process_repeats: 3,
            herd: 10_000,
            many_profiles: 1_000,
            many_connections: 10_000,
            idle_for: Duration::from_secs(60),
            transfer_bytes: 1 << 30,
            quick: false,
            only: Vec::new(),
        }
    }

    fn quick() -> Plan {
        Plan {
            latency_samples: 3_000,
            throughput_for: Duration::from_millis(500),
            process_runs: 20,
            process_repeats: 1,
            herd: 1_000,
            many_profiles: 100,
            many_connections: 1_000,
            idle_for: Duration::from_secs(5),
            transfer_bytes: 64 << 20,
            quick: true,
            only: Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--raw-server") {
        let parse = |i: usize| args[i].parse::<usize>().expect("a number");
        raw::serve(Path::new(&args[2]), parse(3), parse(4), parse(5));
        return ExitCode::SUCCESS;
    }
    if args.get(1).map(String::as_str) == Some("--upstream") {
        http::serve_upstream();
        return ExitCode::SUCCESS;
    }
    if args.get(1).map(String::as_str) == Some("--minimal-proxy") {
        minimal::serve(Path::new(&args[2]), args[3].parse().expect("an upstream address"), workers());
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    tokend_e2e::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    plan.only = only;
    let results = runtime.block_on(suite(plan));
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).expect("write the JSON results");
        println!("\nresults written to {}", path.display());
    }
    ExitCode::SUCCESS
}

fn profiles(fake: &FakeProvider, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[profiles.p{i}]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\n",
                fake.url("/oauth/token")
            )
        })
        .collect()
}

async fn start(config: &str) -> Tokend {
    Tokend::start_with(config, Options { env: vec![("RUST_LOG".into(), "info".into())], ..Default::default() }).await
}

/// The size of the access tokens served: a typical JWT.
const TOKEN_SIZE: usize = 1024;

async fn provider(lifetime: Duration) -> FakeProvider {
    let fake = FakeProvider::start().await;
    fake.client("c", "s", ClientAuth::Basic);
    fake.set_lifetime(lifetime);
    fake.set_token_size(TOKEN_SIZE);
    fake
}

async fn suite(plan: Plan) -> serde_json::Value {
    let mut results = serde_json::Map::new();
    machine(&mut results);

    let fake = provider(Duration::from_secs(24 * 3600)).await;
    let tokend = start(&profiles(&fake, 1)).await;
    let endpoint = Endpoint::new(&tokend.socket);
    let token = Client::connect_to(endpoint.clone()).await.unwrap().token("p0").await.unwrap();
    let frame_len = |message: &dyn Fn(&mut Vec<u8>)| {
        let mut buf = Vec::new();
        message(&mut buf);
        buf.len()
    };
    let request_len =
        frame_len(&|b| codec::encode(&Request::Token { profile: "p0".into(), min_valid: None }, b).unwrap());
    let response_len = frame_len(&|b| codec::encode(&Response::Token(token.clone()), b).unwrap());
    println!(
        "frames: request {request_len} bytes, response {response_len} bytes (a {}-byte token); tokend and the baseline use {} worker threads\n",
        token.access_token.expose().len(),
        workers()
    );

    let raw_server = RawServer::spawn("raw.sock", request_len, response_len);

    // 1. Latency on one persistent connection.
    if plan.runs("latency") {
        println!(
            "== Client::token round trip on one persistent connection ({} samples each, in alternating blocks)",
            plan.latency_samples
        );
        // Both connections stay open, and the two are measured in alternating blocks, so that
        // drift in the machine's state (frequency, which cores the threads land on) hits both.
        const ROUNDS: usize = 20;
        let mut raw_client = raw_server.client().await;
        let mut client = Client::connect_to(endpoint.clone()).await.unwrap();
        for _ in 0..2000 {
            raw_client.round_trip().await;
            client.token("p0").await.unwrap();
        }
        let per_round = plan.latency_samples.div_ceil(ROUNDS);
        let (mut raw_samples, mut our_samples) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for _ in 0..per_round {
                let t = Instant::now();
                raw_client.round_trip().await;
                raw_samples.push(t.elapsed());
            }
            for _ in 0..per_round {
                let t = Instant::now();
                client.token("p0").await.unwrap();
                our_samples.push(t.elapsed());
            }
        }
        let (raw, ours) = (Latency::of(raw_samples), Latency::of(our_samples));
        println!("                 median      p99         p99.9       mean");
        println!("  raw socket     {:<11} {:<11} {:<11} {}", us(raw.median), us(raw.p99), us(raw.p999), us(raw.mean));
        println!(
            "  tokend         {:<11} {:<11} {:<11} {}",
            us(ours.median),
            us(ours.p99),
            us(ours.p999),
            us(ours.mean)
        );
        let latency_ratio = ours.median.as_secs_f64() / raw.median.as_secs_f64();
        println!("  median ratio   {}\n", verdict(latency_ratio, 1.5, true));
        results.insert(
        "latency_us".into(),
        json!({
            "raw": { "median": raw.median.as_secs_f64() * 1e6, "p99": raw.p99.as_secs_f64() * 1e6, "p999": raw.p999.as_secs_f64() * 1e6 },
            "tokend": { "median": ours.median.as_secs_f64() * 1e6, "p99": ours.p99.as_secs_f64() * 1e6, "p999": ours.p999.as_secs_f64() * 1e6 },
            "median_ratio": latency_ratio,
        }),
    );
    }

    // 2. Throughput with many connections.
    if plan.runs("throughput") {
        println!("== throughput (requests per second, {} per level)", humantime::format_duration(plan.throughput_for));
        println!("  connections    raw socket      tokend          ratio");
        let mut throughput = Vec::new();
        for connections in [1usize, 8, 64, 1024] {
            let raw_rps = raw_throughput(&raw_server, connections, plan.throughput_for).await;
            let ours_rps = tokend_throughput(&endpoint, connections, plan.throughput_for).await;
            let ratio = ours_rps / raw_rps;
            let note = if connections == 64 { format!("   {}", verdict(ratio, 0.5, false)) } else { String::new() };
            println!("  {connections:<14} {raw_rps:<15.0} {ours_rps:<15.0} {ratio:.2}×{note}");
            throughput.push(json!({ "connections": connections, "raw": raw_rps, "tokend": ours_rps, "ratio": ratio }));
        }
        results.insert("throughput_rps".into(), serde_json::Value::Array(throughput));
    }

    // 3. One request per process, process start included.
    if plan.runs("process") {
        let peer = OidcAgent::start().await;
        let section = processes(&plan, &tokend, &raw_server, peer.as_ref()).await;
        results.insert("process".into(), section);
    }
    drop(raw_server);
    drop(tokend);

    // 4. A herd on an expired token.
    if plan.runs("herd") {
        let (requests, release_to_all, all_served) = herd(plan.herd).await;
        let raw_server = RawServer::spawn("raw-herd.sock", request_len, response_len);
        let raw_all = raw_herd(&raw_server, plan.herd).await;
        drop(raw_server);
        let ratio = release_to_all.as_secs_f64() / raw_all.as_secs_f64();
        println!("\n== a herd of {} concurrent requests on an expired token", plan.herd);
        println!("  upstream requests for the herd   {requests}   (must be 1)");
        println!("  all served, from the refresh     {}", ms(release_to_all));
        println!("  all served, from the first ask   {}", ms(all_served));
        println!("  raw socket, {} round trips at once   {}   (ratio {ratio:.2}×)", plan.herd, ms(raw_all));
        results.insert(
            "herd".into(),
            json!({ "clients": plan.herd, "upstream_requests": requests, "ms_after_refresh": release_to_all.as_secs_f64() * 1e3, "ms_total": all_served.as_secs_f64() * 1e3, "raw_ms": raw_all.as_secs_f64() * 1e3, "ratio": ratio }),
        );
    }

    // 5. The HTTP API and its proxy.
    if plan.runs("http") {
        http::run(&plan, &mut results).await;
    }

    // 6. Memory, and 7. idle cost.
    if !plan.runs("memory") {
        return serde_json::Value::Object(results);
    }
    println!("\n== memory (resident set size; the raw baseline is a tokio server with the same workers)");
    let raw_server = RawServer::spawn("raw-memory.sock", request_len, response_len);
    // Connect once so that the baseline has set up everything it needs to serve.
    raw_server.client().await.round_trip().await;
    let fake = provider(Duration::from_secs(24 * 3600)).await;
    let ten = start(&profiles(&fake, 10)).await;
    wait_for_requests(&fake, 10).await;
    // At rest: past the 5 s after which tokend closes its idle upstream connections.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (rss_ten, raw_idle) = (rss_kib(ten.pid()), rss_kib(raw_server.pid()));
    let anonymous_ten = smaps_field(ten.pid(), "Anonymous:");
    println!("                                      tokend       raw socket   ratio");
    println!(
        "  at rest, 10 profiles              {rss_ten:>7} KiB  {raw_idle:>7} KiB  {:.2}×   (target ≤ 6144 KiB) {}",
        rss_ten as f64 / raw_idle as f64,
        if rss_ten <= 6144 { "met" } else { "NOT met" }
    );
    println!(
        "    of which anonymous {anonymous_ten} KiB, file-backed (tokend's executable) {} KiB",
        rss_ten.saturating_sub(anonymous_ten)
    );
    let many_connections = plan.many_connections.min(protocol_socket_share());
    // One after the other, so that this process needs only one set of descriptors.
    let rss_conns = {
        let mut clients = Vec::with_capacity(many_connections);
        for _ in 0..many_connections {
            clients.push(Client::connect_to(Endpoint::new(&ten.socket)).await.unwrap());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_kib(ten.pid())
    };
    let raw_conns = {
        let mut clients = Vec::with_capacity(many_connections);
        for _ in 0..many_connections {
            clients.push(raw_server.client().await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_kib(raw_server.pid())
    };
    println!(
        "  10 profiles, {many_connections:>5} open clients   {rss_conns:>7} KiB  {raw_conns:>7} KiB  {:.2}×{}",
        rss_conns as f64 / raw_conns as f64,
        if many_connections < plan.many_connections {
            format!("   (not {}: tokend's share of this machine's open-file limit)", plan.many_connections)
        } else {
            String::new()
        }
    );
    let fake_many = provider(Duration::from_secs(24 * 3600)).await;
    let many = start(&profiles(&fake_many, plan.many_profiles)).await;
    wait_for_requests(&fake_many, plan.many_profiles).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_many = rss_kib(many.pid());
    println!(
        "  idle, {:>5} profiles              {rss_many:>7} KiB  {raw_idle:>7} KiB  {:.2}×   (baseline: idle, no profiles)",
        plan.many_profiles,
        rss_many as f64 / raw_idle as f64
    );
    drop(many);
    results.insert(
        "memory_kib".into(),
        json!({ "profiles_10": rss_ten, "profiles_10_anonymous": anonymous_ten, "profiles_many": rss_many, "many_profiles": plan.many_profiles, "connections": many_connections, "with_connections": rss_conns, "raw_idle": raw_idle, "raw_with_connections": raw_conns }),
    );

    println!(
        "\n== idle cost: context switches of every thread over {}, nothing due",
        humantime::format_duration(plan.idle_for)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, raw_before) = (context_switches(ten.pid()), context_switches(raw_server.pid()));
    tokio::time::sleep(plan.idle_for).await;
    let switches = context_switches(ten.pid()).saturating_sub(before);
    let raw_switches = context_switches(raw_server.pid()).saturating_sub(raw_before);
    println!(
        "  tokend: threads {}, context switches {switches}   (target 0: no periodic wake-ups) {}",
        thread_count(ten.pid()),
        if switches == 0 { "met" } else { "NOT met" }
    );
    println!("  raw socket: threads {}, context switches {raw_switches}", thread_count(raw_server.pid()));
    results.insert(
        "idle".into(),
        json!({ "seconds": plan.idle_for.as_secs(), "context_switches": switches, "threads": thread_count(ten.pid()), "raw_context_switches": raw_switches }),
    );
    drop(ten);
    serde_json::Value::Object(results)
}

/// The raw baseline server, in its own process; killed on drop.
/// A baseline this program serves itself, started again in one of its server roles, listening
/// at `socket`; stopped, and its socket removed, when dropped.
struct Baseline {
    child: std::process::Child,
    socket: PathBuf,
}

impl Baseline {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

struct RawServer {
    server: Baseline,
    request_len: usize,
    response_len: usize,
}

impl RawServer {
    fn spawn(name: &str, request_len: usize, response_len: usize) -> RawServer {
        let socket = tempfile_dir().join(name);
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--raw-server")
            .arg(&socket)
            .arg(request_len.to_string())
            .arg(response_len.to_string())
            .arg(workers().to_string())
            .spawn()
            .expect("start the raw baseline server");
        RawServer { server: Baseline { child, socket }, request_len, response_len }
    }

    /// A client exchanging frames of the server's sizes.
    async fn client(&self) -> raw::RawClient {
        raw::RawClient::connect(&self.server.socket, self.request_len, self.response_len).await
    }

    fn pid(&self) -> u32 {
        self.server.pid()
    }
}

/// The raw baseline for a herd: `clients` connections, each making one round trip at once;
/// the time until the last is answered.
async fn raw_herd(server: &RawServer, clients: usize) -> Duration {
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(server.client().await);
    }
    let start = Instant::now();
    let tasks: Vec<_> =
        connected.into_iter().map(|mut client| tokio::spawn(async move { client.round_trip().await })).collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

fn machine(results: &mut serde_json::Map<String, serde_json::Value>) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("machine: {cores} cores, {cpu}, Linux {kernel}");
    results.insert("machine".into(), json!({ "cores": cores, "cpu": cpu, "kernel": kernel }));
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokend-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn raw_throughput(server: &RawServer, connections: usize, span: Duration) -> f64 {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(server.client().await);
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = start + span;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < stop {
                    client.round_trip().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn tokend_throughput(endpoint: &Endpoint, connections: usize, span: Duration) -> f64 {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(Client::connect_to(endpoint.clone()).await.unwrap());
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = start + span;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < stop {
                    client.token("p0").await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A program the process section runs once per sample.
#[derive(Clone)]
struct Contender {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, PathBuf)>,
    /// The processes serving it, whose CPU time and context switches are counted.
    daemon: Vec<u32>,
}

impl Contender {
    fn run(&self) -> Duration {
        let t = Instant::now();
        let status = std::process::Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let elapsed = t.elapsed();
        assert!(status.success(), "{} failed", self.name);
        elapsed
    }
}

/// What a set of processes has spent so far: CPU time of every thread, and context switches
/// (all, and the forced ones: pre-emptions).
#[derive(Clone, Copy, Default)]
struct Cost {
    cpu_ns: u64,
    switches: u64,
    forced: u64,
}

impl Cost {
    fn of(pids: &[u32]) -> Cost {
        let mut cost = Cost::default();
        for pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
            for task in tasks.flatten() {
                let dir = task.path().display().to_string();
                cost.cpu_ns += std::fs::read_to_string(format!("{dir}/schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                let status = format!("{dir}/status");
                let forced = status_field(&status, "nonvoluntary_ctxt_switches:");
                cost.switches += status_field(&status, "voluntary_ctxt_switches:") + forced;
                cost.forced += forced;
            }
        }
        cost
    }

    fn since(self, before: Cost) -> Cost {
        Cost {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            switches: self.switches.saturating_sub(before.switches),
            forced: self.forced.saturating_sub(before.forced),
        }
    }
}

/// One contender's samples and its daemon's cost over them.
struct Measured {
    latency: Latency,
    cost: Cost,
}

/// Runs every contender `runs` times, one run of each in turn (in a rotating order), so that
/// drift in the machine hits all of them alike.
fn measure(contenders: &[Contender], runs: usize) -> Vec<Measured> {
    for _ in 0..10 {
        for c in contenders {
            c.run();
        }
    }
    let before: Vec<Cost> = contenders.iter().map(|c| Cost::of(&c.daemon)).collect();
    let mut samples = vec![Vec::with_capacity(runs); contenders.len()];
    for i in 0..runs {
        for k in 0..contenders.len() {
            let j = (i + k) % contenders.len();
            samples[j].push(contenders[j].run());
        }
    }
    contenders
        .iter()
        .zip(samples)
        .zip(before)
        .map(|((c, samples), before)| Measured {
            latency: Latency::of(samples),
            cost: Cost::of(&c.daemon).since(before),
        })
        .collect()
}

/// pizauth 1.1.0's CPU time per `pizauth show`, the most recorded for it in issue 11 (it cannot
/// be installed here to measure it in the same run).
const PIZAUTH_CPU_US: f64 = 44.0;

/// One request per process: `/bin/true`, the floor, `tokenctl token` and, when installed,
/// `oidc-token`, with what each daemon spent per request.
async fn processes(plan: &Plan, tokend: &Tokend, raw: &RawServer, peer: Option<&OidcAgent>) -> serde_json::Value {
    let mut contenders = vec![
        Contender { name: "/bin/true", program: "/bin/true".into(), args: vec![], env: vec![], daemon: vec![] },
        Contender {
            name: "floor",
            // benches/run builds it static, like tokenctl, so that it stays the floor.
            program: std::env::var_os("TOKEND_FLOOR_BIN").map_or_else(|| bin("tokend-floor"), PathBuf::from),
            args: vec![
                raw.server.socket.display().to_string(),
                raw.request_len.to_string(),
                raw.response_len.to_string(),
            ],
            env: vec![],
            daemon: vec![raw.pid()],
        },
        Contender {
            name: "tokenctl token",
            program: bin("tokenctl"),
            args: vec!["token".into(), "p0".into()],
            env: vec![("TOKEND_SOCKET".into(), tokend.socket.clone())],
            daemon: vec![tokend.pid()],
        },
    ];
    if let Some(peer) = peer {
        contenders.push(peer.contender());
    }
    println!(
        "\n== one request per process, start to exit ({} × {} runs of each, interleaved)",
        plan.process_repeats, plan.process_runs
    );
    println!("  floor: a std-only Rust program that connects to the raw server, writes the request, reads the answer");
    let mut repeats = Vec::new();
    let mut ratios = Vec::new();
    let mut tokend_cpu = Vec::new();
    for repeat in 1..=plan.process_repeats {
        let (runs, run_contenders) = (plan.process_runs, contenders.clone());
        let measured = tokio::task::spawn_blocking(move || measure(&run_contenders, runs)).await.unwrap();
        let base = measured[0].latency.median.as_secs_f64();
        println!("  repeat {repeat}          median      p99         ratio to /bin/true");
        for (c, m) in contenders.iter().zip(&measured) {
            println!(
                "  {:<16} {:<11} {:<11} {:.2}×",
                c.name,
                us(m.latency.median),
                us(m.latency.p99),
                m.latency.median.as_secs_f64() / base
            );
        }
        println!("  daemon side, per request: CPU time, context switches (forced)");
        let mut entries = Vec::new();
        for (c, m) in contenders.iter().zip(&measured) {
            let per = |n: u64| n as f64 / runs as f64;
            let cpu_us = per(m.cost.cpu_ns) / 1e3;
            if !c.daemon.is_empty() {
                println!(
                    "  {:<16} {cpu_us:<11.1} {:.1} ({:.1})",
                    if c.name == "floor" { "raw server" } else { c.name },
                    per(m.cost.switches),
                    per(m.cost.forced)
                );
            }
            if c.name == "tokenctl token" {
                ratios.push(m.latency.median.as_secs_f64() / base);
                tokend_cpu.push(cpu_us);
            }
            entries.push(json!({
                "name": c.name,
                "median_us": m.latency.median.as_secs_f64() * 1e6,
                "p99_us": m.latency.p99.as_secs_f64() * 1e6,
                "ratio_to_true": m.latency.median.as_secs_f64() / base,
                "daemon_cpu_us_per_request": cpu_us,
                "daemon_switches_per_request": per(m.cost.switches),
                "daemon_forced_switches_per_request": per(m.cost.forced),
            }));
        }
        repeats.push(serde_json::Value::Array(entries));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ratio, cpu) = (median(&mut ratios), median(&mut tokend_cpu));
    println!("  tokenctl token / /bin/true, median of the repeats   {}", verdict(ratio, 1.8, true));
    println!(
        "  tokend CPU per request, median of the repeats       {cpu:.1} µs (target ≤ pizauth's {PIZAUTH_CPU_US} µs, recorded in issue 11) {}",
        if cpu <= PIZAUTH_CPU_US { "met" } else { "NOT met" }
    );
    json!({ "runs": plan.process_runs, "repeats": repeats, "tokenctl_ratio": ratio, "tokend_cpu_us": cpu })
}

/// oidc-agent serving a cached token, the peer that can be installed here (Debian's
/// `oidc-agent-cli`): an account configured against the fake provider with a refresh token, so
/// that `oidc-token` is answered from the agent's cache. `None`, with the reason printed, when it
/// is not installed or does not come up.
struct OidcAgent {
    agent: std::process::Child,
    socket: PathBuf,
    _fake: FakeProvider,
}

impl OidcAgent {
    async fn start() -> Option<OidcAgent> {
        let installed = ["oidc-agent", "oidc-gen", "oidc-token"].iter().all(|name| {
            std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).exists()))
        });
        if !installed {
            println!("\n(oidc-agent is not installed: `oidc-token` is left out of the process section)");
            return None;
        }
        match OidcAgent::try_start().await {
            Ok(peer) => Some(peer),
            Err(why) => {
                println!("\n(oidc-agent did not come up, so `oidc-token` is left out: {why})");
                None
            }
        }
    }

    async fn try_start() -> Result<OidcAgent, String> {
        let fake = provider(Duration::from_secs(24 * 3600)).await;
        // A style of answer that carries refresh tokens.
        fake.set_style(Style::Movemint);
        fake.set_client_credentials_refresh(true);
        fake.publish(Some(Metadata { openid: true, ..Default::default() }));
        // A refresh token for oidc-gen, which configures the account with it.
        let http = tokend_e2e::http().build().map_err(|e| e.to_string())?;
        let answer: serde_json::Value = http
            .post(fake.url("/oauth/token"))
            .basic_auth("c", Some("s"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| format!("token request: {e}"))?
            .json()
            .await
            .map_err(|e| format!("token response: {e}"))?;
        let refresh_token =
            answer["refresh_token"].as_str().ok_or_else(|| format!("no refresh token in {answer}"))?.to_owned();
        let home = tempfile_dir().join("oidc-agent-home");
        std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        let socket = home.join("agent.sock");
        let agent = std::process::Command::new("oidc-agent")
            .args(["--console", "--no-autoload", "--quiet"])
            .arg(format!("--socket-path={}", socket.display()))
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("oidc-agent: {e}"))?;
        // From here on, dropping the peer stops the agent.
        let peer = OidcAgent { agent, socket, _fake: fake };
        if !tokend_e2e::eventually(Duration::from_secs(10), || peer.socket.exists()).await {
            return Err("its socket did not appear".into());
        }
        let generated = std::process::Command::new("oidc-gen")
            .args(["-m", "--client-id=c", "--client-secret=s", "--scope=openid", "--pw-env", "--prompt=none"])
            .args(["--confirm-default", "--redirect-uri=http://localhost:4242"])
            .arg(format!("--iss={}", peer._fake.issuer()))
            .arg(format!("--rt={refresh_token}"))
            .arg("bench")
            .env("HOME", &home)
            .env("OIDC_SOCK", &peer.socket)
            .env("OIDC_ENCRYPTION_PW", "bench")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("oidc-gen: {e}"))?;
        if !generated.status.success() {
            return Err(format!(
                "oidc-gen: {}{}",
                String::from_utf8_lossy(&generated.stdout),
                String::from_utf8_lossy(&generated.stderr)
            ));
        }
        let served = std::process::Command::new("oidc-token")
            .arg("bench")
            .env("OIDC_SOCK", &peer.socket)
            .output()
            .map_err(|e| format!("oidc-token: {e}"))?;
        if !served.status.success() || served.stdout.len() <= TOKEN_SIZE {
            return Err(format!("oidc-token: {}", String::from_utf8_lossy(&served.stderr)));
        }
        Ok(peer)
    }

    fn contender(&self) -> Contender {
        // The agent forks a helper; both serve.
        let mut daemon = vec![self.agent.id()];
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.agent.id()));
        daemon.extend(children.unwrap_or_default().split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        Contender {
            name: "oidc-token",
            program: "oidc-token".into(),
            args: vec!["bench".into()],
            env: vec![("OIDC_SOCK".into(), self.socket.clone())],
            daemon,
        }
    }
}

impl Drop for OidcAgent {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// Upstream requests for the herd, time from the refresh to the last answer, and time from the
/// first request to the last answer.
async fn herd(clients: usize) -> (usize, Duration, Duration) {
    let fake = provider(Duration::from_secs(2)).await;
    let tokend = start(&profiles(&fake, 1)).await;
    let endpoint = Endpoint::new(&tokend.socket);
    let first = Client::connect_to(endpoint.clone()).await.unwrap().token("p0").await.unwrap();
    // Hold the token endpoint: the scheduled refresh stays in flight while the token expires.
    fake.hold();
    fake.set_lifetime(Duration::from_secs(24 * 3600));
    let left = first.expires_at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(Client::connect_to(endpoint.clone()).await.unwrap());
    }
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    let before = fake.token_requests();
    let asked = Instant::now();
    let tasks: Vec<_> = connected
        .into_iter()
        .map(|mut client| tokio::spawn(async move { client.token("p0").await.map(|t| (t, Instant::now())) }))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released = Instant::now();
    fake.release();
    let mut last = released;
    for task in tasks {
        let (token, at) = task.await.unwrap().expect("every client is served");
        assert_ne!(token.fingerprint, first.fingerprint);
        last = last.max(at);
    }
    // The refresh held in flight is the one request the herd waited for.
    (fake.token_requests() - before + 1, last - released, last - asked)
}

async fn wait_for_requests(fake: &FakeProvider, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while fake.token_requests() < n {
        assert!(Instant::now() < deadline, "tokend fetched {} of {n} tokens", fake.token_requests());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many connections tokend takes on its protocol socket with this machine's open-file
/// limit: it raises its own limit to the hard one, keeps 64 files for itself and gives each of
/// its two sockets half of the rest (`tokend::run`). A few fewer, for the files it has open.
fn protocol_socket_share() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limit into `limit`, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return usize::MAX;
    }
    let hard = usize::try_from(limit.rlim_max).unwrap_or(usize::MAX);
    (hard.saturating_sub(64) / 2).saturating_sub(32)
}

fn rss_kib(pid: u32) -> u64 {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// A field of `/proc/PID/smaps_rollup`, in KiB.
fn smaps_field(pid: u32, field: &str) -> u64 {
    status_field(&format!("/proc/{pid}/smaps_rollup"), field)
}

fn status_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .map(|t| {
            let status = format!("{}/status", t.path().display());
            status_field(&status, "voluntary_ctxt_switches:") + status_field(&status, "nonvoluntary_ctxt_switches:")
        })
        .sum()
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, std::iter::Iterator::count)
}
