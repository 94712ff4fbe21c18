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
//!   stored only from what the key holds afterwards, judged by version
//!   ([`judge`]). And a swap is only ever made on a key that was present
//!   when read: Spin's SQLite store turns the swap of an absent key into
//!   an unconditional write.
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
    /// never swap a snapshot of an absent key (see the module docs), and
    /// judge an unconfirmed outcome by the value's version ([`judge`]).
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

    /// Waits `pause` before a compare-and-swap that lost to other writers
    /// of its key twice in a row is tried again, so that the writers of a
    /// busy session spread out instead of failing each other's swaps.
    /// Stores that cannot wait (and the tests' in-memory store) return at
    /// once.
    fn back_off(&self, pause: std::time::Duration) {
        let _ = pause;
    }
}

/// One compare-and-swap write of a versioned value (a session record, the
/// sweep cursor): built on the value at version `base`, so that, if it
/// lands at all, it lands as version `base + 1`, carrying the random `id`
/// in the value's window of recent write ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The version the attempt was built on.
    pub base: u64,
    /// The write id it carries.
    pub id: String,
}

/// What a later read of the value says about an [`Attempt`] whose swap the
/// store did not confirm (every swap, on Spin's Redis store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Version `base + 1` is this attempt: it landed.
    Stored,
    /// Version `base + 1` is another write: this attempt can never land
    /// (it could only ever have become that version).
    Lost,
    /// The value is still at version `base`: the attempt has not landed,
    /// and may still (a swap whose reply came back before its write).
    Pending,
    /// Version `base + 1` has left the window of recent ids: whether it
    /// was this attempt cannot be known.
    Unknown,
}

/// Judges `attempt` by the value's current `version` and its window of
/// `recent` write ids, oldest first (the last is the id of `version`
/// itself, the one before of `version - 1`, and so on).
///
/// Exact, whatever happened in between: a swap built on version `b` can
/// only ever land as `b + 1`, so the id stored at `b + 1` decides, as long
/// as the window still reaches back to it.
pub fn judge(attempt: &Attempt, version: u64, recent: &[String]) -> Verdict {
    let landed_as = attempt.base.saturating_add(1);
    if version < landed_as {
        return Verdict::Pending;
    }
    let age = version - landed_as;
    match usize::try_from(age)
        .ok()
        .and_then(|age| recent.len().checked_sub(age + 1))
    {
        Some(index) if recent[index] == attempt.id => Verdict::Stored,
        Some(_) => Verdict::Lost,
        None => Verdict::Unknown,
    }
}

/// What a set of attempts of one write adds up to, judged against the
/// same read: one landed; one may have landed and cannot be known; or none
/// did, and those that may still land were built on the version read (a
/// new attempt built on it competes with them for the same version, so at
/// most one of them ever lands).
pub fn judge_all(attempts: &[Attempt], version: u64, recent: &[String]) -> Verdict {
    let verdicts = attempts.iter().map(|a| judge(a, version, recent));
    let mut outcome = Verdict::Lost;
    for verdict in verdicts {
        match verdict {
            Verdict::Stored => return Verdict::Stored,
            Verdict::Unknown => outcome = Verdict::Unknown,
            Verdict::Pending if outcome == Verdict::Lost => outcome = Verdict::Pending,
            _ => {}
        }
    }
    outcome
}

/// How many write ids a record or the cursor keeps: an unconfirmed write
/// is judged exactly ([`judge`]) as long as fewer than this many writes
/// landed on top of it before its writer read the value back. Beyond, the
/// outcome is reported as unknown, never guessed. 32 ids cost at most
/// ~500 bytes of a busy record.
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

    fn back_off(&self, pause: std::time::Duration) {
        (**self).back_off(pause)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64, last: u64) -> Vec<String> {
        (last + 1 - n..=last).map(|v| format!("w{v}")).collect()
    }

    fn attempt(base: u64, id: &str) -> Attempt {
        Attempt {
            base,
            id: id.into(),
        }
    }

    #[test]
    fn an_attempt_is_judged_by_the_version_it_could_have_become() {
        // Versions 11..=40 are in the window, written by w11..w40.
        let recent = ids(30, 40);
        assert_eq!(judge(&attempt(10, "w11"), 40, &recent), Verdict::Stored);
        assert_eq!(judge(&attempt(10, "x"), 40, &recent), Verdict::Lost);
        assert_eq!(judge(&attempt(39, "w40"), 40, &recent), Verdict::Stored);
        assert_eq!(judge(&attempt(39, "x"), 40, &recent), Verdict::Lost);
        // Its own id elsewhere in the window is no proof: a swap built on
        // 20 could only have become 21.
        assert_eq!(judge(&attempt(20, "w30"), 40, &recent), Verdict::Lost);
        // Not reached yet, or out of reach.
        assert_eq!(judge(&attempt(40, "x"), 40, &recent), Verdict::Pending);
        assert_eq!(judge(&attempt(9, "w10"), 40, &recent), Verdict::Unknown);
        assert_eq!(judge(&attempt(0, "x"), 40, &[]), Verdict::Unknown);
        assert_eq!(judge(&attempt(u64::MAX, "x"), 3, &recent), Verdict::Pending);
    }

    #[test]
    fn attempts_add_up() {
        let recent = ids(5, 12);
        let lost = attempt(8, "x");
        let pending = attempt(12, "y");
        let stored = attempt(10, "w11");
        let unknown = attempt(2, "z");
        assert_eq!(
            judge_all(std::slice::from_ref(&lost), 12, &recent),
            Verdict::Lost
        );
        assert_eq!(
            judge_all(&[lost.clone(), pending.clone()], 12, &recent),
            Verdict::Pending
        );
        assert_eq!(
            judge_all(&[unknown.clone(), pending.clone()], 12, &recent),
            Verdict::Unknown
        );
        assert_eq!(
            judge_all(&[unknown, pending, stored, lost], 12, &recent),
            Verdict::Stored
        );
        assert_eq!(judge_all(&[], 12, &recent), Verdict::Lost);
    }
}
