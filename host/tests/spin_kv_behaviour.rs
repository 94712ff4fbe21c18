//! The key-value behaviour of real Spin, defects included, played over HTTP
//! by the probe component on both of the host's backends: the reference's
//! probe scenarios 1-5 (`/work/shared/reference/spin-kv-behaviour.md`, as
//! measured under `spin up`), and the other facts a component on Spin must
//! live with: the 128 MiB result limit, the counter encodings, the SQLite
//! increment trap, get-many's answer, the connections Redis cas handles
//! open, the table capacities and the SQLite journal.
//!
//! Each outcome asserted here is Spin's, not what a store "should" do: a
//! host kinder than Spin would make every test of the sessions component
//! lie. The probe must be built first (`cargo xtask build`); Redis tests
//! run a real `redis-server`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{built_probe_manifest, get, send, Reply, TempDir};
use host::{HostOptions, RequestStats, RunningHost};
use test_support::redis_server::RedisServer;

/// Spin's limit on one result, 128 MiB.
const LIMIT: usize = 134_217_728;

/// Which of Spin's stores the probe's `default` store is.
enum Backend {
    Sqlite,
    Redis(RedisServer),
}

/// The probe app on one backend.
struct Probe {
    host: RunningHost,
    state: TempDir,
    backend: Backend,
}

impl Probe {
    /// The probe on SQLite (Spin's default store, a file in the state
    /// directory).
    async fn sqlite() -> Self {
        Self::start(Backend::Sqlite).await
    }

    /// The probe with its default store on a fresh `redis-server`.
    async fn redis() -> Self {
        Self::start(Backend::Redis(RedisServer::start(false))).await
    }

    async fn start(backend: Backend) -> Self {
        let state = TempDir::new("spin-kv");
        let runtime_config_file = match &backend {
            Backend::Sqlite => None,
            Backend::Redis(redis) => {
                let path = state.path().join("runtime-config.toml");
                let config = format!(
                    "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
                    redis.url()
                );
                std::fs::write(&path, config).unwrap();
                Some(path)
            }
        };
        let opts = HostOptions {
            state_dir: Some(state.path().to_path_buf()),
            runtime_config_file,
            variable_env: Some(vec![]),
            quiet: true,
            ..HostOptions::new(built_probe_manifest())
        };
        let host = host::start(opts).await.expect("the probe app starts");
        let probe = Self {
            host,
            state,
            backend,
        };
        probe.warm_up().await;
        probe
    }

    /// One first request, whose open makes Redis's shared connection (one
    /// new connection, counted), so that later requests count only their
    /// own.
    async fn warm_up(&self) {
        assert_eq!(self.get("/kv/default/warm-up").await.status, 404);
        let stats = self.stats(1);
        let shared = u64::from(self.is_redis());
        assert_eq!(stats[0].kv_connections, shared, "{stats:?}");
    }

    fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    async fn get(&self, path: &str) -> Reply {
        get(self.host.addr(), path).await
    }

    async fn send(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        send(self.host.addr(), method, path, body).await
    }

    async fn put(&self, key: &str, value: &[u8]) {
        let reply = self.send("PUT", &format!("/kv/default/{key}"), value).await;
        assert_eq!(reply.status, 204, "{}", reply.text());
    }

    /// The stored value of `key` (`None`: absent).
    async fn value(&self, key: &str) -> Option<Vec<u8>> {
        let reply = self.get(&format!("/kv/default/{key}")).await;
        match reply.status {
            200 => Some(reply.body),
            404 => None,
            other => panic!("GET {key}: {other} {}", reply.text()),
        }
    }

    /// `batch.get-many` of `keys`.
    async fn get_many(&self, keys: &[&str]) -> Reply {
        self.send("POST", "/get-many", keys.join("\n").as_bytes())
            .await
    }

    /// Takes the stats of the next `count` finished requests.
    fn stats(&self, count: usize) -> Vec<RequestStats> {
        let stats = self
            .host
            .take_request_stats_of(count, Duration::from_secs(10));
        assert_eq!(stats.len(), count, "{stats:?}");
        stats
    }

    /// The SQLite file of the default store.
    fn sqlite_file(&self) -> PathBuf {
        self.state.path().join("sqlite_key_value.db")
    }

    /// Writes `value` under `key` behind the host's back (another client
    /// of the same store), for values too large to send through a guest.
    async fn write_directly(&self, key: &str, value: &[u8]) {
        match &self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(self.sqlite_file()).unwrap();
                conn.execute(
                    "INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2)
                     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                    rusqlite::params![key, value],
                )
                .unwrap();
            }
            Backend::Redis(redis) => {
                let client = redis::Client::open(redis.url()).unwrap();
                // Room for a value of 128 MiB on a loaded machine.
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(60)));
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .unwrap();
                let () = redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }

    async fn stop(self) {
        self.host.shutdown().await;
    }
}

/// The message of an `other(...)` error as the probe prints it.
fn other(message: &str) -> String {
    format!("Error::Other({message:?})")
}

/// Spin's Redis get-many of two keys or more.
const KEYS_ARITY: &str =
    "An error was signalled by the server - ResponseError: wrong number of arguments for 'keys' command";

// Scenario 1: set k = "v0"; get-many [k, missing].

async fn scenario_1(probe: &Probe) -> Reply {
    probe.put("k", b"v0").await;
    probe.get_many(&["k", "missing"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_get_many_with_a_missing_key_on_sqlite_lists_the_key_found() {
    let probe = Probe::sqlite().await;
    let reply = scenario_1(&probe).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "k=v0"));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_get_many_of_two_keys_on_redis_is_a_keys_arity_error() {
    let probe = Probe::redis().await;
    let reply = scenario_1(&probe).await;
    assert_eq!((reply.status, reply.text()), (503, other(KEYS_ARITY)));
    probe.stop().await;
}

// Scenario 2: get-many [k].

async fn scenario_2(probe: &Probe) -> Reply {
    probe.put("k", b"v0").await;
    probe.get_many(&["k"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_get_many_of_one_key_on_sqlite_works() {
    let probe = Probe::sqlite().await;
    let reply = scenario_2(&probe).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "k=v0"));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_get_many_of_one_key_on_redis_traps() {
    let probe = Probe::redis().await;
    let reply = scenario_2(&probe).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    // A trap of that request only: the host goes on.
    assert_eq!(probe.value("k").await.as_deref(), Some(&b"v0"[..]));
    // One key that matches nothing is an empty answer.
    let reply = probe.get_many(&["absent"]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, ""));
    probe.stop().await;
}

// Scenario 3: increment n twice.

async fn scenario_3(probe: &Probe) {
    for expected in ["1", "2"] {
        let reply = probe.send("POST", "/incr/n?delta=1", b"").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, expected));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_increment_twice_on_sqlite_counts_1_2_in_8_le_bytes() {
    let probe = Probe::sqlite().await;
    scenario_3(&probe).await;
    assert_eq!(probe.value("n").await, Some(2i64.to_le_bytes().to_vec()));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_increment_twice_on_redis_counts_1_2_in_decimal() {
    let probe = Probe::redis().await;
    scenario_3(&probe).await;
    assert_eq!(probe.value("n").await.as_deref(), Some(&b"2"[..]));
    probe.stop().await;
}

// Scenarios 4 and 5: the compare-and-swap race. A: cas.new, current, wait
// 600 ms, swap; B, 200 ms after A started: cas.new, current, swap.

/// Plays the race on `key`, A swapping in `a`, B `b`; returns the probe's
/// answers to A and B.
async fn cas_race(probe: &Probe, key: &str, a: &str, b: &str) -> (String, String) {
    let path_a = format!("/cas-race/{key}?hold_ms=600");
    let path_b = format!("/cas-race/{key}?wait_ms=200");
    let (reply_a, reply_b) = tokio::join!(
        probe.send("POST", &path_a, a.as_bytes()),
        probe.send("POST", &path_b, b.as_bytes())
    );
    assert_eq!(reply_a.status, 200, "A: {}", reply_a.text());
    assert_eq!(reply_b.status, 200, "B: {}", reply_b.text());
    (reply_a.text(), reply_b.text())
}

/// The counts of the race's two requests: each one read (`current`) and
/// one write (`swap`), and `connections` new connections.
fn assert_race_counts(probe: &Probe, connections: [u64; 2]) {
    let mut stats = probe.stats(2);
    stats.sort_by_key(|s| s.kv_connections);
    let counts: Vec<_> = stats
        .iter()
        .map(|s| (s.kv_reads, s.kv_writes, s.kv_connections))
        .collect();
    let mut connections = connections;
    connections.sort();
    assert_eq!(
        counts,
        [(1, 1, connections[0]), (1, 1, connections[1])],
        "{stats:?}"
    );
}

async fn scenario_4(probe: &Probe) -> (String, String) {
    probe.put("k", b"v0").await;
    let _ = probe.stats(1);
    cas_race(probe, "k", "fromA", "fromB").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_cas_race_on_sqlite_b_wins_and_a_fails() {
    let probe = Probe::sqlite().await;
    let (a, b) = scenario_4(&probe).await;
    assert_eq!(a, "current=v0 swap=cas-failed");
    assert_eq!(b, "current=v0 swap=ok");
    // cas.new does no I/O on SQLite: no connection.
    assert_race_counts(&probe, [0, 0]);
    assert_eq!(probe.value("k").await.as_deref(), Some(&b"fromB"[..]));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_cas_race_on_redis_both_fail_and_b_was_written() {
    let probe = Probe::redis().await;
    let (a, b) = scenario_4(&probe).await;
    assert_eq!(a, "current=v0 swap=cas-failed");
    assert_eq!(b, "current=v0 swap=cas-failed");
    // Each request: its own handle's connection, and the fresh handle Spin
    // makes after the refused swap.
    assert_race_counts(&probe, [2, 2]);
    assert_eq!(probe.value("k").await.as_deref(), Some(&b"fromB"[..]));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_cas_race_on_an_absent_key_on_sqlite_both_win_and_the_later_stays() {
    let probe = Probe::sqlite().await;
    let (a, b) = cas_race(&probe, "fresh", "A", "B").await;
    assert_eq!(a, "current=absent swap=ok");
    assert_eq!(b, "current=absent swap=ok");
    assert_race_counts(&probe, [0, 0]);
    assert_eq!(probe.value("fresh").await.as_deref(), Some(&b"A"[..]));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_cas_race_on_an_absent_key_on_redis_both_fail_and_b_stays() {
    let probe = Probe::redis().await;
    let (a, b) = cas_race(&probe, "fresh", "A", "B").await;
    assert_eq!(a, "current=absent swap=cas-failed");
    assert_eq!(b, "current=absent swap=cas-failed");
    assert_race_counts(&probe, [2, 2]);
    assert_eq!(probe.value("fresh").await.as_deref(), Some(&b"B"[..]));
    probe.stop().await;
}

// Beyond the five scenarios.

/// A value one byte over what fits in Spin's limit (24 bytes go to the
/// `Option<Vec<u8>>` itself) is refused by get and cas.current, and on
/// SQLite by get-many too.
async fn results_over_128_mib_are_refused(probe: &Probe) {
    let over = vec![b'x'; LIMIT - 24 + 1];
    probe.write_directly("big", &over).await;
    drop(over);
    let message = format!("query result exceeds limit of {LIMIT} bytes");
    let reply = probe.get("/kv/default/big").await;
    assert_eq!(
        (reply.status, reply.text()),
        (503, format!("other: {message}"))
    );
    let reply = probe.send("POST", "/cas-race/big", b"x").await;
    assert_eq!((reply.status, reply.text()), (503, other(&message)));
    if !probe.is_redis() {
        let reply = probe.get_many(&["big", "k"]).await;
        assert_eq!((reply.status, reply.text()), (503, other(&message)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_128_mib_are_refused_on_sqlite() {
    let probe = Probe::sqlite().await;
    results_over_128_mib_are_refused(&probe).await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_128_mib_are_refused_on_redis() {
    let probe = Probe::redis().await;
    results_over_128_mib_are_refused(&probe).await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_increment_of_a_value_that_is_not_8_bytes_traps() {
    let probe = Probe::sqlite().await;
    probe.put("word", b"abc").await;
    let reply = probe.send("POST", "/incr/word?delta=1", b"").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(probe.value("word").await.as_deref(), Some(&b"abc"[..]));
    // A counter in Redis's encoding is not one on SQLite either.
    probe.put("decimal", b"41").await;
    let reply = probe.send("POST", "/incr/decimal?delta=1", b"").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_increment_of_a_value_that_is_not_a_number_is_an_error() {
    let probe = Probe::redis().await;
    probe.put("word", b"abc").await;
    let reply = probe.send("POST", "/incr/word?delta=1", b"").await;
    let message = "An error was signalled by the server - ResponseError: value is not an \
                   integer or out of range";
    assert_eq!((reply.status, reply.text()), (503, other(message)));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_get_many_lists_only_the_keys_found() {
    let probe = Probe::sqlite().await;
    probe.put("a", b"1").await;
    probe.put("b", b"2").await;
    let reply = probe.get_many(&["b", "missing", "a", "b"]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut lines: Vec<String> = reply.text().lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["a=1", "b=2"]);
    let reply = probe.get_many(&["missing"]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, ""));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redis_cas_handle_opens_one_connection() {
    let probe = Probe::redis().await;
    // Three handles, no swap: three connections.
    let reply = probe.send("POST", "/cas-handles/k?count=3", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "made=3"));
    let stats = probe.stats(1);
    assert_eq!(
        (
            stats[0].kv_reads,
            stats[0].kv_writes,
            stats[0].kv_connections
        ),
        (0, 0, 3)
    );
    // A blind swap (no current): written, reported cas-failed, and the
    // fresh handle is a second connection.
    let reply = probe.send("POST", "/cas/k?delay_ms=0", b"blind").await;
    assert_eq!((reply.status, reply.text().as_str()), (409, "lost"));
    assert_eq!(probe.value("k").await.as_deref(), Some(&b"blind"[..]));
    let stats = probe.stats(2);
    assert_eq!(
        (
            stats[0].kv_reads,
            stats[0].kv_writes,
            stats[0].kv_connections
        ),
        (0, 1, 2)
    );
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_swap_on_sqlite_upserts_and_wins() {
    let probe = Probe::sqlite().await;
    probe.put("k", b"old").await;
    let reply = probe.send("POST", "/cas/k?delay_ms=0", b"blind").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "won"));
    assert_eq!(probe.value("k").await.as_deref(), Some(&b"blind"[..]));
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_cas_tables_hold_256_each() {
    let probe = Probe::sqlite().await;
    let reply = probe.send("POST", "/open-stores?count=300", b"").await;
    assert_eq!(reply.text(), "opened=256 error=Error::StoreTableFull");
    let reply = probe.send("POST", "/cas-handles/k?count=300", b"").await;
    assert_eq!(
        reply.text(),
        format!(
            "made=256 error={}",
            other("too many compare_and_swaps opened")
        )
    );
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_uses_the_rollback_journal_not_wal() {
    let probe = Probe::sqlite().await;
    probe.put("k", b"v").await;
    let file = probe.sqlite_file();
    let conn = rusqlite::Connection::open(&file).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    let mut wal = file.clone().into_os_string();
    wal.push("-wal");
    assert!(!PathBuf::from(wal).exists());
    probe.stop().await;
}
