//! The process-wide wasmtime engine and the cache of compiled components.
//!
//! One engine per process, as in Spin: compiled code and the pooling
//! allocator's reservations are shared by every app the process runs (tests
//! start and stop many hosts in one process). Components are compiled once
//! per process and file version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

static ENGINE: OnceLock<Engine> = OnceLock::new();
static ENGINE_INIT: Mutex<()> = Mutex::new(());

/// The pooling allocator's limits, sized for a 2-core, 24 GiB machine.
///
/// Each live request holds one component instance, which needs a few core
/// instances (the guest module plus adapter/shim modules), a linear memory
/// or two and one async stack. 256 concurrent instances is far beyond what
/// two cores can drive, while the reservations stay virtual: memory slots
/// are address space (4 GiB + guards each) that only becomes RSS when
/// touched, and warm slots are decommitted on reuse.
fn pooling_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(256)
        .total_core_instances(2048)
        .total_memories(512)
        .total_tables(1024)
        .total_stacks(256)
        // A session handler needs a few MiB; 512 MiB per memory still
        // leaves room for an unusual guest while bounding a runaway one.
        .max_memory_size(512 << 20);
    pool
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config
}

fn build_engine() -> Result<Engine> {
    let mut pooled = base_config();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
    match Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            // Some environments cap virtual address space (ulimit -v) or
            // refuse the large reservations; instances then come from plain
            // mmap per request, slower but correct.
            eprintln!(
                "spin-sessions-host: pooling allocator unavailable ({e}); \
                 falling back to on-demand instance allocation"
            );
            Engine::new(&base_config())
                .map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e:?}"))
        }
    }
}

/// The process-wide engine, created on first use.
pub fn engine() -> Result<&'static Engine> {
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    // Serialise creation so concurrent first callers build one engine.
    let _guard = ENGINE_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let engine = build_engine()?;
    Ok(ENGINE.get_or_init(|| engine))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

static COMPONENTS: Mutex<Option<HashMap<CacheKey, Component>>> = Mutex::new(None);

/// Compiles the component at `path`, or returns the copy compiled earlier in
/// this process if the file has not changed (same path, mtime and length).
///
/// Blocking (compilation takes seconds): call it from a blocking context.
pub fn load_component(path: &Path) -> Result<Component> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read component \"{}\"", path.display()))?;
    let key = CacheKey {
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        modified: meta.modified().ok(),
        len: meta.len(),
    };
    // Held while compiling: two hosts starting at once then compile the
    // file once instead of competing for the two cores.
    let mut cache = COMPONENTS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(component) = cache.get(&key) {
        return Ok(component.clone());
    }
    let engine = engine()?;
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read component \"{}\"", path.display()))?;
    let component = Component::new(engine, &bytes).map_err(|e| {
        anyhow::anyhow!(
            "cannot compile \"{}\" as a WebAssembly component: {e:?}",
            path.display()
        )
    })?;
    // A rebuilt file gets a new key; drop the stale compilation of it.
    cache.retain(|k, _| k.path != key.path);
    cache.insert(key, component.clone());
    Ok(component)
}
