//! Building the wasm components for `wasm32-wasip2` on whatever machine this is.
//!
//! Two toolchains are tried, in order:
//! 1. rustup with the `wasm32-wasip2` target installed: the plain
//!    `cargo build --target wasm32-wasip2 --profile P`, once for each of
//!    [`COMPONENT_PROFILES`].
//! 2. Debian's packaged Rust (`/usr/bin/rustc`, which ships the std sources),
//!    building std from source with `-Zbuild-std` and linking with
//!    `wasm-component-ld` over Debian's `wasm-ld-19`. This is the recipe for
//!    machines where rustup cannot download targets. Set
//!    `XTASK_WASM_TOOLCHAIN=debian` to take this route anyway.
//!
//! Whatever the second route lacks is installed when we run as root on
//! Debian; elsewhere the build stops and names the missing piece and the
//! command that installs it. Tools live under `target/tools`, and the std
//! build is cached in the target directory like any other dependency.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The cargo profiles the components are built with, and which: each
/// profile's packages are built together, so that std and their shared
/// dependencies compile once per profile. The WASI 0.2 ones (the tutorial
/// and its fixtures) are built small (`small`); the WASI 0.3 ones for speed
/// (`release`: the workspace's Cargo.toml says why).
pub const COMPONENT_PROFILES: &[(&str, &[&str])] = &[
    (
        "small",
        &["sessions-tutorial", "probe", "floor", "handover"],
    ),
    (
        "release",
        &["signin", "quickstart", "p3-floor", "p3-one-read"],
    ),
];

/// The wasm32-wasip2 packages of the workspace, whatever their profile.
pub fn component_packages() -> impl Iterator<Item = &'static str> {
    COMPONENT_PROFILES
        .iter()
        .flat_map(|(_, packages)| packages.iter().copied())
}

pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Debian packages the std-from-source route needs, with a file each that
/// proves the package is installed.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("rustc-web", "/usr/bin/rustc"),
    ("cargo-web", "/usr/bin/cargo"),
    (
        "rust-web-src",
        "/usr/lib/rustlib/src/rust/library/std/Cargo.toml",
    ),
    ("lld-19", "/usr/bin/wasm-ld-19"),
    ("wasi-libc", "/usr/lib/wasm32-wasi/libc.a"),
];

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo that runs this xtask (rustup's, normally).
pub fn host_cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into())
}

/// Where cargo puts what it builds (`CARGO_TARGET_DIR`, or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

fn tools_dir() -> PathBuf {
    target_dir().join("tools")
}

/// Builds every component, shrinks it (`crate::shrink`), and returns the
/// paths of the `.wasm` files.
pub fn build_components() -> Result<Vec<PathBuf>> {
    let wasm_opt = crate::shrink::find_wasm_opt()?;
    let _turn = take_turn_at_building()?;
    let mut outputs = Vec::new();
    for (profile, packages) in COMPONENT_PROFILES {
        outputs.extend(build_with_profile(profile, packages)?);
    }
    for wasm in &outputs {
        check_is_component(wasm)?;
        crate::shrink::shrink_component(wasm, &wasm_opt)?;
    }
    Ok(outputs)
}

/// One cargo build of `packages` with `profile`; the paths of their
/// `.wasm` files.
fn build_with_profile(profile: &str, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let mut command = if rustup_has_wasm_target() {
        let mut c = Command::new(host_cargo());
        c.args(["build", "--target", WASM_TARGET]);
        c
    } else {
        debian_build_command()?
    };
    command.args(["--profile", profile]);
    for package in packages {
        command.args(["--package", package]);
    }
    let status = command
        .current_dir(project_root())
        .status()
        .context("starting the wasm build")?;
    if !status.success() {
        bail!("the wasm32-wasip2 build ({profile}) failed ({status})");
    }
    Ok(packages
        .iter()
        .map(|p| {
            target_dir()
                .join(WASM_TARGET)
                .join(profile)
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect())
}

/// Makes concurrent builds of the components (two `cargo xtask up` in one
/// checkout) take turns, from cargo's build to the last shrink, until the
/// returned lock is dropped. Cargo waits for its own lock, but then, even
/// with nothing to compile, puts its unshrunk output back in place of the
/// shrunk one (it removes the file, then links it again), which would pull
/// a component from under the other build's shrink.
fn take_turn_at_building() -> Result<std::fs::File> {
    let directory = target_dir();
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    crate::shrink::exclusive_lock(
        &directory.join("xtask-components.lock"),
        "another build of the components in this target directory",
    )
}

/// A WASI 0.2 component starts with the wasm magic and the component
/// "layer" (1) in its version field, where a core module has layer 0.
fn check_is_component(wasm: &Path) -> Result<()> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    if !wasmparser::Parser::is_component(&bytes) {
        bail!(
            "{} is a core wasm module, not a component: the linker was not wasm-component-ld",
            wasm.display()
        );
    }
    Ok(())
}

/// True when rustup can build for wasm32-wasip2. rustup cannot download on
/// some machines (it hangs), so `rustup target add` gets one short try per
/// target directory.
fn rustup_has_wasm_target() -> bool {
    // `XTASK_WASM_TOOLCHAIN=debian` forces the second route (to test it).
    if std::env::var("XTASK_WASM_TOOLCHAIN").as_deref() == Ok("debian") {
        return false;
    }
    let installed = || {
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == WASM_TARGET)
            })
            .unwrap_or(false)
    };
    if installed() {
        return true;
    }
    let marker = tools_dir().join("rustup-target-add-failed");
    if marker.exists() || which("rustup").is_none() {
        return false;
    }
    eprintln!("xtask: trying `rustup target add {WASM_TARGET}` (20 s at most)");
    let added = Command::new("timeout")
        .args(["20", "rustup", "target", "add", WASM_TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if added && installed() {
        return true;
    }
    let _ = std::fs::create_dir_all(tools_dir());
    let _ = std::fs::write(
        &marker,
        "rustup could not add the target; using Debian's Rust\n",
    );
    eprintln!("xtask: rustup has no {WASM_TARGET}; building std from source with Debian's Rust");
    false
}

/// The cargo invocation of the std-from-source route, after making sure its
/// pieces are present.
fn debian_build_command() -> Result<Command> {
    let mut c = debian_cargo()?;
    c.args(["build", "--target", WASM_TARGET])
        .args(["-Zbuild-std=std,panic_abort"]);
    Ok(c)
}

/// A cargo command for `wasm32-wasip2` through the route [`build_components`]
/// takes here: rustup's `cargo SUBCOMMAND --target wasm32-wasip2`, or
/// Debian's cargo building std from source, with the build's environment
/// (the same `RUSTFLAGS`, so the std and dependencies it compiled are
/// reused, not rebuilt). `clippy` on the Debian route also needs Debian's
/// clippy (`rust-web-clippy`, the same release as `rustc-web`). Arguments
/// for the subcommand go after the returned command's.
pub fn wasm_cargo(subcommand: &str) -> Result<Command> {
    if rustup_has_wasm_target() {
        let mut c = Command::new(host_cargo());
        c.args([subcommand, "--target", WASM_TARGET]);
        return Ok(c);
    }
    let mut c = if subcommand == "clippy" {
        crate::apt::ensure(
            &[("rust-web-clippy", "/usr/bin/cargo-clippy")],
            &format!("clippy for {WASM_TARGET} without rustup's target"),
            &format!("(or `rustup target add {WASM_TARGET}`)"),
        )?;
        // Debian's cargo-clippy itself, running Debian's cargo: `cargo
        // clippy` would look in `$CARGO_HOME/bin` first and take rustup's
        // clippy there, whose std has no sources to build.
        let mut c = debian_command("/usr/bin/cargo-clippy")?;
        c.env("CARGO", "/usr/bin/cargo");
        c
    } else {
        debian_cargo()?
    };
    c.args([subcommand, "--target", WASM_TARGET])
        .args(["-Zbuild-std=std,panic_abort"]);
    Ok(c)
}

/// Debian's cargo with the std-from-source route's environment, no
/// arguments yet.
fn debian_cargo() -> Result<Command> {
    debian_command("/usr/bin/cargo")
}

/// `program` with the std-from-source route's environment.
fn debian_command(program: &str) -> Result<Command> {
    crate::apt::ensure(
        DEBIAN_PACKAGES,
        &format!("building for {WASM_TARGET} without rustup's target"),
        &format!("(or `rustup target add {WASM_TARGET}`)"),
    )?;
    let tools_bin = tools_dir().join("bin");
    let component_ld = ensure_wasm_component_ld(&tools_bin)?;
    // wasm-component-ld runs `wasm-ld` from PATH; Debian names it wasm-ld-19.
    let wasm_ld = tools_bin.join("wasm-ld");
    if !wasm_ld.exists() {
        std::os::unix::fs::symlink("/usr/bin/wasm-ld-19", &wasm_ld)
            .with_context(|| format!("linking {}", wasm_ld.display()))?;
    }
    let path = std::env::join_paths(
        std::iter::once(tools_bin.clone())
            .chain(std::iter::once(PathBuf::from("/usr/bin")))
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )?;
    let mut c = Command::new(program);
    c.env("PATH", path)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO")
        // -Zbuild-std is an unstable cargo flag; Debian's stable Rust
        // accepts it with RUSTC_BOOTSTRAP.
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "RUSTFLAGS",
            format!(
                "-C linker={} -C link-self-contained=no -L native=/usr/lib/wasm32-wasi",
                component_ld.display()
            ),
        );
    Ok(c)
}

fn ensure_wasm_component_ld(tools_bin: &Path) -> Result<PathBuf> {
    let linker = tools_bin.join("wasm-component-ld");
    if linker.exists() {
        return Ok(linker);
    }
    eprintln!(
        "xtask: installing wasm-component-ld into {}",
        tools_dir().display()
    );
    let status = Command::new(host_cargo())
        .args(["install", "wasm-component-ld", "--locked", "--root"])
        .arg(tools_dir())
        .status()
        .context("running cargo install")?;
    if !status.success() || !linker.exists() {
        bail!(
            "could not install wasm-component-ld; install it with: cargo install wasm-component-ld --locked --root {}",
            tools_dir().display()
        );
    }
    Ok(linker)
}

/// Makes sure rustup has the toolchain `version` (its `minimal` profile:
/// rustc, cargo and the host's std) and the std of each of `targets` for
/// it, installing what is missing. Like [`rustup_has_wasm_target`], each
/// install gets one try per target directory with a time limit (rustup
/// hangs on machines that cannot download); after a failure a marker file
/// in `target/tools` says so, and this answers why not at once until it is
/// removed. `Err` is that reason.
pub fn rustup_toolchain(version: &str, targets: &[&str]) -> std::result::Result<(), String> {
    if which("rustup").is_none() {
        return Err("rustup is not installed".into());
    }
    let marker = tools_dir().join(format!("rustup-{version}-failed"));
    if marker.exists() {
        return Err(format!(
            "rustup could not install it before (remove {} to try again)",
            marker.display()
        ));
    }
    let fail = |why: String| {
        let _ = std::fs::create_dir_all(tools_dir());
        let _ = std::fs::write(&marker, format!("{why}\n"));
        Err(why)
    };
    let listed = |args: &[&str], wanted: &str| {
        Command::new("rustup")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(wanted))
            })
            .unwrap_or(false)
    };
    let host = format!("{version}-{}", host_triple());
    if !listed(&["toolchain", "list"], &host) {
        eprintln!("xtask: installing Rust {version} with rustup (120 s at most)");
        let installed = Command::new("timeout")
            .args(["120", "rustup", "toolchain", "install", version])
            .args(["--profile", "minimal", "--no-self-update"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !listed(&["toolchain", "list"], &host) {
            return fail(format!("`rustup toolchain install {version}` failed"));
        }
    }
    for target in targets {
        let installed = ["target", "list", "--installed", "--toolchain", version];
        if listed(&installed, target) {
            continue;
        }
        eprintln!("xtask: adding {target} to Rust {version} with rustup (60 s at most)");
        let added = Command::new("timeout")
            .args([
                "60",
                "rustup",
                "target",
                "add",
                "--toolchain",
                version,
                target,
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !added || !listed(&installed, target) {
            return fail(format!(
                "`rustup target add --toolchain {version} {target}` failed"
            ));
        }
    }
    Ok(())
}

/// The host's target triple, as the running cargo's rustc names it.
pub fn host_triple() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "x86_64-unknown-linux-gnu".into())
}

/// `cargo install PACKAGE --locked` into `target/tools` when `target/tools/bin/BINARY`
/// is missing, as [`ensure_wasm_component_ld`] does; the binary's path.
pub fn ensure_tool(package: &str, binary: &str) -> Result<PathBuf> {
    let path = tools_dir().join("bin").join(binary);
    if path.exists() {
        return Ok(path);
    }
    eprintln!("xtask: installing {package} into {}", tools_dir().display());
    let status = Command::new(host_cargo())
        .args(["install", package, "--locked", "--root"])
        .arg(tools_dir())
        .status()
        .context("running cargo install")?;
    if !status.success() || !path.exists() {
        bail!(
            "could not install {package}; install it with: cargo install {package} --locked --root {}",
            tools_dir().display()
        );
    }
    Ok(path)
}

/// True when `wasm32-wasip2` builds go through rustup's target (not
/// Debian's std-from-source route): what tools that build for the target
/// themselves, without the route's `-Zbuild-std`, need.
pub fn rustup_builds_wasm() -> bool {
    rustup_has_wasm_target()
}

/// The first `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
