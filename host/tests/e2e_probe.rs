//! End-to-end tests: the real probe component, served over real HTTP on an
//! ephemeral port, with a real SQLite file in a scratch state directory.
//!
//! The probe must be built first (`cargo xtask build`); without it these
//! tests fail and say so.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{built_probe_manifest, get, kv_cases, send, TempDir};
use host::{HostOptions, RequestStats, RunningHost};

/// Starts the probe with its state in `state`, variables from `env`.
async fn start_probe(state: &TempDir, env: Vec<(String, String)>) -> RunningHost {
    let opts = HostOptions {
        state_dir: Some(state.path().to_path_buf()),
        variable_env: Some(env),
        quiet: true,
        ..HostOptions::new(built_probe_manifest())
    };
    host::start(opts).await.expect("the probe app starts")
}

fn only(stats: Vec<RequestStats>) -> RequestStats {
    assert_eq!(stats.len(), 1, "expected one request: {stats:?}");
    stats.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_survives_a_restart_on_the_same_file() {
    let state = TempDir::new("restart");
    let host = start_probe(&state, vec![]).await;
    let put = send(host.addr(), "PUT", "/kv/default/colour", b"teal").await;
    assert_eq!(put.status, 204, "{}", put.text());
    host.shutdown().await;

    assert!(state.path().join("sqlite_key_value.db").exists());
    let host = start_probe(&state, vec![]).await;
    let reply = get(host.addr(), "/kv/default/colour").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "teal"));
    let reply = get(host.addr(), "/kv/default/never-set").await;
    assert_eq!((reply.status, reply.text().as_str()), (404, "absent"));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_set_get_delete_round_trip() {
    let state = TempDir::new("roundtrip");
    let host = start_probe(&state, vec![]).await;
    kv_cases::set_get_delete_round_trip(host.addr()).await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_not_in_key_value_stores_is_denied() {
    let state = TempDir::new("denied");
    let host = start_probe(&state, vec![]).await;
    let reply = get(host.addr(), "/kv/other/k").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (403, "access-denied")
    );
    let reply = send(host.addr(), "PUT", "/kv/secrets/k", b"x").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (403, "access-denied")
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_default_override_and_errors() {
    let state = TempDir::new("vars");
    let host = start_probe(&state, vec![]).await;
    let reply = get(host.addr(), "/var/greeting").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
    let reply = get(host.addr(), "/var/nope").await;
    assert_eq!((reply.status, reply.text().as_str()), (404, "undefined"));
    let reply = get(host.addr(), "/var/Not-Valid").await;
    assert_eq!((reply.status, reply.text().as_str()), (400, "invalid-name"));
    host.shutdown().await;

    let host = start_probe(
        &state,
        vec![("SPIN_VARIABLE_GREETING".into(), "bonjour".into())],
    )
    .await;
    let reply = get(host.addr(), "/var/greeting").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "bonjour"));
    host.shutdown().await;
}

/// Kills the child on drop so a failing test leaves no server behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real binary on the probe with `env` added to its environment;
/// returns the child and the address it printed.
fn spawn_binary(state: &TempDir, env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let manifest = built_probe_manifest();
    let mut command = Command::new(env!("CARGO_BIN_EXE_spin-sessions-host"));
    command
        .arg("up")
        .arg("--from")
        .arg(&manifest)
        .args(["--listen", "127.0.0.1:0", "--quiet", "--state-dir"])
        .arg(state.path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Child(command.spawn().expect("spawn the host binary"));
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let addr: SocketAddr = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no `Serving` line from the binary; got {printed:?}"));
        if let Some(url) = line.strip_prefix("Serving http://") {
            break url.trim().parse().expect("a socket address");
        }
        printed.push(line);
    };
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("Storing default key-value data to")),
        "{printed:?}"
    );
    let routes = lines_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(routes, "Available Routes:");
    let route = lines_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(route, format!("  probe: http://{addr} (wildcard)"));
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_spin_variable_env_and_stops_on_sigterm() {
    let state = TempDir::new("binary");
    let (mut child, addr) = spawn_binary(&state, &[("SPIN_VARIABLE_GREETING", "hola")]);

    let reply = get(addr, "/var/greeting").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hola"));

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "the host exited with {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let state = TempDir::new("sigkill");
    let (mut child, addr) = spawn_binary(&state, &[]);
    for i in 0..20 {
        let reply = send(
            addr,
            "PUT",
            &format!("/kv/default/k{i}"),
            format!("v{i}").as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 204);
    }
    // SIGKILL: no shutdown, no checkpoint, no destructors.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let host = start_probe(&state, vec![]).await;
    for i in 0..20 {
        let reply = get(host.addr(), &format!("/kv/default/k{i}")).await;
        assert_eq!((reply.status, reply.text()), (200, format!("v{i}")));
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increment_counts_from_zero_in_spins_encoding() {
    let state = TempDir::new("incr");
    let host = start_probe(&state, vec![]).await;
    // Stored as Spin stores counters: 8 little-endian bytes; a value of
    // another length is where Spin's host panics: the guest traps (500).
    kv_cases::increment_counts_from_zero(host.addr(), &(-2i64).to_le_bytes(), 500).await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_gives_500_and_the_host_keeps_serving() {
    let state = TempDir::new("trap");
    let host = start_probe(&state, vec![]).await;
    let reply = get(host.addr(), "/trap").await;
    assert_eq!(reply.status, 500);
    let reply = get(host.addr(), "/hello").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
    let stats = host.take_request_stats();
    assert_eq!(
        stats.iter().map(|s| s.status).collect::<Vec<_>>(),
        [500, 200]
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_headers_are_set_like_spin() {
    let state = TempDir::new("headers");
    let host = start_probe(&state, vec![]).await;
    let addr = host.addr();
    let reply = get(addr, "/headers?x=1&y=2").await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let headers: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once(": ").or_else(|| line.split_once(':')))
        .collect();
    assert_eq!(
        headers["spin-full-url"],
        format!("http://{addr}/headers?x=1&y=2")
    );
    assert_eq!(headers["spin-path-info"], "/headers");
    assert_eq!(headers["spin-matched-route"], "/...");
    assert_eq!(headers["spin-raw-component-route"], "/...");
    assert_eq!(headers["spin-component-route"], "");
    assert_eq!(headers["spin-base-path"], "/");
    let client: SocketAddr = headers["spin-client-addr"].parse().expect("client addr");
    assert_eq!(client.ip(), addr.ip());
    host.shutdown().await;
}

/// Each loopback address a client connects from is a client address of
/// its own, as under Spin, and a `spin-client-addr` the client sends is
/// replaced, never passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_is_the_peer_and_cannot_be_forged() {
    use std::io::{Read, Write};
    let state = TempDir::new("client-addr");
    let host = start_probe(&state, vec![]).await;
    let addr = host.addr();
    let reported = tokio::task::spawn_blocking(move || {
        ["127.0.0.2", "127.0.0.3"].map(|local| {
            let local: std::net::IpAddr = local.parse().unwrap();
            let mut stream = test_support::net::connect_from(local, addr).unwrap();
            let request = format!(
                "GET /headers HTTP/1.1\r\nHost: {addr}\r\nspin-client-addr: 6.6.6.6:66\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            let value = reply
                .lines()
                .find_map(|line| line.strip_prefix("spin-client-addr: "))
                .expect("the probe lists spin-client-addr")
                .trim()
                .to_owned();
            (local, value.parse::<SocketAddr>().expect("an address"))
        })
    })
    .await
    .unwrap();
    for (local, seen) in reported {
        assert_eq!(seen.ip(), local, "the guest sees the real peer");
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_clock_moves_with_advance_clock() {
    let state = TempDir::new("time");
    let host = start_probe(&state, vec![]).await;
    let read = |reply: common::Reply| -> u64 {
        assert_eq!(reply.status, 200);
        reply.text().parse().expect("seconds since the epoch")
    };
    let before = read(get(host.addr(), "/time").await);
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(before.abs_diff(real) <= 5, "guest {before} vs host {real}");
    host.advance_clock(Duration::from_secs(3600));
    let after = read(get(host.addr(), "/time").await);
    assert!(
        (before + 3600..before + 3660).contains(&after),
        "before {before}, after {after}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_kv_counts() {
    let state = TempDir::new("counts");
    let host = start_probe(&state, vec![]).await;
    let addr = host.addr();
    let _ = host.take_request_stats();

    // (method, path, body, status, kv reads, kv writes); no request opens a
    // connection on SQLite.
    type Case = (&'static str, &'static str, &'static [u8], u16, u64, u64);
    let cases: [Case; 8] = [
        ("PUT", "/kv/default/a", b"1", 204, 0, 1),
        ("GET", "/kv/default/a", b"", 200, 1, 0),
        ("DELETE", "/kv/default/a", b"", 204, 0, 1),
        ("GET", "/hello", b"", 200, 0, 0),
        // cas.new is no I/O; a swap is a write.
        ("POST", "/cas/c?delay_ms=0", b"v", 200, 0, 1),
        // current is a read.
        ("POST", "/cas-race/c", b"w", 200, 1, 1),
        ("POST", "/incr/n?delta=1", b"", 200, 0, 1),
        // One guest call, one read, however many keys.
        ("POST", "/get-many", b"a\nc\nn", 200, 1, 0),
    ];
    for (method, path, body, status, reads, writes) in cases {
        let reply = send(addr, method, path, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
        let stats = only(host.take_request_stats_of(1, std::time::Duration::from_secs(5)));
        assert_eq!(
            (
                stats.method.as_str(),
                stats.status,
                stats.kv_reads,
                stats.kv_writes,
                stats.kv_connections
            ),
            (method, status, reads, writes, 0),
            "{method} {path}"
        );
        assert_eq!(stats.path, path.split('?').next().unwrap());
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_fault_switch_fails_every_operation() {
    let state = TempDir::new("fault");
    let host = start_probe(&state, vec![]).await;
    let addr = host.addr();
    assert_eq!(send(addr, "PUT", "/kv/default/k", b"v").await.status, 204);
    host.set_kv_fault(Some("disk on fire".into()));
    let reply = get(addr, "/kv/default/k").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (503, "other: disk on fire")
    );
    let reply = send(addr, "POST", "/incr/n?delta=1", b"").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("disk on fire"), "{}", reply.text());
    // Access control still comes first.
    assert_eq!(get(addr, "/kv/other/k").await.status, 403);
    host.set_kv_fault(None);
    let reply = get(addr, "/kv/default/k").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "v"));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_several_requests_on_one_connection() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let state = TempDir::new("keepalive");
    let host = start_probe(&state, vec![]).await;
    let stream = tokio::net::TcpStream::connect(host.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = http::Request::get("/hello")
            .header("host", host.addr().to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        // Waits for the previous exchange to settle; fails if the server
        // closed the connection instead of keeping it alive.
        sender.ready().await.expect("the connection stays open");
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let state = TempDir::new("graceful");
    let host = start_probe(&state, vec![]).await;
    let addr = host.addr();
    let in_flight =
        tokio::spawn(async move { send(addr, "POST", "/cas/slow?delay_ms=1000", b"done").await });
    // Let the request reach the guest, which then sleeps for a second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    host.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "shutdown did not wait for the request"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "won"));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting connections after shutdown"
    );

    let host = start_probe(&state, vec![]).await;
    let stored = get(host.addr(), "/kv/default/slow").await;
    assert_eq!(stored.text(), "done");
    host.shutdown().await;
}
