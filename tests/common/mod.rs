//! What the end-to-end tests share: the real component (built by
//! `cargo xtask build`) in the real host, on an ephemeral port, on a real
//! store (a SQLite file in a temporary state directory, or a real
//! `redis-server`: [`Backend`]), and a small HTTP/1.1 client over a plain
//! TCP socket, so that tests control every byte they send.

#![allow(dead_code, unused_imports, unused_macros)]

pub mod ops;
pub use test_support::redis_server;
pub mod spin;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use host::{HostOptions, RequestStats, RunningHost};

pub use ops::{expect_ops, expect_ops_within, Ops};
pub use redis_server::RedisServer;
pub use spin::{external_spin, instrumented, spin_binary, SpinProcess, SKIPPED};
pub use store::{key_of, Backend, Records, Storage};
pub use test_support::http::{
    cookie, first_visit_at, parse, request_bytes, send, send_from, start_session_at, try_send,
    Response,
};

/// One `#[test]` per backend for each test body `fn NAME(backend: Backend)`,
/// named `NAME_on_sqlite` and `NAME_on_redis`, so that the test list shows
/// (and a filter picks) each case on each store. The names are spelled out
/// (macro_rules cannot join identifiers), and checked at compile time.
macro_rules! backend_tests {
    ($($body:ident => $on_sqlite:ident, $on_redis:ident;)*) => {
        $(
            const _: () = assert!(
                $crate::common::same_str(
                    concat!(stringify!($body), "_on_sqlite"),
                    stringify!($on_sqlite)
                ) && $crate::common::same_str(
                    concat!(stringify!($body), "_on_redis"),
                    stringify!($on_redis)
                ),
                concat!("the tests of ", stringify!($body), " are named NAME_on_sqlite, NAME_on_redis")
            );
            #[test]
            fn $on_sqlite() {
                $body($crate::common::Backend::Sqlite)
            }
            #[test]
            fn $on_redis() {
                $body($crate::common::Backend::Redis)
            }
        )*
    };
}
pub(crate) use backend_tests;

/// `a == b`, at compile time (for [`backend_tests`]).
pub const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The tutorial app's manifest.
pub fn manifest() -> PathBuf {
    built_manifest("spin.toml", "small/sessions_tutorial.wasm")
}

/// The sign-in example's manifest (`examples/signin`).
pub fn signin_manifest() -> PathBuf {
    built_manifest("examples/signin/spin.toml", "release/signin.wasm")
}

/// The library README's quick start (`examples/quickstart`).
pub fn quickstart_manifest() -> PathBuf {
    built_manifest("examples/quickstart/spin.toml", "release/quickstart.wasm")
}

/// The manifest at `manifest` (relative to the workspace root), whose
/// component `wasm` (`PROFILE/NAME.wasm`) must have been built.
fn built_manifest(manifest: &str, wasm: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wasm = root.join("target/wasm32-wasip2").join(wasm);
    assert!(
        wasm.exists(),
        "{} is missing: run `cargo xtask build` (or `cargo xtask test`) first",
        wasm.display()
    );
    root.join(manifest)
}

/// The sessions app served by the host: in process, or by an external
/// `spin up` when `SPIN_BIN` names one ([`spin`]).
pub struct App {
    runtime: tokio::runtime::Runtime,
    host: Option<RunningHost>,
    /// The external `spin up`, when the app runs in one.
    external: Option<SpinProcess>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state directory and store.
    pub storage: Storage,
}

impl Backend {
    /// Serves the app on fresh storage of this backend, with these
    /// `SPIN_VARIABLE_*` settings (names as in spin.toml, e.g.
    /// `("idle_timeout_secs", "60")`).
    pub fn start(self, variables: &[(&str, &str)]) -> App {
        App::start_on(self.storage(), variables)
    }
}

impl App {
    /// Serves the app on SQLite (tests that are not about the store).
    pub fn start(variables: &[(&str, &str)]) -> App {
        Backend::Sqlite.start(variables)
    }

    /// Serves the app on `storage` (a restart on what another app left, or
    /// a second instance on a shared Redis), with a runtime-config file
    /// when the store is Redis, as `spin up --runtime-config-file` would.
    pub fn start_on(storage: Storage, variables: &[(&str, &str)]) -> App {
        App::start_manifest(manifest(), storage, variables)
    }

    /// Serves the app of `manifest` on `storage`, as [`App::start_on`]: in
    /// the host in process, or under `SPIN_BIN`, as `$SPIN_BIN up` with the
    /// same flags and variables.
    pub fn start_manifest(manifest: PathBuf, storage: Storage, variables: &[(&str, &str)]) -> App {
        if let Some(spin) = external_spin() {
            let process = SpinProcess::start(&spin, &manifest, &storage, variables, &[]);
            return App {
                runtime: tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap(),
                host: None,
                addr: process.addr,
                external: Some(process),
                storage,
            };
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut options = HostOptions::new(manifest);
        options.state_dir = Some(storage.state.path().to_path_buf());
        // `HOST_LOUD=1 cargo test …` prints the host's request log (with
        // each request's key-value counts) and the guest's stderr.
        options.quiet = std::env::var_os("HOST_LOUD").is_none();
        options.runtime_config_file = storage.runtime_config_file();
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
            external: None,
            addr,
            storage,
        }
    }

    /// Whether this app's host has its instruments ([`App::advance_clock`],
    /// [`App::set_kv_fault`], [`App::take_stats`], …): in process, yes;
    /// under an external spin, no, and the running test's skip of `what`
    /// is said on stderr ([`instrumented`]). Guard every use of them with
    /// it.
    pub fn instrumented(&self, what: &str) -> bool {
        if self.external.is_none() {
            return true;
        }
        spin::say_skipped(what);
        false
    }

    /// The in-process host, for `instrument`.
    fn host(&self, instrument: &str) -> &RunningHost {
        self.host.as_ref().unwrap_or_else(|| {
            panic!(
                "App::{instrument} needs the host's instruments, which an external spin \
                 ({}) does not have: guard it with `if app.instrumented(\"what it checks\")`",
                spin::SPIN_BIN
            )
        })
    }

    /// Moves the guest's wall clock forward.
    pub fn advance_clock(&self, secs: u64) {
        self.host("advance_clock")
            .advance_clock(Duration::from_secs(secs));
    }

    /// Makes every key-value operation fail (`Some`) or work again (`None`).
    pub fn set_kv_fault(&self, fault: Option<&str>) {
        self.host("set_kv_fault")
            .set_kv_fault(fault.map(str::to_owned));
    }

    /// The requests served since the last call, with their kv counts.
    pub fn take_stats(&self) -> Vec<RequestStats> {
        self.host("take_stats").take_request_stats()
    }

    /// Like [`App::take_stats`], waiting until `count` requests are in (a
    /// response without a body can reach us before the guest finishes).
    pub fn take_stats_of(&self, count: usize) -> Vec<RequestStats> {
        self.host("take_stats_of")
            .take_request_stats_of(count, Duration::from_secs(5))
    }

    /// Stops the host and hands back its storage.
    pub fn stop(mut self) -> Storage {
        if let Some(host) = self.host.take() {
            self.runtime.block_on(host.shutdown());
        }
        if let Some(process) = self.external.take() {
            process.stop();
        }
        let placeholder = Storage {
            backend: Backend::Sqlite,
            state: tempfile::tempdir().unwrap(),
            redis: None,
            redis_url: None,
        };
        std::mem::replace(&mut self.storage, placeholder)
    }

    /// The SQLite file of the default store (absent on Redis).
    pub fn db_path(&self) -> PathBuf {
        self.storage.db_path()
    }

    /// Every (key, value) of the default store, read from the store itself.
    pub fn records(&self) -> Records {
        self.storage.records()
    }

    /// Only the session records (`session/…`), without the expiry index.
    pub fn session_records(&self) -> Records {
        self.storage.session_records()
    }

    /// How many session records the store holds (tombstones included).
    pub fn session_count(&self) -> usize {
        self.storage.session_count()
    }

    /// How many live sessions the store holds (records that are not
    /// tombstones).
    pub fn live_session_count(&self) -> usize {
        self.storage.live_session_count()
    }

    /// Makes the store's sweep cursor (with one session) and moves the
    /// clock past the two minutes in which a new cursor cannot be claimed,
    /// so that the cap is enforced from now on. Returns the session.
    pub fn settle_index(&self) -> (String, String) {
        let session = start_session(self);
        self.advance_clock(2 * spin_sessions_core::index::IN_FLIGHT_SECS as u64);
        session
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

/// Starts a stored session as a browser does: `GET /` hands out a pending
/// identifier and the form's token (nothing is stored), and the first form
/// post creates the session (with `v1` empty) under a fresh identifier.
/// Returns the stored session's cookie value and its form token.
pub fn start_session(app: &App) -> (String, String) {
    start_session_at(app.addr)
}

/// A first visit: `GET /` without a cookie. Returns the pending identifier
/// the cookie hands over and the page's form token; nothing is stored.
pub fn first_visit(app: &App) -> (String, String) {
    first_visit_at(app.addr)
}

/// `GET /api/session` for the session with cookie value `id` (never creates
/// one): the status and the JSON.
pub fn session_json(app: &App, id: &str) -> (u16, serde_json::Value) {
    let response = app.get("/api/session", Some(&cookie(id)));
    let json = serde_json::from_slice(&response.body).expect("the API answers JSON");
    (response.status, json)
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            self.runtime.block_on(host.shutdown());
        }
    }
}
