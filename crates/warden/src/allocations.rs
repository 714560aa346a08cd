//! The benchmarks' allocation counter (feature `count-allocations`): every allocation
//! the process makes goes through a counting wrapper of the shipped allocator, and
//! /metrics reports the totals, so that a benchmark reads allocations per call as the
//! difference over its calls.

use mimalloc::MiMalloc;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use stats_alloc::StatsAlloc;

#[global_allocator]
static COUNTED: StatsAlloc<MiMalloc> = StatsAlloc::new(MiMalloc);

/// The totals on /metrics, read at each scrape.
#[derive(Debug)]
pub struct Allocations;

impl Collector for Allocations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = COUNTED.stats();
        let counters = [
            (
                "allocations",
                "Allocations (and reallocations) the process made",
                stats.allocations + stats.reallocations,
            ),
            (
                "allocated_bytes",
                "Bytes the process allocated",
                stats.bytes_allocated,
            ),
        ];
        for (name, help, total) in counters {
            let counter = ConstCounter::new(u64::try_from(total).unwrap_or(u64::MAX));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
