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

use anyhow::{bail, Context as _, Result};
use wasmparser::{Parser, Payload};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

static ENGINE: OnceLock<Engine> = OnceLock::new();
static ENGINE_INIT: Mutex<()> = Mutex::new(());

/// The pooling allocator's limits: Spin's defaults for `spin up`, so a load
/// test sees the same concurrency ceiling (1000 live instances) as under
/// Spin.
///
/// On the 2-core, 24 GiB target this costs address space, not memory: each
/// memory slot is a 4 GiB (+ guard) reservation that only becomes RSS when a
/// guest touches it, and a slot keeps at most 2 MiB resident once freed.
/// Instance metadata is allocated on demand, bounded by the size limits.
fn pooling_config() -> PoolingAllocationConfig {
    const MIB: usize = 1 << 20;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(1_000)
        // A component is a few core instances (the guest plus adapter and
        // shim modules); leave room for all 1000 components at once.
        .total_core_instances(4_000)
        .total_stacks(1_000)
        .total_memories(1_000)
        .total_tables(2_000)
        .max_component_instance_size(10 * MIB)
        .max_core_instance_size(10 * MIB)
        .max_core_instances_per_component(200)
        .max_memories_per_component(32)
        .max_tables_per_component(20)
        .table_elements(30_000)
        .linear_memory_keep_resident(2 * MIB)
        .table_keep_resident(MIB / 2);
    pool
}

/// Set (to anything) to have `perf` see the guest's functions by name.
pub const PERFMAP_ENV: &str = "SESSIONS_HOST_PERFMAP";

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // WASI 0.3 components (spin-sdk 7) are async-lifted; Spin's engine
    // turns the component model's async on for every component, so WASI
    // 0.2 stores carry its (small) per-store state here too.
    config.wasm_component_model_async(true);
    // For profiling guest code with `perf`: names the compiled wasm
    // functions in /tmp/perf-<pid>.map. Off by default; changes nothing else.
    if std::env::var_os(PERFMAP_ENV).is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
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
    refuse_unsupported(path, &bytes)?;
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

/// Refuses, with a message naming what it is, a file this host cannot run
/// although Spin may: a core module (Spin runs WASI preview 1 modules by
/// wrapping them in a component) or a component of a WASI 0.3 release
/// candidate (Spin 4 runs spin-sdk 6's `wasi:http/handler@0.3.0-rc-2026-03-15`
/// through some 2000 lines of shims this host does not carry). Anything
/// else is left to wasmtime and the linker, whose own errors describe a
/// malformed file or a missing import.
fn refuse_unsupported(path: &Path, bytes: &[u8]) -> Result<()> {
    if Parser::is_core_wasm(bytes) {
        bail!(
            "\"{}\" is a core wasm module (WASI preview 1); this host runs WASI 0.3.0 \
             (spin-sdk 7) and WASI 0.2 components only",
            path.display()
        );
    }
    if let Some((direction, name)) = wasi_p3_prerelease(bytes) {
        bail!(
            "\"{}\" {direction} {name}, a WASI 0.3 release candidate (spin-sdk 6 builds \
             wasi:http/handler@0.3.0-rc-2026-03-15); this host runs WASI 0.3.0 final \
             (spin-sdk 7) and WASI 0.2 components only",
            path.display()
        );
    }
    Ok(())
}

/// The name of a WASI 0.3 release-candidate interface
/// (`wasi:NAME/INTERFACE@0.3.0-...`) the component itself exports or
/// imports, exports first (such an HTTP component exports
/// `wasi:http/handler@0.3.0-rc-...`), with `"exports"` or `"imports"`.
///
/// Only the outermost component's own import and export sections count:
/// names inside nested modules and components, data or custom sections are
/// not its interface. A file wasmparser cannot read yields `None`.
fn wasi_p3_prerelease(bytes: &[u8]) -> Option<(&'static str, String)> {
    let mut depth = 0usize;
    let mut imported = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    let name = export.ok()?.name.name;
                    if is_wasi_p3_prerelease(name) {
                        return Some(("exports", name.to_string()));
                    }
                }
            }
            Payload::ComponentImportSection(imports) if depth == 0 && imported.is_none() => {
                for import in imports {
                    let name = import.ok()?.name.name;
                    if is_wasi_p3_prerelease(name) {
                        imported = Some(("imports", name.to_string()));
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    imported
}

/// `wasi:PACKAGE/INTERFACE@0.3.x-PRERELEASE`: a release candidate of WASI
/// 0.3, which no final `@0.3` binding matches (wasmtime never takes a
/// prerelease for a compatible version).
fn is_wasi_p3_prerelease(name: &str) -> bool {
    name.strip_prefix("wasi:")
        .and_then(|rest| rest.split_once('@'))
        .and_then(|(_, version)| version.strip_prefix("0.3."))
        .is_some_and(|patch| patch.contains('-'))
}

#[cfg(test)]
mod tests {
    use super::is_wasi_p3_prerelease;

    #[test]
    fn wasi_p3_prerelease_names() {
        assert!(is_wasi_p3_prerelease(
            "wasi:http/handler@0.3.0-rc-2026-03-15"
        ));
        assert!(is_wasi_p3_prerelease(
            "wasi:http/handler@0.3.0-rc-2025-09-16"
        ));
        assert!(is_wasi_p3_prerelease(
            "wasi:cli/environment@0.3.0-rc-2025-08-15"
        ));
        // WASI 0.3.0 final, and later 0.3 releases, run.
        assert!(!is_wasi_p3_prerelease("wasi:http/handler@0.3.0"));
        assert!(!is_wasi_p3_prerelease("wasi:http/handler@0.3.1"));
        assert!(!is_wasi_p3_prerelease("wasi:http/incoming-handler@0.2.0"));
        assert!(!is_wasi_p3_prerelease(
            "wasi:http/incoming-handler@0.2.0-rc-2023-11-10"
        ));
        assert!(!is_wasi_p3_prerelease("wasi:keyvalue/store@0.2.0-draft2"));
        assert!(!is_wasi_p3_prerelease("wasi:http/handler@0.30.0-rc-1"));
        assert!(!is_wasi_p3_prerelease("fermyon:spin/key-value@0.3.0-rc-1"));
        assert!(!is_wasi_p3_prerelease("wasi:http/types"));
    }
}
