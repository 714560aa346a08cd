//! Layers turned off one at a time, to measure what each costs (`scripts/bench-upstream.sh`).
//! Only a build with the `bench-layers` feature reads `WARDEN_BENCH_SKIP` (a comma list of
//! [`Layer`] names); no shipped build has it, so in them [`skipped`] is a constant `false`
//! and every check it guards stays.

use std::sync::Arc;

use warden_store::Principal;

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
    /// Authentication: the key (or token) check, its hash, cache and the store's change
    /// signal. The first caller authenticated stands in for every later request.
    Auth,
    /// The limits after authentication: the key's request rate, and a call's rates,
    /// concurrency slots, session cap and daily cost.
    Limits,
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
                    "auth" => Layer::Auth,
                    "limits" => Layer::Limits,
                    other => panic!(
                        "WARDEN_BENCH_SKIP: no layer {other:?} (front, scan, validation, policy, auth, limits)"
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

/// With authentication skipped, the first caller authenticated, who stands in for every
/// later request. Never set in a shipped build, where nothing is skipped.
static STAND_IN: std::sync::OnceLock<Arc<Principal>> = std::sync::OnceLock::new();

/// The caller to take without a key check, once one has been authenticated, when
/// authentication is skipped.
pub(crate) fn stand_in() -> Option<Arc<Principal>> {
    skipped(Layer::Auth)
        .then(|| STAND_IN.get().cloned())
        .flatten()
}

/// Notes an authenticated caller as the stand-in, when authentication is skipped.
pub(crate) fn authenticated(principal: &Arc<Principal>) {
    if skipped(Layer::Auth) {
        let _ = STAND_IN.set(principal.clone());
    }
}
