//! Loading an app: manifest + runtime config + variables into a validated
//! [`AppConfig`], then stores opened and components compiled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use wasmtime_wasi_http::handler::ProxyHandler;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::kv::redis::RedisStore;
use crate::kv::sqlite::{DbLocation, SqliteDb, SqliteStore};
use crate::kv::StoreRegistry;
use crate::manifest::Manifest;
use crate::p3::P3Handler;
use crate::reuse::InstanceReuse;
use crate::routes::{DuplicateRoute, Router};
use crate::runtime_config::{self, RuntimeConfig, StoreConfig};
use crate::server::Shared;
use crate::state::{self, HostState, StoreFactory};
use crate::variables::{EnvSource, Resolver};
use crate::HostOptions;

/// A validated app: everything `spin up` checks before serving, without
/// opening stores or compiling anything.
#[derive(Debug)]
pub struct AppConfig {
    /// The manifest.
    pub manifest: Manifest,
    /// The route table.
    pub router: Router,
    /// Routes a later trigger made unreachable (Spin keeps the last one).
    pub duplicate_routes: Vec<DuplicateRoute>,
    /// The runtime config file, if one was given.
    pub runtime_config_file: Option<PathBuf>,
    /// Its contents.
    pub runtime_config: Option<RuntimeConfig>,
    /// The resolved state directory (`None`: unset, default store in memory).
    pub state_dir: Option<PathBuf>,
    /// Every store the app can use, by label (`default` always included).
    pub stores: BTreeMap<String, StoreConfig>,
    /// Resolved variables.
    pub resolver: Arc<Resolver>,
}

/// Validates the app described by `opts`: manifest, runtime config, store
/// labels and variables. Fails with a message naming the offending field.
pub fn open_app(opts: &HostOptions) -> Result<AppConfig> {
    let manifest = Manifest::load(&opts.manifest)?;
    let runtime_config = match &opts.runtime_config_file {
        Some(path) => Some(RuntimeConfig::load(path)?),
        None => None,
    };
    let state_dir = runtime_config::resolve_state_dir(
        opts.state_dir.as_deref(),
        runtime_config.as_ref(),
        &manifest.dir,
    )?;
    let stores = runtime_config::resolve_stores(runtime_config.as_ref(), state_dir.as_deref());

    for component in manifest.components.values() {
        for label in &component.key_value_stores {
            if !stores.contains_key(label) {
                bail!(
                    "unknown key_value_stores label {label:?} for component {:?}: stores other \
                     than \"default\" must be configured in the runtime config file \
                     ([key_value_store.{label}])",
                    component.id
                );
            }
        }
    }

    let (router, duplicate_routes) = Router::build(
        manifest
            .triggers
            .iter()
            .map(|t| (t.route.as_str(), t.component.as_str())),
    )
    .context("invalid [[trigger.http]] route")?;

    let env = match &opts.variable_env {
        Some(pairs) => EnvSource::Fixed(pairs.clone()),
        None => EnvSource::Process,
    };
    let resolver = Resolver::new(
        &manifest.variables,
        manifest
            .components
            .values()
            .map(|c| (c.id.clone(), c.variables.clone())),
        &env,
    )
    .context("cannot resolve application variables")?;

    Ok(AppConfig {
        manifest,
        router,
        duplicate_routes,
        runtime_config_file: opts.runtime_config_file.clone(),
        runtime_config,
        state_dir,
        stores,
        resolver: Arc::new(resolver),
    })
}

impl AppConfig {
    /// The informational lines `spin up` prints before "Serving": which
    /// runtime config is used, and where the default store keeps its data
    /// (only when a component uses it).
    pub fn startup_messages(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let (Some(path), Some(config)) = (&self.runtime_config_file, &self.runtime_config) {
            let summaries: Vec<String> = config
                .stores
                .iter()
                .map(|(label, store)| format!("[key_value_store.{label}: {}]", store.kind()))
                .collect();
            if !summaries.is_empty() {
                lines.push(format!(
                    "Using runtime config {} from \"{}\"",
                    summaries.join(", "),
                    path.display()
                ));
            }
        }
        let default_used = self.manifest.components.values().any(|c| {
            c.key_value_stores
                .iter()
                .any(|l| l == runtime_config::DEFAULT_STORE)
        });
        if default_used {
            match self.stores.get(runtime_config::DEFAULT_STORE) {
                Some(StoreConfig::Sqlite(location)) => {
                    lines.push(format!("Storing default key-value data to {location}."));
                }
                // Spin's summary of a Redis store: `Redis at host:port`.
                Some(StoreConfig::Redis(url)) => {
                    lines.push(format!("Storing default key-value data to {url}."));
                }
                None => {}
            }
        }
        lines
    }
}

/// What one routed component needs at request time.
pub(crate) struct ComponentRuntime {
    pub(crate) id: Arc<str>,
    pub(crate) handler: Handler,
    pub(crate) factory: Arc<StoreFactory>,
}

/// How a component's requests are served, by the `wasi:http` it exports.
pub(crate) enum Handler {
    /// `wasi:http/incoming-handler@0.2`: a fresh instance per request.
    P2(ProxyPre<HostState>),
    /// `wasi:http/handler@0.3.0`: reused instances, as Spin 4 serves them.
    P3(ProxyHandler<P3Handler>),
}

/// A compiled component, by the handler it exports.
enum Prepared {
    P2(ProxyPre<HostState>),
    P3(ServicePre<HostState>),
}

/// An app ready to serve.
pub(crate) struct LoadedApp {
    pub(crate) config: AppConfig,
    /// Each holds the app's stores (through its store factory).
    pub(crate) components: HashMap<String, ComponentRuntime>,
}

/// Opens every store of `config` (SQLite files are created if missing;
/// Redis stores connect on first use, so a Redis that is down does not stop
/// the host from starting, as in Spin). Must run inside the tokio runtime
/// that serves the app: it drives the Redis connections.
fn open_stores(config: &AppConfig) -> Result<StoreRegistry> {
    let mut registry = StoreRegistry::default();
    // Labels kept in the same file share one connection.
    let mut files: HashMap<PathBuf, Arc<SqliteDb>> = HashMap::new();
    for (label, store) in &config.stores {
        let location = match store {
            StoreConfig::Sqlite(location) => location,
            StoreConfig::Redis(url) => {
                let store = RedisStore::open(url)
                    .with_context(|| format!("cannot open key-value store {label:?}"))?;
                registry.insert(label.clone(), Arc::new(store));
                continue;
            }
        };
        let db = match location {
            DbLocation::File(path) => match files.get(path) {
                Some(db) => db.clone(),
                None => {
                    let db = SqliteDb::open(location)
                        .with_context(|| format!("cannot open key-value store {label:?}"))?;
                    files.insert(path.clone(), db.clone());
                    db
                }
            },
            DbLocation::InMemory => SqliteDb::open(location)
                .with_context(|| format!("cannot open key-value store {label:?}"))?,
        };
        registry.insert(label.clone(), Arc::new(SqliteStore::new(db, label)));
    }
    Ok(registry)
}

/// Opens the stores and compiles and pre-instantiates every routed
/// component. Compilation runs on the blocking pool. WASI 0.3 components
/// get their instance-reuse handler, with the `reuse` settings.
pub(crate) async fn load(
    config: AppConfig,
    shared: &Arc<Shared>,
    reuse: InstanceReuse,
) -> Result<LoadedApp> {
    let stores = Arc::new(open_stores(&config)?);
    let routed: HashSet<&str> = config
        .router
        .routes()
        .iter()
        .map(|r| r.component())
        .collect();
    let mut components = HashMap::new();
    for id in routed {
        let component = &config.manifest.components[id];
        let source = component.source.clone();
        let id_owned = id.to_string();
        let prepared = tokio::task::spawn_blocking(move || prepare(&id_owned, &source))
            .await
            .context("component preparation panicked")??;
        let factory = Arc::new(StoreFactory {
            engine: crate::engine::engine()?.clone(),
            component: Arc::from(id),
            environment: component
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            allowed_stores: Arc::new(component.key_value_stores.iter().cloned().collect()),
            stores: stores.clone(),
            resolver: config.resolver.clone(),
            shared: shared.clone(),
        });
        let handler = match prepared {
            Prepared::P2(pre) => Handler::P2(pre),
            Prepared::P3(pre) => Handler::P3(ProxyHandler::new(P3Handler {
                pre,
                factory: factory.clone(),
                reuse,
            })),
        };
        components.insert(
            id.to_string(),
            ComponentRuntime {
                id: Arc::from(id),
                handler,
                factory,
            },
        );
    }
    Ok(LoadedApp { config, components })
}

/// Compiles and links the component, and tells which `wasi:http` it
/// serves, as Spin's `HandlerType::from_instance_pre` does: exactly one of
/// the two handlers.
fn prepare(id: &str, source: &std::path::Path) -> Result<Prepared> {
    if !source.exists() {
        bail!(
            "component `{id}`: source \"{}\" does not exist (build the component first)",
            source.display()
        );
    }
    let component =
        crate::engine::load_component(source).with_context(|| format!("component `{id}`"))?;
    let engine = crate::engine::engine()?;
    let linker = state::linker(engine)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| {
        anyhow::anyhow!(
            "component `{id}` imports something this host does not provide \
             (it offers WASI 0.2, WASI 0.3.0, wasi:http 0.2 and 0.3.0, \
             fermyon:spin/key-value@2.0.0, fermyon:spin/variables@2.0.0 and \
             wasi:keyvalue@0.2.0-draft2): {e:?}"
        )
    })?;
    let p3 = ServicePre::new(pre.clone());
    let p2 = ProxyPre::new(pre);
    match (p2, p3) {
        (Ok(p2), Err(_)) => Ok(Prepared::P2(p2)),
        (Err(_), Ok(p3)) => Ok(Prepared::P3(p3)),
        (Ok(_), Ok(_)) => bail!(
            "component `{id}` exports multiple different handlers \
             (wasi:http/incoming-handler@0.2 and wasi:http/handler@0.3), but it's expected to \
             export only one (Spin refuses it too)"
        ),
        (Err(e), Err(_)) => Err(anyhow::anyhow!(
            "component `{id}` is not a wasi:http handler (it must export \
             wasi:http/incoming-handler@0.2 or wasi:http/handler@0.3.0): {e:?}"
        )),
    }
}
