//! The store a [`crate::SessionManager`] works through.
//!
//! Deliberately small, and shaped after `wasi:keyvalue`: a read that may
//! later be swapped atomically ([`SessionStore::snapshot`] and
//! [`SessionStore::swap`]), a blind write for records nobody else can know
//! yet, and a delete. There is no listing: nothing on a request path may
//! cost more as the store grows.

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
}
