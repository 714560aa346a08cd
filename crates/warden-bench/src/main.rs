//! Warden's benchmarks and load tools:
//! - `search-notes`: latency of the embedded server's search over a large store;
//! - `echo-upstream`: a minimal Streamable HTTP MCP server (both eras) to measure against;
//! - `load`: drives `tools/call` at a given concurrency against any MCP URL;
//! - `auth-refusals`: time to refuse an unknown key against a revoked one;
//! - `validate`: the cost of the body scan and schema validation per call;
//! - `limiter`: the cost of the rate limits per call, one key and 1,000 keys;
//! - `egress-proxy`: what a stdio child's egress proxy adds to its requests.

mod echo;
mod limiter;
mod load;
mod otlp_sink;
mod policy;
mod proxy;
mod refusals;
mod scaling;
mod search;
mod validate;

use std::time::Duration;

use clap::{Parser, Subcommand};

type Failure = Box<dyn std::error::Error>;

#[derive(Parser)]
#[command(name = "warden-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Latency of search_notes over a large single-tenant store.
    SearchNotes {
        #[arg(long, default_value_t = 100_000)]
        notes: usize,
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        #[arg(long, default_value_t = 20_000)]
        vocabulary: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also measure PostgreSQL: a role that may create databases and roles
        /// (postgres://postgres@127.0.0.1:5432/postgres); a fresh database is made and
        /// dropped.
        #[arg(long, env = "WARDEN_BENCH_POSTGRES_URL")]
        postgres_url: Option<String>,
    },
    /// Serves a one-tool (`echo`) MCP server over Streamable HTTP, both eras, no sessions.
    EchoUpstream(echo::Args),
    /// Takes OTLP/HTTP trace exports as a collector would, and counts them (GET /taken).
    OtlpSink(otlp_sink::Args),
    /// Opens a session (or not, in 2026-07-28) and drives N tools/call at concurrency C.
    Load(load::Args),
    /// Opens N legacy sessions and leaves them idle: the server's resident memory
    /// before and after (the key comes from WARDEN_KEY).
    Sessions(load::SessionArgs),
    /// Adds keys to a stopped Warden's key store, for the keys curve.
    FillKeys(scaling::FillKeysArgs),
    /// Draws the scaling curves (`scripts/bench-scaling.sh`) as SVG.
    Plot(scaling::PlotArgs),
    /// The cost of validating a typical ~1 KB tools/call (scan and schema).
    Validate {
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
    },
    /// What a Cedar policy decision costs a call, with 100 policies against the
    /// built-in three.
    Policy {
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
    },
    /// The rate limits' cost per call, uncontended and with many keys.
    Limiter {
        #[arg(long, default_value_t = 1_000_000)]
        calls: usize,
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
    },
    /// Requests through a stdio child's egress proxy against the same requests direct.
    EgressProxy {
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Time to refuse unknown keys against revoked ones (they must not differ).
    AuthRefusals {
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
        #[arg(long, default_value_t = 20_000)]
        rounds: usize,
    },
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() -> Result<(), Failure> {
    match Cli::parse().bench {
        Bench::SearchNotes {
            notes,
            queries,
            vocabulary,
            seed,
            postgres_url,
        } => search::run(&search::Plan {
            notes,
            queries,
            vocabulary,
            seed,
            postgres_url,
        }),
        Bench::EchoUpstream(args) => echo::run(args),
        Bench::OtlpSink(args) => otlp_sink::run(args),
        Bench::Load(args) => load::run(args),
        Bench::Sessions(args) => load::run_sessions(args),
        Bench::AuthRefusals { keys, rounds } => refusals::run(keys, rounds),
        Bench::FillKeys(args) => scaling::fill_keys(args),
        Bench::Plot(args) => scaling::plot(args),
        Bench::Validate { calls } => validate::run(calls),
        Bench::Policy { calls } => policy::run(calls),
        Bench::Limiter { calls, keys } => limiter::run(calls, keys),
        Bench::EgressProxy {
            requests,
            concurrency,
        } => proxy::run(requests, concurrency),
    }
}
