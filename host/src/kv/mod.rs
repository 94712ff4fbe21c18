//! Key-value stores: the backend trait, the per-app registry of stores, and
//! the guest-facing host interfaces built on them.
//!
//! Both `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue/*@0.2.0-draft2`
//! reach the same [`KvBackend`]s, exactly as in Spin, where one key-value
//! factor serves both interfaces.

#[cfg(test)]
mod contract;
pub mod counters;
pub mod fermyon;
pub mod redis;
pub mod sqlite;
pub mod wasi_keyvalue;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use wasmtime::component::ResourceTable;

pub use counters::{FaultSwitch, OpCounters, OpKind};

/// A failure reported by a store backend.
///
/// Backends only ever fail with a message: access control and unknown labels
/// are decided above the backend, in the host interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KvError {}

/// The result type of every backend operation.
pub type KvResult<T> = Result<T, KvError>;

/// One named key-value store as the host sees it: the operations both guest
/// interfaces need, nothing more.
///
/// Implementations must be safe to call concurrently from many requests.
/// Two implement it, as Spin's `type = "spin"` and `type = "redis"` stores:
/// SQLite ([`sqlite::SqliteStore`]) and Redis ([`redis::RedisStore`]); the
/// guest-facing code does not know which one it talks to.
#[async_trait]
pub trait KvBackend: Send + Sync {
    /// Reads the value under `key`, `None` when absent.
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>>;
    /// Creates or replaces the value under `key`.
    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()>;
    /// Removes `key`; removing an absent key succeeds.
    async fn delete(&self, key: &str) -> KvResult<()>;
    /// Tells whether `key` is present.
    async fn exists(&self, key: &str) -> KvResult<bool>;
    /// Lists every key of the store, in no particular order.
    async fn keys(&self) -> KvResult<Vec<String>>;
    /// Atomically replaces the value under `key` with `new` if and only if
    /// the stored value still equals `expected` (`None`: the key must still
    /// be absent, and is then created). Returns whether the swap happened.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> KvResult<bool>;
    /// Atomically adds `delta` to the 64-bit integer under `key` (a missing
    /// key counts as 0) and returns the new value.
    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64>;
    /// Reads several keys. Like Spin, keys that are absent are left out of
    /// the result rather than paired with `None`.
    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>>;
    /// Writes several pairs.
    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<()>;
    /// Removes several keys, skipping absent ones.
    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()>;
}

/// Every store an app can reach, by label.
#[derive(Default)]
pub struct StoreRegistry {
    stores: BTreeMap<String, Arc<dyn KvBackend>>,
}

impl StoreRegistry {
    /// Adds (or replaces) the backend serving `label`.
    pub fn insert(&mut self, label: impl Into<String>, backend: Arc<dyn KvBackend>) {
        self.stores.insert(label.into(), backend);
    }

    /// The backend serving `label`, if one is configured.
    pub fn get(&self, label: &str) -> Option<Arc<dyn KvBackend>> {
        self.stores.get(label).cloned()
    }

    /// Whether `label` has a backend.
    pub fn contains(&self, label: &str) -> bool {
        self.stores.contains_key(label)
    }
}

/// How many stores one instance may hold open at once across both
/// interfaces. Spin's table is effectively unbounded; a cap keeps a runaway
/// guest from growing host memory without limit, and is far above what a
/// request handler needs.
pub const MAX_OPEN_STORES: usize = 1024;

/// Why an `open` was refused, before any backend is involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The label is not listed in the component's `key_value_stores`.
    AccessDenied,
    /// The label is allowed but no backend serves it.
    NoSuchStore,
    /// Too many stores are open in this instance.
    TableFull,
    /// The fault switch is on, or the backend failed.
    Other(String),
}

/// The per-instance key-value state kept in the wasmtime `Store`: it
/// implements the host traits of both key-value interfaces.
pub struct KvHost {
    /// Host-side resources of the key-value interfaces (stores, buckets,
    /// cas handles). Kept apart from WASI's table, as Spin keeps one table
    /// per factor.
    pub(crate) table: ResourceTable,
    stores: Arc<StoreRegistry>,
    allowed: Arc<HashSet<String>>,
    counters: Arc<OpCounters>,
    fault: Arc<FaultSwitch>,
    open_count: usize,
}

impl KvHost {
    /// State for one instance of a component allowed to use `allowed`.
    pub fn new(
        stores: Arc<StoreRegistry>,
        allowed: Arc<HashSet<String>>,
        counters: Arc<OpCounters>,
        fault: Arc<FaultSwitch>,
    ) -> Self {
        Self {
            table: ResourceTable::new(),
            stores,
            allowed,
            counters,
            fault,
            open_count: 0,
        }
    }

    /// Resolves `label` to a backend, applying the same checks in the same
    /// order as Spin: access first, then existence.
    pub(crate) fn open_backend(&mut self, label: &str) -> Result<Arc<dyn KvBackend>, OpenError> {
        if !self.allowed.contains(label) {
            return Err(OpenError::AccessDenied);
        }
        let backend = self.stores.get(label).ok_or(OpenError::NoSuchStore)?;
        if let Some(msg) = self.fault.current() {
            return Err(OpenError::Other(msg));
        }
        if self.open_count >= MAX_OPEN_STORES {
            return Err(OpenError::TableFull);
        }
        self.open_count += 1;
        Ok(backend)
    }

    /// Bookkeeping for a store handle the guest dropped.
    pub(crate) fn store_closed(&mut self) {
        self.open_count = self.open_count.saturating_sub(1);
    }

    /// Counts one guest operation and applies the fault switch. Called at
    /// the start of every data operation of both interfaces, so failed
    /// operations are counted too.
    pub(crate) fn begin(&self, kind: OpKind) -> KvResult<()> {
        self.counters.record(kind);
        match self.fault.current() {
            Some(msg) => Err(KvError(msg)),
            None => Ok(()),
        }
    }
}

/// An open store as held in the resource table by either interface.
#[derive(Clone)]
pub struct OpenStore {
    /// The label the guest opened.
    pub label: String,
    /// The backend serving it.
    pub backend: Arc<dyn KvBackend>,
}
