//! The store a [`crate::SessionManager`] works through.
//!
//! Deliberately small, and shaped after what Spin's key-value stores really
//! do (measured, defects included: `../shared/reference/spin-kv-behaviour.md`):
//!
//! - plain reads, blind writes and deletes, batch writes and deletes;
//! - an atomic counter ([`SessionStore::increment`]), read only through
//!   itself: its encoding differs per backend;
//! - compare-and-swap ([`SessionStore::snapshot`], [`SessionStore::swap`])
//!   whose *answer* is not trusted: Spin's Redis store reports a conflict
//!   whether or not it wrote, so a caller learns whether its value is
//!   stored only from what the key holds afterwards
//!   ([`swap_and_confirm`]). And a swap is only ever made on a key that
//!   was present when read: Spin's SQLite store turns the swap of an
//!   absent key into an unconditional write.
//!
//! There is no listing and no batch read (Spin's Redis `get-many` fails):
//! nothing on a request path may cost more as the store grows.

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

/// What the store answered to [`SessionStore::swap`].
#[derive(Debug)]
pub enum Swap<S> {
    /// The store says the new value is stored.
    Done,
    /// The store did not confirm the write. Usually another request wrote
    /// the key since the snapshot and nothing was written; on Spin's Redis
    /// store the value may have been stored all the same. Here is what the
    /// key holds now, as the base of a retry.
    NotConfirmed(S),
}

/// A key-value store with compare-and-swap, as Spin's stores provide it.
pub trait SessionStore {
    /// A read that a later [`SessionStore::swap`] compares against.
    type Snapshot: Snapshot;

    /// Reads `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads `key` for a later [`SessionStore::swap`].
    fn snapshot(&self, key: &str) -> Result<Self::Snapshot, StoreError>;

    /// Stores `value` if the key still holds what `snapshot` read. Callers
    /// never swap a snapshot of an absent key (see the module docs) and use
    /// [`swap_and_confirm`] to learn the outcome.
    fn swap(
        &self,
        snapshot: Self::Snapshot,
        value: &[u8],
    ) -> Result<Swap<Self::Snapshot>, StoreError>;

    /// Stores `value` unconditionally.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes `key`; removing an absent key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Stores several values at once (not atomically as a whole).
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError>;

    /// Removes several keys at once.
    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError>;

    /// Adds `delta` to the counter at `key` (absent = 0), atomically, and
    /// returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
}

/// How a [`swap_and_confirm`] ended.
#[derive(Debug)]
pub enum Confirmed<S> {
    /// The value is stored.
    Stored,
    /// Another request's write won; here is what the key holds now.
    Lost(S),
}

/// Swaps `value` into the key `snapshot` read (which must have been
/// present) and tells whether it was stored: by the store's word when it
/// gives one, otherwise by whether what the key holds now `is_ours`.
///
/// `is_ours` must recognise only a value this caller wrote, and must still
/// recognise it after later writers built on it: records and the sweep
/// cursor carry the random ids of their last few writes for that.
pub fn swap_and_confirm<S: SessionStore>(
    store: &S,
    snapshot: S::Snapshot,
    value: &[u8],
    is_ours: impl Fn(&[u8]) -> bool,
) -> Result<Confirmed<S::Snapshot>, StoreError> {
    debug_assert!(
        snapshot.value().is_some(),
        "a swap of an absent key is an unconditional write on Spin's SQLite store"
    );
    match store.swap(snapshot, value)? {
        Swap::Done => Ok(Confirmed::Stored),
        Swap::NotConfirmed(fresh) if fresh.value().is_some_and(&is_ours) => Ok(Confirmed::Stored),
        Swap::NotConfirmed(fresh) => Ok(Confirmed::Lost(fresh)),
    }
}

/// How many write ids a record or the cursor keeps (see
/// [`swap_and_confirm`]): a write is recognised as long as fewer than this
/// many writes landed on top of it before its writer read the key back.
///
/// On Spin's Redis store that read-back comes through a new connection; on
/// a loaded 2-core machine another instance once landed 8 writes in that
/// gap (`tests/redis.rs`, two instances posting at once), and the update
/// was applied twice. 32 ids cost at most ~500 bytes of a busy record.
pub const RECENT_WRITES: usize = 32;

/// The length of one write id: enough randomness that two writers never
/// pick the same one.
pub const WRITE_ID_LEN: usize = 12;

/// Appends `id` to `recent`, keeping the last [`RECENT_WRITES`].
pub fn remember_write(recent: &mut Vec<String>, id: String) {
    recent.push(id);
    let excess = recent.len().saturating_sub(RECENT_WRITES);
    recent.drain(..excess);
}

/// A shared reference to a store is a store: a [`crate::SessionManager`]
/// can borrow one the application keeps.
impl<S: SessionStore + ?Sized> SessionStore for &S {
    type Snapshot = S::Snapshot;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }

    fn snapshot(&self, key: &str) -> Result<Self::Snapshot, StoreError> {
        (**self).snapshot(key)
    }

    fn swap(
        &self,
        snapshot: Self::Snapshot,
        value: &[u8],
    ) -> Result<Swap<Self::Snapshot>, StoreError> {
        (**self).swap(snapshot, value)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        (**self).set_many(entries)
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        (**self).delete_many(keys)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        (**self).increment(key, delta)
    }
}
