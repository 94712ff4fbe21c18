//! The store a [`crate::SessionManager`] works through.
//!
//! Deliberately small, and shaped after `wasi:keyvalue`: a read that may
//! later be swapped atomically ([`SessionStore::snapshot`] and
//! [`SessionStore::swap`]), blind writes for keys nobody else can know yet,
//! deletes, batches of those (one store round trip each), and an atomic
//! counter. There is no listing: nothing on a request path may cost more as
//! the store grows.

/// A store failure. The request that meets one should answer 503.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session store error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// What a key held when it was read, kept for a later compare-and-swap.
pub trait Snapshot {
    /// The value read, or `None` if the key was absent.
    fn value(&self) -> Option<&[u8]>;
}

/// The outcome of [`SessionStore::swap`].
#[derive(Debug)]
pub enum Swap<S> {
    /// The new value is stored.
    Done,
    /// Someone wrote the key since the snapshot; here is what it holds now.
    Conflict(S),
}

/// A key-value store with atomic compare-and-swap.
pub trait SessionStore {
    /// A read that a later [`SessionStore::swap`] compares against.
    type Snapshot: Snapshot;

    /// Reads `key`.
    fn snapshot(&self, key: &str) -> Result<Self::Snapshot, StoreError>;

    /// Stores `value` only if the key still holds what `snapshot` read.
    fn swap(
        &self,
        snapshot: Self::Snapshot,
        value: &[u8],
    ) -> Result<Swap<Self::Snapshot>, StoreError>;

    /// Stores `value` unconditionally.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes `key`; removing an absent key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Reads several keys at once; the answer is in the order of `keys`.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    /// Stores several values at once (not atomically as a whole).
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError>;

    /// Removes several keys at once.
    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError>;

    /// Adds `delta` to the counter at `key` (absent = 0), atomically, and
    /// returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
}
