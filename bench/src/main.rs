//! `cargo xtask bench [-- ARGS]`: the sessions component under load, in the
//! project's own host, at several store sizes, against the floor component.
//!
//! For each store size the state directory's SQLite store is prefilled
//! with that many sessions (and their expiry index), the host is started
//! on it in-process, and keep-alive clients drive two phases: page views
//! (`GET /2`) and form posts (`POST /2`), each on the clients' own live
//! sessions. The floor component (a handler that does nothing) is then
//! measured the same way. Figures are printed and written as JSON to
//! `target/bench/`.
//!
//! Besides requests/s and client-side latency, each phase records the
//! key-value operations the host counted per request and the host's CPU
//! time per request: on a shared machine other work moves requests/s from
//! one phase to the next, CPU per request much less.
//!
//! Flags: `--sizes 1000,100000,1000000`, `--clients 16`, `--secs 5`,
//! `--warmup 1`, `--live 1000`.

mod load;
mod prefill;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use host::{HostOptions, RunningHost};

use load::{Client, Mix, PhaseResult};
use prefill::LiveSession;
use report::{size_label, Config, Report, SizeResult};

/// The cap on sessions for every size: above the largest store, so that
/// nothing is evicted while measuring (the default cap is 100 000).
const MAX_SESSIONS: &str = "2000000";

const USAGE: &str = "usage: sessions-bench [--sizes N,N,...] [--clients C] [--secs S] \
                     [--warmup S] [--live L]
  --sizes    store sizes in sessions (default 1000,100000,1000000)
  --clients  concurrent keep-alive connections (default 16)
  --secs     measured seconds per phase (default 5)
  --warmup   unmeasured seconds before each phase (default 1)
  --live     prefilled sessions the clients use (default 1000)";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sessions-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let load_at_start = report::load_average();
    let Some(config) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let workspace = workspace_root();
    let sessions_manifest = workspace.join("spin.toml");
    let floor_manifest = workspace.join("components/floor/spin.toml");
    for wasm in ["spin_sessions.wasm", "floor.wasm"] {
        let path = workspace.join("target/wasm32-wasip2/release").join(wasm);
        if !path.exists() {
            bail!(
                "{} is missing: run `cargo xtask bench`, which builds it",
                path.display()
            );
        }
    }

    // The host gets a runtime of its own, sized as `spin-sessions-host up`
    // sizes it (one worker per core); the clients share one thread, so the
    // load generator takes as little CPU from the host as it can.
    let host_rt = tokio::runtime::Runtime::new()?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let mut sizes = Vec::new();
    for &size in &config.sizes {
        let label = size_label(size);
        let dir = TempDir::new(&label)?;
        progress(&label, format!("prefilling {size} sessions"));
        let filled = prefill::prefill(dir.path(), size, config.live)?;
        progress(
            &label,
            format!(
                "prefilled {} rows in {:.1} s (generating {:.1} s), {:.0} MB",
                filled.rows,
                filled.elapsed.as_secs_f64(),
                filled.generate.as_secs_f64(),
                filled.db_bytes as f64 / 1e6
            ),
        );
        let (host, host_start) = start_host(&host_rt, &sessions_manifest, dir.path())?;
        progress(
            &label,
            format!(
                "host serving on {} (started in {:.1} s)",
                host.addr(),
                host_start.as_secs_f64()
            ),
        );
        let phases = client_rt.block_on(async {
            let clients = connect(host.addr(), config.clients, &filled.live).await?;
            let (clients, get) = phase(&label, clients, &host, Mix::Get, &config).await;
            let (clients, post) = phase(&label, clients, &host, Mix::Post, &config).await;
            clients.into_iter().for_each(Client::close);
            anyhow::Ok((get, post))
        });
        host_rt.block_on(host.shutdown());
        let (get, post) = phases?;
        sizes.push(SizeResult {
            size,
            rows: filled.rows,
            prefill: filled.elapsed,
            prefill_generate: filled.generate,
            db_bytes: filled.db_bytes,
            host_start,
            get,
            post,
        });
        drop(dir);
    }

    // The floor does not touch the store: an empty state directory.
    let dir = TempDir::new("floor")?;
    let (host, host_start) = start_host(&host_rt, &floor_manifest, dir.path())?;
    progress(
        "floor",
        format!(
            "host serving on {} (started in {:.1} s)",
            host.addr(),
            host_start.as_secs_f64()
        ),
    );
    let floor = client_rt.block_on(async {
        // The floor ignores cookies; the sessions only say how many clients.
        let none = vec![LiveSession {
            cookie: String::new(),
            csrf_token: String::new(),
        }];
        let clients = connect(host.addr(), config.clients, &none).await?;
        let (clients, floor) = phase("floor", clients, &host, Mix::Floor, &config).await;
        clients.into_iter().for_each(Client::close);
        anyhow::Ok(floor)
    });
    host_rt.block_on(host.shutdown());
    let floor = floor?;
    drop(dir);

    let report = Report {
        config,
        sizes,
        floor,
        total: started.elapsed(),
        load: [load_at_start, report::load_average()],
    };
    let goals = report.goals();
    report.print(&goals);
    let unix_time = u64::try_from(prefill::unix_now()).unwrap_or(0);
    let json = report.to_json(&goals, unix_time);
    let [results, latest] = report::write_json(&report::target_dir(&workspace), &json, unix_time)?;
    println!("figures: {} (and {})", results.display(), latest.display());

    let errors = report.errors();
    if errors > 0 {
        eprintln!("sessions-bench: {errors} requests failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One phase, with its progress lines.
async fn phase(
    label: &str,
    clients: Vec<Client>,
    host: &RunningHost,
    mix: Mix,
    config: &Config,
) -> (Vec<Client>, PhaseResult) {
    progress(
        label,
        format!(
            "{}: {} s warm-up, {} s measured",
            mix.name(),
            config.warmup.as_secs_f64(),
            config.measure.as_secs_f64()
        ),
    );
    let (clients, result) =
        load::run_phase(clients, host, mix, config.warmup, config.measure).await;
    progress(
        label,
        format!(
            "{}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, kv r/w {:.3}/{:.4}, errors {}",
            mix.name(),
            result.requests_per_sec,
            result.p50_ms,
            result.p99_ms,
            result.kv_reads_mean,
            result.kv_writes_mean,
            result.errors
        ),
    );
    (clients, result)
}

fn progress(label: &str, line: String) {
    println!("[{label}] {line}");
}

/// Opens `count` clients; client `i` gets the live sessions `i`, `i +
/// count`, ... so no two clients share one.
async fn connect(
    addr: SocketAddr,
    count: usize,
    live: &[LiveSession],
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mine: Vec<LiveSession> = live
            .iter()
            .skip(i % live.len())
            .step_by(count)
            .cloned()
            .collect();
        clients.push(Client::connect(i, addr, mine).await?);
    }
    Ok(clients)
}

fn start_host(
    rt: &tokio::runtime::Runtime,
    manifest: &Path,
    state_dir: &Path,
) -> anyhow::Result<(RunningHost, Duration)> {
    let mut options = HostOptions::new(manifest);
    options.state_dir = Some(state_dir.to_path_buf());
    options.quiet = true;
    // Only the cap is set; every other variable keeps its default, whatever
    // the benchmark's own environment holds.
    options.variable_env = Some(vec![(
        "SPIN_VARIABLE_MAX_SESSIONS".to_owned(),
        MAX_SESSIONS.to_owned(),
    )]);
    let started = Instant::now();
    let host = rt
        .block_on(host::start(options))
        .with_context(|| format!("starting the host on {}", manifest.display()))?;
    Ok((host, started.elapsed()))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace")
        .to_path_buf()
}

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Option<Config>> {
    let mut config = Config {
        sizes: vec![1_000, 100_000, 1_000_000],
        clients: 16,
        measure: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        live: 1000,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?,
        };
        match flag.as_str() {
            "--sizes" => {
                config.sizes = value
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse::<u64>())
                    .collect::<Result<_, _>>()
                    .with_context(|| {
                        format!("--sizes {value}: expected numbers, comma-separated")
                    })?;
                if config.sizes.is_empty() || config.sizes.contains(&0) {
                    bail!("--sizes {value}: sizes must be at least 1");
                }
            }
            "--clients" => config.clients = positive(&flag, &value)?,
            "--secs" => config.measure = Duration::from_secs_f64(seconds(&flag, &value)?),
            "--warmup" => config.warmup = Duration::from_secs_f64(seconds(&flag, &value)?),
            "--live" => config.live = positive(&flag, &value)?,
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    if config.measure.is_zero() {
        bail!("--secs must be more than 0");
    }
    Ok(Some(config))
}

fn positive(flag: &str, value: &str) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} {value}: expected a whole number above 0"),
    }
}

fn seconds(flag: &str, value: &str) -> anyhow::Result<f64> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => bail!("{flag} {value}: expected seconds"),
    }
}

/// A fresh state directory, removed when dropped (a 1M store is hundreds
/// of megabytes).
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("sessions-bench-{}-{label}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Config>> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn flags() {
        let c = parse(&["--sizes", "1000,1_000_000", "--clients=4", "--secs", "2.5"])
            .unwrap()
            .unwrap();
        assert_eq!(c.sizes, [1_000, 1_000_000]);
        assert_eq!(c.clients, 4);
        assert_eq!(c.measure, Duration::from_millis(2500));
        let d = parse(&[]).unwrap().unwrap();
        assert_eq!(d.sizes, [1_000, 100_000, 1_000_000]);
        assert_eq!(
            (d.clients, d.measure, d.live),
            (16, Duration::from_secs(5), 1000)
        );
        assert!(parse(&["--help"]).unwrap().is_none());
        for bad in [
            &["--sizes", "0"][..],
            &["--clients", "0"],
            &["--secs"],
            &["--nope", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
