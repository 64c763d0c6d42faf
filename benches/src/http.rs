//! The HTTP API beside its baselines, measured in the same run:
//!
//! - a small GET through the proxy against the same GET sent straight to the same upstream (the
//!   fake provider's API on 127.0.0.1, in this process), over kept-alive connections: median
//!   latency in alternating blocks, and throughput at 8 and 64 connections;
//! - 1 GiB up and 1 GiB down through the proxy against the same transfers straight to the
//!   upstream, and how much tokend's peak memory grows meanwhile;
//! - `GET /v1/token/NAME` on a kept-alive connection against the bincode `Client::token` round
//!   trip;
//! - tokend's wake-ups while idle with both sockets open, after the proxy's upstream pool has
//!   let its connections go.
//!
//! Both sides use the same client (hyper's HTTP/1.1 connection API, driven in the requesting
//! task), and the upstream runs in a process of its own with as many worker threads as tokend,
//! as a real API does; so the difference is what tokend adds: a Unix-socket hop, parsing, the
//! token, and the upstream request. The proxy's numbers have a third column, the minimal proxy
//! of [`crate::minimal`]: the same hops with none of tokend's work, which splits that
//! difference into what the hop costs and what tokend costs.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokend_client::{Client, Endpoint};
use tokend_e2e::fake::api::{PATTERN_BLOCK, pattern};
use tokend_e2e::http::{Connection, Driver, drive};

use crate::stats::{Latency, us, verdict};
use crate::{Baseline, Plan, context_switches, provider, start, status_field, thread_count, workers};

/// Where a request goes: straight to the upstream, or through tokend's proxy.
#[derive(Clone)]
enum Route {
    Direct {
        upstream: std::net::SocketAddr,
        authorization: String,
    },
    /// Through the minimal proxy, with the client's own `Authorization`.
    Minimal {
        socket: std::path::PathBuf,
        authorization: String,
    },
    Proxied {
        socket: std::path::PathBuf,
    },
}

impl Route {
    async fn connect(&self) -> Connection {
        match self {
            Route::Direct { upstream, .. } => Connection::tcp(*upstream).await,
            Route::Minimal { socket, .. } | Route::Proxied { socket } => Connection::unix(socket).await,
        }
    }

    /// The request target and headers for the API path `path` (below `/api`).
    fn target(&self, path: &str) -> (String, Vec<(&str, &str)>) {
        match self {
            Route::Direct { authorization, .. } | Route::Minimal { authorization, .. } => {
                (format!("/api{path}"), vec![("authorization", authorization)])
            }
            Route::Proxied { .. } => (format!("/v1/proxy/p0{path}"), vec![]),
        }
    }

    async fn get(&self, conn: &mut Connection, path: &str) {
        let (target, headers) = self.target(path);
        let answer = conn.request("GET", &target, &headers, b"").await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    }
}

/// The fake provider in a process of its own: `tokend-bench --upstream` prints its base URL and
/// serves until killed.
pub(crate) fn serve_upstream() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers()).enable_all().build().unwrap();
    runtime.block_on(async {
        let fake = provider(Duration::from_secs(24 * 3600)).await;
        println!("{}", fake.base);
        std::future::pending::<()>().await;
    });
}

/// The upstream process; killed on drop.
struct Upstream {
    child: std::process::Child,
    base: String,
}

impl Upstream {
    fn spawn() -> Upstream {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--upstream")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the upstream");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Upstream { child, base: line.trim().to_owned() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The minimal proxy in a process of its own (`tokend-bench --minimal-proxy SOCKET ADDR`),
/// listening once this returns.
fn minimal_proxy(upstream: std::net::SocketAddr) -> Baseline {
    use std::io::BufRead;
    let socket = std::env::temp_dir().join(format!("tokend-bench-{}-minimal.sock", std::process::id()));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--minimal-proxy")
        .arg(&socket)
        .arg(upstream.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the minimal proxy");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening", "the minimal proxy started");
    Baseline { child, socket }
}

pub(crate) async fn run(plan: &Plan, results: &mut serde_json::Map<String, serde_json::Value>) {
    let upstream = Upstream::spawn();
    let config = format!(
        "[profiles.p0]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"c\"\nclient_secret = \"s\"\napi_base = \"{}\"\n",
        upstream.url("/oauth/token"),
        upstream.url("/api")
    );
    let tokend = start(&config).await;
    let endpoint = Endpoint::new(&tokend.socket);
    let token = Client::connect_to(endpoint.clone()).await.unwrap().token("p0").await.unwrap();
    let authorization = format!("Bearer {}", token.access_token.expose());
    let direct = Route::Direct { upstream: upstream.addr(), authorization: authorization.clone() };
    let minimal_proxy = minimal_proxy(upstream.addr());
    let minimal = Route::Minimal { socket: minimal_proxy.socket.clone(), authorization };
    let proxied = Route::Proxied { socket: tokend.http_socket.clone() };
    // The three routes, in the order they are measured and printed, with the process whose CPU
    // time is counted for each.
    let routes = [
        ("direct", &direct, None),
        ("minimal proxy", &minimal, Some(minimal_proxy.pid())),
        ("tokend", &proxied, Some(tokend.pid())),
    ];
    let mut section = serde_json::Map::new();

    // 1. Latency of a small GET, alternating blocks on kept-alive connections.
    const ROUNDS: usize = 20;
    let per_round = plan.latency_samples.div_ceil(ROUNDS);
    println!(
        "\n== HTTP: a small GET straight to the upstream, through a minimal proxy and through tokend ({} samples each)",
        per_round * ROUNDS
    );
    let mut conns = Vec::new();
    for (_, route, _) in &routes {
        conns.push(route.connect().await);
    }
    for _ in 0..1000 {
        for ((_, route, _), conn) in routes.iter().zip(&mut conns) {
            route.get(conn, "/resource/small").await;
        }
    }
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Duration::ZERO; 3];
    for _ in 0..ROUNDS {
        for (i, ((_, route, pid), conn)) in routes.iter().zip(&mut conns).enumerate() {
            let before = pid.map(cpu_time);
            for _ in 0..per_round {
                let t = Instant::now();
                route.get(conn, "/resource/small").await;
                samples[i].push(t.elapsed());
            }
            if let (Some(pid), Some(before)) = (pid, before) {
                cpu[i] += cpu_time(*pid).saturating_sub(before);
            }
        }
    }
    let [dl, ml, pl] = samples.map(Latency::of);
    println!("                 median      p99         p99.9       mean");
    for ((name, _, _), l) in routes.iter().zip([&dl, &ml, &pl]) {
        println!("  {name:<14} {:<11} {:<11} {:<11} {}", us(l.median), us(l.p99), us(l.p999), us(l.mean));
    }
    let ratio = pl.median.as_secs_f64() / dl.median.as_secs_f64();
    let minimal_ratio = ml.median.as_secs_f64() / dl.median.as_secs_f64();
    println!("  median ratio to direct: minimal proxy {minimal_ratio:.2}×, tokend {}", verdict(ratio, 1.3, true));
    let n = u32::try_from(ROUNDS * per_round).expect("a bench-sized number of requests");
    println!(
        "  CPU time per proxied GET (user and system, all threads): minimal proxy {}, tokend {}",
        us(cpu[1] / n),
        us(cpu[2] / n)
    );
    let mut latency = latency_json(&dl, &pl, ratio);
    let to_us = |d: Duration| d.as_secs_f64() * 1e6;
    latency["minimal_proxy"] = json!({ "median": to_us(ml.median), "p99": to_us(ml.p99), "p999": to_us(ml.p999), "median_ratio": minimal_ratio, "cpu_us_per_request": to_us(cpu[1] / n) });
    latency["tokend_cpu_us_per_request"] = to_us(cpu[2] / n).into();
    section.insert("get_latency_us".into(), latency);
    drop(conns);

    // 2. Throughput.
    println!(
        "  throughput (requests per second, {} per level, best of 3)",
        humantime::format_duration(plan.throughput_for)
    );
    println!("  connections    direct          minimal proxy   tokend          ratios (minimal, tokend)");
    let mut levels = Vec::new();
    for connections in [8usize, 64] {
        // Alternating, best of three each: other load on the machine comes and goes.
        let mut best = [0f64; 3];
        for _ in 0..3 {
            for (i, (_, route, _)) in routes.iter().enumerate() {
                best[i] = best[i].max(throughput(route, connections, plan.throughput_for).await);
            }
        }
        let [direct_rps, minimal_rps, proxied_rps] = best;
        let ratio = proxied_rps / direct_rps;
        let minimal_ratio = minimal_rps / direct_rps;
        let note = if connections == 64 { verdict(ratio, 0.7, false) } else { format!("{ratio:.2}×") };
        println!(
            "  {connections:<14} {direct_rps:<15.0} {minimal_rps:<15.0} {proxied_rps:<15.0} {minimal_ratio:.2}×, {note}"
        );
        levels.push(json!({ "connections": connections, "direct": direct_rps, "minimal_proxy": minimal_rps, "proxied": proxied_rps, "ratio": ratio, "minimal_ratio": minimal_ratio }));
    }
    section.insert("get_throughput_rps".into(), serde_json::Value::Array(levels));

    // 3. Big transfers, and tokend's memory meanwhile.
    let size = plan.transfer_bytes;
    println!(
        "\n== HTTP: {} MiB streamed each way: straight to the upstream, through a minimal proxy and through tokend (best of 3)",
        size >> 20
    );
    let peak_before = status_field(&format!("/proc/{}/status", tokend.pid()), "VmHWM:");
    let mut transfers = serde_json::Map::new();
    println!("                 direct          minimal proxy   tokend          ratios (minimal, tokend)");
    for (name, up) in [("upload", true), ("download", false)] {
        let mut best = [0f64; 3];
        // The proxies' CPU time per GiB, which the machine's other load moves less than their
        // throughput.
        let mut cpu = [Duration::ZERO; 3];
        for _ in 0..3 {
            for (i, (_, route, pid)) in routes.iter().enumerate() {
                let before = pid.map(cpu_time);
                best[i] = best[i].max(transfer(route, up, size).await);
                if let (Some(pid), Some(before)) = (pid, before) {
                    cpu[i] += cpu_time(*pid).saturating_sub(before);
                }
            }
        }
        let [direct_rate, minimal_rate, proxied_rate] = best;
        let gib = 3.0 * size as f64 / f64::from(1u32 << 30);
        let [_, minimal_cpu, proxied_cpu] = cpu.map(|c| c.as_secs_f64() / gib);
        let ratio = proxied_rate / direct_rate;
        let minimal_ratio = minimal_rate / direct_rate;
        let mib = |rate: f64| format!("{:.0} MiB/s", rate / 1048576.0);
        println!(
            "  {name:<14} {:<15} {:<15} {:<15} {minimal_ratio:.2}×, {}",
            mib(direct_rate),
            mib(minimal_rate),
            mib(proxied_rate),
            verdict(ratio, 0.8, false)
        );
        println!("  {:<14} CPU time per GiB: minimal proxy {:.2} s, tokend {:.2} s", "", minimal_cpu, proxied_cpu);
        transfers.insert(
            name.into(),
            json!({ "direct_bytes_per_s": direct_rate, "minimal_proxy_bytes_per_s": minimal_rate, "proxied_bytes_per_s": proxied_rate, "ratio": ratio, "minimal_ratio": minimal_ratio, "minimal_proxy_cpu_s_per_gib": minimal_cpu, "tokend_cpu_s_per_gib": proxied_cpu }),
        );
    }
    drop(minimal_proxy);
    let peak_after = status_field(&format!("/proc/{}/status", tokend.pid()), "VmHWM:");
    let grown = peak_after.saturating_sub(peak_before);
    println!(
        "  tokend's peak RSS grew by {grown} KiB ({peak_before} → {peak_after} KiB)   (target < 16384 KiB) {}",
        if grown < 16384 { "met" } else { "NOT met" }
    );
    transfers.insert("bytes".into(), size.into());
    transfers.insert("peak_rss_growth_kib".into(), grown.into());
    section.insert("transfer".into(), serde_json::Value::Object(transfers));

    // 4. The token API against the bincode protocol.
    println!("\n== GET /v1/token/NAME on a kept-alive connection, and Client::token on the protocol socket");
    let mut client = Client::connect_to(endpoint.clone()).await.unwrap();
    let mut http = Connection::unix(&tokend.http_socket).await;
    for _ in 0..1000 {
        client.token("p0").await.unwrap();
        assert_eq!(http.get("/v1/token/p0").await.status, 200);
    }
    let (mut bincode_samples, mut http_samples) = (Vec::new(), Vec::new());
    let (mut bincode_cpu, mut http_cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let cpu = cpu_time(tokend.pid());
        for _ in 0..per_round {
            let t = Instant::now();
            client.token("p0").await.unwrap();
            bincode_samples.push(t.elapsed());
        }
        let between = cpu_time(tokend.pid());
        for _ in 0..per_round {
            let t = Instant::now();
            let answer = http.get("/v1/token/p0").await;
            http_samples.push(t.elapsed());
            assert_eq!(answer.status, 200);
        }
        bincode_cpu += between.saturating_sub(cpu);
        http_cpu += cpu_time(tokend.pid()).saturating_sub(between);
    }
    let (bl, hl) = (Latency::of(bincode_samples), Latency::of(http_samples));
    print_latency("Client::token", "HTTP", &bl, &hl);
    let ratio = hl.median.as_secs_f64() / bl.median.as_secs_f64();
    println!("  median ratio   {}", verdict(ratio, 1.5, true));
    let n = u32::try_from(ROUNDS * per_round).expect("a bench-sized number of requests");
    println!("  tokend's CPU time per request: Client::token {}, HTTP {}", us(bincode_cpu / n), us(http_cpu / n));
    let mut latency = latency_json(&bl, &hl, ratio);
    latency["tokend_cpu_us_per_request"] =
        json!({ "bincode": (bincode_cpu / n).as_secs_f64() * 1e6, "http": (http_cpu / n).as_secs_f64() * 1e6 });
    section.insert("token_latency_us".into(), latency);

    // 5. Idle with both sockets open, once the proxy's upstream connections have been let go.
    drop((client, http));
    // The pool checks its idle connections every POOL_IDLE from when it first held one, so the
    // last are let go at most twice that after they were last used.
    let settle = if plan.quick { Duration::from_secs(2) } else { tokend::PROXY_POOL_IDLE * 2 + Duration::from_secs(3) };
    println!(
        "\n== idle with both sockets open, {} after the last proxied request: context switches over {}",
        humantime::format_duration(settle),
        humantime::format_duration(plan.idle_for)
    );
    let before = context_switches(tokend.pid());
    tokio::time::sleep(settle).await;
    let while_pooled = context_switches(tokend.pid()).saturating_sub(before);
    let before = context_switches(tokend.pid());
    tokio::time::sleep(plan.idle_for).await;
    let switches = context_switches(tokend.pid()).saturating_sub(before);
    println!("  while idle upstream connections were kept: {while_pooled}");
    println!(
        "  tokend: threads {}, context switches {switches}   (target 0) {}",
        thread_count(tokend.pid()),
        if switches == 0 { "met" } else { "NOT met" }
    );
    section.insert(
        "idle".into(),
        json!({ "settle_seconds": settle.as_secs(), "while_pooled": while_pooled, "seconds": plan.idle_for.as_secs(), "context_switches": switches }),
    );
    results.insert("http".into(), serde_json::Value::Object(section));
}

fn print_latency(a: &str, b: &str, x: &Latency, y: &Latency) {
    println!("                 median      p99         p99.9       mean");
    for (name, l) in [(a, x), (b, y)] {
        println!("  {name:<14} {:<11} {:<11} {:<11} {}", us(l.median), us(l.p99), us(l.p999), us(l.mean));
    }
}

fn latency_json(base: &Latency, ours: &Latency, ratio: f64) -> serde_json::Value {
    let to_us = |d: Duration| d.as_secs_f64() * 1e6;
    json!({
        "baseline": { "median": to_us(base.median), "p99": to_us(base.p99), "p999": to_us(base.p999) },
        "measured": { "median": to_us(ours.median), "p99": to_us(ours.p99), "p999": to_us(ours.p999) },
        "median_ratio": ratio,
    })
}

/// Requests per second with `connections` kept-alive connections asking as fast as they can.
async fn throughput(route: &Route, connections: usize, span: Duration) -> f64 {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = route.connect().await;
        route.get(&mut conn, "/resource/small").await;
        conns.push(conn);
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = start + span;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (route, done) = (route.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    route.get(&mut conn, "/resource/small").await;
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

type Body = BoxBody<Bytes, Infallible>;

/// Bytes per second of one `size`-byte transfer, up (to `/sink`) or down (from `/download`).
async fn transfer(route: &Route, up: bool, size: u64) -> f64 {
    let (mut sender, mut driver) = match route {
        Route::Direct { upstream, .. } => {
            let stream = tokio::net::TcpStream::connect(upstream).await.unwrap();
            stream.set_nodelay(true).unwrap();
            handshake(stream).await
        }
        Route::Minimal { socket, .. } | Route::Proxied { socket } => {
            handshake(tokio::net::UnixStream::connect(socket).await.unwrap()).await
        }
    };
    let path = if up { "/sink".to_owned() } else { download_path(size) };
    let (target, headers) = route.target(&path);
    let mut request = Request::builder().method(if up { "PUT" } else { "GET" }).uri(target).header("host", "tokend");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let body: Body = if up {
        request = request.header("content-length", size);
        let blocks = size / PATTERN_BLOCK as u64;
        let chunks =
            futures_util::stream::iter((0..blocks).map(|_| Ok::<_, Infallible>(Frame::data(pattern().clone()))));
        StreamBody::new(chunks).boxed()
    } else {
        http_body_util::Empty::new().boxed()
    };
    let request = request.body(body).unwrap();
    let start = Instant::now();
    let exchange = async {
        let response: Response<hyper::body::Incoming> = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = 0u64;
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                received += data.len() as u64;
                if up {
                    text.extend_from_slice(&data);
                }
            }
        }
        (received, text)
    };
    let (received, text) = drive(&mut driver, &mut false, exchange).await;
    let elapsed = start.elapsed();
    if up {
        let answer: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(answer["bytes"], size, "the whole body arrived");
    } else {
        assert_eq!(received, size, "the whole body arrived");
    }
    size as f64 / elapsed.as_secs_f64()
}

/// The CPU time all of `pid`'s threads have used (from `/proc/PID/task/*/schedstat`, in ns).
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn download_path(size: u64) -> String {
    format!("/download?bytes={size}")
}

/// A connection whose I/O the requesting task drives itself, as the test kit's does.
async fn handshake<S>(stream: S) -> (http1::SendRequest<Body>, Driver)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    (sender, Box::pin(conn))
}
