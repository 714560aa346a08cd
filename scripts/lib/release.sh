# Sourced by the benchmarks and scripts/order-symbols.sh: the release builds they run.
#   build_release   builds warden and warden-bench, each package on its own: built
#                   together they would share features, and the warden measured would not
#                   be the one `cargo build --release` makes, whose functions
#                   crates/warden/build.rs lays out by name
build_release() {
    cargo build --release --locked -p warden
    cargo build --release --locked -p warden-bench
}
