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

pub use counters::{FaultSwitch, OpCounters, OpCounts, OpKind};

/// A failure reported by a store backend: what Spin's host would hand the
/// guest as `other(message)`, or a panic of Spin's host, which the guest
/// sees as a trap.
///
/// Messages are written as Spin writes them (`format!("{err:?}")` of the
/// underlying rusqlite or redis-rs error), so a guest that shows or matches
/// them sees what it would see under `spin up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError {
    message: String,
    trap: bool,
}

impl KvError {
    /// An error the guest receives as `other(message)`.
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            trap: false,
        }
    }

    /// Where Spin's host panics: the host function traps instead (the
    /// guest's request ends in a 500), and the host itself goes on.
    pub fn trap(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            trap: true,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is a trap rather than an error value.
    pub fn is_trap(&self) -> bool {
        self.trap
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KvError {}

/// The result type of every backend operation.
pub type KvResult<T> = Result<T, KvError>;

/// Why a compare-and-swap's `swap` did not succeed, as Spin's `SwapError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapError {
    /// The swap was refused (Spin then hands the guest a fresh handle in
    /// `cas-failed`). The text is Spin's reason, never shown to the guest.
    CasFailed(String),
    /// The store failed (`store-error(other(...))`, or a trap).
    Store(KvError),
}

/// A backend result together with the new store connections it took, as
/// Spin's store would open them (counted per request as `kv_connections`).
#[derive(Debug)]
pub struct Connected<T> {
    /// The operation's result.
    pub value: T,
    /// New connections the operation opened (0 or 1).
    pub connections: u64,
}

/// The most bytes one result may hold, as Spin computes it (the
/// `size_of` of the returned container plus the lengths of its strings and
/// byte vectors): Spin's default `max_result_bytes`, 128 MiB.
pub const MAX_RESULT_BYTES: usize = 128 * 1024 * 1024;

/// One compare-and-swap handle, as Spin's `Cas`: made by
/// [`KvBackend::new_cas`], read with `current`, written with `swap`.
#[async_trait]
pub trait CasHandle: Send + Sync {
    /// Reads the key's value (remembering it, on SQLite; `WATCH`ing the
    /// key, on Redis).
    async fn current(&self) -> KvResult<Option<Vec<u8>>>;
    /// Tries to replace the key's value with `value`.
    async fn swap(&self, value: Vec<u8>) -> Result<(), SwapError>;
}

/// One named key-value store as the host sees it: the operations of Spin's
/// `Store` trait, with Spin's semantics, defects included.
///
/// Implementations must be safe to call concurrently from many requests.
/// Two implement it, as Spin's `type = "spin"` and `type = "redis"` stores:
/// SQLite ([`sqlite::SqliteStore`]) and Redis ([`redis::RedisStore`]); the
/// guest-facing code does not know which one it talks to.
#[async_trait]
pub trait KvBackend: Send + Sync {
    /// Called each time a guest opens the store, before the handle exists
    /// (Spin's store manager `get` and `after_open`).
    async fn opened(&self) -> KvResult<Connected<()>>;
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
    /// Adds `delta` to the counter under `key` (a missing key counts as 0)
    /// and returns the new value, in the backend's own encoding.
    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64>;
    /// Reads several keys (never called with an empty list).
    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>>;
    /// Writes several pairs (never called with an empty list).
    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<()>;
    /// Removes several keys (never called with an empty list).
    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()>;
    /// A new compare-and-swap handle on `key`.
    async fn new_cas(&self, key: &str) -> KvResult<Connected<Arc<dyn CasHandle>>>;
}

/// Spin's check of a single value against [`MAX_RESULT_BYTES`]: the size
/// of an `Option<Vec<u8>>` plus the value's length.
pub fn check_value_size(value: Option<Vec<u8>>, limit: usize) -> KvResult<Option<Vec<u8>>> {
    let size = std::mem::size_of::<Option<Vec<u8>>>() + value.as_ref().map_or(0, Vec::len);
    if size > limit {
        return Err(too_large(limit));
    }
    Ok(value)
}

/// Spin's check of a `get-many` result: the size of the `Vec` plus, per
/// pair, the size of the tuple and the key's and value's lengths.
pub fn check_pairs_size(
    pairs: Vec<(String, Option<Vec<u8>>)>,
    limit: usize,
) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
    let mut size = std::mem::size_of::<Vec<(String, Option<Vec<u8>>)>>();
    for (key, value) in &pairs {
        size += std::mem::size_of::<(String, Option<Vec<u8>>)>()
            + key.len()
            + value.as_ref().map_or(0, Vec::len);
    }
    if size > limit {
        return Err(too_large(limit));
    }
    Ok(pairs)
}

/// Spin's check of a key listing: the size of the `Vec` plus, per key, the
/// size of a `String` and its length.
pub fn check_keys_size(keys: Vec<String>, limit: usize) -> KvResult<Vec<String>> {
    let size = std::mem::size_of::<Vec<String>>()
        + keys
            .iter()
            .map(|k| std::mem::size_of::<String>() + k.len())
            .sum::<usize>();
    if size > limit {
        return Err(too_large(limit));
    }
    Ok(keys)
}

/// Spin's message for a result over the limit.
pub fn too_large(limit: usize) -> KvError {
    KvError::other(format!("query result exceeds limit of {limit} bytes"))
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
/// interfaces: the capacity of Spin's store table.
pub const MAX_OPEN_STORES: usize = 256;

/// How many compare-and-swap handles one instance may hold: the capacity
/// of Spin's cas table. Spin never removes a handle given to `swap` from
/// that table, so every `cas.new` (and every `cas-failed`) uses up a slot
/// until the instance ends.
pub const MAX_CAS_HANDLES: usize = 256;

/// Spin's message when the cas table is full.
pub const CAS_TABLE_FULL: &str = "too many compare_and_swaps opened";

/// Why an `open` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The label is not listed in the component's `key_value_stores`.
    AccessDenied,
    /// The label is allowed but no backend serves it.
    NoSuchStore,
    /// Too many stores are open in this instance.
    TableFull,
    /// The fault switch is on, or the backend failed.
    Other(KvError),
}

/// The per-instance key-value state kept in the wasmtime `Store`: it
/// implements the host traits of both key-value interfaces.
pub struct KvHost {
    /// Host-side resources of the key-value interfaces (stores, buckets,
    /// cas handles). Kept apart from WASI's table, as Spin keeps its own
    /// tables per factor.
    pub(crate) table: ResourceTable,
    stores: Arc<StoreRegistry>,
    allowed: Arc<HashSet<String>>,
    counters: Arc<OpCounters>,
    fault: Arc<FaultSwitch>,
    open_count: usize,
    cas_count: usize,
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
            cas_count: 0,
        }
    }

    /// Resolves `label` to a backend in Spin's order: access, existence,
    /// the store's own open (which may connect, and may fail), and only then
    /// the table's capacity.
    pub(crate) async fn open_backend(
        &mut self,
        label: &str,
    ) -> Result<Arc<dyn KvBackend>, OpenError> {
        if !self.allowed.contains(label) {
            return Err(OpenError::AccessDenied);
        }
        let backend = self.stores.get(label).ok_or(OpenError::NoSuchStore)?;
        self.fault_check().map_err(OpenError::Other)?;
        let opened = backend.opened().await.map_err(OpenError::Other)?;
        self.counters.record_connections(opened.connections);
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
        self.fault_check()
    }

    /// The fault switch alone, for calls that count as no operation.
    pub(crate) fn fault_check(&self) -> KvResult<()> {
        match self.fault.current() {
            Some(msg) => Err(KvError::other(msg)),
            None => Ok(()),
        }
    }

    /// Makes a compare-and-swap handle on `key`, as Spin's `cas.new`: the
    /// backend first (which may open a connection), then the table, which
    /// may be full.
    pub(crate) async fn new_cas_handle(
        &mut self,
        backend: &Arc<dyn KvBackend>,
        key: &str,
    ) -> KvResult<Arc<dyn CasHandle>> {
        let made = backend.new_cas(key).await?;
        self.counters.record_connections(made.connections);
        if self.cas_count >= MAX_CAS_HANDLES {
            return Err(KvError::other(CAS_TABLE_FULL));
        }
        self.cas_count += 1;
        Ok(made.value)
    }

    /// Bookkeeping for a cas handle the guest dropped (a handle given to
    /// `swap` is never dropped: it stays in Spin's table).
    pub(crate) fn cas_closed(&mut self) {
        self.cas_count = self.cas_count.saturating_sub(1);
    }
}

/// A backend error as a host-function result: a trap where Spin's host
/// panics, otherwise the error for the guest.
pub(crate) fn guest_result<T, E>(
    result: KvResult<T>,
    to_guest: impl FnOnce(KvError) -> E,
) -> wasmtime::Result<Result<T, E>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) if e.is_trap() => Err(trap(&e)),
        Err(e) => Ok(Err(to_guest(e))),
    }
}

/// The trap that stands for a panic of Spin's host.
pub(crate) fn trap(e: &KvError) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "the key-value host panicked (as Spin's does here): {e}"
    ))
}

/// An open store as held in the resource table by either interface.
#[derive(Clone)]
pub struct OpenStore {
    /// The label the guest opened.
    pub label: String,
    /// The backend serving it.
    pub backend: Arc<dyn KvBackend>,
}
