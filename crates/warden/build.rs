//! Release builds lay out the functions a running Warden uses together, at the front of
//! its code, in the order of `symbol-order.txt` (scripts/order-symbols.sh writes it).
//! Code is mapped 64 KiB around each first touch, and a start touches functions all over
//! a 22 MB binary: packed, what a start and a call run fits in a few MB, which is most
//! of an idle Warden's resident memory, and the hot path shares fewer pages and cache
//! lines. The list only orders: a name it misses is laid out after it, one that no
//! longer exists is skipped.
//!
//! Only where the linker is the toolchain's own LLD (the default for
//! x86_64-unknown-linux-gnu): other linkers do not take the option.

fn main() {
    println!("cargo::rerun-if-changed=symbol-order.txt");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let default_lld = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu")
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !std::env::var("CARGO_ENCODED_RUSTFLAGS")
            .is_ok_and(|flags| flags.contains("linker") || flags.contains("fuse-ld"));
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("symbol-order.txt");
    if release && default_lld && order.exists() {
        println!(
            "cargo::rustc-link-arg-bin=warden=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bin=warden=-Wl,--no-warn-symbol-ordering");
    }
}
