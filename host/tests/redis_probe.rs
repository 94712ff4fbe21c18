//! End-to-end on a `type = "redis"` store: the real probe component, served
//! over real HTTP, with the default store on a real `redis-server` (Debian's
//! package) started on a free port for each test.
//!
//! The probe must be built first (`cargo xtask build`).

mod common;

use std::time::{Duration, Instant};

use common::{built_probe_manifest, get, kv_cases, send, TempDir};
use host::{HostOptions, RunningHost};
use test_support::redis_server::RedisServer;

/// Starts the probe with its default store on `redis`.
async fn start_probe(state: &TempDir, redis: &RedisServer) -> RunningHost {
    let config = state.path().join("runtime-config.toml");
    std::fs::write(
        &config,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let opts = HostOptions {
        state_dir: Some(state.path().to_path_buf()),
        runtime_config_file: Some(config),
        variable_env: Some(vec![]),
        quiet: true,
        ..HostOptions::new(built_probe_manifest())
    };
    host::start(opts).await.expect("the probe app starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_interfaces_work_on_redis() {
    let redis = RedisServer::start(false);
    let state = TempDir::new("redis-probe");
    let host = start_probe(&state, &redis).await;
    let addr = host.addr();
    assert!(host
        .startup_messages()
        .iter()
        .any(|l| l.contains("[key_value_store.default: redis]")));
    assert!(host.startup_messages().iter().any(|l| l
        == &format!(
            "Storing default key-value data to Redis at 127.0.0.1:{}.",
            redis.port()
        )));
    // No SQLite file for a store that lives in Redis.
    assert!(!state.path().join("sqlite_key_value.db").exists());

    kv_cases::set_get_delete_round_trip(addr).await;
    // INCRBY, so the counter reads back as decimal text.
    kv_cases::increment_counts_from_zero(addr, b"-2", 503).await;
    host.shutdown().await;
}

/// Redis goes away: as under Spin, every key-value operation waits for
/// the client's reconnection (no timeout, no quick error); when Redis is
/// back within the reconnection cycle's first 1.5 s, the waiting operations
/// go through at its second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_holds_operations_until_it_is_back() {
    let redis = RedisServer::start(false);
    let state = TempDir::new("redis-down");
    let host = start_probe(&state, &redis).await;
    let addr = host.addr();
    assert_eq!(send(addr, "PUT", "/kv/default/k", b"v").await.status, 204);

    redis.stop();
    let started = Instant::now();
    let waiting: Vec<_> = [
        ("GET", "/kv/default/k"),
        ("PUT", "/kv/default/k"),
        ("POST", "/incr/n?delta=1"),
    ]
    .into_iter()
    .map(|(method, path)| tokio::spawn(async move { send(addr, method, path, b"x").await.status }))
    .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "an operation answered while Redis was down"
    );
    // Back (empty: this server keeps nothing), same host, no restart.
    redis.restart();
    for w in waiting {
        let status = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("answered once Redis is back")
            .unwrap();
        assert!(matches!(status, 200 | 204 | 404), "{status}");
    }
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(send(addr, "PUT", "/kv/default/k", b"w").await.status, 204);
    assert_eq!(get(addr, "/kv/default/k").await.text(), "w");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_starts_while_redis_is_down() {
    let redis = RedisServer::not_started(false);
    let state = TempDir::new("redis-late");
    let host = start_probe(&state, &redis).await;
    let addr = host.addr();
    // The first open waits for Redis (Spin's connection manager retries
    // its first connection on its schedule), and succeeds once it is there.
    let first = tokio::spawn(async move { get(addr, "/kv/default/k").await.status });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!first.is_finished());
    redis.restart();
    let status = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("answered once Redis is there")
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(send(addr, "PUT", "/kv/default/k", b"v").await.status, 204);
    assert_eq!(get(addr, "/kv/default/k").await.text(), "v");
    host.shutdown().await;
}
