//! `cargo xtask fuzz [TARGET] [-- SECONDS]`: the libFuzzer targets of
//! `fuzz/` (a cargo-fuzz crate outside the workspace), and the short smoke
//! run of each that ends `cargo xtask test`.
//!
//! - cargo-fuzz is installed into `target/tools` when missing, like
//!   wasm-component-ld; it needs a nightly toolchain (`cargo +nightly fuzz`,
//!   here `rustup run nightly cargo fuzz`).
//! - Builds go to `target/fuzz/build`, away from the main target directory's
//!   artifacts, so fuzzing does not invalidate the workspace's builds.
//! - The committed seeds in `fuzz/corpus/<target>` are only read: libFuzzer
//!   writes what it finds into the first corpus directory it is given, which
//!   is a scratch one, `target/fuzz/corpus/<target>` (kept between runs, so
//!   long runs build on each other). Crashes go to
//!   `target/fuzz/artifacts/<target>/`, libFuzzer's output to
//!   `target/fuzz/logs/<target>.log`. A run never changes the work tree.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::toolchain::{host_cargo, project_root, target_dir};

/// The targets of `fuzz/Cargo.toml`, with what each one fuzzes.
pub const TARGETS: &[(&str, &str)] = &[
    ("cookie", "spin_sessions_core::cookie::find_session_id"),
    ("form", "sessions_tutorial::form::decode"),
    ("record", "spin_sessions_core::SessionRecord::decode"),
    (
        "index",
        "spin_sessions_core::index and ExpiryPolicy arithmetic",
    ),
];

/// Seconds per target of `cargo xtask fuzz` without `-- SECONDS`.
const DEFAULT_SECS: u64 = 60;

/// Seconds per target of the smoke run at the end of `cargo xtask test`.
const SMOKE_SECS: u64 = 10;

/// `cargo xtask fuzz [TARGET] [-- SECONDS]`.
pub fn fuzz(args: &[String]) -> Result<()> {
    let mut target = None;
    let mut secs = DEFAULT_SECS;
    for arg in args.iter().filter(|a| *a != "--") {
        if let Ok(n) = arg.parse::<u64>() {
            secs = n.max(1);
        } else if let Some((name, _)) = TARGETS.iter().find(|(t, _)| t == arg) {
            target = Some(*name);
        } else {
            bail!("unknown fuzz target `{arg}`; targets: {}", names());
        }
    }
    if !has_nightly() {
        bail!("fuzzing needs a nightly toolchain: rustup toolchain install nightly");
    }
    let targets: Vec<&str> = match target {
        Some(t) => vec![t],
        None => TARGETS.iter().map(|(t, _)| *t).collect(),
    };
    run_targets(&targets, secs)
}

/// The smoke run of `cargo xtask test`: every target for a few seconds,
/// from its seeds. Skipped, with a notice, without a nightly toolchain.
pub fn smoke() -> Result<()> {
    if !has_nightly() {
        println!(
            "xtask: no nightly toolchain (rustup toolchain list): skipping the fuzz smoke run"
        );
        return Ok(());
    }
    println!("xtask: fuzz smoke run, {SMOKE_SECS} s per target");
    let targets: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    run_targets(&targets, SMOKE_SECS)
}

fn names() -> String {
    TARGETS
        .iter()
        .map(|(t, _)| *t)
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_targets(targets: &[&str], secs: u64) -> Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz()?;
    build(&cargo_fuzz)?;
    let mut failed = Vec::new();
    let mut summaries = Vec::new();
    for target in targets {
        match run_one(&cargo_fuzz, target, secs)? {
            Outcome::Passed(summary) => summaries.push(format!("  {target:<8} {summary}")),
            Outcome::Failed(summary) => {
                summaries.push(format!("  {target:<8} FAILED {summary}"));
                failed.push(*target);
            }
        }
    }
    println!("xtask: fuzzing, {secs} s per target:");
    for line in &summaries {
        println!("{line}");
    }
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) failed: {} (crash inputs in {})",
            failed.join(", "),
            work_dir().join("artifacts").display()
        );
    }
    Ok(())
}

/// `target/fuzz`: builds, scratch corpora, crashes, logs.
fn work_dir() -> PathBuf {
    target_dir().join("fuzz")
}

fn fuzz_dir() -> PathBuf {
    project_root().join("fuzz")
}

/// True when rustup has a nightly toolchain.
fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        })
        .unwrap_or(false)
}

/// `target/tools/bin/cargo-fuzz`, installed when missing.
fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let tools = target_dir().join("tools");
    let bin = tools.join("bin").join("cargo-fuzz");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("xtask: installing cargo-fuzz into {}", tools.display());
    let status = Command::new(host_cargo())
        .args(["install", "cargo-fuzz", "--locked", "--root"])
        .arg(&tools)
        .status()
        .context("running cargo install")?;
    if !status.success() || !bin.exists() {
        bail!(
            "could not install cargo-fuzz; install it with: cargo install cargo-fuzz --locked --root {}",
            tools.display()
        );
    }
    Ok(bin)
}

/// `cargo +nightly fuzz SUBCOMMAND` with the installed cargo-fuzz first on
/// PATH, and none of the variables the outer (stable) cargo set for xtask.
fn cargo_fuzz_command(cargo_fuzz: &Path, subcommand: &str) -> Result<Command> {
    let tools_bin = cargo_fuzz
        .parent()
        .expect("cargo-fuzz is in a bin directory");
    let path = std::env::join_paths(std::iter::once(tools_bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo", "fuzz", subcommand])
        .current_dir(project_root())
        .env("PATH", path)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR");
    Ok(c)
}

/// The build options, the same for `build` and `run` so that `run` finds
/// the build done: release code with debug assertions and overflow checks
/// (an overflow is a finding), no sanitizer (the code under test is safe
/// Rust; AddressSanitizer would halve the executions for nothing).
fn build_options(c: &mut Command) {
    c.args(["--release", "--debug-assertions", "--sanitizer", "none"])
        .arg("--fuzz-dir")
        .arg(fuzz_dir())
        .arg("--target-dir")
        .arg(work_dir().join("build"));
}

fn build(cargo_fuzz: &Path) -> Result<()> {
    let mut c = cargo_fuzz_command(cargo_fuzz, "build")?;
    build_options(&mut c);
    let status = c.status().context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    Ok(())
}

enum Outcome {
    Passed(String),
    Failed(String),
}

fn run_one(cargo_fuzz: &Path, target: &str, secs: u64) -> Result<Outcome> {
    let scratch = work_dir().join("corpus").join(target);
    let artifacts = work_dir().join("artifacts").join(target);
    let logs = work_dir().join("logs");
    for dir in [&scratch, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seeds = fuzz_dir().join("corpus").join(target);
    let log_path = logs.join(format!("{target}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

    let mut c = cargo_fuzz_command(cargo_fuzz, "run")?;
    build_options(&mut c);
    // New inputs go to the first corpus directory: the scratch one.
    c.arg(target).arg(&scratch).arg(&seeds).arg("--");
    c.arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    let dict = fuzz_dir().join("dict").join(format!("{target}.dict"));
    if dict.exists() {
        c.arg(format!("-dict={}", dict.display()));
    }
    println!(
        "xtask: fuzzing {target} for {secs} s (log: {})",
        log_path.display()
    );
    let started = Instant::now();
    let status = c
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running cargo fuzz run")?;
    let elapsed = started.elapsed().as_secs_f64();
    // cargo-fuzz makes `fuzz/artifacts/<target>` for its own default prefix,
    // which the one above overrides: leave no empty directories behind.
    let unused = fuzz_dir().join("artifacts");
    let _ = std::fs::remove_dir(unused.join(target));
    let _ = std::fs::remove_dir(unused);
    let text = read_lines(&log_path)?;
    let summary = summarise(&text, elapsed);
    if status.success() {
        return Ok(Outcome::Passed(summary));
    }
    eprintln!(
        "xtask: fuzz target {target} failed ({status}); end of {}:",
        log_path.display()
    );
    let tail = text.len().saturating_sub(60);
    for line in &text[tail..] {
        eprintln!("    {line}");
    }
    Ok(Outcome::Failed(summary))
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(BufReader::new(file)
        .lines()
        .map(|l| l.unwrap_or_default())
        .collect())
}

/// "N runs, M exec/s, cov: C ft: F corp: K/S" from libFuzzer's output.
fn summarise(lines: &[String], elapsed: f64) -> String {
    let stat = |name: &str| {
        lines.iter().find_map(|l| {
            l.strip_prefix(&format!("stat::{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    let runs = stat("number_of_executed_units").unwrap_or_else(|| "?".into());
    let rate = stat("average_exec_per_sec").unwrap_or_else(|| "?".into());
    // The last status line, e.g. `#123456 DONE cov: 230 ft: 800 corp: 90/3Kb ...`.
    let coverage = lines
        .iter()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov:"))
        .and_then(|l| l.find("cov:").map(|i| l[i..].to_string()))
        .map(|s| {
            s.split(" lim:")
                .next()
                .unwrap_or_default()
                .split(" exec/s:")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    format!("{runs} runs, {rate} exec/s, {elapsed:.0} s wall; {coverage}")
}
