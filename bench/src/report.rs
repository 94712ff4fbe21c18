//! The figures: the printed table, the goals (checked on the
//! SQLite store, Spin's default), the same checks on Redis for comparison,
//! the WASI 0.3 part's figures and goals (on both backends), the keep-alive
//! measurement, and the JSON file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::load::{Mix, PhaseResult, Timed};

/// How the run was set up.
pub struct Config {
    /// SQLite store sizes, in the order run.
    pub sizes: Vec<u64>,
    /// Redis store sizes, in the order run (none: no Redis phases).
    pub redis_sizes: Vec<u64>,
    /// Concurrent clients (connections).
    pub clients: usize,
    /// Measured duration of each phase.
    pub measure: Duration,
    /// Unmeasured warm-up before each phase.
    pub warmup: Duration,
    /// Prefilled sessions the clients use, per size.
    pub live: usize,
    /// Whether the clients' sockets set `TCP_NODELAY`.
    pub nodelay: bool,
    /// The backends of the WASI 0.3 part, in the order run (none: not run).
    pub p3: Vec<Backend>,
    /// Requests on each component's one keep-alive connection.
    pub keep_alive: usize,
}

/// The key-value backend of the default store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Spin's SQLite store in the state directory.
    Sqlite,
    /// Spin's Redis store on a `redis-server` of the benchmark's own.
    Redis,
}

impl Backend {
    /// Its name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Redis => "redis",
        }
    }
}

/// One store size's figures.
pub struct SizeResult {
    /// Where the sessions were.
    pub backend: Backend,
    /// Sessions in the store.
    pub size: u64,
    /// Keys written by the prefill (sessions, index, counters).
    pub rows: u64,
    /// Wall time of the prefill.
    pub prefill: Duration,
    /// Of which creating the sessions in memory (the rest is the store).
    pub prefill_generate: Duration,
    /// The store's size after the prefill: the SQLite file, or Redis's
    /// `used_memory`.
    pub store_bytes: u64,
    /// From `host::start` to serving.
    pub host_start: Duration,
    /// Page views.
    pub get: PhaseResult,
    /// Form posts.
    pub post: PhaseResult,
    /// Page views without a cookie (nothing stored).
    pub anonymous: PhaseResult,
    /// First form posts of visitors with pending identifiers (creations).
    pub first_post: PhaseResult,
    /// Page views of one keep-alive client alone: the latency one browser
    /// sees.
    pub get_alone: PhaseResult,
    /// Form posts of one keep-alive client alone.
    pub post_alone: PhaseResult,
    /// The floor component's page views, measured right after `get` with
    /// as many clients: the ratio of the two is taken over a few seconds,
    /// so that other work on a shared machine moves both alike.
    pub floor: PhaseResult,
    /// GET req/s over the floor's in alternating one-second phases, pair
    /// by pair: the goal's figure is their median.
    pub floor_pairs: Vec<f64>,
    /// Over the same floor in the same pairs: a component that makes one
    /// key-value read and nothing else (the most a session GET can reach).
    pub one_read_pairs: Vec<f64>,
    /// Page views on one new keep-alive connection, Nagle on.
    pub keep_alive: KeepAlive,
}

/// A response that reached the client this much later than the host
/// finished it waited for the client's delayed ACK (~40 ms on Linux); a
/// served request takes well under 5 ms on the wire.
pub const STALL_MS: u64 = 30;

/// Requests sent one after the other on one new keep-alive connection
/// without `TCP_NODELAY`, as one browser sends them.
#[derive(Clone, Debug)]
pub struct KeepAlive {
    /// What was sent.
    pub mix: Mix,
    /// Requests answered (the sequence stops at the first error).
    pub requests: usize,
    /// Median latency, as the client saw it.
    pub median_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// Median time in the host (receiving the request to the guest
    /// finishing its body), if the host's records matched the requests.
    pub host_median_ms: Option<f64>,
    /// Requests that reached the client more than [`STALL_MS`] after the
    /// host finished them (without the host's records: slower than
    /// [`STALL_MS`]).
    pub stalled: usize,
    /// Requests slower than [`STALL_MS`], whatever the reason.
    pub over_stall_ms: usize,
    /// Every latency, in order, and the host's time for it.
    pub latencies_ms: Vec<(f64, Option<f64>)>,
    /// What went wrong, if anything.
    pub errors: Vec<String>,
}

impl KeepAlive {
    /// The figures of `timed`, in the order sent.
    pub fn new(mix: Mix, timed: &[Timed], errors: Vec<String>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        let latencies_ms: Vec<(f64, Option<f64>)> = timed
            .iter()
            .map(|t| (ms(t.client_ns), t.host_ns.map(ms)))
            .collect();
        let client: Vec<f64> = latencies_ms.iter().map(|(c, _)| *c).collect();
        let host: Option<Vec<f64>> = latencies_ms.iter().map(|(_, h)| *h).collect();
        let stall = STALL_MS as f64;
        let over_stall_ms = client.iter().filter(|&&c| c > stall).count();
        let stalled = match &host {
            Some(host) if !host.is_empty() => latencies_ms
                .iter()
                .zip(host)
                .filter(|((c, _), h)| c - *h > stall)
                .count(),
            _ => over_stall_ms,
        };
        KeepAlive {
            mix,
            requests: latencies_ms.len(),
            median_ms: lower_median(&client).unwrap_or(0.0),
            max_ms: client.iter().copied().fold(0.0, f64::max),
            host_median_ms: host.as_deref().and_then(lower_median),
            stalled,
            over_stall_ms,
            latencies_ms,
            errors,
        }
    }
}

/// The lower middle value of an even count.
fn lower_median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

/// The WASI 0.3 part's alternating pairs, pair by pair.
#[derive(Clone, Debug, Default)]
pub struct P3Pairs {
    /// req/s of the sign-in GET, the sign-in 404, the p3 floor and
    /// p3-one-read.
    pub requests_per_sec: Vec<[f64; 4]>,
    /// The sign-in example's GET req/s over p3-one-read's.
    pub signin_vs_one_read: Vec<f64>,
    /// The sign-in example's 404 (a live session loaded, nothing written)
    /// over p3-one-read's.
    pub not_found_vs_one_read: Vec<f64>,
    /// The sign-in example's GET req/s over the p3 floor's.
    pub signin_vs_floor: Vec<f64>,
    /// p3-one-read's req/s over the p3 floor's.
    pub one_read_vs_floor: Vec<f64>,
}

/// Variable gets of the sign-in example's first requests (the sign-ins
/// before the phases, whose instances read the settings when they start).
#[derive(Clone, Debug, Default)]
pub struct SetupVariables {
    /// Requests served.
    pub requests: u64,
    /// The gets of each instance's first request.
    pub first_requests: Vec<u64>,
    /// The gets of all the other requests.
    pub later: u64,
}

/// The WASI 0.3 part on one backend.
pub struct P3Result {
    /// Where the sessions (and p3-one-read's key) were.
    pub backend: Backend,
    /// Signed-in sessions the clients used.
    pub sessions: usize,
    /// Variable gets while the visitors signed in, the host's first
    /// requests.
    pub setup_variables: SetupVariables,
    /// The sign-in example's home page of signed-in visitors.
    pub signin_get: PhaseResult,
    /// Signed-in visitors' requests of a page that is not there: the
    /// session loaded, nothing written.
    pub signin_not_found: PhaseResult,
    /// Signing in again (each followed by the GET its redirect leads to).
    pub signin_post: PhaseResult,
    /// The p3 floor, right after.
    pub floor: PhaseResult,
    /// p3-one-read, right after.
    pub one_read: PhaseResult,
    /// The home page, one client alone.
    pub signin_get_alone: PhaseResult,
    /// Signing in again, one client alone.
    pub signin_post_alone: PhaseResult,
    /// p3-one-read, one client alone.
    pub one_read_alone: PhaseResult,
    /// The alternating pairs, the clients as in the long phases (delayed
    /// ACKs, as a browser's).
    pub pairs: P3Pairs,
    /// The same with clients that acknowledge at once: no stalls.
    pub pairs_quick_ack: P3Pairs,
    /// One keep-alive connection per component and response shape.
    pub keep_alive: Vec<KeepAlive>,
}

/// The whole run.
pub struct Report {
    /// The setup.
    pub config: Config,
    /// Per SQLite store size, in the order run.
    pub sizes: Vec<SizeResult>,
    /// Per Redis store size, in the order run.
    pub redis: Vec<SizeResult>,
    /// The WASI 0.3 part, per backend.
    pub p3: Vec<P3Result>,
    /// From the start of the process to the report.
    pub total: Duration,
    /// The machine's load averages when the run started, and when it
    /// ended: other work on a shared machine shows up here.
    pub load: [Option<String>; 2],
    /// The size in bytes of the tutorial component the run served, as
    /// `cargo xtask build` (spin.toml's build command) left it.
    pub component_bytes: u64,
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
/// The tutorial's GET against the one-read fixture (the most a component
/// that reads its session can reach), from the issue on cost per request.
const ONE_READ_MIN: f64 = 0.85;
/// The sign-in example's GET against p3-one-read, from the same issue.
const P3_ONE_READ_MIN: f64 = 0.9;
/// The tutorial component's largest size, from the library's issue.
const COMPONENT_MAX_BYTES: u64 = 300_000;
const GET_WRITES_MAX: f64 = 0.05;
/// Means of kv operations per request closer than this count as "the same
/// kv ops": a rare sweep step or touch moves a mean by far less.
const SAME_OPS_TOLERANCE: f64 = 0.01;

/// The middle value (the upper one of an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// CPU time per request of the host and of the store's own server, if it
/// has one: what serving a request costs the machine.
fn cpu_per_request(p: &PhaseResult) -> Option<f64> {
    Some(p.host_cpu_us_per_request? + p.store_cpu_us_per_request.unwrap_or(0.0))
}

/// What the req/s ratio `b / a` would be if both were bound by CPU alone:
/// `a`'s CPU per request over `b`'s. Other work on a shared machine moves
/// req/s from one phase to the next far more than this.
fn cpu_ratio(a: &PhaseResult, b: &PhaseResult) -> Option<f64> {
    Some(cpu_per_request(a)? / cpu_per_request(b)?)
}

fn cpu_check(ratio: Option<f64>) -> String {
    ratio.map_or(String::new(), |r| format!(" (by CPU: {r:.3})"))
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

/// The smallest and the largest size, if they differ.
fn smallest_largest(sizes: &[SizeResult]) -> Option<(&SizeResult, &SizeResult)> {
    let smallest = sizes.iter().min_by_key(|s| s.size)?;
    let largest = sizes.iter().max_by_key(|s| s.size)?;
    (smallest.size != largest.size).then_some((smallest, largest))
}

/// The three checks on `sizes`, each against the floor measured
/// beside it.
fn checks(sizes: &[SizeResult]) -> Vec<Goal> {
    let mut goals = vec![scale_check(sizes)];
    if sizes.is_empty() {
        return goals;
    }
    goals.push(floor_check(sizes));
    goals.push(one_read_check(sizes));
    goals.push(writes_check(sizes));
    goals.push(admission_check(sizes));
    goals
}

/// The shipped tutorial component is at most 300 KB (the library's issue).
fn component_size_check(bytes: u64) -> Goal {
    Goal {
        name: format!("the tutorial component is at most {COMPONENT_MAX_BYTES} bytes"),
        pass: Some(bytes <= COMPONENT_MAX_BYTES),
        detail: format!("{bytes} bytes"),
    }
}

/// What admission control costs (the library's issue): an anonymous page
/// view writes nothing, a GET of a live session still reads once and writes
/// nothing, and a creation writes at most one more than the three of a
/// creation without a quota (the count, an index slot, one batch).
fn admission_check(sizes: &[SizeResult]) -> Goal {
    let anonymous_writes = sizes
        .iter()
        .map(|s| s.anonymous.kv_writes_max)
        .max()
        .unwrap_or(0);
    let get_ops: Vec<String> = sizes.iter().map(|s| kv_ops(&s.get)).collect();
    let get_free = sizes
        .iter()
        .all(|s| s.get.kv_reads_mean <= 1.0 + SAME_OPS_TOLERANCE && s.get.kv_writes_max == 0);
    // A creation's own writes, as the most common count (a few also pay
    // for a sweep step).
    let creation_writes = sizes
        .iter()
        .filter_map(|s| s.first_post.usual_kv.map(|(_, w, _)| w))
        .max()
        .unwrap_or(u64::MAX);
    Goal {
        name: "anonymous GET writes 0; live GET 1 read 0 writes; a creation <= 3 + 1 writes".into(),
        pass: Some(anonymous_writes == 0 && get_free && creation_writes <= 4),
        detail: format!(
            "anonymous GET writes at most {anonymous_writes}; GET kv ops {}; \
             first POST usual writes {creation_writes}",
            get_ops.join(", ")
        ),
    }
}

/// Largest GET req/s against smallest, with the same kv ops per request.
///
/// Each size's GET is taken relative to the floor measured beside it (the
/// median of its alternating pairs): the sizes' GET phases run minutes
/// apart, and on a shared machine their raw req/s drift by a fifth with
/// the machine, where the store's size moves both sides of a pair alike
/// only through the GET. The raw ratio is printed beside it.
fn scale_check(sizes: &[SizeResult]) -> Goal {
    let Some((small, large)) = smallest_largest(sizes) else {
        return Goal {
            name: format!("largest GET req/s >= {SCALE_MIN} x smallest GET req/s"),
            pass: None,
            detail: "needs two sizes".into(),
        };
    };
    let ratio = large.get_vs_floor_paired() / small.get_vs_floor_paired();
    let raw_ratio = large.get.requests_per_sec / small.get.requests_per_sec;
    let same = |a: f64, b: f64| (a - b).abs() <= SAME_OPS_TOLERANCE;
    let same_ops = same(large.get.kv_reads_mean, small.get.kv_reads_mean)
        && same(large.get.kv_writes_mean, small.get.kv_writes_mean)
        && same(large.get.kv_connections_mean, small.get.kv_connections_mean);
    Goal {
        name: format!(
            "{} GET req/s >= {SCALE_MIN} x {} GET req/s, each against the floor beside it, \
             same kv ops per request",
            size_label(large.size),
            size_label(small.size)
        ),
        pass: Some(ratio >= SCALE_MIN && same_ops),
        detail: format!(
            "ratio {ratio:.3} (long phases, without the floor: {raw_ratio:.3}); \
             kv r/w/conn per request {} vs {}{}",
            kv_ops(&large.get),
            kv_ops(&small.get),
            cpu_check(cpu_ratio(&small.get, &large.get))
        ),
    }
}

fn kv_ops(p: &PhaseResult) -> String {
    format!(
        "{:.3}/{:.3}/{:.3}",
        p.kv_reads_mean, p.kv_writes_mean, p.kv_connections_mean
    )
}

/// GET req/s of every size against the floor's: the median of the
/// alternating pairs.
fn floor_check(sizes: &[SizeResult]) -> Goal {
    let ratios: Vec<(String, f64, Option<f64>)> = sizes
        .iter()
        .map(|s| {
            (
                size_label(s.size),
                s.get_vs_floor_paired(),
                cpu_ratio(&s.floor, &s.get),
            )
        })
        .collect();
    Goal {
        name: format!(
            "GET req/s >= {FLOOR_MIN} x floor req/s (every size; median of alternating pairs)"
        ),
        pass: Some(ratios.iter().all(|(_, r, _)| *r >= FLOOR_MIN)),
        detail: ratios
            .iter()
            .map(|(l, r, cpu)| format!("{l} {r:.3}{}", cpu_check(*cpu)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// GET req/s of every size against the one-read fixture's: the median of
/// the alternating pairs.
fn one_read_check(sizes: &[SizeResult]) -> Goal {
    let ratios: Vec<(String, Option<f64>)> = sizes
        .iter()
        .map(|s| (size_label(s.size), s.get_vs_one_read_paired()))
        .collect();
    Goal {
        name: format!(
            "GET req/s >= {ONE_READ_MIN} x the one-read fixture's (every size; median of \
             alternating pairs)"
        ),
        pass: ratios
            .iter()
            .map(|(_, r)| r.map(|r| r >= ONE_READ_MIN))
            .collect::<Option<Vec<bool>>>()
            .map(|passes| passes.iter().all(|&p| p)),
        detail: ratios
            .iter()
            .map(|(l, r)| match r {
                Some(r) => format!("{l} {r:.3}"),
                None => format!("{l} no pairs"),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The WASI 0.3 part's goals on one backend: a GET that loads a live
/// session and writes nothing (the sign-in example's 404 of a signed-in
/// visitor) makes at most one key-value read, and its req/s is at least 0.9
/// of p3-one-read's; no request reads a variable after its instance's first
/// (the settings are the instance's for 10 s). The home page counts every
/// view with `Session::update`, a write per view: printed for comparison
/// ([`Report::print_counting_page`]), not a goal of a read.
fn p3_checks(r: &P3Result) -> Vec<Goal> {
    let backend = r.backend.name();
    let live = &r.signin_not_found;
    let reads = Goal {
        name: format!(
            "{backend}: a live session's read-only GET (sign-in 404) makes <= 1 key-value read"
        ),
        pass: Some(
            live.usual_kv
                .is_some_and(|(reads, writes, _)| reads <= 1 && writes == 0),
        ),
        detail: format!(
            "usual per request (r/w/conn) {}; mean {} (a request beside others on its \
             instance is charged their reads too)",
            live.usual_kv
                .map_or("-".into(), |(rd, w, c)| format!("{rd}/{w}/{c}")),
            kv_ops(live),
        ),
    };
    let get = &r.signin_get;
    let alone = &r.signin_get_alone;
    let setup = &r.setup_variables;
    let variables = Goal {
        name: format!(
            "{backend}: sign-in GET reads no variable after its instance's first request"
        ),
        pass: Some(
            alone.var_reads_later == 0 && get.var_reads_later_alone == 0 && setup.later == 0,
        ),
        detail: format!(
            "sign-ins before the phases: {} requests, their instances' first read {:?}, the \
             others {}; one client: {} later requests read {} (the first of its {} instances: {}); \
             under load: {} later requests accepted alone read {}, all {} later ones {} \
             (a request beside others is charged their reads too; the {} instances' \
             first: {})",
            setup.requests,
            setup.first_requests,
            setup.later,
            alone.later_requests,
            alone.var_reads_later,
            alone.instances,
            alone.var_reads_first,
            get.later_alone_requests,
            get.var_reads_later_alone,
            get.later_requests,
            get.var_reads_later,
            get.instances,
            get.var_reads_first
        ),
    };
    let speed = |pairs: &P3Pairs, how: &str| {
        let ratio = median(&pairs.not_found_vs_one_read);
        Goal {
            name: format!(
                "{backend}: read-only GET of a live session req/s >= {P3_ONE_READ_MIN} x \
                 p3-one-read req/s (median of alternating pairs, {how})"
            ),
            pass: ratio.map(|m| m >= P3_ONE_READ_MIN),
            detail: format!(
                "median {}; pairs {}; long phases {:.3}",
                ratio.map_or("-".into(), |m| format!("{m:.3}")),
                list(&pairs.not_found_vs_one_read),
                live.requests_per_sec / r.one_read.requests_per_sec
            ),
        }
    };
    vec![
        reads,
        variables,
        speed(
            &r.pairs_quick_ack,
            "clients acknowledging at once: no stalls",
        ),
        speed(&r.pairs, "delayed ACKs as a browser's: stalls included"),
    ]
}

/// Ratios as the progress lines and goals print them: three decimals,
/// space-separated.
pub fn list(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Mean writes per GET of every size.
fn writes_check(sizes: &[SizeResult]) -> Goal {
    Goal {
        name: format!("GET mean kv writes per request <= {GET_WRITES_MAX} (every size)"),
        pass: Some(sizes.iter().all(|s| s.get.kv_writes_mean <= GET_WRITES_MAX)),
        detail: sizes
            .iter()
            .map(|s| format!("{} {:.4}", size_label(s.size), s.get.kv_writes_mean))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a ",
    }
}

fn opt_us(us: Option<f64>) -> String {
    us.map_or("-".into(), |us| format!("{us:.0} us"))
}

const TABLE_HEAD: [&str; 13] = [
    "store",
    "mix",
    "req/s",
    "p50 ms",
    "p99 ms",
    "kv r/req",
    "kv w/req",
    "kv c/req",
    "requests",
    "errors",
    "host cpu/req",
    "redis cpu/req",
    "load gen",
];

fn print_table_head() {
    let h = TABLE_HEAD;
    println!(
        "{:<12} {:<6} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>6} {:>12} {:>13} {:>8}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12]
    );
}

fn print_row(store: &str, p: &PhaseResult) {
    println!(
        "{:<12} {:<6} {:>8.0} {:>7.2} {:>7.2} {:>8.3} {:>8.4} {:>8.3} {:>8} {:>6} {:>12} {:>13} {:>8}",
        store,
        p.mix.name(),
        p.requests_per_sec,
        p.p50_ms,
        p.p99_ms,
        p.kv_reads_mean,
        p.kv_writes_mean,
        p.kv_connections_mean,
        p.requests,
        p.errors,
        opt_us(p.host_cpu_us_per_request),
        opt_us(p.store_cpu_us_per_request),
        p.client_cpu_cores
            .map_or("-".into(), |c| format!("{c:.2} cpu")),
    );
}

impl SizeResult {
    /// GET req/s against the floor's, measured beside it.
    pub fn get_vs_floor(&self) -> f64 {
        self.get.requests_per_sec / self.floor.requests_per_sec
    }

    /// The median of the alternating pairs' GET/floor ratios (the long
    /// phases' ratio when there are no pairs).
    pub fn get_vs_floor_paired(&self) -> f64 {
        median(&self.floor_pairs).unwrap_or_else(|| self.get_vs_floor())
    }

    /// The median of the alternating pairs' GET/one-read ratios (both
    /// measured against the floor in the same pair).
    pub fn get_vs_one_read_paired(&self) -> Option<f64> {
        let ratios: Vec<f64> = self
            .floor_pairs
            .iter()
            .zip(&self.one_read_pairs)
            .map(|(get, one_read)| get / one_read)
            .collect();
        median(&ratios)
    }

    /// Every phase, with its label.
    fn phases(&self) -> Vec<(String, &PhaseResult)> {
        let label = format!("{} {}", self.backend.name(), size_label(self.size));
        vec![
            (format!("{label} GET"), &self.get),
            (format!("{label} floor beside it"), &self.floor),
            (format!("{label} POST"), &self.post),
            (format!("{label} anonymous GET"), &self.anonymous),
            (format!("{label} first POST"), &self.first_post),
            (format!("{label} GET, one client"), &self.get_alone),
            (format!("{label} POST, one client"), &self.post_alone),
        ]
    }
}

impl Report {
    /// Errors of every phase, and of the keep-alive sequences.
    pub fn errors(&self) -> u64 {
        let phases: u64 = self.phases().iter().map(|(_, p)| p.errors).sum();
        let sequences = self
            .keep_alives()
            .iter()
            .map(|(_, k)| k.errors.len() as u64)
            .sum::<u64>();
        phases + sequences
    }

    /// Checks the issues' goals: the component's size, the rest of the
    /// tutorial's on the SQLite figures, and the WASI 0.3 part's on each
    /// backend.
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = vec![component_size_check(self.component_bytes)];
        goals.extend(checks(&self.sizes));
        goals.extend(self.p3.iter().flat_map(p3_checks));
        goals
    }

    /// Every keep-alive sequence, with the store it ran on.
    fn keep_alives(&self) -> Vec<(String, &KeepAlive)> {
        let tutorial = self.sizes.iter().chain(&self.redis).map(|s| {
            (
                format!("{} {}", s.backend.name(), size_label(s.size)),
                &s.keep_alive,
            )
        });
        let p3 = self.p3.iter().flat_map(|r| {
            r.keep_alive
                .iter()
                .map(|k| (r.backend.name().to_owned(), k))
        });
        tutorial.chain(p3).collect()
    }

    /// The same checks on the Redis figures: for comparison, not goals.
    fn redis_checks(&self) -> Vec<Goal> {
        if self.redis.is_empty() {
            return Vec::new();
        }
        checks(&self.redis)
    }

    /// Prints the table, the ratios and the goals.
    pub fn print(&self, goals: &[Goal]) {
        self.print_setup();
        if !(self.sizes.is_empty() && self.redis.is_empty()) {
            print_table_head();
            for s in self.sizes.iter().chain(&self.redis) {
                let label = format!("{} {}", s.backend.name(), size_label(s.size));
                print_row(&label, &s.get);
                print_row("  floor", &s.floor);
                print_row(&label, &s.post);
                print_row(&label, &s.anonymous);
                print_row(&label, &s.first_post);
            }
            println!("one keep-alive client alone (the latency one browser sees):");
            for s in self.sizes.iter().chain(&self.redis) {
                let label = format!("{} {}", s.backend.name(), size_label(s.size));
                print_row(&label, &s.get_alone);
                print_row(&label, &s.post_alone);
            }
        }
        self.print_p3();
        self.print_keep_alive();
        println!();
        self.print_ratios();
        println!();
        for goal in goals {
            println!("{}  {}: {}", verdict(goal.pass), goal.name, goal.detail);
        }
        self.print_counting_page();
        let redis = self.redis_checks();
        if !redis.is_empty() {
            println!("Redis, the same checks (for comparison, not goals):");
            for check in &redis {
                println!(
                    "  would {}  {}: {}",
                    verdict(check.pass),
                    check.name,
                    check.detail
                );
            }
        }
        self.print_notes();
        println!();
        println!("total run time: {:.1} s", self.total.as_secs_f64());
    }

    /// The WASI 0.3 part's phases, with variable reads and instances.
    fn print_p3(&self) {
        if self.p3.is_empty() {
            return;
        }
        println!(
            "WASI 0.3 (spin-sdk 7, instances reused with Spin's defaults); signin POST: \
             POST /signin, each followed by the GET / of its redirect (not counted):"
        );
        println!(
            "{:<7} {:<22} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>12}",
            "store",
            "phase",
            "req/s",
            "p50 ms",
            "p99 ms",
            "kv r/req",
            "kv w/req",
            "kv c/req",
            "var/req",
            "instances",
            "requests",
            "errors",
            "host cpu/req"
        );
        for r in &self.p3 {
            for (name, p) in crate::p3::phases(r) {
                println!(
                    "{:<7} {:<22} {:>8.0} {:>7.2} {:>7.2} {:>8.3} {:>8.4} {:>8.3} {:>8.3} {:>9} \
                     {:>8} {:>6} {:>12}",
                    r.backend.name(),
                    name,
                    p.requests_per_sec,
                    p.p50_ms,
                    p.p99_ms,
                    p.kv_reads_mean,
                    p.kv_writes_mean,
                    p.kv_connections_mean,
                    p.var_reads_mean,
                    p.instances,
                    p.requests,
                    p.errors,
                    opt_us(p.host_cpu_us_per_request),
                );
            }
        }
        for r in &self.p3 {
            let m = |v: &[f64]| median(v).map_or("-".into(), |m| format!("{m:.3}"));
            for (pairs, how) in [
                (&r.pairs, "delayed ACKs"),
                (&r.pairs_quick_ack, "quick ACKs"),
            ] {
                let rates = |i: usize| {
                    let v: Vec<f64> = pairs.requests_per_sec.iter().map(|r| r[i]).collect();
                    median(&v).map_or("-".into(), |m| format!("{m:.0}"))
                };
                println!(
                    "{} alternating pairs ({how}), medians: over p3-one-read sign-in GET {}, \
                     sign-in 404 {}; sign-in GET/p3 floor {}, p3-one-read/p3 floor {} (req/s: \
                     sign-in GET {}, 404 {}, p3 floor {}, p3-one-read {})",
                    r.backend.name(),
                    m(&pairs.signin_vs_one_read),
                    m(&pairs.not_found_vs_one_read),
                    m(&pairs.signin_vs_floor),
                    m(&pairs.one_read_vs_floor),
                    rates(0),
                    rates(1),
                    rates(2),
                    rates(3)
                );
            }
        }
    }

    /// The sign-in home page beside the goals: it counts every view with
    /// `Session::update` (a read-modify-write, so concurrent views all
    /// count), which makes each view a compare-and-swap write (on SQLite a
    /// synced transaction; on Redis Spin's swap also answers failure and
    /// the library reads back).
    fn print_counting_page(&self) {
        for r in &self.p3 {
            let p = &r.signin_get;
            println!(
                "{}: sign-in home page of a signed-in visitor (counts the view: a write each \
                 time; for comparison, not a goal of a read): kv r/w/conn per request {}, over \
                 p3-one-read (quick ACKs) median {}",
                r.backend.name(),
                kv_ops(p),
                median(&r.pairs_quick_ack.signin_vs_one_read)
                    .map_or("-".into(), |m| format!("{m:.3}"))
            );
        }
    }

    /// Each component on one keep-alive connection.
    fn print_keep_alive(&self) {
        println!(
            "one client, one new keep-alive connection, Nagle on ({} requests each; stalled: \
             reached the client over {STALL_MS} ms after the host finished it, waiting for the \
             client's delayed ACK):",
            self.config.keep_alive
        );
        println!(
            "{:<9} {:<26} {:>8} {:>9} {:>12} {:>8} {:>11} {:>8}",
            "store",
            "component",
            "requests",
            "median ms",
            "host med ms",
            "max ms",
            format!("over {STALL_MS} ms"),
            "stalled"
        );
        for (store, k) in self.keep_alives() {
            println!(
                "{:<9} {:<26} {:>8} {:>9.2} {:>12} {:>8.1} {:>11} {:>8}",
                store,
                keep_alive_name(k.mix),
                k.requests,
                k.median_ms,
                k.host_median_ms.map_or("-".into(), |m| format!("{m:.2}")),
                k.max_ms,
                k.over_stall_ms,
                k.stalled
            );
        }
    }

    fn print_setup(&self) {
        println!();
        println!(
            "{} clients ({}), {} s warm-up + {} s measured per phase, {} live sessions per store",
            self.config.clients,
            if self.config.nodelay {
                "TCP_NODELAY"
            } else {
                "Nagle on, one write per request"
            },
            self.config.warmup.as_secs_f64(),
            self.config.measure.as_secs_f64(),
            self.config.live
        );
        if self.config.redis_sizes.is_empty() {
            println!("Redis: not measured (--redis-sizes none)");
        }
        if let [Some(start), Some(end)] = &self.load {
            println!("machine load average (1, 5, 15 min): {start} at the start, {end} at the end");
        }
        println!();
    }

    /// Each backend's GET against the floor and largest against smallest,
    /// in req/s and in CPU per request.
    fn print_ratios(&self) {
        for sizes in [&self.sizes, &self.redis] {
            for s in sizes.iter() {
                let name = format!("{} {}", s.backend.name(), size_label(s.size));
                let cpu = cpu_ratio(&s.get, &s.floor)
                    .map_or(String::new(), |r| format!(", CPU per GET {r:.3}"));
                println!(
                    "{name} sessions/floor beside it: GET req/s {:.3}{cpu}; \
                     alternating pairs: median {:.3}",
                    s.get_vs_floor(),
                    s.get_vs_floor_paired(),
                );
                if let Some(one_read) = median(&s.one_read_pairs) {
                    println!(
                        "{name} one key-value read alone/floor, same pairs: median {one_read:.3} \
                         (the most a component that reads its session can reach)"
                    );
                }
                if let Some(ratio) = s.get_vs_one_read_paired() {
                    println!("{name} sessions/one key-value read, same pairs: median {ratio:.3}");
                }
            }
            if let Some((small, large)) = smallest_largest(sizes) {
                let cpu = match (
                    cpu_ratio(&large.get, &small.get),
                    cpu_ratio(&large.post, &small.post),
                ) {
                    (Some(g), Some(p)) => format!("; CPU per request GET {g:.3}, POST {p:.3}"),
                    _ => String::new(),
                };
                println!(
                    "{} {}/{}: req/s GET {:.3}, POST {:.3}{cpu}",
                    large.backend.name(),
                    size_label(large.size),
                    size_label(small.size),
                    large.get.requests_per_sec / small.get.requests_per_sec,
                    large.post.requests_per_sec / small.post.requests_per_sec
                );
            }
        }
    }

    fn print_notes(&self) {
        if self.phases().iter().all(|(_, p)| p.split_requests == 0) {
            println!("every request left in one write");
        }
        for (what, p) in self.phases() {
            if p.split_requests > 0 {
                println!(
                    "note: {what}: {} requests took more than one write",
                    p.split_requests
                );
            }
            if p.host_requests != p.requests {
                println!(
                    "note: {what}: the host recorded {} requests, the clients {}",
                    p.host_requests, p.requests
                );
            }
            if p.host_other_requests > 0 && !p.mix.has_follow_up() {
                println!(
                    "note: {what}: {} other requests were served during the phase",
                    p.host_other_requests
                );
            }
            for e in &p.error_examples {
                println!("error: {what}: {e}");
            }
        }
        for (store, k) in self.keep_alives() {
            for e in &k.errors {
                println!(
                    "error: {store} {}, one keep-alive connection: {e}",
                    keep_alive_name(k.mix)
                );
            }
        }
    }

    fn phases(&self) -> Vec<(String, &PhaseResult)> {
        let tutorial = self
            .sizes
            .iter()
            .chain(&self.redis)
            .flat_map(SizeResult::phases);
        let p3 = self.p3.iter().flat_map(|r| {
            crate::p3::phases(r)
                .into_iter()
                .map(|(name, p)| (format!("{} {name}", r.backend.name()), p))
        });
        tutorial.chain(p3).collect()
    }

    /// Every figure, as JSON.
    pub fn to_json(&self, goals: &[Goal], unix_time: u64) -> Value {
        json!({
            "unix_time": unix_time,
            "config": {
                "sizes": self.config.sizes,
                "redis_sizes": self.config.redis_sizes,
                "clients": self.config.clients,
                "client_tcp_nodelay": self.config.nodelay,
                "warmup_secs": self.config.warmup.as_secs_f64(),
                "measure_secs": self.config.measure.as_secs_f64(),
                "live_sessions": self.config.live,
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            },
            "sizes": self.sizes_json(&self.sizes),
            "largest_vs_smallest": scale_json(&self.sizes),
            "redis": {
                "sizes": self.sizes_json(&self.redis),
                "largest_vs_smallest": scale_json(&self.redis),
                "checks": goals_json(&self.redis_checks()),
            },
            "p3": self.p3.iter().map(p3_json).collect::<Vec<_>>(),
            "component_bytes": self.component_bytes,
            "goals": goals_json(goals),
            "load_average": { "start": self.load[0], "end": self.load[1] },
            "errors": self.errors(),
            "total_secs": self.total.as_secs_f64(),
        })
    }

    fn sizes_json(&self, sizes: &[SizeResult]) -> Vec<Value> {
        sizes
            .iter()
            .map(|s| {
                json!({
                    "backend": s.backend.name(),
                    "size": s.size,
                    "label": size_label(s.size),
                    "prefill_rows": s.rows,
                    "prefill_secs": s.prefill.as_secs_f64(),
                    "prefill_generate_secs": s.prefill_generate.as_secs_f64(),
                    "store_bytes": s.store_bytes,
                    "host_start_secs": s.host_start.as_secs_f64(),
                    "get": phase_json(&s.get),
                    "post": phase_json(&s.post),
                    "anonymous_get": phase_json(&s.anonymous),
                    "first_post": phase_json(&s.first_post),
                    "get_one_client": phase_json(&s.get_alone),
                    "post_one_client": phase_json(&s.post_alone),
                    "floor": phase_json(&s.floor),
                    "get_vs_floor": s.get_vs_floor(),
                    "get_vs_floor_pairs": s.floor_pairs,
                    "get_vs_floor_paired_median": s.get_vs_floor_paired(),
                    "one_read_vs_floor_pairs": s.one_read_pairs,
                    "get_vs_one_read_paired_median": s.get_vs_one_read_paired(),
                    "keep_alive": keep_alive_json(&s.keep_alive),
                })
            })
            .collect()
    }
}

fn scale_json(sizes: &[SizeResult]) -> Option<Value> {
    smallest_largest(sizes).map(|(small, large)| {
        json!({
            "smallest": small.size,
            "largest": large.size,
            "get": large.get.requests_per_sec / small.get.requests_per_sec,
            "post": large.post.requests_per_sec / small.post.requests_per_sec,
        })
    })
}

/// What a keep-alive row is called: the tutorial's GET by its component.
fn keep_alive_name(mix: Mix) -> &'static str {
    match mix {
        Mix::Get => "tutorial GET (WASI 0.2)",
        other => other.name(),
    }
}

fn keep_alive_json(k: &KeepAlive) -> Value {
    json!({
        "mix": keep_alive_name(k.mix),
        "requests": k.requests,
        "median_ms": k.median_ms,
        "host_median_ms": k.host_median_ms,
        "max_ms": k.max_ms,
        "stall_ms": STALL_MS,
        "over_stall_ms": k.over_stall_ms,
        "stalled": k.stalled,
        "latencies_ms": k.latencies_ms.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        "host_ms": k.latencies_ms.iter().map(|(_, h)| h).collect::<Vec<_>>(),
        "errors": k.errors,
    })
}

fn p3_json(r: &P3Result) -> Value {
    let phases: serde_json::Map<String, Value> = crate::p3::phases(r)
        .into_iter()
        .map(|(name, p)| (name.to_owned(), phase_json(p)))
        .collect();
    json!({
        "backend": r.backend.name(),
        "signed_in_sessions": r.sessions,
        "setup_variables": {
            "requests": r.setup_variables.requests,
            "first_requests": r.setup_variables.first_requests,
            "later": r.setup_variables.later,
        },
        "phases": phases,
        "pairs": pairs_json(&r.pairs),
        "pairs_quick_ack": pairs_json(&r.pairs_quick_ack),
        "keep_alive": r.keep_alive.iter().map(keep_alive_json).collect::<Vec<_>>(),
    })
}

fn pairs_json(p: &P3Pairs) -> Value {
    json!({
        "requests_per_sec_signin_get_404_floor_one_read": p.requests_per_sec,
        "signin_get_vs_one_read": p.signin_vs_one_read,
        "signin_get_vs_one_read_median": median(&p.signin_vs_one_read),
        "signin_404_vs_one_read": p.not_found_vs_one_read,
        "signin_404_vs_one_read_median": median(&p.not_found_vs_one_read),
        "signin_get_vs_floor": p.signin_vs_floor,
        "signin_get_vs_floor_median": median(&p.signin_vs_floor),
        "one_read_vs_floor": p.one_read_vs_floor,
        "one_read_vs_floor_median": median(&p.one_read_vs_floor),
    })
}

fn goals_json(goals: &[Goal]) -> Vec<Value> {
    goals
        .iter()
        .map(|g| json!({ "goal": g.name, "pass": g.pass, "detail": g.detail }))
        .collect()
}

fn phase_json(p: &PhaseResult) -> Value {
    json!({
        "mix": p.mix.name(),
        "requests": p.requests,
        "errors": p.errors,
        "requests_in_more_than_one_write": p.split_requests,
        "error_examples": p.error_examples,
        "elapsed_secs": p.elapsed.as_secs_f64(),
        "requests_per_sec": p.requests_per_sec,
        "latency_ms": { "p50": p.p50_ms, "p99": p.p99_ms, "mean": p.mean_ms },
        "host_requests": p.host_requests,
        "host_other_requests": p.host_other_requests,
        "host_mean_ms": p.host_mean_ms,
        "host_cpu_us_per_request": p.host_cpu_us_per_request,
        "host_cpu_cores": p.host_cpu_cores,
        "store_cpu_us_per_request": p.store_cpu_us_per_request,
        "load_generator_cpu_cores": p.client_cpu_cores,
        "variables": {
            "reads_mean": p.var_reads_mean,
            "reads_of_first_requests": p.var_reads_first,
            "later_requests": p.later_requests,
            "reads_of_later_requests": p.var_reads_later,
            "later_requests_accepted_alone": p.later_alone_requests,
            "reads_of_later_requests_accepted_alone": p.var_reads_later_alone,
            "instances": p.instances,
        },
        "kv": {
            "reads_mean": p.kv_reads_mean,
            "writes_mean": p.kv_writes_mean,
            "connections_mean": p.kv_connections_mean,
            "reads_max": p.kv_reads_max,
            "writes_max": p.kv_writes_max,
            "connections_max": p.kv_connections_max,
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

    use crate::load::Shape;

    fn phase(mix: Mix, requests_per_sec: f64) -> PhaseResult {
        PhaseResult {
            mix,
            requests: 1,
            errors: 0,
            split_requests: 0,
            error_examples: Vec::new(),
            elapsed: Duration::from_secs(1),
            requests_per_sec,
            p50_ms: 1.0,
            p99_ms: 1.0,
            mean_ms: 1.0,
            host_requests: 1,
            host_other_requests: 0,
            kv_reads_mean: 1.0,
            kv_writes_mean: 0.0,
            kv_connections_mean: 0.0,
            var_reads_mean: 0.0,
            var_reads_later: 0,
            later_requests: 0,
            later_alone_requests: 0,
            var_reads_later_alone: 0,
            var_reads_first: 0,
            instances: 1,
            kv_reads_max: 1,
            kv_writes_max: 0,
            kv_connections_max: 0,
            usual_kv: None,
            requests_off_usual: 0,
            host_mean_ms: 1.0,
            host_cpu_us_per_request: None,
            host_cpu_cores: None,
            store_cpu_us_per_request: None,
            client_cpu_cores: None,
        }
    }

    fn size(size: u64, get: f64, floor: f64) -> SizeResult {
        SizeResult {
            backend: Backend::Sqlite,
            size,
            rows: size,
            prefill: Duration::ZERO,
            prefill_generate: Duration::ZERO,
            store_bytes: 0,
            host_start: Duration::ZERO,
            get: phase(Mix::Get, get),
            post: phase(Mix::Post, 1.0),
            anonymous: phase(Mix::Anonymous, 1.0),
            first_post: phase(Mix::FirstPost, 1.0),
            get_alone: phase(Mix::Get, 1.0),
            post_alone: phase(Mix::Post, 1.0),
            floor: phase(Mix::Floor, floor),
            floor_pairs: Vec::new(),
            one_read_pairs: Vec::new(),
            keep_alive: KeepAlive::new(Mix::Get, &[], Vec::new()),
        }
    }

    #[test]
    fn the_component_size_goal_is_300_000_bytes() {
        assert_eq!(component_size_check(300_000).pass, Some(true));
        let over = component_size_check(300_001);
        assert_eq!(over.pass, Some(false));
        assert_eq!(over.detail, "300001 bytes");
    }

    #[test]
    fn each_size_is_compared_with_the_floor_measured_beside_it() {
        // The machine slowed between the two sizes: each GET phase against
        // its own floor passes, against the other's it would not.
        let sizes = [size(1_000, 600.0, 1_000.0), size(1_000_000, 300.0, 450.0)];
        let goal = floor_check(&sizes);
        assert_eq!(goal.pass, Some(true), "{}", goal.detail);
        assert_eq!(goal.detail, "1k 0.600, 1M 0.667");
        let slow = [size(1_000, 600.0, 1_000.0), size(1_000_000, 300.0, 600.0)];
        assert_eq!(floor_check(&slow).pass, Some(false));
    }

    #[test]
    fn sizes_are_compared_through_their_floors() {
        // The machine was half as fast while the large store ran: its raw
        // req/s halved, its ratio to the floor beside it did not.
        let mut sizes = [size(1_000, 600.0, 1_000.0), size(1_000_000, 300.0, 500.0)];
        sizes[0].floor_pairs = vec![0.6];
        sizes[1].floor_pairs = vec![0.57];
        let goal = scale_check(&sizes);
        assert_eq!(goal.pass, Some(true), "{}", goal.detail);
        assert!(goal
            .detail
            .starts_with("ratio 0.950 (long phases, without the floor: 0.500)"));
        sizes[1].floor_pairs = vec![0.5];
        assert_eq!(scale_check(&sizes).pass, Some(false));
    }

    #[test]
    fn the_alternating_pairs_decide_by_their_median() {
        // The long phases drifted apart (0.5), the pairs did not: one
        // outlier pair either way does not move the median.
        let mut s = size(1_000, 500.0, 1_000.0);
        s.floor_pairs = vec![0.64, 0.2, 0.62, 0.9, 0.61];
        assert_eq!(s.get_vs_floor_paired(), 0.62);
        let goal = floor_check(std::slice::from_ref(&s));
        assert_eq!((goal.pass, goal.detail.as_str()), (Some(true), "1k 0.620"));
        s.floor_pairs = vec![0.58, 0.59, 0.9, 0.2];
        assert_eq!(s.get_vs_floor_paired(), 0.59, "the upper median of four");
        assert_eq!(floor_check(&[s]).pass, Some(false));
    }

    #[test]
    fn the_one_read_goal_takes_the_median_of_the_pairs_through_the_floor() {
        let mut s = size(1_000, 500.0, 1_000.0);
        assert_eq!(one_read_check(std::slice::from_ref(&s)).pass, None);
        // GET/floor and one-read/floor of the same pairs: GET/one-read is
        // 0.9, 0.5 (an outlier), 0.95.
        s.floor_pairs = vec![0.72, 0.4, 0.76];
        s.one_read_pairs = vec![0.8, 0.8, 0.8];
        let goal = one_read_check(std::slice::from_ref(&s));
        assert_eq!((goal.pass, goal.detail.as_str()), (Some(true), "1k 0.900"));
        s.floor_pairs = vec![0.6, 0.4, 0.76];
        assert_eq!(one_read_check(&[s]).pass, Some(false));
    }

    #[test]
    fn keep_alive_figures_count_the_stalls_beyond_the_host() {
        let timed = |v: &[(f64, Option<f64>)]| {
            v.iter()
                .map(|&(c, h)| Timed {
                    client_ns: (c * 1e6) as u64,
                    host_ns: h.map(|h| (h * 1e6) as u64),
                })
                .collect::<Vec<_>>()
        };
        // A slow host is no stall; 40 ms more than the host is one.
        let k = KeepAlive::new(
            Mix::SigninGet,
            &timed(&[
                (0.2, Some(0.1)),
                (55.0, Some(14.0)),
                (16.0, Some(15.0)),
                (50.0, Some(49.0)),
            ]),
            Vec::new(),
        );
        assert_eq!((k.requests, k.stalled, k.over_stall_ms), (4, 1, 2));
        assert_eq!(
            (k.median_ms, k.max_ms, k.host_median_ms),
            (16.0, 55.0, Some(14.0))
        );
        // Without the host's times, slower than 30 ms counts.
        let k = KeepAlive::new(
            Mix::Get,
            &timed(&[(0.2, None), (41.0, None), (30.5, None)]),
            Vec::new(),
        );
        assert_eq!((k.stalled, k.over_stall_ms, k.host_median_ms), (2, 2, None));
        let none = KeepAlive::new(Mix::Get, &[], vec!["refused".into()]);
        assert_eq!(
            (none.requests, none.median_ms, none.errors.len()),
            (0, 0.0, 1)
        );
    }

    fn p3(not_found_vs_one_read: Vec<f64>) -> P3Result {
        let mut not_found = phase(Mix::SigninNotFound, 150.0);
        not_found.usual_kv = Some((1, 0, 0));
        let mut get = phase(Mix::SigninGet, 100.0);
        get.later_requests = 10;
        get.later_alone_requests = 4;
        P3Result {
            backend: Backend::Redis,
            sessions: 32,
            setup_variables: SetupVariables {
                requests: 3,
                first_requests: vec![9],
                later: 0,
            },
            signin_get: get.clone(),
            signin_not_found: not_found,
            signin_post: phase(Mix::SigninPost, 10.0),
            floor: phase(Mix::P3Floor(Shape::Sdk), 1000.0),
            one_read: phase(Mix::P3OneRead(Shape::Sdk), 200.0),
            signin_get_alone: get,
            signin_post_alone: phase(Mix::SigninPost, 10.0),
            one_read_alone: phase(Mix::P3OneRead(Shape::Sdk), 200.0),
            pairs: P3Pairs {
                not_found_vs_one_read: vec![2.0],
                // The counting page's ratios weigh in no goal.
                signin_vs_one_read: vec![0.01],
                ..P3Pairs::default()
            },
            pairs_quick_ack: P3Pairs {
                not_found_vs_one_read,
                signin_vs_one_read: vec![0.01],
                ..P3Pairs::default()
            },
            keep_alive: Vec::new(),
        }
    }

    #[test]
    fn the_p3_goals_are_checked_per_backend() {
        let r = p3(vec![0.95, 0.2, 0.91]);
        let goals = p3_checks(&r);
        let verdicts: Vec<Option<bool>> = goals.iter().map(|g| g.pass).collect();
        assert_eq!(verdicts, [Some(true), Some(true), Some(true), Some(true)]);
        assert!(goals.iter().all(|g| g.name.starts_with("redis: ")));
        assert!(goals[2].name.contains("at once"), "{}", goals[2].name);
        assert!(
            goals[2].detail.starts_with("median 0.910;"),
            "{}",
            goals[2].detail
        );
        assert!(
            goals[3].detail.starts_with("median 2.000;"),
            "{}",
            goals[3].detail
        );

        let mut r = p3(vec![0.5]);
        r.signin_not_found.usual_kv = Some((2, 0, 0));
        r.signin_get_alone.var_reads_later = 1;
        r.pairs.not_found_vs_one_read = vec![0.3];
        let verdicts: Vec<Option<bool>> = p3_checks(&r).iter().map(|g| g.pass).collect();
        assert_eq!(
            verdicts,
            [Some(false), Some(false), Some(false), Some(false)]
        );
        let mut r = p3(Vec::new());
        r.setup_variables.later = 9;
        let verdicts: Vec<Option<bool>> = p3_checks(&r).iter().map(|g| g.pass).collect();
        assert_eq!(verdicts, [Some(true), Some(false), None, Some(true)]);
        // A read-only GET that writes fails its goal.
        let mut r = p3(vec![0.95]);
        r.signin_not_found.usual_kv = Some((1, 1, 0));
        assert_eq!(p3_checks(&r)[0].pass, Some(false));
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(1_000), "1k");
        assert_eq!(size_label(100_000), "100k");
        assert_eq!(size_label(1_000_000), "1M");
        assert_eq!(size_label(2_500), "2500");
        assert_eq!(size_label(12), "12");
    }
}
