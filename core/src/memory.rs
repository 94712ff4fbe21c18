//! An in-memory [`SessionStore`] for tests, with operation counts, that
//! can behave like each of Spin's real stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::store::{SessionStore, Snapshot, StoreError, Swap};

/// Whose compare-and-swap a [`MemoryStore`] imitates
/// (`../shared/reference/spin-kv-behaviour.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SwapBehaviour {
    /// A swap writes if and only if the key is unchanged, and says so.
    #[default]
    Honest,
    /// Spin's SQLite store: as honest for a key that was present, but the
    /// swap of a key that was absent writes unconditionally.
    SpinSqlite,
    /// Spin's Redis store: a swap writes if the key is unchanged, and
    /// reports a conflict either way.
    SpinRedis,
}

/// A store in a `HashMap` behind a lock (so that it can be shared, as a
/// component's reused instance shares its store), that counts its reads
/// and writes and can be told to fail.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Vec<u8>>>,
    behaviour: SwapBehaviour,
    reads: AtomicU64,
    writes: AtomicU64,
    failing: AtomicBool,
    /// The back-offs asked for (recorded, not waited).
    back_offs: Mutex<Vec<std::time::Duration>>,
    /// Test seams: what another request does at this request's next
    /// snapshot, and in place of its next swap (each runs once).
    #[cfg(test)]
    seams: Mutex<Seams>,
}

#[cfg(test)]
type AfterSnapshot = Box<dyn FnOnce(&MemoryStore) + Send>;
#[cfg(test)]
type InsteadOfSwap = Box<
    dyn FnOnce(&MemoryStore, MemorySnapshot, &[u8]) -> Result<Swap<MemorySnapshot>, StoreError>
        + Send,
>;

#[cfg(test)]
#[derive(Default)]
struct Seams {
    after_snapshot: Option<AfterSnapshot>,
    instead_of_swap: Option<InsteadOfSwap>,
}

/// A [`MemoryStore`] read.
#[derive(Debug)]
pub struct MemorySnapshot {
    key: String,
    value: Option<Vec<u8>>,
}

impl MemorySnapshot {
    /// The key read.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Snapshot for MemorySnapshot {
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

impl MemoryStore {
    /// An empty store with an honest compare-and-swap.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose compare-and-swap behaves as `behaviour` says.
    pub fn with_behaviour(behaviour: SwapBehaviour) -> Self {
        MemoryStore {
            behaviour,
            ..Self::default()
        }
    }

    /// Reads done so far (gets and snapshots, and the read a swap that is
    /// not confirmed hands back).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The pauses [`SessionStore::back_off`] was asked for so far (this
    /// store records them and returns at once).
    pub fn back_offs(&self) -> Vec<std::time::Duration> {
        self.back_offs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes done so far (swaps, sets, deletes, batches, increments).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Makes every later operation fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// What `key` holds, without counting a read.
    pub fn peek(&self, key: &str) -> Option<Vec<u8>> {
        self.map().get(key).cloned()
    }

    /// Writes `key` behind the manager's back, as another request would.
    pub fn put(&self, key: &str, value: &[u8]) {
        self.map().insert(key.to_owned(), value.to_vec());
    }

    /// Removes `key` behind the manager's back, as another request would.
    pub fn put_absent(&self, key: &str) {
        self.map().remove(key);
    }

    /// All keys, for assertions.
    pub fn keys(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// The entries. A poisoned lock (a test that panicked while holding
    /// it) still holds consistent entries: each operation is one step.
    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::Relaxed) {
            Err(StoreError("injected failure".into()))
        } else {
            Ok(())
        }
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl MemoryStore {
    /// Runs `write` once, right after the next snapshot is read: another
    /// request writing between this one's read and its swap.
    pub(crate) fn after_next_snapshot(&self, write: impl FnOnce(&MemoryStore) + Send + 'static) {
        self.seams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .after_snapshot = Some(Box::new(write));
    }

    /// Runs `swap` once, in place of the next swap (which it may still do,
    /// with [`MemoryStore::swap_as_configured`]).
    pub(crate) fn instead_of_next_swap(
        &self,
        swap: impl FnOnce(&MemoryStore, MemorySnapshot, &[u8]) -> Result<Swap<MemorySnapshot>, StoreError>
            + Send
            + 'static,
    ) {
        self.seams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .instead_of_swap = Some(Box::new(swap));
    }
}

impl MemoryStore {
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check()?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.peek(key))
    }

    fn current(&self, key: String) -> Result<MemorySnapshot, StoreError> {
        let value = self.read(&key)?;
        Ok(MemorySnapshot { key, value })
    }

    /// A swap as [`SwapBehaviour`] says this store swaps.
    pub(crate) fn swap_as_configured(
        &self,
        snapshot: MemorySnapshot,
        value: &[u8],
    ) -> Result<Swap<MemorySnapshot>, StoreError> {
        self.check()?;
        self.count_write();
        let unchanged = self.peek(&snapshot.key) == snapshot.value;
        let upsert = self.behaviour == SwapBehaviour::SpinSqlite && snapshot.value.is_none();
        if unchanged || upsert {
            self.put(&snapshot.key, value);
        }
        if (unchanged || upsert) && self.behaviour != SwapBehaviour::SpinRedis {
            return Ok(Swap::Done);
        }
        // The caller reads the key again to learn what it holds (with
        // Spin, `current` on the handle a failed swap hands back).
        Ok(Swap::NotConfirmed(self.current(snapshot.key)?))
    }
}

impl SessionStore for MemoryStore {
    type Snapshot = MemorySnapshot;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(key)
    }

    fn snapshot(&self, key: &str) -> Result<MemorySnapshot, StoreError> {
        let snapshot = self.current(key.to_owned())?;
        #[cfg(test)]
        {
            // Taken out first: the seam may set the next one.
            let seam = self
                .seams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .after_snapshot
                .take();
            if let Some(write) = seam {
                write(self);
            }
        }
        Ok(snapshot)
    }

    fn swap(
        &self,
        snapshot: MemorySnapshot,
        value: &[u8],
    ) -> Result<Swap<MemorySnapshot>, StoreError> {
        #[cfg(test)]
        {
            // Taken out first: the seam may set the next one.
            let seam = self
                .seams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .instead_of_swap
                .take();
            if let Some(swap) = seam {
                return swap(self, snapshot, value);
            }
        }
        self.swap_as_configured(snapshot, value)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        self.count_write();
        self.put(key, value);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.count_write();
        self.map().remove(key);
        Ok(())
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.check()?;
        self.count_write();
        for (key, value) in entries {
            self.put(key, value);
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        self.check()?;
        self.count_write();
        let mut entries = self.map();
        for key in keys {
            entries.remove(key);
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.check()?;
        self.count_write();
        let current = match self.peek(key) {
            None => 0,
            Some(bytes) => self.decode_counter(&bytes)?,
        };
        let next = current + delta;
        let encoded = self.encode_counter(next);
        self.put(key, &encoded);
        Ok(next)
    }

    fn back_off(&self, pause: std::time::Duration) {
        self.back_offs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pause);
    }
}

impl MemoryStore {
    /// A counter as the imitated backend stores it: eight bytes
    /// little-endian on Spin's SQLite store, decimal text elsewhere.
    fn encode_counter(&self, value: i64) -> Vec<u8> {
        match self.behaviour {
            SwapBehaviour::SpinSqlite => value.to_le_bytes().to_vec(),
            _ => value.to_string().into_bytes(),
        }
    }

    /// Reads a counter; a value that is not one fails as the backend
    /// fails (Spin's SQLite store panics the host: "incorrect length").
    fn decode_counter(&self, bytes: &[u8]) -> Result<i64, StoreError> {
        let parsed = match self.behaviour {
            SwapBehaviour::SpinSqlite => bytes.try_into().ok().map(i64::from_le_bytes),
            _ => std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()),
        };
        parsed.ok_or_else(|| {
            StoreError(format!(
                "increment of a key that is not a counter: {bytes:?}"
            ))
        })
    }
}
