//! What publishing the library crates (`spin-sessions-core`,
//! `spin-sessions`) needs checked beyond their tests, run by
//! `cargo xtask test` after `cargo publish --dry-run`
//! (`package_libraries` in `main.rs`):
//!
//! - **rustdoc** without a warning (`-D warnings`, broken intra-doc links
//!   included): both crates natively with all features, and `spin-sessions`
//!   for `wasm32-wasip2`, where its `spin` module exists (docs.rs builds it
//!   for that target, `[package.metadata.docs.rs]`).
//! - **clippy for `wasm32-wasip2`** (`crate::wasm_clippy`, also in
//!   `cargo xtask lint`): the `spin` module, `http_component!` as the
//!   components expand it, and every component of the workspace.
//! - **the declared `rust-version`s**: each crate's library checked by
//!   that very toolchain (installed by rustup when it can be), natively and,
//!   for `spin-sessions`, for `wasm32-wasip2`.
//! - **cargo-semver-checks** against the newest release on crates.io, when
//!   there is one (`cargo xtask semver` runs it alone).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::check;
use crate::toolchain::{self, host_cargo, project_root, target_dir, WASM_TARGET};

/// The published crates: package name and manifest.
const LIBRARIES: &[(&str, &str)] = &[
    ("spin-sessions-core", "core/Cargo.toml"),
    ("spin-sessions", "sessions/Cargo.toml"),
];

/// The crate whose `spin` module exists only on `wasm32`.
const WASM_LIBRARY: &str = "spin-sessions";

/// The rustdoc lints every documentation build of the libraries denies.
const RUSTDOCFLAGS: &str = "-D warnings -D rustdoc::broken_intra_doc_links";

/// The checks of `cargo xtask test`, each timed.
pub fn checks() -> Result<()> {
    timed("rustdoc", docs)?;
    timed("clippy for wasm32-wasip2", crate::wasm_clippy)?;
    timed("rust-version", rust_versions)?;
    timed("cargo-semver-checks", || semver(&[]))
}

fn timed(what: &str, step: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    let result = step();
    eprintln!("xtask: {what}: {:.1?}", started.elapsed());
    result
}

/// rustdoc over both crates, warnings denied: natively with every feature
/// (into `target/doc`, on check builds of the dependencies, which `cargo
/// clippy` shares), then
/// `spin-sessions` for `wasm32-wasip2` through the components' route and
/// release profile, beside every component: selected as `cargo xtask
/// build` selects them, the dependencies resolve to the same features, so
/// the build's scripts and macros (wit-bindgen's) are reused (alone,
/// `spin-sessions` would compile wit-bindgen's macro anew: a minute). The
/// components are documented too (a second each).
fn docs() -> Result<()> {
    let mut native = Command::new(host_cargo());
    native.args(["doc", "--quiet", "--no-deps", "--all-features"]);
    for (package, _) in LIBRARIES {
        native.args(["--package", package]);
    }
    let status = native
        .current_dir(project_root())
        .env("RUSTDOCFLAGS", RUSTDOCFLAGS)
        .status()
        .context("running cargo doc")?;
    check(status, "cargo doc of the library crates")?;
    let mut wasm = toolchain::wasm_cargo("doc")?;
    wasm.args(["--quiet", "--release", "--no-deps", "--all-features"])
        .args(["--package", WASM_LIBRARY]);
    for package in toolchain::component_packages() {
        wasm.args(["--package", package]);
    }
    let status = wasm
        .current_dir(project_root())
        .env("RUSTDOCFLAGS", RUSTDOCFLAGS)
        .status()
        .context("running cargo doc for wasm32-wasip2")?;
    check(
        status,
        &format!("cargo doc of {WASM_LIBRARY} for {WASM_TARGET}"),
    )
}

/// Checks each library with the toolchain of its `rust-version`, with the
/// workspace's `Cargo.lock` (`--locked`: a dependency the lock file pins
/// that needs a newer Rust fails here), the library only (tests and
/// examples may use newer Rust), every feature. `spin-sessions` is checked
/// natively and for `wasm32-wasip2` (where wit-bindgen and wasip2 set its
/// minimum). Rustup installs the toolchains (`minimal` profile) when it
/// can; when it cannot, the check says so and is skipped. Another compiler
/// shares no artifact with the main builds, so they go to a target
/// directory of their own, `target/msrv` (release profile: its build
/// scripts and macros compile unoptimised), kept between runs.
fn rust_versions() -> Result<()> {
    let msrv_dir = target_dir().join("msrv");
    for (package, manifest) in LIBRARIES {
        let manifest = project_root().join(manifest);
        let version = rust_version(&manifest)?;
        let mut targets = vec![toolchain::host_triple()];
        if *package == WASM_LIBRARY {
            targets.push(WASM_TARGET.to_owned());
        }
        let wasm: Vec<&str> = targets[1..].iter().map(String::as_str).collect();
        if let Err(why) = toolchain::rustup_toolchain(&version, &wasm) {
            println!("xtask: rust-version {version} of {package} NOT checked: {why}");
            continue;
        }
        let mut command = Command::new("rustup");
        command
            .args(["run", &version, "cargo", "check", "--quiet", "--locked"])
            .args(["--release", "--lib", "--all-features", "--package", package]);
        for target in &targets {
            command.args(["--target", target]);
        }
        let status = command
            .arg("--target-dir")
            .arg(&msrv_dir)
            .current_dir(project_root())
            // The toolchain is rustup's `version`, whatever ran xtask.
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTUP_TOOLCHAIN")
            .status()
            .context("running rustup run … cargo check")?;
        check(
            status,
            &format!("cargo check of {package} with Rust {version} (its rust-version)"),
        )?;
        println!(
            "xtask: {package} builds with Rust {version}, its rust-version ({})",
            targets.join(", ")
        );
    }
    Ok(())
}

/// The `rust-version` of the package of `manifest`.
fn rust_version(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix("rust-version")?.trim_start();
            let value = value.strip_prefix('=')?.trim();
            Some(value.trim_matches('"').to_owned())
        })
        .with_context(|| format!("{} declares no rust-version", manifest.display()))
}

/// `cargo xtask semver [-- ARGS]`: cargo-semver-checks over the libraries
/// that have a release on crates.io, each against its newest release,
/// natively with every feature and, for `spin-sessions` when rustup has
/// the target, for `wasm32-wasip2` (the `spin` module). With nothing
/// released it says so and stops, before installing cargo-semver-checks
/// (a long compile, into `target/tools`). ARGS go to cargo-semver-checks;
/// with a `--baseline-…` among them (`--baseline-rev REV`, say) both
/// crates are checked against that baseline, released or not.
pub fn semver(args: &[String]) -> Result<()> {
    let explicit_baseline = args.iter().any(|a| a.starts_with("--baseline-"));
    let mut packages = Vec::new();
    for (package, _) in LIBRARIES {
        if explicit_baseline {
            packages.push(*package);
            continue;
        }
        match released_versions(package) {
            Ok(versions) if versions.is_empty() => {
                println!("xtask: cargo-semver-checks skipped for {package}: no release on crates.io to compare with");
            }
            Ok(versions) => {
                println!(
                    "xtask: {package} has releases on crates.io (latest published: {}): cargo-semver-checks",
                    versions.last().map(String::as_str).unwrap_or_default()
                );
                packages.push(*package);
            }
            Err(why) => {
                println!("xtask: cargo-semver-checks skipped for {package}: crates.io's index could not be read ({why:#})");
            }
        }
    }
    if packages.is_empty() {
        return Ok(());
    }
    let semver_checks = toolchain::ensure_tool("cargo-semver-checks", "cargo-semver-checks")?;
    let run = |packages: &[&str], target: Option<&str>| -> Result<()> {
        let mut command = Command::new(&semver_checks);
        command.args(["semver-checks", "--all-features"]);
        for package in packages {
            command.args(["--package", package]);
        }
        if let Some(target) = target {
            // cargo-semver-checks appends `--cap-lints=allow` to RUSTFLAGS,
            // which silences rustc's "dropping unsupported crate type"
            // warnings that cargo reads to learn what wasm32 can build; cargo
            // then stops ("output of --print=file-names missing",
            // cargo-semver-checks issue #1068). rustc keeps the first
            // `--cap-lints` it is given, so this one, before it, wins; cargo
            // still caps the dependencies' lints itself.
            command
                .args(["--target", target])
                .env("RUSTFLAGS", "--cap-lints=warn");
        }
        let status = command
            .args(args)
            .current_dir(project_root())
            .status()
            .context("running cargo-semver-checks")?;
        let on = target.unwrap_or("the host");
        check(
            status,
            &format!("cargo-semver-checks of {} on {on}", packages.join(", ")),
        )
    };
    run(&packages, None)?;
    if packages.contains(&WASM_LIBRARY) {
        if toolchain::rustup_builds_wasm() {
            run(&[WASM_LIBRARY], Some(WASM_TARGET))?;
        } else {
            // cargo-semver-checks builds rustdoc's JSON itself, with no way
            // to pass Debian's route its -Zbuild-std.
            println!("xtask: cargo-semver-checks of {WASM_LIBRARY}'s `spin` module skipped: rustup has no {WASM_TARGET} std here");
        }
    }
    Ok(())
}

/// The versions of `package` on crates.io that are not yanked, oldest
/// first, from the sparse index (one HTTP request, 10 s at most, by curl):
/// none when the index has no such crate (HTTP 404).
fn released_versions(package: &str) -> Result<Vec<String>> {
    let name = package.to_ascii_lowercase();
    let path = match name.len() {
        1 => format!("1/{name}"),
        2 => format!("2/{name}"),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    };
    let output = Command::new("curl")
        .args(["--silent", "--location", "--max-time", "10"])
        .args(["--write-out", "\n%{http_code}"])
        .arg(format!("https://index.crates.io/{path}"))
        .output()
        .context("running curl")?;
    let body = String::from_utf8_lossy(&output.stdout);
    let (lines, code) = body.rsplit_once('\n').unwrap_or(("", &body));
    match code.trim() {
        "404" => Ok(Vec::new()),
        "200" => {
            let mut versions = Vec::new();
            for line in lines.lines().filter(|l| !l.trim().is_empty()) {
                let entry: serde_json::Value =
                    serde_json::from_str(line).context("reading an index entry")?;
                if entry["yanked"] != serde_json::Value::Bool(true) {
                    if let Some(version) = entry["vers"].as_str() {
                        versions.push(version.to_owned());
                    }
                }
            }
            Ok(versions)
        }
        code if output.status.success() => bail!("HTTP status {code}"),
        _ => bail!("curl failed ({})", output.status),
    }
}
