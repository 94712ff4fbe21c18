//! WASI 0.3 components (spin-sdk 7, `wasi:http/handler@0.3.0`) served as
//! Spin 4 serves them: instances reused across requests, within Spin's
//! limits (`--max-instance-reuse-count`, `--max-instance-concurrent-reuse-
//! count`, `--idle-instance-timeout`, `--request-timeout`), and a
//! key-value call holding its whole instance while it runs.
//!
//! Real components (`components/p3-floor`, `components/p3-one-read`) over
//! real HTTP; they must be built first (`cargo xtask build`). The request
//! stats tell which instance served each request (`instance`), its place
//! among that instance's requests (`instance_request`) and how many others
//! the instance had in hand when it took it (`instance_concurrent`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{get, TempDir};
use host::reuse::Range;
use host::{HostOptions, InstanceReuse, RequestStats, RunningHost};
use test_support::redis_server::RedisServer;
use test_support::tcp_proxy::TcpProxy;

/// A fixture's manifest, after checking its wasm has been built: a missing
/// build fails the test with the command to run instead of skipping it.
fn built_manifest(fixture: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../components")
        .join(fixture)
        .join("spin.toml");
    let config = host::open_app(&HostOptions {
        variable_env: Some(vec![]),
        ..HostOptions::new(&manifest)
    })
    .expect("the fixture's manifest is valid");
    let source = &config.manifest.components[fixture].source;
    assert!(
        source.exists(),
        "{fixture} is not built ({} is missing): run `cargo xtask build` first",
        source.display()
    );
    manifest
}

/// Starts `fixture` on SQLite in `state`, with `reuse`.
async fn start(fixture: &str, state: &TempDir, reuse: InstanceReuse) -> RunningHost {
    let opts = HostOptions {
        state_dir: Some(state.path().to_path_buf()),
        variable_env: Some(vec![]),
        quiet: true,
        instance_reuse: reuse,
        ..HostOptions::new(built_manifest(fixture))
    };
    host::start(opts).await.expect("the fixture starts")
}

/// Spin's defaults with a few settings changed.
fn reuse(change: impl FnOnce(&mut InstanceReuse)) -> InstanceReuse {
    let mut reuse = InstanceReuse::default();
    change(&mut reuse);
    reuse
}

/// The stats of `count` requests, in the order they finished.
fn stats_of(host: &RunningHost, count: usize) -> Vec<RequestStats> {
    let stats = host.take_request_stats_of(count, Duration::from_secs(10));
    assert_eq!(stats.len(), count, "{stats:#?}");
    stats
}

/// Requests per instance.
fn per_instance(stats: &[RequestStats]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for s in stats {
        assert_ne!(s.instance, 0, "{s:?}");
        *counts.entry(s.instance).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_p3_component_serves_many_requests_from_one_instance() {
    let state = TempDir::new("p3-reuse");
    let host = start("p3-one-read", &state, InstanceReuse::default()).await;
    for _ in 0..40 {
        let reply = get(host.addr(), "/").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "one-read\n"));
    }
    let stats = stats_of(&host, 40);
    eprintln!(
        "40 sequential GETs: {:?} requests per instance",
        per_instance(&stats)
    );
    // One instance took them all, one after the other, and each request
    // is charged its own one read.
    assert_eq!(host.instantiations(), 1);
    for (n, s) in stats.iter().enumerate() {
        assert_eq!((s.instance, s.instance_request), (1, n as u64 + 1), "{s:?}");
        assert_eq!(
            (s.kv_reads, s.kv_writes, s.kv_connections),
            (1, 0, 0),
            "{s:?}"
        );
        assert_eq!((s.var_reads, s.instance_concurrent), (0, 0), "{s:?}");
    }
    // Variable gets are counted per request too.
    let reply = get(host.addr(), "/variable").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
    let s = &stats_of(&host, 1)[0];
    assert_eq!((s.var_reads, s.kv_reads, s.instance), (1, 0, 1), "{s:?}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasi_p3_floor_is_served() {
    let state = TempDir::new("p3-floor");
    let host = start("p3-floor", &state, InstanceReuse::default()).await;
    for path in ["/", "/any/path?x=1"] {
        let reply = get(host.addr(), path).await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    }
    let stats = stats_of(&host, 2);
    assert_eq!(per_instance(&stats).len(), 1, "{stats:?}");
    assert_eq!(stats[1].kv_reads + stats[1].var_reads, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_takes_at_most_max_instance_reuse_count_requests() {
    let state = TempDir::new("p3-reuse-count");
    let host = start(
        "p3-one-read",
        &state,
        reuse(|r| r.max_instance_reuse_count = Range::Value(3)),
    )
    .await;
    for _ in 0..9 {
        assert_eq!(get(host.addr(), "/").await.status, 200);
    }
    let stats = stats_of(&host, 9);
    let places: Vec<u64> = stats.iter().map(|s| s.instance_request).collect();
    assert_eq!(places, [1, 2, 3, 1, 2, 3, 1, 2, 3], "{stats:#?}");
    assert_eq!(
        per_instance(&stats).values().collect::<Vec<_>>(),
        [&3, &3, &3]
    );
    assert_eq!(host.instantiations(), 3);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_count_of_one_gives_a_fresh_instance_per_request() {
    let state = TempDir::new("p3-reuse-one");
    let host = start(
        "p3-one-read",
        &state,
        reuse(|r| r.max_instance_reuse_count = Range::Value(1)),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(get(host.addr(), "/").await.status, 200);
    }
    let stats = stats_of(&host, 5);
    let instances: BTreeSet<u64> = stats.iter().map(|s| s.instance).collect();
    assert_eq!(instances.len(), 5, "{stats:#?}");
    assert!(stats
        .iter()
        .all(|s| s.instance_request == 1 && s.kv_reads == 1));
    assert_eq!(host.instantiations(), 5);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_is_drawn_per_instance_within_its_bounds() {
    let state = TempDir::new("p3-reuse-range");
    let host = start(
        "p3-one-read",
        &state,
        reuse(|r| r.max_instance_reuse_count = Range::Bounds(2, 4)),
    )
    .await;
    for _ in 0..30 {
        assert_eq!(get(host.addr(), "/").await.status, 200);
    }
    let stats = stats_of(&host, 30);
    let counts = per_instance(&stats);
    // Sequential requests fill each instance up to its draw, 2 or 3; only
    // the last one may be cut short by the end of the run.
    let sizes: Vec<usize> = counts.values().copied().collect();
    let (last, full) = sizes.split_last().unwrap();
    assert!(full.iter().all(|&n| n == 2 || n == 3), "{counts:?}");
    assert!((1..=3).contains(last), "{counts:?}");
    eprintln!("reuse count 2..4: {counts:?}");
    host.shutdown().await;
}

/// Sends `GET path` `count` times, each `stagger` after the previous one,
/// all at once otherwise; returns each one's status and latency.
async fn staggered(
    host: &RunningHost,
    path: &'static str,
    count: usize,
    stagger: Duration,
) -> Vec<(u16, Duration)> {
    let addr = host.addr();
    let mut tasks = Vec::new();
    for _ in 0..count {
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let reply = get(addr, path).await;
            (reply.status, sent.elapsed())
        }));
        tokio::time::sleep(stagger).await;
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_serves_concurrent_requests_up_to_the_concurrent_reuse_count() {
    // Six requests that each wait 400 ms in the guest, 20 ms apart: all six
    // are in flight together.
    let state = TempDir::new("p3-concurrent");
    let host = start("p3-one-read", &state, InstanceReuse::default()).await;
    let replies = staggered(&host, "/sleep/400", 6, Duration::from_millis(20)).await;
    assert!(
        replies.iter().all(|(status, _)| *status == 200),
        "{replies:?}"
    );
    let stats = stats_of(&host, 6);
    let concurrent: Vec<u64> = stats.iter().map(|s| s.instance_concurrent).collect();
    eprintln!(
        "default limits, 6 overlapping requests: {:?} per instance, in hand at acceptance {concurrent:?}",
        per_instance(&stats)
    );
    // With Spin's default (16), an instance waiting on its guests takes
    // more requests.
    assert!(concurrent.iter().any(|&n| n >= 1), "{stats:#?}");
    assert!(host.instantiations() < 6, "{stats:#?}");
    host.shutdown().await;

    let state = TempDir::new("p3-concurrent-2");
    let host = start(
        "p3-one-read",
        &state,
        reuse(|r| r.max_instance_concurrent_reuse_count = Range::Value(2)),
    )
    .await;
    let replies = staggered(&host, "/sleep/400", 6, Duration::from_millis(20)).await;
    assert!(
        replies.iter().all(|(status, _)| *status == 200),
        "{replies:?}"
    );
    let stats = stats_of(&host, 6);
    let counts = per_instance(&stats);
    eprintln!("concurrent reuse count 2, 6 overlapping requests: {counts:?} per instance");
    // Never more than two in hand at once, so (all six overlapping) at
    // least three instances, none with more than two of them.
    assert!(
        stats.iter().all(|s| s.instance_concurrent <= 1),
        "{stats:#?}"
    );
    assert!(
        counts.len() >= 3 && counts.values().all(|&n| n <= 2),
        "{counts:?}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_is_dropped_after_the_idle_timeout() {
    let state = TempDir::new("p3-idle");
    let host = start(
        "p3-one-read",
        &state,
        reuse(|r| r.idle_instance_timeout = Range::Value(Duration::from_millis(300))),
    )
    .await;
    assert_eq!(get(host.addr(), "/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get(host.addr(), "/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(host.addr(), "/").await.status, 200);
    let stats = stats_of(&host, 3);
    let instances: Vec<u64> = stats.iter().map(|s| s.instance).collect();
    assert_eq!(instances, [1, 1, 2], "{stats:#?}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_request_timeout_gets_a_500() {
    let state = TempDir::new("p3-timeout");
    let host = start(
        "p3-one-read",
        &state,
        reuse(|r| r.request_timeout = Some(Range::Value(Duration::from_millis(200)))),
    )
    .await;
    let sent = Instant::now();
    let reply = get(host.addr(), "/sleep/3000").await;
    let waited = sent.elapsed();
    assert_eq!(reply.status, 500);
    assert!(reply.body.is_empty());
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    // Within the timeout, the same component answers.
    assert_eq!(get(host.addr(), "/sleep/10").await.status, 200);
    host.shutdown().await;
}

/// Starts p3-one-read with its default store on `redis` through `proxy`.
async fn start_on_redis(state: &TempDir, proxy: &TcpProxy, reuse: InstanceReuse) -> RunningHost {
    let config = state.path().join("runtime-config.toml");
    std::fs::write(
        &config,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            proxy.redis_url()
        ),
    )
    .unwrap();
    let opts = HostOptions {
        state_dir: Some(state.path().to_path_buf()),
        runtime_config_file: Some(config),
        variable_env: Some(vec![]),
        quiet: true,
        instance_reuse: reuse,
        ..HostOptions::new(built_manifest("p3-one-read"))
    };
    host::start(opts).await.expect("p3-one-read starts")
}

/// How long the guest's timer runs in the measurement below.
const SLEEP: Duration = Duration::from_millis(200);
/// How long Redis takes to answer the first key-value call.
const SLOW_KV: Duration = Duration::from_millis(800);

/// A request that waits on a timer (`/sleep/200`) and, 50 ms later, one
/// whose key-value call takes [`SLOW_KV`] (its store's first connection,
/// held by a proxy); returns the sleeper's latency and both requests'
/// stats (the sleeper first).
async fn sleeper_beside_a_slow_kv_call(reuse: InstanceReuse) -> (Duration, Vec<RequestStats>) {
    let redis = RedisServer::start(false);
    let proxy = TcpProxy::start(([127, 0, 0, 1], redis.port()).into());
    proxy.delay_new_connections(SLOW_KV);
    let state = TempDir::new("p3-blocking");
    let host = start_on_redis(&state, &proxy, reuse).await;
    let addr = host.addr();
    let sleeper = tokio::spawn(async move {
        let sent = Instant::now();
        let reply = get(addr, "/sleep/200").await;
        (reply.status, sent.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reader = tokio::spawn(async move { get(addr, "/").await.status });
    let (status, slept) = sleeper.await.unwrap();
    assert_eq!((status, reader.await.unwrap()), (200, 200));
    let mut stats = stats_of(&host, 2);
    stats.sort_by_key(|s| s.path != "/sleep/200");
    host.shutdown().await;
    (slept, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_value_call_holds_every_request_of_its_instance() {
    // Spin links wasi:keyvalue with blocking host functions
    // (`func_wrap_async`): while one runs, nothing else of its instance
    // does, so the sleeper's timer fires but its task cannot resume until
    // the other request's key-value call returns.
    let (slept, stats) = sleeper_beside_a_slow_kv_call(InstanceReuse::default()).await;
    eprintln!(
        "one instance: the 200 ms sleeper answered after {slept:?}, beside an {SLOW_KV:?} \
         key-value call: {stats:#?}"
    );
    assert_eq!(stats[0].instance, stats[1].instance, "{stats:#?}");
    assert!(slept >= SLOW_KV, "{slept:?}");
    // The sleeper is charged the other request's read too: its instance
    // served both at once (the stats' documented over-approximation).
    assert_eq!(stats[0].kv_reads, 1, "{stats:#?}");

    // Control: one request per instance at a time, so the reader gets an
    // instance of its own and the sleeper is not held.
    let (slept, stats) = sleeper_beside_a_slow_kv_call(reuse(|r| {
        r.max_instance_concurrent_reuse_count = Range::Value(1)
    }))
    .await;
    eprintln!("two instances: the 200 ms sleeper answered after {slept:?}");
    assert_ne!(stats[0].instance, stats[1].instance, "{stats:#?}");
    assert!(slept >= SLEEP && slept < SLOW_KV, "{slept:?}");
    assert_eq!(stats[0].kv_reads, 0, "{stats:#?}");
}

#[test]
fn the_up_command_refuses_bad_reuse_flags() {
    let run = |flag: &str, value: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spin-sessions-host"))
            .args(["up", "-f", "/nonexistent/spin.toml", flag, value])
            .output()
            .expect("the host binary runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run("--max-instance-reuse-count", "lots");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "invalid value 'lots' for '--max-instance-reuse-count <MAX_INSTANCE_REUSE_COUNT>': \
             expected integer or range; got \"lots\"; invalid digit found in string"
        ),
        "{stderr}"
    );
    let (code, stderr) = run("--idle-instance-timeout", "3..1s");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"3..1s\" is an empty range"), "{stderr}");
    // Good values get past the flags (and then stop at the missing file).
    let (code, stderr) = run("--request-timeout", "100ms..2s");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/spin.toml"), "{stderr}");
}
