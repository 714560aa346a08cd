//! `warden-bench limiter`: what the rate limits cost a call. Uncontended: one key, one
//! thread, the per-key check and the call admission (session count, tool rate,
//! concurrency gates, daily cost) one after the other, against the same loop without
//! the limiter as baseline. Contended: 1,000 distinct keys from as many tasks as the
//! runtime has workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warden_config::{Rate, ToolRules};
use warden_limits::{Call, Limiter};

use crate::Failure;

fn generous() -> Rate {
    Rate {
        per_key_rpm: 1_000_000,
        per_ip_rpm: 1_000_000,
        max_concurrent_per_key: 20,
        max_concurrent_total: 256,
        queue_depth: 32,
        queue_timeout: Duration::from_secs(2),
        per_session_calls: u64::MAX / 4,
        daily_cost_cap: u64::MAX / 4,
        tenant_caps: BTreeMap::new(),
        max_streams_per_key: 8,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    }
}

async fn limiter() -> Result<Arc<Limiter>, Failure> {
    let tools = BTreeMap::from([(
        "search".to_owned(),
        ToolRules {
            rpm: Some(1_000_000),
            ..ToolRules::default()
        },
    )]);
    Ok(Arc::new(
        Limiter::new(&generous(), &tools, &[64], None, None).await?,
    ))
}

async fn admit(limiter: &Limiter, key: &str) -> Result<(), Failure> {
    limiter
        .admit_request(key, None)
        .await
        .map_err(|r| r.message.clone())?;
    let call = Call {
        key_id: key,
        tenant: "bench",
        session: key,
        tool: Some("search"),
        policy_cost: 0,
    };
    let permit = limiter.admit_call(call, 0).await.map_err(|r| r.message)?;
    drop(permit);
    Ok(())
}

pub fn run(calls: usize, keys: usize) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let limiter = limiter().await?;
        // Uncontended: one task, one key; the baseline runs the same loop without it.
        let key = "key_0000000000000000".to_owned();
        let started = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(tokio::task::yield_now()).await;
        }
        let baseline = started.elapsed();
        let started = Instant::now();
        for _ in 0..calls {
            admit(&limiter, &key).await?;
            std::hint::black_box(tokio::task::yield_now()).await;
        }
        let limited = started.elapsed();
        let per_call = (limited.saturating_sub(baseline)).as_secs_f64() / calls as f64;
        println!("uncontended, one key, {calls} calls:");
        println!(
            "  baseline loop {:.0} ns/call, with the limiter {:.0} ns/call: limiter overhead {:.0} ns/call",
            baseline.as_secs_f64() * 1e9 / calls as f64,
            limited.as_secs_f64() * 1e9 / calls as f64,
            per_call * 1e9
        );

        // Contended: as many tasks as workers, cycling through `keys` keys.
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let names: Arc<Vec<String>> = Arc::new((0..keys).map(|i| format!("key_{i:016}")).collect());
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|worker| {
                let (limiter, names, done) = (limiter.clone(), names.clone(), done.clone());
                tokio::spawn(async move {
                    for i in 0..calls {
                        let key = &names[(i * workers + worker) % names.len()];
                        if admit(&limiter, key).await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        let elapsed = started.elapsed();
        let admitted = done.load(Ordering::Relaxed);
        println!(
            "contended, {keys} keys, {workers} tasks: {admitted} calls admitted in {:.2} s = {:.0} calls/s ({:.0} ns/call per worker)",
            elapsed.as_secs_f64(),
            admitted as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e9 * workers as f64 / admitted.max(1) as f64
        );
        Ok::<_, Failure>(())
    })
}
