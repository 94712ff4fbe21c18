//! End-to-end on a `type = "redis"` store: the real probe component, served
//! over real HTTP, with the default store on a real `redis-server` (Debian's
//! package) started on a free port for each test.
//!
//! The probe must be built first (`cargo xtask build`).

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{built_probe_manifest, get, send, TempDir};
use host::{HostOptions, RunningHost};

/// A `redis-server` on a free port, killed when dropped.
struct Redis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            dir: TempDir::new("redis"),
            child: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        assert!(
            Path::new("/usr/bin/redis-server").exists(),
            "redis-server is missing: apt-get install redis-server"
        );
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the probe with its default store on `redis`.
async fn start_probe(state: &TempDir, redis: &Redis) -> RunningHost {
    let config = state.path().join("runtime-config.toml");
    std::fs::write(
        &config,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\n",
            redis.port
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
    let redis = Redis::start();
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
            redis.port
        )));
    // No SQLite file for a store that lives in Redis.
    assert!(!state.path().join("sqlite_key_value.db").exists());

    // fermyon:spin/key-value
    let put = send(addr, "PUT", "/kv/default/k", b"\x00\x01bin").await;
    assert_eq!(put.status, 204, "{}", put.text());
    let reply = get(addr, "/kv/default/k").await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"\x00\x01bin"[..])
    );
    assert_eq!(send(addr, "DELETE", "/kv/default/k", b"").await.status, 204);
    assert_eq!(get(addr, "/kv/default/k").await.status, 404);
    assert_eq!(send(addr, "DELETE", "/kv/default/k", b"").await.status, 204);

    // wasi:keyvalue atomics: INCRBY, so the counter reads back as text.
    let reply = send(addr, "POST", "/incr/hits?delta=5", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "5"));
    let reply = send(addr, "POST", "/incr/hits?delta=-7", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "-2"));
    assert_eq!(get(addr, "/kv/default/hits").await.text(), "-2");
    assert_eq!(
        send(addr, "PUT", "/kv/default/word", b"abc").await.status,
        204
    );
    let reply = send(addr, "POST", "/incr/word?delta=1", b"").await;
    assert_eq!(reply.status, 503, "{}", reply.text());

    // A cas race between two requests, on a fresh and an existing key.
    for (round, key) in ["fresh", "existing"].into_iter().enumerate() {
        if round == 1 {
            assert_eq!(
                send(addr, "PUT", "/kv/default/existing", b"start")
                    .await
                    .status,
                204
            );
        }
        let path = format!("/cas/{key}?delay_ms=300");
        let (a, b) = tokio::join!(
            send(addr, "POST", &path, b"alpha"),
            send(addr, "POST", &path, b"beta")
        );
        let mut outcomes = [(a.status, a.text()), (b.status, b.text())];
        outcomes.sort();
        assert_eq!(
            outcomes,
            [(200, "won".to_string()), (409, "lost".to_string())],
            "key {key}"
        );
        let winner = if a.status == 200 { "alpha" } else { "beta" };
        assert_eq!(
            get(addr, &format!("/kv/default/{key}")).await.text(),
            winner
        );
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_other_errors_promptly_and_the_host_recovers() {
    let mut redis = Redis::start();
    let state = TempDir::new("redis-down");
    let host = start_probe(&state, &redis).await;
    let addr = host.addr();
    assert_eq!(send(addr, "PUT", "/kv/default/k", b"v").await.status, 204);

    redis.stop();
    for (method, path) in [
        ("GET", "/kv/default/k"),
        ("PUT", "/kv/default/k"),
        ("POST", "/incr/n?delta=1"),
        ("POST", "/cas/k?delay_ms=0"),
    ] {
        let started = Instant::now();
        let reply = send(addr, method, path, b"x").await;
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "{method} {path}: {}", reply.text());
        assert!(
            reply.text().contains("Redis at 127.0.0.1"),
            "{method} {path}: {}",
            reply.text()
        );
        assert!(
            took < Duration::from_secs(4),
            "{method} {path} took {took:?}"
        );
    }

    // Back (empty: this server keeps nothing), same host, no restart.
    redis.spawn();
    assert_eq!(get(addr, "/kv/default/k").await.status, 404);
    assert_eq!(send(addr, "PUT", "/kv/default/k", b"w").await.status, 204);
    assert_eq!(get(addr, "/kv/default/k").await.text(), "w");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_starts_while_redis_is_down() {
    let mut redis = Redis::start();
    redis.stop();
    let state = TempDir::new("redis-late");
    let host = start_probe(&state, &redis).await;
    let addr = host.addr();
    assert_eq!(get(addr, "/kv/default/k").await.status, 503);
    redis.spawn();
    assert_eq!(send(addr, "PUT", "/kv/default/k", b"v").await.status, 204);
    assert_eq!(get(addr, "/kv/default/k").await.text(), "v");
    host.shutdown().await;
}
