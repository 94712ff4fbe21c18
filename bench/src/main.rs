//! `cargo xtask bench [-- ARGS]`: the sessions component under load, in the
//! project's own host, at several store sizes, on SQLite and on Redis,
//! against the floor component.
//!
//! For each store size the store is prefilled with that many sessions
//! (and their expiry index) by spin-sessions-core's own creation code
//! ([`prefill`]), the host is started on it in-process, and keep-alive
//! clients drive two phases: page views (`GET /2`) and form posts
//! (`POST /2`), each on the clients' own live sessions; then one of those
//! clients alone runs both again, for the latency a single browser sees
//! without the others' queueing. First the SQLite
//! store of the state directory (Spin's default store: no WAL, no memory
//! map, every write synced), then a real `redis-server` started here on a
//! free loopback port (`--save "" --appendonly no`, stopped at the end),
//! with the host given a runtime config that puts the default store on it
//! (Spin's Redis store: a new connection per compare-and-swap, every swap
//! reported as failed). The floor component (a handler that does nothing)
//! is served for the whole run and measured the same way right after each
//! size's GET phase; then GET and the floor alternate in five pairs of
//! one-second phases, and the goal takes the median of the pairs' ratios:
//! other work on a shared machine moves both sides of a pair alike, where
//! two long phases minutes apart can drift by a fifth. A third component
//! runs in each pair: the handover fixture making one key-value read and
//! nothing else, whose ratio to the floor is the most a component that
//! reads its session on every request can reach. The scale goal compares the
//! sizes through the same medians: their GET phases run minutes apart.
//! Figures are printed and written as JSON to `target/bench/`; the goals
//! are checked on the SQLite figures, the Redis ones are printed beside
//! them.
//!
//! The clients speak HTTP/1.1 by hand ([`http`]): each request leaves in
//! one write, as a browser sends it, and latency is what the client sees.
//! Besides requests/s and the p50/p99 latency, each phase records the
//! key-value reads, writes and new store connections the host counted per
//! request, and CPU time per request of the host (and of Redis): on a
//! shared machine other work moves requests/s from one phase to the next,
//! CPU per request much less.
//!
//! The WASI 0.3 part ([`p3`]; issue #20, cost per request under reuse):
//! the sign-in example (`examples/signin`, spin-sdk 7 and axum), served as
//! Spin 4 serves WASI 0.3 components, instances reused with Spin's
//! defaults (128 requests each, 16 at once, 1 s idle), beside two spin-sdk 7
//! fixtures: `components/p3-floor` (does nothing) and
//! `components/p3-one-read` (one key-value read). On each backend two
//! visitors per client sign in over HTTP (each from a loopback address of
//! its own: the example keeps the quota of 30 new sessions a minute per
//! address); then the signed-in home page (`GET /`, which counts the visit
//! with `Session::update`, a read-modify-write), a live session's 404
//! (`GET /nowhere`: the session loaded, nothing written), the two fixtures,
//! the four of them in five alternating rounds twice: with the clients as
//! everywhere else (delayed ACKs, as a browser's), and with clients that
//! acknowledge at once (`TCP_QUICKACK`), where no response waits for a
//! delayed ACK and the ratios are those of the requests' cost; then
//! signing in again (`POST /signin`, each followed by the GET its redirect
//! leads to, not counted) and one client alone. The host's counts add the
//! variable gets per request (an instance's first request reads the
//! settings, which `spin::shared_sessions` keeps 10 s) and the instances.
//! Goals, on each backend: a GET that loads a live session and writes
//! nothing (the 404) makes at most one key-value read and reaches at least
//! 0.9 of p3-one-read's req/s (median of the pairs, both kinds), and no
//! request reads a variable after its instance's first. The home page is
//! printed beside them, not judged as a read: it counts every view with
//! `Session::update` (issue #23), so each view is a compare-and-swap write.
//!
//! One keep-alive connection per component: a new connection without
//! `TCP_NODELAY` sends `--keep-alive` requests one after the other, and the
//! responses that reached the client more than 30 ms after the host
//! finished them are counted as stalled: they waited for the client's
//! delayed ACK. Spin hands a WASI 0.3 response to hyper before its body
//! (wasmtime-wasi-http's `ProxyHandler`, as this host): hyper writes the
//! head alone when the first body frame is not there yet, and a chunked
//! body's last chunk after its data; Nagle's algorithm holds that second
//! write until the ACK (~40 ms). Measured: the fixtures in four shapes
//! (spin-sdk's default, chunked; with `content-length`; an empty body; an
//! empty body with `content-length: 0`), the sign-in page and redirect
//! (axum sets `content-length`), and the tutorial's GET (WASI 0.2, its body
//! finished before the hand-over).
//!
//! Measured on the 2-core machine (6 runs of 60 requests, `--secs 2`):
//! stalls happen here as under Spin, at rates that depend on scheduling.
//! Never with an empty body and `content-length: 0` (hyper does not wait
//! for a body it knows is empty; the sign-in redirect is one), nor for the
//! tutorial's GET; the p3 floor 0-26 of 60 in its other shapes; p3-one-read
//! chunked 16-36 (SQLite) and 31-48 (Redis), with `content-length` 15-29
//! and 0-12 (the last chunk no longer goes alone); the sign-in page 33-49
//! on SQLite (median 44 ms, the host done in 2 ms) and none on Redis. No
//! shape of a non-empty body avoids the head going alone: spin-sdk writes
//! the body from a task spawned as `handle` returns, and a WASI 0.3 stream
//! is read only once the host holds the response. The sign-in GET reads
//! twice and writes once (SQLite; on Redis three reads and two
//! connections: Spin's swap reports failure, the library reads back), so
//! under quick ACKs it made 0.006-0.05 (SQLite: every write synced, at the
//! speed of a disk other work shares) and 0.14-0.18 (Redis) of
//! p3-one-read's req/s; the 404 of a live session, one read, 0.59-0.66 and
//! 0.72-0.88 while the example built its axum router at each request and
//! was built at opt-level `z`. Then (2026-12-08), with one router per
//! instance: 0.815-0.846 (SQLite) and 0.952 (Redis) at `z`; built for
//! speed (opt-level 3 and LTO, the `release` profile now), 0.880 (pairs
//! 0.858-0.926) and 1.015. In instructions (callgrind, 1 000 sequential
//! requests, the whole host process): 256k per read-only GET against 207k
//! for p3-one-read (310k and 226k at `z`); `perf` with the host's
//! `SESSIONS_HOST_PERFMAP=1` puts the difference in the guest: the record's
//! JSON decoded, the id hashed, the cookie parsed, the layer and axum's
//! routing and futures, none of them more than a tenth of it. On Redis,
//! where the read itself costs more, the same work is a smaller part of
//! the request.
//!
//! Flags: `--sizes 1000,100000,1000000` (`none`: no SQLite phases of the
//! tutorial), `--redis-sizes 1000,100000,1000000` (`none` for no Redis
//! phases), `--p3 sqlite,redis` (`none`: no WASI 0.3 part), `--keep-alive
//! 60`, `--clients 16`, `--secs 4`, `--warmup 1`, `--live 1000`,
//! `--nodelay` (set `TCP_NODELAY` on the clients' sockets).

mod http;
mod load;
mod p3;
mod prefill;
mod recorder;
mod report;
mod resp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use host::{HostOptions, RunningHost};

use load::{Client, Mix, PhaseResult};
use prefill::{LiveSession, Target};
use report::{list, size_label, Backend, Config, Report, SizeResult};
use spin_sessions_core::SigningKey;
use test_support::redis_server::{self, RedisServer};
use test_support::tempdir::TempDir;

/// The cap on sessions for every size: above the largest store, so that
/// nothing is evicted while measuring (the default cap is 100 000).
const MAX_SESSIONS: u64 = 2_000_000;

const USAGE: &str = "usage: sessions-bench [--sizes N,N,...|none] [--redis-sizes N,N,...|none] \
                     [--p3 sqlite,redis|none] [--clients C] [--secs S] [--warmup S] [--live L] \
                     [--keep-alive N] [--nodelay]
  --sizes        SQLite store sizes in sessions (default 1000,100000,1000000;
                 none: no SQLite phases of the tutorial)
  --redis-sizes  Redis store sizes in sessions (default 1000,100000,1000000;
                 none: no Redis phases of the tutorial)
  --p3           the backends of the WASI 0.3 part (the sign-in example and the
                 spin-sdk 7 fixtures; default sqlite,redis; none: not run)
  --keep-alive   requests on the one keep-alive connection of each component
                 (default 60)
  --clients      concurrent keep-alive connections (default 16)
  --secs         measured seconds per phase (default 4)
  --warmup       unmeasured seconds before each phase (default 1)
  --live         prefilled sessions the clients use (default 1000)
  --nodelay      set TCP_NODELAY on the clients' sockets (default: Nagle on)";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sessions-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The two runtimes: the host gets one of its own, sized as
/// `spin-sessions-host up` sizes it (one worker per core); the clients
/// share one thread, so the load generator takes as little CPU from the
/// host as it can (and its CPU time is that thread's).
struct Runtimes {
    host: tokio::runtime::Runtime,
    clients: tokio::runtime::Runtime,
}

fn run() -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let load_at_start = report::load_average();
    let Some(config) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let workspace = workspace_root();
    let component_bytes = check_wasm(&workspace)?;
    let rts = Runtimes {
        host: tokio::runtime::Runtime::new()?,
        clients: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    let manifest = workspace.join("spin.toml");
    let floors = Floors {
        nothing: Floor::start(
            &rts,
            &workspace.join("components/floor/spin.toml"),
            Mix::Floor,
        )?,
        one_read: Floor::start(
            &rts,
            &workspace.join("components/handover/spin.toml"),
            Mix::OneRead,
        )?,
    };
    let run = |backend, sizes: &[u64]| -> anyhow::Result<Vec<SizeResult>> {
        sizes
            .iter()
            .map(|&size| run_size(&rts, &manifest, backend, size, &floors, &config))
            .collect()
    };
    let sizes = run(Backend::Sqlite, &config.sizes)?;
    let redis = run(Backend::Redis, &config.redis_sizes)?;
    for floor in [floors.nothing, floors.one_read] {
        rts.host.block_on(floor.host.shutdown());
    }
    let mut p3 = Vec::new();
    if !config.p3.is_empty() {
        let floor = p3::P3Floor::start(&rts, &workspace)?;
        for &backend in &config.p3 {
            p3.push(p3::run_backend(&rts, &workspace, backend, &floor, &config)?);
        }
        floor.shutdown(&rts);
    }

    let report = Report {
        config,
        sizes,
        redis,
        p3,
        total: started.elapsed(),
        load: [load_at_start, report::load_average()],
        component_bytes,
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

/// Stops early, with the remedy, when a component was not built; returns
/// the tutorial component's size in bytes.
fn check_wasm(workspace: &Path) -> anyhow::Result<u64> {
    let bytes = |wasm: &str| -> anyhow::Result<u64> {
        let path = workspace.join("target/wasm32-wasip2").join(wasm);
        let metadata = std::fs::metadata(&path).with_context(|| {
            format!(
                "{} is missing: run `cargo xtask bench`, which builds it",
                path.display()
            )
        })?;
        Ok(metadata.len())
    };
    for wasm in [
        "small/floor.wasm",
        "small/handover.wasm",
        "release/p3_floor.wasm",
        "release/p3_one_read.wasm",
        "release/signin.wasm",
    ] {
        bytes(wasm)?;
    }
    bytes("small/sessions_tutorial.wasm")
}

/// One store size on one backend: prefill, start the host, the GET phase
/// and the floor's beside it, the POST phase, stop.
fn run_size(
    rts: &Runtimes,
    manifest: &Path,
    backend: Backend,
    size: u64,
    floors: &Floors,
    config: &Config,
) -> anyhow::Result<SizeResult> {
    let label = format!("{} {}", backend.name(), size_label(size));
    let dir = TempDir::new(&format!("bench-{}-{}", backend.name(), size));
    // Redis keeps nothing on disk here.
    let redis = match backend {
        Backend::Sqlite => None,
        Backend::Redis => Some(start_redis()?),
    };
    let target = match &redis {
        None => Target::Sqlite(dir.path()),
        Some(server) => Target::Redis(server),
    };
    progress(&label, format!("prefilling {size} sessions"));
    let filled = prefill::prefill(target, size, config.live, MAX_SESSIONS)?;
    progress(
        &label,
        format!(
            "prefilled {} keys in {:.1} s (creating them {:.1} s), {:.0} MB",
            filled.rows,
            filled.elapsed.as_secs_f64(),
            filled.generate.as_secs_f64(),
            filled.store_bytes as f64 / 1e6
        ),
    );
    let runtime_config = match &redis {
        None => None,
        Some(server) => Some(write_runtime_config(dir.path(), server)?),
    };
    let (host, host_start) = start_host(&rts.host, manifest, dir.path(), runtime_config)?;
    progress(
        &label,
        format!(
            "host serving on {} (started in {:.1} s)",
            host.addr(),
            host_start.as_secs_f64()
        ),
    );
    let store_pid = redis.as_ref().map(RedisServer::pid);
    let phases = rts.clients.block_on(async {
        let clients = connect(host.addr(), config, &filled.live, &filled.signing_key).await?;
        let (clients, get) = phase(&label, clients, &host, Mix::Get, config, store_pid).await;
        let floor_phase = floors.nothing.measure(&label, config).await?;
        let (clients, floor_pairs) =
            alternate_with_floors(&label, clients, &host, floors, config, store_pid).await?;
        let (clients, post) = phase(&label, clients, &host, Mix::Post, config, store_pid).await;
        let (clients, anonymous) =
            phase(&label, clients, &host, Mix::Anonymous, config, store_pid).await;
        let (mut clients, first_post) =
            phase(&label, clients, &host, Mix::FirstPost, config, store_pid).await;
        // Then one keep-alive client alone, as one browser sees the site:
        // its latency is the request's own, without the others' queueing.
        let alone: Vec<Client> = clients.drain(..1).collect();
        drop(clients);
        let alone_label = format!("{label}, one client");
        let (alone, get_alone) =
            phase(&alone_label, alone, &host, Mix::Get, config, store_pid).await;
        let (_, post_alone) = phase(&alone_label, alone, &host, Mix::Post, config, store_pid).await;
        // A new keep-alive connection, Nagle on, as the WASI 0.3
        // components are measured (`p3::keep_alive_of`).
        let keep_alive =
            p3::keep_alive_of(&label, &host, &filled.live[..1], Mix::Get, config).await?;
        anyhow::Ok((
            get,
            (floor_phase, floor_pairs),
            post,
            anonymous,
            first_post,
            (get_alone, post_alone),
            keep_alive,
        ))
    });
    rts.host.block_on(host.shutdown());
    drop(redis);
    let (
        get,
        (floor, floor_pairs),
        post,
        anonymous,
        first_post,
        (get_alone, post_alone),
        keep_alive,
    ) = phases?;
    Ok(SizeResult {
        backend,
        size,
        rows: filled.rows,
        prefill: filled.elapsed,
        prefill_generate: filled.generate,
        store_bytes: filled.store_bytes,
        host_start,
        get,
        post,
        anonymous,
        first_post,
        get_alone,
        post_alone,
        floor,
        floor_pairs: floor_pairs.get,
        one_read_pairs: floor_pairs.one_read,
        keep_alive,
    })
}

/// The two floors the sessions are compared with.
struct Floors {
    /// A handler that does nothing.
    nothing: Floor,
    /// A handler that makes one key-value read and nothing else.
    one_read: Floor,
}

/// The alternating pairs' ratios to the floor that does nothing.
struct PairRatios {
    /// The sessions' GET, pair by pair.
    get: Vec<f64>,
    /// The one-read floor, pair by pair.
    one_read: Vec<f64>,
}

/// How many short GET phases alternate with as many of the floor's.
const FLOOR_PAIRS: usize = 5;
/// Each of them: a short warm-up, then one second measured.
const PAIR_TIMES: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(1));

/// GET and the floors in alternating one-second phases: the GET/floor
/// ratio of each pair, over seconds in which a shared machine's other work
/// weighs on both alike. Their median is the figure the goal checks; the
/// two long phases measured minutes apart can drift apart by a fifth. The
/// one-read floor runs in each pair too: its ratio is the most any
/// component that reads one key per request could reach.
async fn alternate_with_floors(
    label: &str,
    mut clients: Vec<Client>,
    host: &RunningHost,
    floors: &Floors,
    config: &Config,
    store_pid: Option<u32>,
) -> anyhow::Result<(Vec<Client>, PairRatios)> {
    progress(
        label,
        format!("GET and the floors alternating, {FLOOR_PAIRS} rounds of 1 s phases"),
    );
    let mut nothing_clients = floors.nothing.clients(config).await?;
    let mut one_read_clients = floors.one_read.clients(config).await?;
    let mut ratios = PairRatios {
        get: Vec::with_capacity(FLOOR_PAIRS),
        one_read: Vec::with_capacity(FLOOR_PAIRS),
    };
    for _ in 0..FLOOR_PAIRS {
        let (back, get) = load::run_phase(clients, host, Mix::Get, PAIR_TIMES, store_pid).await;
        clients = back;
        let (back, nothing) = floors.nothing.short_phase(nothing_clients).await;
        nothing_clients = back;
        let (back, one_read) = floors.one_read.short_phase(one_read_clients).await;
        one_read_clients = back;
        ratios
            .get
            .push(get.requests_per_sec / nothing.requests_per_sec);
        ratios
            .one_read
            .push(one_read.requests_per_sec / nothing.requests_per_sec);
    }
    progress(
        label,
        format!(
            "over the floor, GET: {}; one read alone: {}",
            list(&ratios.get),
            list(&ratios.one_read)
        ),
    );
    Ok((clients, ratios))
}

/// A floor component (one that does nothing, or one that only reads one
/// key), served for the whole run so that its page views can be measured
/// right beside each size's.
struct Floor {
    host: RunningHost,
    /// What its clients send.
    mix: Mix,
    /// Its state directory, empty, removed at the end.
    _dir: TempDir,
}

impl Floor {
    fn start(rts: &Runtimes, manifest: &Path, mix: Mix) -> anyhow::Result<Floor> {
        let dir = TempDir::new("bench-floor");
        let (host, host_start) = start_host(&rts.host, manifest, dir.path(), None)?;
        progress(
            "floor",
            format!(
                "host serving on {} (started in {:.1} s)",
                host.addr(),
                host_start.as_secs_f64()
            ),
        );
        Ok(Floor {
            host,
            mix,
            _dir: dir,
        })
    }

    /// As many clients as the sessions' get, connected to the floor.
    async fn clients(&self, config: &Config) -> anyhow::Result<Vec<Client>> {
        // The floor ignores cookies; the sessions only say how many clients.
        let none = vec![LiveSession {
            cookie: String::new(),
            csrf_token: String::new(),
        }];
        // Nor does it check pending identifiers: any key will do.
        let key = SigningKey::generate(&mut rand::rng());
        connect(self.host.addr(), config, &none, &key).await
    }

    /// One phase of page views, with as many clients as the sessions'.
    async fn measure(&self, beside: &str, config: &Config) -> anyhow::Result<PhaseResult> {
        let clients = self.clients(config).await?;
        let label = format!("floor, beside {beside}");
        let (_, floor) = phase(&label, clients, &self.host, self.mix, config, None).await;
        Ok(floor)
    }

    /// One of the alternating pairs' short phases.
    async fn short_phase(&self, clients: Vec<Client>) -> (Vec<Client>, PhaseResult) {
        load::run_phase(clients, &self.host, self.mix, PAIR_TIMES, None).await
    }
}

/// A `redis-server` of our own, or why there is none.
fn start_redis() -> anyhow::Result<RedisServer> {
    if !redis_server::is_installed() {
        bail!(
            "redis-server is missing: install Debian's package with \
             `apt-get install redis-server`, or run with `--redis-sizes none`"
        );
    }
    Ok(RedisServer::start(false))
}

/// The runtime config that puts the default store on `server`, written
/// into `dir`.
fn write_runtime_config(dir: &Path, server: &RedisServer) -> anyhow::Result<PathBuf> {
    let path = dir.join("runtime-config.toml");
    std::fs::write(&path, server.runtime_config())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// One phase, with its progress lines.
async fn phase(
    label: &str,
    clients: Vec<Client>,
    host: &RunningHost,
    mix: Mix,
    config: &Config,
    store_pid: Option<u32>,
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
    let times = (config.warmup, config.measure);
    let (clients, result) = load::run_phase(clients, host, mix, times, store_pid).await;
    progress(
        label,
        format!(
            "{}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, kv r/w/conn {:.3}/{:.4}/{:.3}, errors {}",
            mix.name(),
            result.requests_per_sec,
            result.p50_ms,
            result.p99_ms,
            result.kv_reads_mean,
            result.kv_writes_mean,
            result.kv_connections_mean,
            result.errors
        ),
    );
    (clients, result)
}

fn progress(label: &str, line: String) {
    println!("[{label}] {line}");
}

/// Opens the configured number of clients; client `i` gets the live
/// sessions `i`, `i + count`, ... so no two clients share one.
async fn connect(
    addr: SocketAddr,
    config: &Config,
    live: &[LiveSession],
    signing_key: &SigningKey,
) -> anyhow::Result<Vec<Client>> {
    let count = config.clients;
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mine: Vec<LiveSession> = live
            .iter()
            .skip(i % live.len())
            .step_by(count)
            .cloned()
            .collect();
        let key = signing_key.clone();
        clients.push(Client::connect(i, addr, mine, key, config.nodelay).await?);
    }
    Ok(clients)
}

fn start_host(
    rt: &tokio::runtime::Runtime,
    manifest: &Path,
    state_dir: &Path,
    runtime_config_file: Option<PathBuf>,
) -> anyhow::Result<(RunningHost, Duration)> {
    // Only the cap and the quota are set; every other variable keeps its
    // default, whatever the benchmark's own environment holds. The quota is
    // on (a creation pays for its counter) but high: all the load clients
    // come from one address.
    let variables = vec![
        (
            "SPIN_VARIABLE_MAX_SESSIONS".to_owned(),
            MAX_SESSIONS.to_string(),
        ),
        (
            "SPIN_VARIABLE_NEW_SESSIONS_PER_MINUTE".to_owned(),
            "100000000".to_owned(),
        ),
    ];
    start_host_with(rt, manifest, state_dir, runtime_config_file, variables)
}

/// Starts the host on `manifest` with `variables` as the whole environment
/// its variables provider reads, and Spin's defaults for the rest
/// (instance reuse included).
fn start_host_with(
    rt: &tokio::runtime::Runtime,
    manifest: &Path,
    state_dir: &Path,
    runtime_config_file: Option<PathBuf>,
    variables: Vec<(String, String)>,
) -> anyhow::Result<(RunningHost, Duration)> {
    let mut options = HostOptions::new(manifest);
    options.state_dir = Some(state_dir.to_path_buf());
    options.runtime_config_file = runtime_config_file;
    options.quiet = true;
    options.variable_env = Some(variables);
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
        redis_sizes: vec![1_000, 100_000, 1_000_000],
        clients: 16,
        measure: Duration::from_secs(4),
        warmup: Duration::from_secs(1),
        live: 1000,
        nodelay: false,
        p3: vec![Backend::Sqlite, Backend::Redis],
        keep_alive: 60,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--nodelay" => {
                config.nodelay = true;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?,
        };
        match flag.as_str() {
            "--sizes" if value == "none" => config.sizes.clear(),
            "--sizes" => config.sizes = sizes(&flag, &value)?,
            "--p3" if value == "none" => config.p3.clear(),
            "--p3" => config.p3 = backends(&flag, &value)?,
            "--keep-alive" => config.keep_alive = positive(&flag, &value)?,
            "--redis-sizes" if value == "none" => config.redis_sizes.clear(),
            "--redis-sizes" => config.redis_sizes = sizes(&flag, &value)?,
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

/// Store sizes, comma-separated (`_` allowed as a digit separator).
fn sizes(flag: &str, value: &str) -> anyhow::Result<Vec<u64>> {
    let sizes: Vec<u64> = value
        .split(',')
        .map(|s| s.trim().replace('_', "").parse::<u64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{flag} {value}: expected numbers, comma-separated"))?;
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("{flag} {value}: sizes must be at least 1");
    }
    Ok(sizes)
}

/// Backends by name, comma-separated.
fn backends(flag: &str, value: &str) -> anyhow::Result<Vec<Backend>> {
    value
        .split(',')
        .map(|name| match name.trim() {
            "sqlite" => Ok(Backend::Sqlite),
            "redis" => Ok(Backend::Redis),
            other => bail!("{flag} {value}: {other:?} is neither sqlite nor redis"),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Config>> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "--sizes",
            "1000,1_000_000",
            "--clients=4",
            "--secs",
            "2.5",
            "--redis-sizes=none",
            "--nodelay",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.sizes, [1_000, 1_000_000]);
        assert!(c.redis_sizes.is_empty());
        assert_eq!(c.clients, 4);
        assert_eq!(c.measure, Duration::from_millis(2500));
        assert!(c.nodelay);
        let d = parse(&[]).unwrap().unwrap();
        assert_eq!(d.sizes, [1_000, 100_000, 1_000_000]);
        assert_eq!(d.redis_sizes, d.sizes);
        assert_eq!(
            (d.clients, d.measure, d.live, d.nodelay),
            (16, Duration::from_secs(4), 1000, false)
        );
        assert_eq!(d.p3, [Backend::Sqlite, Backend::Redis]);
        assert_eq!(d.keep_alive, 60);
        let r = parse(&["--redis-sizes", "1000"]).unwrap().unwrap();
        assert_eq!(r.redis_sizes, [1000]);
        let p = parse(&["--sizes=none", "--p3", "redis", "--keep-alive", "40"])
            .unwrap()
            .unwrap();
        assert!(p.sizes.is_empty());
        assert_eq!((p.p3.as_slice(), p.keep_alive), (&[Backend::Redis][..], 40));
        assert!(parse(&["--p3", "none"]).unwrap().unwrap().p3.is_empty());
        assert!(parse(&["--help"]).unwrap().is_none());
        for bad in [
            &["--sizes", "0"][..],
            &["--redis-sizes", "x"],
            &["--clients", "0"],
            &["--secs"],
            &["--nope", "1"],
            &["--p3", "mysql"],
            &["--keep-alive", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
