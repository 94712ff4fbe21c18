//! What the end-to-end tests share: the real component (built by
//! `cargo xtask build`) in the real host, on an ephemeral port, with a real
//! SQLite file in a temporary state directory, and a small HTTP/1.1 client
//! over a plain TCP socket, so that tests control every byte they send.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use host::{HostOptions, RequestStats, RunningHost};

/// The sessions app's manifest.
pub fn manifest() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wasm = root.join("target/wasm32-wasip2/release/spin_sessions.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run `cargo xtask build` (or `cargo xtask test`) first",
        wasm.display()
    );
    root.join("spin.toml")
}

/// The sessions app served by the host.
pub struct App {
    runtime: tokio::runtime::Runtime,
    host: Option<RunningHost>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The state directory holding `sqlite_key_value.db`.
    pub state: tempfile::TempDir,
}

impl App {
    /// Serves the app with these `SPIN_VARIABLE_*` settings (names as in
    /// spin.toml, e.g. `("idle_timeout_secs", "60")`).
    pub fn start(variables: &[(&str, &str)]) -> App {
        let state = tempfile::tempdir().unwrap();
        App::start_in(state, variables)
    }

    /// Serves the app on an existing state directory (a restart).
    pub fn start_in(state: tempfile::TempDir, variables: &[(&str, &str)]) -> App {
        App::start_with(state, variables, None)
    }

    /// Serves the app on `state` with a runtime-config file holding
    /// `runtime_config` (Spin's TOML, e.g. a `type = "redis"` store), as
    /// `spin up --runtime-config-file` would.
    pub fn start_with(
        state: tempfile::TempDir,
        variables: &[(&str, &str)],
        runtime_config: Option<&str>,
    ) -> App {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut options = HostOptions::new(manifest());
        options.state_dir = Some(state.path().to_path_buf());
        options.quiet = true;
        if let Some(text) = runtime_config {
            let file = state.path().join("runtime-config.toml");
            std::fs::write(&file, text).unwrap();
            options.runtime_config_file = Some(file);
        }
        options.variable_env = Some(
            variables
                .iter()
                .map(|(k, v)| (format!("SPIN_VARIABLE_{}", k.to_uppercase()), v.to_string()))
                .collect(),
        );
        let host = runtime
            .block_on(host::start(options))
            .expect("the host starts");
        let addr = host.addr();
        App {
            runtime,
            host: Some(host),
            addr,
            state,
        }
    }

    fn host(&self) -> &RunningHost {
        self.host.as_ref().unwrap()
    }

    /// Moves the guest's wall clock forward.
    pub fn advance_clock(&self, secs: u64) {
        self.host().advance_clock(Duration::from_secs(secs));
    }

    /// Makes every key-value operation fail (`Some`) or work again (`None`).
    pub fn set_kv_fault(&self, fault: Option<&str>) {
        self.host().set_kv_fault(fault.map(str::to_owned));
    }

    /// The requests served since the last call, with their kv counts.
    pub fn take_stats(&self) -> Vec<RequestStats> {
        self.host().take_request_stats()
    }

    /// Like [`App::take_stats`], waiting until `count` requests are in (a
    /// response without a body can reach us before the guest finishes).
    pub fn take_stats_of(&self, count: usize) -> Vec<RequestStats> {
        self.host()
            .take_request_stats_of(count, Duration::from_secs(5))
    }

    /// Stops the host and hands back its state directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        let host = self.host.take().unwrap();
        self.runtime.block_on(host.shutdown());
        std::mem::replace(&mut self.state, tempfile::tempdir().unwrap())
    }

    /// The SQLite file of the default store.
    pub fn db_path(&self) -> PathBuf {
        self.state.path().join("sqlite_key_value.db")
    }

    /// Every (key, value) of the default store, read from the SQLite file.
    pub fn records(&self) -> Vec<(String, Vec<u8>)> {
        let db = rusqlite::Connection::open(self.db_path()).unwrap();
        let mut query = db
            .prepare("SELECT key, value FROM spin_key_value WHERE store = 'default' ORDER BY key")
            .unwrap();
        let rows: Vec<(String, Vec<u8>)> = query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    }

    /// Only the session records (`session/…`), without the expiry index.
    pub fn session_records(&self) -> Vec<(String, Vec<u8>)> {
        self.records()
            .into_iter()
            .filter(|(key, _)| key.starts_with("session/"))
            .collect()
    }

    /// Sends `raw` bytes as one request and reads the response.
    pub fn raw(&self, raw: &[u8]) -> Response {
        send(self.addr, raw)
    }

    /// `GET path` with an optional `Cookie` header.
    pub fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        self.request("GET", path, cookie, None, b"")
    }

    /// `POST path` with a form body.
    pub fn post_form(&self, path: &str, cookie: Option<&str>, body: &str) -> Response {
        self.request(
            "POST",
            path,
            cookie,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        )
    }

    /// Any request.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        send(
            self.addr,
            &request_bytes(self.addr, method, path, cookie, content_type, body),
        )
    }
}

/// The bytes of one HTTP/1.1 request (`Connection: close`), with an optional
/// `Cookie` and `Content-Type`, and `Content-Length` for a body or a POST.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if method == "POST" || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            self.runtime.block_on(host.shutdown());
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers with lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The session cookie's value from `Set-Cookie`, if one was set.
    pub fn session_cookie(&self) -> Option<String> {
        let set_cookie = self.header("set-cookie")?;
        let value = set_cookie.strip_prefix("session=")?.split(';').next()?;
        Some(value.to_owned())
    }

    /// The CSRF token of the page's forms.
    pub fn csrf_token(&self) -> String {
        let text = self.text();
        let marker = r#"name="csrf_token" value=""#;
        let start = text.find(marker).expect("the page has a form token") + marker.len();
        text[start..].split('"').next().unwrap().to_owned()
    }
}

/// `session=<id>`, as a browser would send it.
pub fn cookie(id: &str) -> String {
    format!("session={id}")
}

/// Sends `raw` to `addr` and reads the response until the server closes.
/// Panics when there is no whole response.
pub fn send(addr: SocketAddr, raw: &[u8]) -> Response {
    try_send(addr, raw).unwrap_or_else(|err| panic!("{err}"))
}

/// Like [`send`], but says why there is no whole response (no server, a
/// connection cut before the end of the response, a read timeout).
pub fn try_send(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    // The server may answer before reading all of a body it refuses, and
    // then close: a failed write is not a failed exchange.
    let _ = stream.write_all(raw);
    let mut bytes = Vec::new();
    let read = stream.read_to_end(&mut bytes);
    parse(&bytes).ok_or_else(|| {
        let why = read.err().map(|e| e.to_string()).unwrap_or_default();
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "not a whole HTTP response ({why}): {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        )
    })
}

/// Parses a whole response; `None` if it is cut short (a chunked body
/// without its last chunk included).
pub fn parse(bytes: &[u8]) -> Option<Response> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &bytes[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// A real `redis-server` (Debian's package) on a free 127.0.0.1 port, in a
/// temporary directory, stopped when dropped.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    persistent: bool,
}

impl RedisServer {
    /// Starts a server; with `persistent`, every write is appended to an
    /// fsynced log, so a restart keeps what was acknowledged.
    pub fn start(persistent: bool) -> RedisServer {
        assert!(
            Path::new("/usr/bin/redis-server").exists(),
            "redis-server is missing: apt-get install redis-server (cargo xtask test installs it)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent,
        };
        server.spawn();
        server
    }

    /// The URL for a runtime config's `url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The runtime config that puts the `default` store on this server.
    pub fn runtime_config(&self) -> String {
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            self.url()
        )
    }

    fn spawn(&mut self) {
        let mut command = std::process::Command::new("/usr/bin/redis-server");
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        self.child = Some(command.spawn().expect("redis-server starts"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM, so a persistent one flushes its log).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
