//! The figures: the printed table, the goals, and the JSON file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::load::PhaseResult;

/// How the run was set up.
pub struct Config {
    /// Store sizes, in the order run.
    pub sizes: Vec<u64>,
    /// Concurrent clients (connections).
    pub clients: usize,
    /// Measured duration of each phase.
    pub measure: Duration,
    /// Unmeasured warm-up before each phase.
    pub warmup: Duration,
    /// Prefilled sessions the clients use, per size.
    pub live: usize,
}

/// One store size's figures.
pub struct SizeResult {
    /// Sessions in the store.
    pub size: u64,
    /// Rows written by the prefill (sessions, index, counters).
    pub rows: u64,
    /// Wall time of the prefill.
    pub prefill: Duration,
    /// Of which generating and sorting the rows (the rest is SQLite).
    pub prefill_generate: Duration,
    /// The database file's size after the prefill.
    pub db_bytes: u64,
    /// From `host::start` to serving.
    pub host_start: Duration,
    /// Page views.
    pub get: PhaseResult,
    /// Form posts.
    pub post: PhaseResult,
}

/// The whole run.
pub struct Report {
    /// The setup.
    pub config: Config,
    /// Per store size, in the order run.
    pub sizes: Vec<SizeResult>,
    /// The floor component's page views.
    pub floor: PhaseResult,
    /// From the start of the process to the report.
    pub total: Duration,
    /// The machine's load averages when the run started, and when it
    /// ended: other work on a shared machine shows up here.
    pub load: [Option<String>; 2],
}

/// One of the goals, checked.
pub struct Goal {
    /// What is required.
    pub name: String,
    /// `None` when the run cannot tell (e.g. a single size).
    pub pass: Option<bool>,
    /// The figures behind the verdict.
    pub detail: String,
}

/// The goals' thresholds, from the issue on sessions at scale.
const SCALE_MIN: f64 = 0.9;
const FLOOR_MIN: f64 = 0.6;
const GET_WRITES_MAX: f64 = 0.05;
/// Means of kv operations per request closer than this count as "the same
/// kv ops": a rare sweep step or touch moves a mean by far less.
const SAME_OPS_TOLERANCE: f64 = 0.01;

/// What the req/s ratio `b / a` would be if both were bound by the host's
/// CPU alone: `a`'s CPU per request over `b`'s. Other work on a shared
/// machine moves req/s from one phase to the next far more than this.
fn cpu_ratio(a: &PhaseResult, b: &PhaseResult) -> Option<f64> {
    Some(a.host_cpu_us_per_request? / b.host_cpu_us_per_request?)
}

fn cpu_check(ratio: Option<f64>) -> String {
    ratio.map_or(String::new(), |r| format!(" (by host CPU: {r:.3})"))
}

/// `1k`, `100k`, `1M` for round sizes.
pub fn size_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

impl Report {
    fn smallest_largest(&self) -> Option<(&SizeResult, &SizeResult)> {
        let smallest = self.sizes.iter().min_by_key(|s| s.size)?;
        let largest = self.sizes.iter().max_by_key(|s| s.size)?;
        (smallest.size != largest.size).then_some((smallest, largest))
    }

    /// Errors of every phase.
    pub fn errors(&self) -> u64 {
        self.sizes
            .iter()
            .map(|s| s.get.errors + s.post.errors)
            .sum::<u64>()
            + self.floor.errors
    }

    /// Checks the goals.
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        match self.smallest_largest() {
            Some((small, large)) => {
                let ratio = large.get.requests_per_sec / small.get.requests_per_sec;
                let same_ops = (large.get.kv_reads_mean - small.get.kv_reads_mean).abs()
                    <= SAME_OPS_TOLERANCE
                    && (large.get.kv_writes_mean - small.get.kv_writes_mean).abs()
                        <= SAME_OPS_TOLERANCE;
                goals.push(Goal {
                    name: format!(
                        "{} GET req/s >= {SCALE_MIN} x {} GET req/s, same kv ops per request",
                        size_label(large.size),
                        size_label(small.size)
                    ),
                    pass: Some(ratio >= SCALE_MIN && same_ops),
                    detail: format!(
                        "ratio {ratio:.3}; kv r/w per request {:.3}/{:.3} vs {:.3}/{:.3}{}",
                        large.get.kv_reads_mean,
                        large.get.kv_writes_mean,
                        small.get.kv_reads_mean,
                        small.get.kv_writes_mean,
                        cpu_check(cpu_ratio(&small.get, &large.get))
                    ),
                });
            }
            None => goals.push(Goal {
                name: format!("largest GET req/s >= {SCALE_MIN} x smallest GET req/s"),
                pass: None,
                detail: "needs two sizes".into(),
            }),
        }
        let floor = self.floor.requests_per_sec;
        let ratios: Vec<(String, f64, Option<f64>)> = self
            .sizes
            .iter()
            .map(|s| {
                (
                    size_label(s.size),
                    s.get.requests_per_sec / floor,
                    cpu_ratio(&self.floor, &s.get),
                )
            })
            .collect();
        goals.push(Goal {
            name: format!("GET req/s >= {FLOOR_MIN} x floor req/s (every size)"),
            pass: Some(ratios.iter().all(|(_, r, _)| *r >= FLOOR_MIN)),
            detail: ratios
                .iter()
                .map(|(l, r, cpu)| format!("{l} {r:.3}{}", cpu_check(*cpu)))
                .collect::<Vec<_>>()
                .join(", "),
        });
        goals.push(Goal {
            name: format!("GET mean kv writes per request <= {GET_WRITES_MAX} (every size)"),
            pass: Some(
                self.sizes
                    .iter()
                    .all(|s| s.get.kv_writes_mean <= GET_WRITES_MAX),
            ),
            detail: self
                .sizes
                .iter()
                .map(|s| format!("{} {:.4}", size_label(s.size), s.get.kv_writes_mean))
                .collect::<Vec<_>>()
                .join(", "),
        });
        goals
    }

    /// Prints the table, the ratios and the goals.
    pub fn print(&self, goals: &[Goal]) {
        println!();
        println!(
            "{} clients, {} s warm-up + {} s measured per phase, {} live sessions per store",
            self.config.clients,
            self.config.warmup.as_secs_f64(),
            self.config.measure.as_secs_f64(),
            self.config.live
        );
        if let [Some(start), Some(end)] = &self.load {
            println!("machine load average (1, 5, 15 min): {start} at the start, {end} at the end");
        }
        println!();
        println!(
            "{:<8} {:<6} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>12} {:>9}",
            "store",
            "mix",
            "req/s",
            "p50 ms",
            "p99 ms",
            "kv r/req",
            "kv w/req",
            "requests",
            "errors",
            "host cpu/req",
            "load gen"
        );
        let row = |store: &str, p: &PhaseResult| {
            println!(
                "{:<8} {:<6} {:>9.0} {:>8.2} {:>8.2} {:>9.3} {:>9.4} {:>9} {:>6} {:>12} {:>9}",
                store,
                p.mix.name(),
                p.requests_per_sec,
                p.p50_ms,
                p.p99_ms,
                p.kv_reads_mean,
                p.kv_writes_mean,
                p.requests,
                p.errors,
                p.host_cpu_us_per_request
                    .map_or("-".into(), |us| format!("{us:.0} us")),
                p.client_cpu_cores
                    .map_or("-".into(), |c| format!("{c:.2} cpu")),
            );
        };
        for s in &self.sizes {
            let label = size_label(s.size);
            row(&label, &s.get);
            row(&label, &s.post);
        }
        row("floor", &self.floor);
        println!();
        println!("floor: {:.0} req/s", self.floor.requests_per_sec);
        for s in &self.sizes {
            println!(
                "GET req/s sessions/floor, {}: {:.3}",
                size_label(s.size),
                s.get.requests_per_sec / self.floor.requests_per_sec
            );
        }
        if let Some((small, large)) = self.smallest_largest() {
            println!(
                "{}/{} req/s: GET {:.3}, POST {:.3}",
                size_label(large.size),
                size_label(small.size),
                large.get.requests_per_sec / small.get.requests_per_sec,
                large.post.requests_per_sec / small.post.requests_per_sec
            );
        }
        // The same comparisons in host CPU per request, which other work on
        // a shared machine disturbs less than throughput.
        let cpu = |p: &PhaseResult| p.host_cpu_us_per_request;
        if let Some(floor) = cpu(&self.floor) {
            for s in &self.sizes {
                if let Some(get) = cpu(&s.get) {
                    println!(
                        "host CPU per GET, sessions/floor, {}: {:.3}",
                        size_label(s.size),
                        get / floor
                    );
                }
            }
        }
        if let Some((small, large)) = self.smallest_largest() {
            if let (Some(lg), Some(sg), Some(lp), Some(sp)) = (
                cpu(&large.get),
                cpu(&small.get),
                cpu(&large.post),
                cpu(&small.post),
            ) {
                println!(
                    "host CPU per request {}/{}: GET {:.3}, POST {:.3}",
                    size_label(large.size),
                    size_label(small.size),
                    lg / sg,
                    lp / sp
                );
            }
        }
        println!();
        for goal in goals {
            let verdict = match goal.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            println!("{verdict}  {}: {}", goal.name, goal.detail);
        }
        for (what, p) in self.phases() {
            if p.host_requests != p.requests {
                println!(
                    "note: {what}: the host recorded {} requests, the clients {}",
                    p.host_requests, p.requests
                );
            }
            if p.host_other_requests > 0 {
                println!(
                    "note: {what}: {} other requests were served during the phase",
                    p.host_other_requests
                );
            }
            for e in &p.error_examples {
                println!("error: {what}: {e}");
            }
        }
        println!();
        println!("total run time: {:.1} s", self.total.as_secs_f64());
    }

    fn phases(&self) -> Vec<(String, &PhaseResult)> {
        let mut phases = Vec::new();
        for s in &self.sizes {
            phases.push((format!("{} GET", size_label(s.size)), &s.get));
            phases.push((format!("{} POST", size_label(s.size)), &s.post));
        }
        phases.push(("floor".into(), &self.floor));
        phases
    }

    /// Every figure, as JSON.
    pub fn to_json(&self, goals: &[Goal], unix_time: u64) -> Value {
        let sizes: Vec<Value> = self
            .sizes
            .iter()
            .map(|s| {
                json!({
                    "size": s.size,
                    "label": size_label(s.size),
                    "prefill_rows": s.rows,
                    "prefill_secs": s.prefill.as_secs_f64(),
                    "prefill_generate_secs": s.prefill_generate.as_secs_f64(),
                    "db_bytes": s.db_bytes,
                    "host_start_secs": s.host_start.as_secs_f64(),
                    "get": phase_json(&s.get),
                    "post": phase_json(&s.post),
                    "get_vs_floor": s.get.requests_per_sec / self.floor.requests_per_sec,
                })
            })
            .collect();
        let scale = self.smallest_largest().map(|(small, large)| {
            json!({
                "smallest": small.size,
                "largest": large.size,
                "get": large.get.requests_per_sec / small.get.requests_per_sec,
                "post": large.post.requests_per_sec / small.post.requests_per_sec,
            })
        });
        json!({
            "unix_time": unix_time,
            "config": {
                "sizes": self.config.sizes,
                "clients": self.config.clients,
                "warmup_secs": self.config.warmup.as_secs_f64(),
                "measure_secs": self.config.measure.as_secs_f64(),
                "live_sessions": self.config.live,
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            },
            "sizes": sizes,
            "floor": phase_json(&self.floor),
            "largest_vs_smallest": scale,
            "goals": goals.iter().map(|g| json!({
                "goal": g.name,
                "pass": g.pass,
                "detail": g.detail,
            })).collect::<Vec<_>>(),
            "load_average": { "start": self.load[0], "end": self.load[1] },
            "errors": self.errors(),
            "total_secs": self.total.as_secs_f64(),
        })
    }
}

fn phase_json(p: &PhaseResult) -> Value {
    json!({
        "mix": p.mix.name(),
        "requests": p.requests,
        "errors": p.errors,
        "error_examples": p.error_examples,
        "elapsed_secs": p.elapsed.as_secs_f64(),
        "requests_per_sec": p.requests_per_sec,
        "latency_ms": { "p50": p.p50_ms, "p99": p.p99_ms, "mean": p.mean_ms },
        "host_requests": p.host_requests,
        "host_other_requests": p.host_other_requests,
        "host_mean_ms": p.host_mean_ms,
        "host_cpu_us_per_request": p.host_cpu_us_per_request,
        "host_cpu_cores": p.host_cpu_cores,
        "load_generator_cpu_cores": p.client_cpu_cores,
        "kv": {
            "reads_mean": p.kv_reads_mean,
            "writes_mean": p.kv_writes_mean,
            "reads_max": p.kv_reads_max,
            "writes_max": p.kv_writes_max,
            "requests_off_usual": p.requests_off_usual,
        },
    })
}

/// The 1, 5 and 15 minute load averages (Linux), e.g. `0.52 0.61 0.70`.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The workspace's target directory: `CARGO_TARGET_DIR` if set (relative
/// to the current directory, as cargo reads it), else `<workspace>/target`.
pub fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            std::path::absolute(&dir).unwrap_or(dir)
        }
        _ => workspace.join("target"),
    }
}

/// Writes `json` to `<target>/bench/results-<unix_time>.json` and
/// `<target>/bench/latest.json`; returns the two paths.
pub fn write_json(target: &Path, json: &Value, unix_time: u64) -> anyhow::Result<[PathBuf; 2]> {
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(json)? + "\n";
    let results = dir.join(format!("results-{unix_time}.json"));
    let latest = dir.join("latest.json");
    for path in [&results, &latest] {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok([results, latest])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels() {
        assert_eq!(size_label(1_000), "1k");
        assert_eq!(size_label(100_000), "100k");
        assert_eq!(size_label(1_000_000), "1M");
        assert_eq!(size_label(2_500), "2500");
        assert_eq!(size_label(12), "12");
    }
}
