//! A real `redis-server` (Debian's package) for one test or benchmark
//! phase: on a free 127.0.0.1 port, in its own temporary directory, stopped
//! when dropped. The one spawner of the workspace: the root tests, the
//! host's tests (unit and integration) and the benchmark all use it.
//!
//! Shared behind an `Arc` (two hosts on one server, a test that stops and
//! restarts it under load), so its methods take `&self`.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// One `redis-server` process (or none, between a stop and a restart).
pub struct RedisServer {
    port: Mutex<u16>,
    dir: tempfile::TempDir,
    persistent: bool,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a server; with `persistent`, every write is appended to a log
    /// that is fsynced before the write is acknowledged (`appendonly yes`,
    /// `appendfsync always`), so a restart, even after a SIGKILL, keeps
    /// everything acknowledged. Without it, nothing goes to disk.
    pub fn start(persistent: bool) -> RedisServer {
        let server = RedisServer::not_started(persistent);
        server.spawn(true);
        server
    }

    /// A free port and a directory, with no server yet (as when Redis is
    /// down when a host starts): [`RedisServer::restart`] starts it there.
    pub fn not_started(persistent: bool) -> RedisServer {
        assert!(
            is_installed(),
            "redis-server is missing: apt-get install redis-server (cargo xtask test installs it)"
        );
        RedisServer {
            port: Mutex::new(free_port()),
            dir: tempfile::tempdir().unwrap(),
            persistent,
            child: Mutex::new(None),
        }
    }

    /// The process id of the running server (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .expect("the server is running")
            .id()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        *self.port.lock().unwrap()
    }

    /// The URL for a runtime config's `url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// The runtime config that puts the `default` store on this server.
    pub fn runtime_config(&self) -> String {
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            self.url()
        )
    }

    /// Where the server keeps its files (the append-only log, if any).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A plain connection, to look at (or tamper with) what the hosts stored.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("redis-server answers")
    }

    /// Stops the server (SIGTERM, so a persistent one flushes its log).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts it again (after a stop, or stopping it first; or for the first
    /// time after [`RedisServer::not_started`]) on the same port and
    /// directory: the hosts' URL stays valid. A server that is not
    /// persistent comes back empty.
    pub fn restart(&self) {
        self.stop();
        self.spawn(false);
    }

    /// Kills the server with SIGKILL (no flush, no shutdown) and starts it
    /// again on the same port and directory, from what it had on disk.
    pub fn crash_and_restart(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(false);
    }

    /// Spawns the process and waits until it answers. On the first start
    /// the port is picked here; a port freed by the probe can be taken by a
    /// parallel test's server before ours binds it, so the one answering
    /// must be ours (its `process_id`), else another port is tried. A
    /// restart keeps its port: the hosts are configured with it.
    fn spawn(&self, pick_port: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if pick_port {
                *self.port.lock().unwrap() = free_port();
            }
            let port = self.port();
            let mut command = Command::new(REDIS_SERVER);
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", ""])
                .arg("--dir")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if self.persistent {
                command.args(["--appendonly", "yes", "--appendfsync", "always"]);
            } else {
                command.args(["--appendonly", "no"]);
            }
            let mut child = command.spawn().expect("redis-server starts");
            let pid = child.id();
            let up = loop {
                assert!(Instant::now() < deadline, "redis-server did not listen");
                if child.try_wait().unwrap().is_some() {
                    // It could not bind the port.
                    break false;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    match server_pid(port) {
                        Some(p) if p == pid => break true,
                        // Loading its log, or not started yet: ask again.
                        None => {}
                        // Another test's server holds the port.
                        Some(_) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break false;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                *self.child.lock().unwrap() = Some(child);
                return;
            }
            assert!(
                pick_port,
                "redis-server could not start again on port {port}"
            );
        }
    }
}

/// Whether Debian's `redis-server` is installed.
pub fn is_installed() -> bool {
    Path::new(REDIS_SERVER).exists()
}

/// The `process_id` of the server answering on `port`, once it serves.
fn server_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
