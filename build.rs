//! Link settings of the component.
//!
//! The wasm linker's default shadow stack is 1 MiB, which makes every
//! instance's linear memory 1 MiB larger than what it holds. A host with
//! Spin's pooling allocator resets the memory an instance used before the
//! next request may take it (up to 2 MiB of it in place, with `memset`), so
//! an idle megabyte of stack costs about as much per request as serving the
//! request (`cargo xtask bench`).
//!
//! This component keeps little on that stack: Rust puts most locals in wasm
//! locals. Measured: the end-to-end tests, whose deepest case is a stored
//! record nested past serde's depth limit (`tests/faults.rs`), pass on a
//! 2 KiB stack and fail on 1 KiB. 64 KiB leaves ample room. Were it ever
//! exceeded, nothing is overwritten: the stack takes the lowest addresses,
//! below the data (`--stack-first`, Rust's default for wasm), so an
//! overflow runs below address 0 and traps.
//!
//! Relocations are compressed: without it the linker leaves every call's
//! function index padded to five bytes, about a tenth of the component
//! (`--compress-relocations`, which needs the DWARF stripped; the release
//! profile strips everything anyway, and `--strip-debug` keeps a build with
//! `strip = "none"`, used to profile sizes, linking with its names).

/// The component's shadow-stack size in bytes (a multiple of 16).
const STACK_BYTES: u32 = 64 * 1024;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Only the wasm component: the native build of this crate (tests) keeps
    // the platform's stack.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size={STACK_BYTES}");
        println!("cargo:rustc-link-arg-cdylib=--strip-debug");
        println!("cargo:rustc-link-arg-cdylib=--compress-relocations");
    }
}
