#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo-fuzz layout) with libFuzzer's coverage
# instrumentation on the stable compiler, then runs each for SECONDS (default 20), two
# at a time. A crash (or an invariant a target asserts) fails the run; its input is
# left in fuzz/artifacts/<target>/. What the runs find grows fuzz/corpus/ (ignored);
# the committed seeds are in fuzz/seeds/. See docs/FUZZING.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh build        (builds the targets only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-20}"
shift || true
build_only=false
if [ "$seconds" = build ]; then
    build_only=true
fi
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

# cargo-fuzz's flags without its nightly-only sanitizer: the code under test is safe
# Rust, so AddressSanitizer would find little that a panic does not. `--target` keeps
# the instrumentation off build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cforce-frame-pointers=yes"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-fuzz/target}"
bins=()
for target in "${targets[@]}"; do
    bins+=(--bin "$target")
done
cargo build --locked --release --manifest-path fuzz/Cargo.toml --target "$host" "${bins[@]}"
bin="$CARGO_TARGET_DIR/$host/release"
if "$build_only"; then
    exit 0
fi

run() {
    local target="$1"
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    if "$bin/$target" -max_total_time="$seconds" -print_final_stats=1 -max_len=8192 \
        -rss_limit_mb=2048 -timeout=10 -artifact_prefix="fuzz/artifacts/$target/" \
        "fuzz/corpus/$target" "fuzz/seeds/$target" >"fuzz/artifacts/$target.log" 2>&1; then
        local runs cov
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "fuzz/artifacts/$target.log")"
        cov="$(grep -o 'cov: [0-9]*' "fuzz/artifacts/$target.log" | tail -1)"
        echo "fuzz: $target ok: ${runs:-?} runs in ${seconds} s, ${cov:-cov: ?}"
    else
        echo "FAIL [fuzz]: $target (its input and output are in fuzz/artifacts/$target*)" >&2
        tail -n 40 "fuzz/artifacts/$target.log" >&2
        return 1
    fi
}

failed=0
pending=()
for target in "${targets[@]}"; do
    run "$target" &
    pending+=("$!")
    if [ "${#pending[@]}" -ge 2 ]; then
        wait "${pending[0]}" || failed=1
        pending=("${pending[@]:1}")
    fi
done
for pid in "${pending[@]}"; do
    wait "$pid" || failed=1
done
exit "$failed"
