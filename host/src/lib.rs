//! A small local host that runs a Spin HTTP app (`spin.toml`, manifest
//! version 2) the way `spin up` does, on wasmtime 48.
//!
//! It implements what the sessions project needs, faithfully: `wasi:http`
//! 0.2 components instantiated per request and `wasi:http` 0.3.0 ones
//! (spin-sdk 7) served with instance reuse, both as Spin 4 serves them,
//! Spin's routing and `spin-*` request headers, `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue@0.2.0-draft2`
//! on Spin's SQLite layout or on Redis, `fermyon:spin/variables@2.0.0` with
//! the environment provider, and Spin's runtime config for key-value stores
//! (`type = "spin"` and `type = "redis"`).
//! Anything else a manifest or runtime config asks for is refused at
//! startup.
//!
//! The library also offers a test API on [`RunningHost`]: a movable wall
//! clock, per-request key-value statistics and a key-value fault switch.

#![warn(missing_docs)]

pub mod app;
// Generated from WIT; the WIT files carry the documentation.
#[allow(missing_docs)]
pub mod bindings;
pub mod clock;
pub mod engine;
pub mod kv;
pub mod manifest;
mod p3;
pub mod reuse;
pub mod routes;
pub mod runtime_config;
pub mod server;
pub mod state;
mod toml_fields;
pub mod variables;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use app::{open_app, AppConfig};
pub use reuse::InstanceReuse;

/// How to run an app.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The `spin.toml` to run.
    pub manifest: PathBuf,
    /// Where to listen; port 0 picks a free port (see [`RunningHost::addr`]).
    pub listen: SocketAddr,
    /// Spin's `--runtime-config-file`.
    pub runtime_config_file: Option<PathBuf>,
    /// Spin's `--state-dir`; `None` means `.spin` beside the manifest (or
    /// the runtime config's `state_dir`).
    pub state_dir: Option<PathBuf>,
    /// The environment the variables provider reads (`SPIN_VARIABLE_*`);
    /// `None` reads the process environment.
    pub variable_env: Option<Vec<(String, String)>>,
    /// When true, no per-request log lines are printed.
    pub quiet: bool,
    /// Spin's instance-reuse settings for WASI 0.3 components
    /// (`--max-instance-reuse-count` and the like); Spin's defaults unless
    /// set. WASI 0.2 components always get a fresh instance per request.
    pub instance_reuse: InstanceReuse,
}

impl HostOptions {
    /// Options for `manifest` on an ephemeral 127.0.0.1 port, everything
    /// else as `spin up` defaults it.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            runtime_config_file: None,
            state_dir: None,
            variable_env: None,
            quiet: false,
            instance_reuse: InstanceReuse::default(),
        }
    }
}

/// One finished request, as recorded for tests and logged.
///
/// A WASI 0.2 request has an instance of its own, and its counts are that
/// instance's. A WASI 0.3 instance may serve many requests, several at
/// once: a request's counts are what its instance counted between the
/// request's acceptance and its end, which is exact while the instance
/// serves one request at a time, and otherwise also includes the calls of
/// the requests it served meanwhile (an over-approximation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestStats {
    /// The request method.
    pub method: String,
    /// The request path (without the query).
    pub path: String,
    /// The response status sent.
    pub status: u16,
    /// Key-value reads the guest made (get, exists, get-keys, list-keys,
    /// get-many, cas current), across both key-value interfaces.
    pub kv_reads: u64,
    /// Key-value writes the guest made (set, delete, set-many, delete-many,
    /// increment, swap).
    pub kv_writes: u64,
    /// New store connections the guest's calls opened, as Spin would open
    /// them: on Redis, one per cas handle (`cas.new`, and the fresh handle
    /// Spin makes after every refused swap) and the store's shared
    /// connection at its first open in the process; on SQLite none.
    pub kv_connections: u64,
    /// `fermyon:spin/variables@2.0.0` gets the guest made.
    pub var_reads: u64,
    /// The number of the instance that served the request (from 1, in the
    /// order the host created them); 0 when no instance took it (the host
    /// answered itself, or the instance could not be created).
    pub instance: u64,
    /// The request's place among those its instance accepted, from 1:
    /// always 1 for WASI 0.2; at most `--max-instance-reuse-count` (the
    /// instance's draw of it) for WASI 0.3. 0 when no instance took it.
    pub instance_request: u64,
    /// The requests its instance had accepted and not answered yet when it
    /// accepted this one (WASI 0.3; always 0 for WASI 0.2): below
    /// `--max-instance-concurrent-reuse-count`.
    pub instance_concurrent: u64,
    /// From receiving the request to the guest finishing.
    pub duration: Duration,
}

/// A route as `spin up` lists it at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The component serving the route.
    pub component: String,
    /// The route, printed as Spin prints it (`/path`, or
    /// `/prefix (wildcard)`).
    pub route: String,
    /// The component's description, if any.
    pub description: Option<String>,
}

/// How long [`RunningHost::shutdown`] lets in-flight requests finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A host serving an app. Dropping it stops accepting connections; use
/// [`RunningHost::shutdown`] to also wait for in-flight requests.
pub struct RunningHost {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    routes: Vec<RouteInfo>,
    startup_messages: Vec<String>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Validates and loads the app, binds the listener and starts serving.
pub async fn start(opts: HostOptions) -> anyhow::Result<RunningHost> {
    let config = open_app(&opts)?;
    for dup in &config.duplicate_routes {
        eprintln!(
            "spin-sessions-host: route {:?} of component `{}` is a duplicate and will never be \
             used (component `{}` serves it)",
            dup.route, dup.replaced, dup.effective
        );
    }
    let routes = config
        .router
        .routes()
        .iter()
        .map(|r| RouteInfo {
            component: r.component().to_string(),
            route: r.to_string(),
            description: config.manifest.components[r.component()]
                .description
                .clone(),
        })
        .collect();
    let startup_messages = config.startup_messages();
    let shared = Arc::new(server::Shared::new(opts.quiet));
    let app = app::load(config, &shared, opts.instance_reuse).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            if e.kind() == ErrorKind::AddrInUse {
                anyhow::anyhow!("{} is already in use", opts.listen)
            } else {
                anyhow::anyhow!("unable to listen on {}: {e}", opts.listen)
            }
        })?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let server = Arc::new(server::Server {
        app,
        shared: shared.clone(),
    });
    let (shutdown, signal) = watch::channel(false);
    let task = tokio::spawn(server::serve(listener, server, signal, SHUTDOWN_GRACE));
    Ok(RunningHost {
        addr,
        shared,
        routes,
        startup_messages,
        shutdown,
        task: Some(task),
    })
}

impl RunningHost {
    /// The address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The routes served, most specific first.
    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// The informational lines `spin up` prints before "Serving" (runtime
    /// config in use, where the default store lives).
    pub fn startup_messages(&self) -> &[String] {
        &self.startup_messages
    }

    /// How many component instances the host has created so far: one per
    /// request of a WASI 0.2 component; for WASI 0.3, one per instance,
    /// however many requests it served.
    pub fn instantiations(&self) -> u64 {
        self.shared
            .instances
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves the guests' wall clock forward by `by` (the monotonic clock is
    /// unaffected).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Returns and clears the stats of the requests finished so far (at most
    /// the last [`server::STATS_CAPACITY`]), oldest first.
    ///
    /// A request's stats are recorded before the end of its response body is
    /// sent, so they are present once a client has read a response with a
    /// body. A response without one (204, 303, HEAD) may reach the client
    /// before the guest has finished: use
    /// [`RunningHost::take_request_stats_of`] to wait for those.
    pub fn take_request_stats(&self) -> Vec<RequestStats> {
        let mut stats = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.drain(..).collect()
    }

    /// Like [`RunningHost::take_request_stats`], after waiting (up to
    /// `within`) until the stats of at least `count` requests are in.
    pub fn take_request_stats_of(&self, count: usize, within: Duration) -> Vec<RequestStats> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let ready = self
                .shared
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
                >= count;
            if ready || std::time::Instant::now() >= deadline {
                return self.take_request_stats();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Test hook: while `Some(message)`, every key-value operation of both
    /// interfaces (including opening a store the component may use) fails
    /// with `other(message)`.
    pub fn set_kv_fault(&self, fault: Option<String>) {
        self.shared.fault.set(fault);
    }

    /// Stops accepting connections, lets in-flight requests finish (up to
    /// [`SHUTDOWN_GRACE`]) and closes idle connections.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        // Without an explicit shutdown the server still stops accepting and
        // winds down its connections in the background.
        let _ = self.shutdown.send(true);
    }
}
