//! The load tool: one MCP client (a session in the legacy era, none in 2026-07-28) that
//! drives N `tools/call` at concurrency C and reports throughput and latency percentiles.
//! The key comes from the environment (`WARDEN_KEY`), never from the command line, where
//! other users of the machine could read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::{Failure, micros, percentile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Era {
    Legacy,
    Modern,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "legacy")]
    era: Era,
    /// Calls measured.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Calls made first and not measured (connections, caches).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Legacy sessions opened; the calls go to each in turn (2026-07-28 has none).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// The tool to call, with `{"text": ...}` arguments.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Bytes of text per call.
    #[arg(long, default_value_t = 64)]
    text_bytes: usize,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// The server's process: its CPU time over the measured calls is reported per call
    /// (from /proc, in clock ticks of 10 ms; long runs make it exact enough). Repeated
    /// (`--pid A --pid B`), the processes' times are added (several replicas, a load
    /// balancer, Redis).
    #[arg(long)]
    pid: Vec<u32>,
    /// The server's `/metrics`, when it is built with the `count-allocations` feature:
    /// its allocations over the measured calls are reported per call.
    #[arg(long)]
    metrics: Option<String>,
}

/// Allocations and allocated bytes so far, from the `/metrics` at `url`.
async fn allocations(http: &reqwest::Client, url: &str) -> Result<(u64, u64), Failure> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let read = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                format!(
                    "{url} has no {name}; is the server built with --features count-allocations?"
                )
            })
    };
    Ok((
        read("warden_allocations_total ")?,
        read("warden_allocated_bytes_total ")?,
    ))
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time used so far, in ticks: the processes `pids`' together, and the machine's.
fn cpu_ticks_of(pids: &[u32]) -> Result<Option<(u64, u64)>, Failure> {
    let mut total: Option<(u64, u64)> = None;
    for pid in pids {
        let (process, machine) = cpu_ticks(*pid)?;
        let (sum, _) = total.unwrap_or((0, machine));
        total = Some((sum + process, machine));
    }
    Ok(total)
}

/// CPU time used so far, in ticks: the process `pid`'s (user and system), and the
/// machine's (every core busy, not idle or waiting on I/O).
fn cpu_ticks(pid: u32) -> Result<(u64, u64), Failure> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, inside parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("/proc/PID/stat without a command")?
        .1
        .split_whitespace()
        .collect();
    let process = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let machine = std::fs::read_to_string("/proc/stat")?;
    let times: Vec<u64> = machine
        .lines()
        .next()
        .ok_or("empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal …
    let busy = times.iter().sum::<u64>() - times[3] - times[4];
    Ok((process, busy))
}

const LEGACY_VERSION: &str = "2025-11-25";
const MODERN_VERSION: &str = "2026-07-28";

struct Client {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    era: Era,
}

impl Client {
    async fn post(
        &self,
        body: &Value,
        extra: &[(&'static str, &str)],
    ) -> Result<Option<Value>, String> {
        let mut headers = self.headers.clone();
        for (name, value) in extra {
            headers.insert(
                *name,
                HeaderValue::from_str(value).map_err(|e| e.to_string())?,
            );
        }
        let response = self
            .http
            .post(&self.url)
            .headers(headers)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        let stream = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let text = response.text().await.map_err(|e| e.to_string())?;
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let json = if stream {
            text.lines()
                .rev()
                .find_map(|l| l.strip_prefix("data:"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        } else {
            text
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Legacy: `initialize`, then every request carries the session.
    async fn open(&mut self) -> Result<(), Failure> {
        if self.era == Era::Modern {
            return Ok(());
        }
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY_VERSION, "capabilities": {},
            "clientInfo": {"name": "warden-bench", "version": "1"}}});
        let response = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .body(init.to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("initialize: HTTP {}", response.status()).into());
        }
        if let Some(session) = response.headers().get("mcp-session-id").cloned() {
            self.headers.insert("mcp-session-id", session);
        }
        self.headers.insert(
            "mcp-protocol-version",
            HeaderValue::from_static(LEGACY_VERSION),
        );
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.post(&initialized, &[]).await?;
        Ok(())
    }

    async fn call(&self, id: usize, tool: &str, text: &str) -> Result<(), String> {
        let mut params = json!({ "name": tool, "arguments": { "text": text } });
        let mut extra: Vec<(&'static str, &str)> = Vec::new();
        if self.era == Era::Modern {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            });
            extra = vec![
                ("mcp-protocol-version", MODERN_VERSION),
                ("mcp-method", "tools/call"),
                ("mcp-name", tool),
            ];
        }
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        let answer = self.post(&request, &extra).await?.ok_or("no answer")?;
        if answer.get("error").is_some() {
            return Err(format!("JSON-RPC error {}", answer["error"]["code"]));
        }
        if answer["result"]["isError"] == true {
            return Err("tool error".into());
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(drive(args))
}

/// The headers of every MCP POST, with the key from `WARDEN_KEY` when there is one.
fn request_headers() -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if let Ok(key) = std::env::var("WARDEN_KEY") {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

async fn drive(args: Args) -> Result<(), Failure> {
    let headers = request_headers()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let sessions = if args.era == Era::Modern {
        1
    } else {
        args.sessions.max(1)
    };
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut client = Client {
            http: http.clone(),
            url: args.url.clone(),
            headers: headers.clone(),
            era: args.era,
        };
        client.open().await?;
        clients.push(Arc::new(client));
    }
    let text = "x".repeat(args.text_bytes);
    run_phase(&clients, &args, &text, args.warmup).await;
    let allocations_before = match &args.metrics {
        Some(url) => Some(allocations(&http, url).await?),
        None => None,
    };
    let cpu_before = cpu_ticks_of(&args.pid)?;
    let started = Instant::now();
    let (mut latencies, errors) = run_phase(&clients, &args, &text, args.requests).await;
    let elapsed = started.elapsed();
    let cpu_after = cpu_ticks_of(&args.pid)?;
    // Allocations and bytes per call (the scrape's own are a rounding error over
    // thousands of calls).
    let allocations_per_call = match (&args.metrics, allocations_before) {
        (Some(url), Some((count, bytes))) => {
            let (count_after, bytes_after) = allocations(&http, url).await?;
            let per_call = |n: u64| n as f64 / args.requests as f64;
            // Saturating: a server restarted meanwhile counts from zero again.
            Some((
                per_call(count_after.saturating_sub(count)),
                per_call(bytes_after.saturating_sub(bytes)),
            ))
        }
        _ => None,
    };
    // µs of CPU per call: the server's, and the whole machine's (load tool included).
    let cpu_per_call = match (cpu_after, cpu_before) {
        (Some((process_after, machine_after)), Some((process, machine))) => {
            let per_call =
                |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / args.requests as f64;
            Some((
                per_call(process_after - process),
                per_call(machine_after - machine),
            ))
        }
        _ => None,
    };
    latencies.sort();
    let rps = args.requests as f64 / elapsed.as_secs_f64();
    let (p50, p90, p99) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
    );
    if args.json {
        println!(
            "{}",
            json!({
                "era": format!("{:?}", args.era).to_lowercase(),
                "requests": args.requests, "concurrency": args.concurrency, "errors": errors,
                "sessions": sessions, "text_bytes": args.text_bytes,
                "seconds": elapsed.as_secs_f64(), "rps": rps,
                "p50_us": p50.as_secs_f64() * 1e6, "p90_us": p90.as_secs_f64() * 1e6,
                "p99_us": p99.as_secs_f64() * 1e6,
                "cpu_us_per_call": cpu_per_call.map(|c| c.0),
                "machine_cpu_us_per_call": cpu_per_call.map(|c| c.1),
                "allocations_per_call": allocations_per_call.map(|a| a.0),
                "allocated_bytes_per_call": allocations_per_call.map(|a| a.1),
            })
        );
    } else {
        println!(
            "{} calls at concurrency {} in {:.2} s: {:.0} req/s, p50 {}, p90 {}, p99 {}, errors {}",
            args.requests,
            args.concurrency,
            elapsed.as_secs_f64(),
            rps,
            micros(p50),
            micros(p90),
            micros(p99),
            errors
        );
        if let Some((process, machine)) = cpu_per_call {
            println!("CPU per call: {process:.0} µs in the server, {machine:.0} µs on the machine");
        }
        if let Some((count, bytes)) = allocations_per_call {
            println!("allocations per call in the server: {count:.0} ({bytes:.0} bytes)");
        }
    }
    Ok(())
}

/// Runs `total` calls over `concurrency` workers, each call on the next client (session)
/// in turn; returns the latencies of the ones that succeeded and the number that failed.
async fn run_phase(
    clients: &[Arc<Client>],
    args: &Args,
    text: &str,
    total: usize,
) -> (Vec<Duration>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (clients, next, tool, text) = (
            clients.to_vec(),
            next.clone(),
            args.tool.clone(),
            text.to_owned(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= total {
                    return (latencies, errors);
                }
                let started = Instant::now();
                let client = &clients[id % clients.len()];
                match client.call(id + 1, &tool, &text).await {
                    Ok(()) => latencies.push(started.elapsed()),
                    Err(error) => {
                        if errors == 0 {
                            eprintln!("first error: {error}");
                        }
                        errors += 1;
                    }
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for worker in workers {
        if let Ok((l, e)) = worker.await {
            latencies.extend(l);
            errors += e;
        }
    }
    (latencies, errors)
}

#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    url: String,
    /// Legacy sessions opened (`initialize` and `notifications/initialized`) and left
    /// idle.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The server's process, whose resident memory is read before and after.
    #[arg(long)]
    pid: u32,
}

/// Resident memory of `pid`, in KiB (`VmRSS` in /proc/PID/status).
fn resident_kib(pid: u32) -> Result<u64, Failure> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .ok_or("/proc/PID/status without VmRSS")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Opens `sessions` legacy sessions and prints one JSON line: the server's resident
/// memory before and after, and what a session adds.
pub fn run_sessions(args: SessionArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let headers = request_headers()?;
        if !headers.contains_key(AUTHORIZATION) {
            return Err("set WARDEN_KEY".into());
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?;
        let before = resident_kib(args.pid)?;
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            let (http, headers, url, next) =
                (http.clone(), headers.clone(), args.url.clone(), next.clone());
            let total = args.sessions;
            workers.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let mut client = Client {
                        http: http.clone(),
                        url: url.clone(),
                        headers: headers.clone(),
                        era: Era::Legacy,
                    };
                    client.open().await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }));
        }
        for worker in workers {
            worker.await??;
        }
        // What the sessions hold, not the requests that made them: let the allocator
        // and the server's queues settle first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = resident_kib(args.pid)?;
        println!(
            "{}",
            json!({
                "sessions": args.sessions,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "bytes_per_session": (after.saturating_sub(before) * 1024) as f64 / args.sessions as f64,
            })
        );
        Ok(())
    })
}
