//! Layers turned off one at a time, to measure what each costs (`scripts/bench-upstream.sh`).
//! Only a build with the `bench-layers` feature reads `WARDEN_BENCH_SKIP` (a comma list of
//! [`Layer`] names); no shipped build has it, so in them [`skipped`] is a constant `false`
//! and every check it guards stays.

/// A control that a benchmark build can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    /// The front door before authentication: the Host/Origin guard, CORS, the
    /// credentials-in-URL refusal and the per-address rate.
    Front,
    /// The caps scan of every body (depth, sizes, duplicate keys) before it is parsed.
    Scan,
    /// A call's arguments against its tool's schema, caps and confined paths.
    Validation,
    /// The Cedar policy decision on a call.
    Policy,
}

#[cfg(feature = "bench-layers")]
pub(crate) fn skipped(layer: Layer) -> bool {
    use std::sync::OnceLock;
    static SKIPPED: OnceLock<Vec<Layer>> = OnceLock::new();
    SKIPPED
        .get_or_init(|| {
            let list = std::env::var("WARDEN_BENCH_SKIP").unwrap_or_default();
            let skipped: Vec<Layer> = list
                .split(',')
                .filter(|name| !name.is_empty())
                .map(|name| match name.trim() {
                    "front" => Layer::Front,
                    "scan" => Layer::Scan,
                    "validation" => Layer::Validation,
                    "policy" => Layer::Policy,
                    other => panic!(
                        "WARDEN_BENCH_SKIP: no layer {other:?} (front, scan, validation, policy)"
                    ),
                })
                .collect();
            if !skipped.is_empty() {
                tracing::warn!(
                    ?skipped,
                    "a benchmark build with controls turned off: never serve real traffic with it"
                );
            }
            skipped
        })
        .contains(&layer)
}

#[cfg(not(feature = "bench-layers"))]
pub(crate) const fn skipped(_layer: Layer) -> bool {
    false
}
