//! The host's HTTP server on a keep-alive connection, as Spin's behaves
//! (see the reference "Spin's HTTP server on keep-alive connections"): no
//! `TCP_NODELAY`, and the guest's response handed to hyper as soon as the
//! guest sets it. A response that reaches hyper before its body goes out
//! in two writes, and Nagle's algorithm holds the second one until the
//! client's delayed ACK (~40 ms on Linux).
//!
//! Whether the response reaches hyper before its body is a race between
//! hyper's connection task and the guest. The tests make it certain with a
//! pause between the hand-over and the body, and print the race itself
//! (after a key-value get, whose `block_in_place` lets hyper's connection
//! task run on another thread, as under Spin).
//!
//! Each case sends 30 requests on one connection, each request in a single
//! write, and counts the responses slower than 20 ms. The client is a plain
//! blocking socket on the test's own thread, so the host's runtime (two
//! workers, as `spin-sessions-host up` has on the 2-core target) serves
//! nothing else.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TempDir;

/// Requests per case, as in the reference's table.
const REQUESTS: usize = 30;

/// A response slower than this has waited for a delayed ACK: the stall is
/// ~40 ms, a served request well under 5 ms.
const STALL: Duration = Duration::from_millis(20);

/// A host serving `manifest` on its own two-worker runtime.
struct Served {
    runtime: tokio::runtime::Runtime,
    host: Option<host::RunningHost>,
    _state: TempDir,
    _alone: std::sync::MutexGuard<'static, ()>,
}

/// Held by the test that is measuring.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Served {
    /// Serves `manifest` for one test. The tests of this file run one at a
    /// time (the guard is kept in `Served`): each measures latency, which a
    /// neighbour test's load on the 2 cores would blur.
    fn start(manifest: PathBuf, tag: &str) -> Self {
        // A test that failed while holding it poisons it; the next one may
        // still measure.
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let state = TempDir::new(tag);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let opts = host::HostOptions {
            state_dir: Some(state.path().to_path_buf()),
            variable_env: Some(vec![]),
            quiet: true,
            ..host::HostOptions::new(manifest)
        };
        let host = runtime.block_on(host::start(opts)).expect("host starts");
        Served {
            runtime,
            host: Some(host),
            _state: state,
            _alone: alone,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.host.as_ref().unwrap().addr()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            self.runtime.block_on(host.shutdown());
        }
    }
}

/// A manifest whose component must have been built by `cargo xtask build`.
fn built(manifest: &Path, component: &str) -> PathBuf {
    let config = host::open_app(&host::HostOptions {
        variable_env: Some(vec![]),
        ..host::HostOptions::new(manifest)
    })
    .expect("the manifest is valid");
    let source = &config.manifest.components[component].source;
    assert!(
        source.exists(),
        "{} is missing: run `cargo xtask build` first",
        source.display()
    );
    manifest.to_path_buf()
}

fn handover_manifest() -> PathBuf {
    built(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/handover/spin.toml"),
        "handover",
    )
}

fn sessions_manifest() -> PathBuf {
    built(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml"),
        "sessions",
    )
}

/// A response as read off the wire.
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive HTTP/1.1 connection that writes each request at once.
struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        // The client must not delay its own requests: only the server's
        // writes are under test.
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Connection {
            reader: BufReader::new(stream),
            host: addr.to_string(),
        }
    }

    /// Sends the request in one write and reads the whole response;
    /// returns it and how long it took.
    fn exchange(
        &mut self,
        method: &str,
        target: &str,
        extra: &str,
        body: &[u8],
    ) -> (Wire, Duration) {
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n{extra}\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let started = Instant::now();
        self.reader.get_mut().write_all(&request).unwrap();
        let wire = self.read_response();
        (wire, started.elapsed())
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "truncated response line {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn read_response(&mut self) -> Wire {
        let status_line = self.read_line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.read_line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut wire = Wire {
            status,
            headers,
            body: Vec::new(),
        };
        wire.body = self.read_body(&wire);
        wire
    }

    fn read_body(&mut self, wire: &Wire) -> Vec<u8> {
        if let Some(length) = wire.header("content-length") {
            let mut body = vec![0; length.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            return body;
        }
        assert_eq!(
            wire.header("transfer-encoding"),
            Some("chunked"),
            "a keep-alive response needs a length or chunks"
        );
        let mut body = Vec::new();
        loop {
            let size = usize::from_str_radix(&self.read_line(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

/// Latencies of one case, with the figures the reference reports.
struct Timings(Vec<Duration>);

impl Timings {
    fn median(&self) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    }

    fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    fn stalled(&self) -> usize {
        self.0.iter().filter(|d| **d > STALL).count()
    }

    fn report(&self, case: &str) {
        eprintln!(
            "{case:<48} median {:>6.2} ms  max {:>6.2} ms  over 20 ms: {:>2} of {}",
            self.median().as_secs_f64() * 1e3,
            self.max().as_secs_f64() * 1e3,
            self.stalled(),
            self.0.len()
        );
    }
}

/// Sends `REQUESTS` requests to the handover fixture with `query` (after a
/// warm-up one) on one connection; every answer must be its 200.
fn handover_case(addr: SocketAddr, method: &str, query: &str) -> Timings {
    let mut connection = Connection::open(addr);
    let target = format!("/?{query}");
    let body: &[u8] = if method == "POST" { b"a=1&b=2" } else { b"" };
    let mut times = Vec::new();
    for i in 0..=REQUESTS {
        let (wire, took) = connection.exchange(method, &target, "", body);
        assert_eq!(
            (wire.status, wire.body.as_slice()),
            (200, &b"handover\n"[..])
        );
        assert_eq!(
            wire.header("content-length").is_some(),
            query.contains("length=1"),
            "{query}"
        );
        if i > 0 {
            times.push(took);
        }
    }
    let timings = Timings(times);
    timings.report(&format!("handover {method} ?{query}"));
    timings
}

/// The mechanism, made certain: a response handed over well before its
/// body (`pause_ms`) goes out as the head alone, and the body then waits
/// for the client's delayed ACK (Nagle on, as in Spin). A host that set
/// `TCP_NODELAY`, or that held the response until its body was complete,
/// would not stall here. Written first and then handed over, the same
/// response goes out in one piece.
#[test]
fn a_response_handed_over_before_its_body_waits_for_the_delayed_ack() {
    let served = Served::start(handover_manifest(), "handover-pause");
    for method in ["GET", "POST"] {
        let late = handover_case(served.addr(), method, "order=late&pause_ms=5");
        assert!(
            late.stalled() >= REQUESTS * 2 / 3,
            "{method}, late with a pause: only {} of {REQUESTS} requests over 20 ms",
            late.stalled()
        );
        let early = handover_case(served.addr(), method, "order=early&pause_ms=5");
        assert!(
            early.stalled() <= 2,
            "{method}, early with a pause: {} of {REQUESTS} requests over 20 ms",
            early.stalled()
        );
    }
    // Spin's race, as the reference measured it: a late hand-over right
    // after a key-value get, without a pause. Under `spin up` 13–21 of 30
    // stall in each case; here (SQLite in `block_in_place`, as Spin runs
    // it) 11–29 of 30 on a busy machine and 0–3 on an idle one: which
    // thread gets there first is scheduling, no figure to assert. Printed
    // for the table.
    for method in ["GET", "POST"] {
        for query in ["kv=1&order=late", "kv=1&order=late&length=1"] {
            handover_case(served.addr(), method, query);
        }
    }
}

#[test]
fn early_hand_over_or_no_kv_call_does_not_stall() {
    let served = Served::start(handover_manifest(), "handover-early");
    for method in ["GET", "POST"] {
        for query in [
            "kv=1&order=early",
            "kv=1&order=early&length=1",
            "kv=0&order=late",
            "kv=0&order=late&length=1",
            "kv=0&order=early",
            "kv=0&order=early&length=1",
        ] {
            let timings = handover_case(served.addr(), method, query);
            assert!(
                timings.stalled() <= 2,
                "{method} ?{query}: {} of {REQUESTS} requests over 20 ms",
                timings.stalled()
            );
        }
    }
}

/// The value of `name="csrf_token"` in a page.
fn csrf_token(page: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let start = page.find(marker).expect("a csrf_token field") + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

/// The sessions component's requests of the reference's table, measured
/// on the host (printed; the stall's presence depends on the component's
/// hand-over, asserted above with the fixture).
#[test]
fn sessions_component_requests_on_one_keep_alive_connection() {
    let served = Served::start(sessions_manifest(), "handover-sessions");
    let mut connection = Connection::open(served.addr());
    let cookie_of = |response: &Wire| {
        response
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_string()
    };
    // A first visit (a pending cookie and a token), then the first post,
    // which stores the session and hands over its cookie.
    let (first, _) = connection.exchange("GET", "/2", "", b"");
    assert_eq!(first.status, 200);
    let token = csrf_token(&String::from_utf8_lossy(&first.body));
    let form = format!("csrf_token={token}&v2=Engineer");
    let form_headers = |cookie: &str| {
        format!("cookie: {cookie}\r\ncontent-type: application/x-www-form-urlencoded\r\n")
    };
    let (created, _) = connection.exchange(
        "POST",
        "/2",
        &form_headers(&cookie_of(&first)),
        form.as_bytes(),
    );
    assert_eq!(created.status, 303);
    let cookie = cookie_of(&created);
    let with_cookie = format!("cookie: {cookie}\r\n");
    let post_headers = form_headers(&cookie);
    let cases: [(&str, &str, &str, &[u8], u16); 3] = [
        ("POST", "/2", &post_headers, form.as_bytes(), 303),
        ("GET", "/2", &with_cookie, b"", 200),
        ("GET", "/nothing", &with_cookie, b"", 404),
    ];
    for (method, path, extra, body, status) in cases {
        let mut times = Vec::new();
        for i in 0..=REQUESTS {
            let (wire, took) = connection.exchange(method, path, extra, body);
            assert_eq!(wire.status, status, "{method} {path}");
            if i > 0 {
                times.push(took);
            }
        }
        Timings(times).report(&format!("sessions {method} {path} ({status})"));
    }
}
