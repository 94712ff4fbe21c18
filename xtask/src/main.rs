//! Build tasks for the project, run as `cargo xtask <task>` (an alias in
//! `.cargo/config.toml`), in the style of rust-analyzer's xtask.
//!
//! - `build`: compile the wasm components (the sessions component and the
//!   test fixtures) for `wasm32-wasip2`, picking a toolchain that works here.
//! - `up [-- FLAGS]`: build, then serve `spin.toml` with the local host, as
//!   `spin build && spin up` would. Flags after `--` go to the host
//!   (`--listen`, `--runtime-config-file`, `--state-dir`).
//! - `test [--spin PATH]`: build, then run every test of the workspace and
//!   the end-to-end suites again against the host's binary as an external
//!   `spin up`, check the library crates' publication (`cargo publish
//!   --dry-run`, then `src/publish.rs`), then a short smoke run of every
//!   fuzz target when a nightly toolchain is present.
//!   With `--spin PATH`, only the end-to-end suites, against `PATH up`.
//! - `lint`: `cargo fmt --check` and clippy with warnings denied, natively
//!   and for `wasm32-wasip2`.
//! - `semver [-- ARGS]`: cargo-semver-checks of the library crates against
//!   their newest release on crates.io; skipped while there is none.
//! - `publish-checks`: what `test` checks of the library crates' publication
//!   (`cargo publish --dry-run`, rustdoc, clippy for wasm32, the
//!   rust-versions, semver; `src/publish.rs`), without the tests.
//! - `bench`: build, then run the benchmark (`bench/`).
//! - `fuzz [TARGET] [-- SECONDS]`: run the libFuzzer targets of `fuzz/`.
//! - `shrink FILE…` (not in the usage): shrink built components as `build`
//!   does; `tests/shrink.rs` runs two at once on one file.

mod apt;
mod failures;
mod fuzz;
mod publish;
mod shrink;
mod toolchain;

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    match task.as_str() {
        "build" => toolchain::build_components().map(|_| ()),
        "up" => up(&rest),
        "test" => test(&rest),
        "lint" => lint(),
        "bench" => bench(&rest),
        "fuzz" => fuzz::fuzz(&rest),
        "semver" => publish::semver(&rest),
        "publish-checks" => package_libraries().and_then(|()| publish::checks()),
        "shrink" => shrink_files(&rest),
        "" | "help" | "--help" | "-h" => {
            println!("{}", USAGE);
            Ok(())
        }
        other => bail!("unknown task `{other}`\n{USAGE}"),
    }
}

const USAGE: &str = "usage: cargo xtask <task>
  build              build the wasm components (target/wasm32-wasip2/{release,small}/*.wasm)
  up [-- FLAGS]      build, then serve spin.toml on http://127.0.0.1:3000
                     (FLAGS: --listen ADDR, --runtime-config-file FILE, --state-dir DIR,
                     --from MANIFEST for another app, e.g. examples/signin/spin.toml)
  test [-- ARGS]     build, then run every test (ARGS go to `cargo test`), the
                     end-to-end suites again against the host binary's `up`, then
                     fuzz each target for 10 s (with a nightly toolchain)
  test --spin PATH [-- ARGS]
                     build, then run only the end-to-end suites against `PATH up`
                     (a spin binary: SPIN_BIN=PATH cargo test does the same)
  lint               cargo fmt --check and clippy -D warnings (native and wasm32-wasip2)
  semver [-- ARGS]   cargo-semver-checks of the library crates against their latest
                     release on crates.io (skipped while unreleased; ARGS go to it,
                     e.g. --baseline-rev REV)
  publish-checks     the publication checks of `test` alone: cargo publish --dry-run,
                     rustdoc -D warnings, clippy for wasm32-wasip2, each crate built
                     with its rust-version, cargo-semver-checks (when released)
  bench [-- ARGS]    build, then benchmark the sessions component against the floor
                     component in the host (figures printed and written to target/bench/)
  fuzz [TARGET] [-- SECONDS]
                     run the fuzz targets (cookie, form, record, index; all by
                     default) for SECONDS each (60 by default); needs nightly";

/// Shrinks each component named, in place (`src/shrink.rs`).
fn shrink_files(files: &[String]) -> Result<()> {
    if files.is_empty() {
        bail!("usage: cargo xtask shrink FILE.wasm…");
    }
    let wasm_opt = shrink::find_wasm_opt()?;
    for file in files {
        shrink::shrink_component(Path::new(file), &wasm_opt)?;
    }
    Ok(())
}

fn up(host_flags: &[String]) -> Result<()> {
    toolchain::build_components()?;
    let root = toolchain::project_root();
    let host = build_workspace_binary("spin-sessions-host")?;
    let mut command = Command::new(host);
    command.current_dir(&root).arg("up");
    // The tutorial's manifest, unless the flags name another app's.
    if !host_flags.iter().any(|f| f == "--from" || f == "-f") {
        command.arg("--from").arg(root.join("spin.toml"));
    }
    let status = command
        .args(host_flags)
        .status()
        .context("running the host")?;
    check(status, "the host")
}

/// Builds every binary of the workspace as the tests build them and returns
/// the path of `name`.
///
/// `--workspace`, never `--package`: cargo resolves features for the
/// packages a command selects, so `cargo run -p spin-sessions-host` would
/// build wasmtime with other features than `cargo test --workspace` and
/// compile it a second time. The test-support crate's dependencies carry the
/// tests' features, so this build and the test build resolve the same set.
fn build_workspace_binary(name: &str) -> Result<std::path::PathBuf> {
    let status = Command::new(toolchain::host_cargo())
        .current_dir(toolchain::project_root())
        .args(["build", "--quiet", "--workspace", "--bins"])
        .status()
        .context("running cargo build")?;
    check(status, "cargo build --workspace --bins")?;
    Ok(toolchain::target_dir().join("debug").join(name))
}

/// Debian packages the tests use: a real headless Chromium and the
/// WebDriver server that drives it, and a real Redis server.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("redis-server", "/usr/bin/redis-server"),
];

fn test(args: &[String]) -> Result<()> {
    let (spin, cargo_test_args) = spin_flag(args)?;
    apt::ensure(TEST_PACKAGES, "the tests", "")?;
    toolchain::build_components()?;
    if let Some(spin) = spin {
        // `--spin PATH`: the end-to-end suites only, against that spin.
        return end_to_end_against(&spin, &cargo_test_args);
    }
    let root = toolchain::project_root();
    let mut command = Command::new(toolchain::host_cargo());
    command.current_dir(&root).args(["test", "--workspace"]);
    if let Some(dir) = test_state_dir() {
        command.env("TMPDIR", dir);
    }
    command.arg("--no-fail-fast").args(&cargo_test_args);
    let (status, failed) = failures::run(command)?;
    failures::report(&failed);
    check(status, "cargo test")?;
    // The end-to-end suites again, against the host's own binary run as an
    // external `spin up`: the switch that `--spin` and CI use is itself
    // tested on every run. (`--workspace`: the same build as the tests'.)
    let host = build_workspace_binary("spin-sessions-host")?;
    end_to_end_against(&host, &cargo_test_args)?;
    package_libraries()?;
    publish::checks()?;
    fuzz::smoke()
}

/// Splits `--spin PATH` (or `--spin=PATH`) off the arguments of `test`;
/// the path is made absolute, as the tests run elsewhere.
fn spin_flag(args: &[String]) -> Result<(Option<std::path::PathBuf>, Vec<String>)> {
    let mut spin = None;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let path = if arg == "--spin" {
            args.next()
                .context("`--spin` needs the path of a spin binary")?
        } else if let Some(path) = arg.strip_prefix("--spin=") {
            path
        } else {
            rest.push(arg.clone());
            if arg == "--" {
                rest.extend(args.cloned());
                break;
            }
            continue;
        };
        let path = std::path::absolute(path).with_context(|| format!("--spin {path}"))?;
        if !path.is_file() {
            bail!("--spin {}: no such file", path.display());
        }
        spin = Some(path);
    }
    Ok((spin, rest))
}

/// The end-to-end suites: every `tests/*.rs` of the root package.
fn end_to_end_suites(root: &Path) -> Result<Vec<String>> {
    let mut suites = Vec::new();
    for entry in std::fs::read_dir(root.join("tests")).context("reading tests/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                suites.push(stem.to_owned());
            }
        }
    }
    suites.sort();
    Ok(suites)
}

/// The end-to-end suites whose apps are WASI 0.3.0 components (spin-sdk
/// 7: the sign-in example, the quick start), which only Spin 4.1 (its
/// pre-releases included: Spin main) and later run.
const WASI_03_SUITES: &[&str] = &["signin", "update"];

/// Leaves [`WASI_03_SUITES`] out of `suites` when `spin --version` names a
/// Spin older than 4.1 (or one it cannot read: never guessed in Spin's
/// favour), and says so.
fn leave_out_wasi_03_unless_run(spin: &Path, suites: &mut Vec<String>) -> Result<()> {
    for suite in WASI_03_SUITES {
        if !suites.iter().any(|s| s == suite) {
            bail!("WASI_03_SUITES names tests/{suite}.rs, which is not there");
        }
    }
    let output = Command::new(spin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", spin.display()))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if runs_wasi_030(&version) {
        return Ok(());
    }
    suites.retain(|suite| !WASI_03_SUITES.contains(&suite.as_str()));
    eprintln!(
        "xtask: left out under `{version}`: the suites of WASI 0.3.0 components ({}), which \
         only Spin 4.1 and later run",
        WASI_03_SUITES.join(", ")
    );
    Ok(())
}

/// Whether a binary whose `--version` printed `version` runs WASI 0.3.0
/// components: a Spin (`spin 4.1.0-pre0 (…)`) of 4.1 or later; any other
/// binary that takes `spin up`'s flags (the project's host) does.
fn runs_wasi_030(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("spin ") else {
        return true;
    };
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u64>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (4, 1),
        _ => false,
    }
}

/// Runs every end-to-end suite with `SPIN_BIN=spin`: the app served by
/// `spin up` as a child process instead of the host in process
/// (`tests/common/spin.rs`). Says how long that took and lists the
/// assertions skipped for want of the host's instruments.
fn end_to_end_against(spin: &Path, cargo_test_args: &[String]) -> Result<()> {
    let root = toolchain::project_root();
    let mut suites = end_to_end_suites(&root)?;
    leave_out_wasi_03_unless_run(spin, &mut suites)?;
    let skipped_log = toolchain::target_dir().join("external-spin-skipped.txt");
    if skipped_log.exists() {
        std::fs::remove_file(&skipped_log)
            .with_context(|| format!("removing {}", skipped_log.display()))?;
    }
    eprintln!(
        "xtask: the end-to-end suites ({}) against `{} up`",
        suites.join(", "),
        spin.display()
    );
    let started = std::time::Instant::now();
    let mut command = Command::new(toolchain::host_cargo());
    command.current_dir(&root).args(["test", "--workspace"]);
    for suite in &suites {
        command.args(["--test", suite]);
    }
    command
        .env("SPIN_BIN", spin)
        .env("SPIN_SESSIONS_SKIP_LOG", &skipped_log);
    if let Some(dir) = test_state_dir() {
        command.env("TMPDIR", dir);
    }
    command.arg("--no-fail-fast").args(cargo_test_args);
    let (status, failed) = failures::run(command)?;
    let mut skipped: Vec<String> = std::fs::read_to_string(&skipped_log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    skipped.sort();
    eprintln!(
        "xtask: {} assertions skipped under `{} up` (listed in {}):",
        skipped.len(),
        spin.display(),
        skipped_log.display()
    );
    for line in &skipped {
        eprintln!("  {line}");
    }
    eprintln!(
        "xtask: the end-to-end suites against `{} up` took {:.0?}",
        spin.display(),
        started.elapsed()
    );
    failures::report(&failed);
    check(
        status,
        &format!("the end-to-end suites against {}", spin.display()),
    )
}

/// The library crates as they would be published: `cargo publish
/// --dry-run` packages each and builds it from its packaged sources alone,
/// then runs every check of a publication short of the upload, so a
/// missing file, a path-only dependency or a manifest crates.io would
/// refuse fails here rather than at publication.
///
/// The core is not on crates.io, so `spin-sessions` could not be verified
/// against it alone. Both are given to one command (cargo 1.90 and later
/// publish several packages at once, in dependency order): cargo then
/// verifies `spin-sessions` against the packaged core, through a temporary
/// local registry of the packages being published (in the verification's
/// target directory, `package/tmp-registry`), the way crates.io will serve
/// it. Once a version is on crates.io, the dry run only warns that it is
/// there: bump the version for the next release.
///
/// Cargo takes a registry crate of a given version to be immutable, so the
/// core as an earlier run packaged it would be reused twice over: its
/// unpacked source ([`forget_unpacked_core`]) and its compiled library. So
/// the verification builds in a target directory of its own, emptied
/// first (the two crates and their few dependencies: about 30 s).
fn package_libraries() -> Result<()> {
    forget_unpacked_core()?;
    let verify_dir = toolchain::target_dir().join("package-verify");
    if verify_dir.exists() {
        std::fs::remove_dir_all(&verify_dir)
            .with_context(|| format!("removing {}", verify_dir.display()))?;
    }
    let started = std::time::Instant::now();
    let status = Command::new(toolchain::host_cargo())
        .current_dir(toolchain::project_root())
        .args(["--quiet", "publish", "--dry-run"])
        .arg("--target-dir")
        .arg(&verify_dir)
        .args([
            "--allow-dirty",
            "--package",
            "spin-sessions-core",
            "--package",
            "spin-sessions",
        ])
        .status()
        .context("running cargo publish --dry-run")?;
    eprintln!("xtask: cargo publish --dry-run: {:.1?}", started.elapsed());
    check(status, "cargo publish --dry-run of the library crates")
}

/// Removes the copies of `spin-sessions-core` that earlier packagings
/// unpacked into cargo's registry sources: `cargo publish --dry-run`
/// verifies `spin-sessions` against the core through a local registry whose
/// unpacked source cargo keeps by name and version. (While the core is not
/// on crates.io every such copy is ours; once it is, its copy from there
/// goes too, and cargo unpacks it again from its download cache.)
fn forget_unpacked_core() -> Result<()> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let Some(sources) = cargo_home.map(|home| home.join("registry").join("src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for unpacked in crates.flatten() {
            if unpacked
                .file_name()
                .to_string_lossy()
                .starts_with("spin-sessions-core-")
            {
                std::fs::remove_dir_all(unpacked.path())
                    .with_context(|| format!("removing {}", unpacked.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Where the tests keep their state (SQLite files, Redis data): a directory
/// on tmpfs when the machine has one. The host opens SQLite as Spin does,
/// with `synchronous = FULL`, so every write waits for the disk (about 10 ms
/// on these machines, on a suite of tens of thousands of writes); on tmpfs
/// the same statements run with the same results, without the wait. The
/// benchmark stays on disk, as a deployment would be.
fn test_state_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new("/dev/shm/spin-sessions-tests");
    std::fs::create_dir_all(dir).ok()?;
    Some(dir.to_path_buf())
}

fn bench(args: &[String]) -> Result<()> {
    toolchain::build_components()?;
    let bench = build_workspace_binary("sessions-bench")?;
    let status = Command::new(bench)
        .current_dir(toolchain::project_root())
        .args(args)
        .status()
        .context("running the benchmark")?;
    check(status, "the benchmark")
}

fn lint() -> Result<()> {
    let root = toolchain::project_root();
    let cargo = toolchain::host_cargo();
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["fmt", "--all", "--check"])
        .status()?;
    check(status, "cargo fmt --check")?;
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .status()?;
    check(status, "cargo clippy")?;
    wasm_clippy()
}

/// Clippy for `wasm32-wasip2`, warnings denied: the native run above never
/// sees `spin_sessions::spin` (wasm only) nor what `http_component!`
/// expands to in a component. It lints the library with every feature and
/// every component (the tutorial and the sign-in example use the macro),
/// through the route and the release profile `cargo xtask build` uses, so
/// that the build scripts, macros (wit-bindgen's) and, on Debian's route,
/// the std it compiled are reused: only the crates' metadata is new.
fn wasm_clippy() -> Result<()> {
    let mut command = toolchain::wasm_cargo("clippy")?;
    command.args([
        "--quiet",
        "--release",
        "--all-features",
        "--package",
        "spin-sessions",
    ]);
    for package in toolchain::component_packages() {
        command.args(["--package", package]);
    }
    let status = command
        .args(["--", "-D", "warnings"])
        .current_dir(toolchain::project_root())
        .status()
        .context("running cargo clippy for wasm32-wasip2")?;
    check(status, "cargo clippy for wasm32-wasip2")
}

fn check(status: std::process::ExitStatus, what: &str) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("{what} failed ({status})")
    }
}

#[cfg(test)]
mod tests {
    use super::runs_wasi_030;

    #[test]
    fn which_spin_runs_wasi_03_components() {
        for (version, runs) in [
            ("spin 3.6.3 (1a2b3c4 2026-05-01)", false),
            ("spin 4.0.2 (5d6e7f8 2026-09-30)", false),
            ("spin 4.1.0-pre0 (94a8fc8 2026-11-30)", true),
            ("spin 5.0.0", true),
            ("spin canary", false),
            ("spin-sessions-host 0.1.0", true),
        ] {
            assert_eq!(runs_wasi_030(version), runs, "{version}");
        }
    }
}
