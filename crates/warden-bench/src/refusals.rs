//! `warden-bench auth-refusals`: how long the key store takes to refuse an unknown key
//! and a revoked one. The two must be indistinguishable by time; this prints both
//! distributions and their ratio, measured interleaved in one run over many keys.

use std::time::{Duration, Instant};

use warden_store::{DataDir, KeyStore, Scope};

use crate::{Failure, percentile};

fn nanos(d: Duration) -> String {
    format!("{} ns", d.as_nanos())
}

pub fn run(keys: usize, rounds: usize) -> Result<(), Failure> {
    let tmp = tempfile::tempdir()?;
    let store = KeyStore::open(&DataDir::open(tmp.path())?)?;
    let mut revoked = Vec::with_capacity(keys);
    for i in 0..keys {
        let new = store.add("bench", &format!("k{i}"), Scope::Read)?;
        store.revoke(&new.record.id)?;
        revoked.push(new.key);
    }
    // Same prefix and length as a real key, never issued.
    let unknown: Vec<String> = revoked
        .iter()
        .map(|key| {
            let mut fake: Vec<char> = key.chars().collect();
            let last = fake.len() - 1;
            fake[last] = if fake[last] == 'A' { 'B' } else { 'A' };
            fake.into_iter().collect()
        })
        .collect();
    let (mut unknown_times, mut revoked_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let i = round % keys;
        // Alternate which goes first so neither profits from a warm cache.
        let pair: [(&str, &mut Vec<Duration>); 2] = if round % 2 == 0 {
            [
                (&unknown[i], &mut unknown_times),
                (&revoked[i], &mut revoked_times),
            ]
        } else {
            [
                (&revoked[i], &mut revoked_times),
                (&unknown[i], &mut unknown_times),
            ]
        };
        for (key, times) in pair {
            let started = Instant::now();
            let refused = store.authenticate(key)?.is_none();
            times.push(started.elapsed());
            if !refused {
                return Err("a revoked or unknown key was accepted".into());
            }
        }
    }
    unknown_times.sort();
    revoked_times.sort();
    println!("{keys} revoked keys in the store, {rounds} refusals of each kind");
    println!("kind     p50          p90          p99");
    for (kind, times) in [("unknown", &unknown_times), ("revoked", &revoked_times)] {
        println!(
            "{kind:8} {:12} {:12} {:12}",
            nanos(percentile(times, 0.5)),
            nanos(percentile(times, 0.9)),
            nanos(percentile(times, 0.99))
        );
    }
    let ratio = percentile(&revoked_times, 0.5).as_secs_f64()
        / percentile(&unknown_times, 0.5).as_secs_f64();
    println!("revoked/unknown p50 ratio: {ratio:.3}");
    Ok(())
}
