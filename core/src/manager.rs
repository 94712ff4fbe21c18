//! Finding, creating, updating and deleting sessions through a store.

use std::cell::Cell;

use crate::expiry::ExpiryPolicy;
use crate::id::{random_token, SessionId};
use crate::index::{self, Cursor, StepReport};
use crate::record::{DecodeError, SessionRecord};
use crate::store::{SessionStore, Snapshot, StoreError, Swap};

/// Length of the per-session CSRF token.
pub const CSRF_TOKEN_LEN: usize = 32;

/// How many times an update is re-applied after losing a compare-and-swap
/// race before the request gives up (and answers 503).
pub const MAX_SWAP_ATTEMPTS: usize = 16;

/// The default cap on live sessions.
pub const DEFAULT_MAX_SESSIONS: u64 = 100_000;

/// How many sweep steps a creation may run to bring the session count back
/// under the cap.
const EVICTION_STEPS: usize = 2;

/// Sessions over a [`SessionStore`], with an [`ExpiryPolicy`], a cap on
/// their number and the expiry index ([`crate::index`]).
pub struct SessionManager<S> {
    store: S,
    policy: ExpiryPolicy,
    max_sessions: u64,
    /// The index cursor as [`SessionManager::maintain`] last read it.
    cursor: Cell<Option<Cursor>>,
}

/// A live session, as read for the current request.
pub struct Session<Snap> {
    id: SessionId,
    key: String,
    record: SessionRecord,
    /// What the store held when the record was read: the base of the next
    /// compare-and-swap. `None` once used, or for a session just created.
    snapshot: Option<Snap>,
}

impl<Snap> Session<Snap> {
    /// The identifier the client's cookie carries.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The store key of the record.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The record as this request last read or wrote it.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }
}

/// What a request's cookie leads to.
pub enum Found<Snap> {
    /// A live session.
    Live(Session<Snap>),
    /// The request carries no well-formed session cookie.
    NoCookie,
    /// A well-formed identifier the store does not know (never issued,
    /// deleted, or swept).
    Unknown,
    /// The session had expired; its record has been deleted.
    Expired,
    /// The stored record could not be read; it has been deleted.
    Undecodable(DecodeError),
}

/// Why an update was not applied.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// The store failed.
    Store(StoreError),
    /// The session was deleted or expired while the update was retried.
    Gone,
    /// Too many concurrent writers: [`MAX_SWAP_ATTEMPTS`] swaps lost.
    Contended,
}

impl From<StoreError> for UpdateError {
    fn from(err: StoreError) -> Self {
        UpdateError::Store(err)
    }
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Store(err) => err.fmt(f),
            UpdateError::Gone => f.write_str("the session ended during the update"),
            UpdateError::Contended => f.write_str("too many concurrent updates of the session"),
        }
    }
}

impl<S: SessionStore> SessionManager<S> {
    /// Sessions in `store`, ending by `policy`.
    pub fn new(store: S, policy: ExpiryPolicy) -> Self {
        SessionManager {
            store,
            policy,
            max_sessions: DEFAULT_MAX_SESSIONS,
            cursor: Cell::new(None),
        }
    }

    /// Caps the number of live sessions (at least 1).
    pub fn with_max_sessions(mut self, max_sessions: u64) -> Self {
        self.max_sessions = max_sessions.max(1);
        self
    }

    /// Each request's share of the sweeping: reads the index cursor (one
    /// read) and, once its bucket has ended, does one bounded
    /// [`index::step`]. Call it once per request, before anything else.
    pub fn maintain(&self, now: i64) -> Result<StepReport, StoreError> {
        let report = index::step(&self.store, &self.policy, now, 0)?;
        self.cursor.set(report.cursor);
        Ok(report)
    }

    /// The expiry policy.
    pub fn policy(&self) -> &ExpiryPolicy {
        &self.policy
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Looks up the session of `id` (one read, kept as the base of a later
    /// compare-and-swap). An expired or unreadable record is deleted on the
    /// spot (one more write), so it cannot be revived.
    pub fn find(&self, id: Option<SessionId>, now: i64) -> Result<Found<S::Snapshot>, StoreError> {
        let Some(id) = id else {
            return Ok(Found::NoCookie);
        };
        let key = id.record_key();
        let snapshot = self.store.snapshot(&key)?;
        let bytes = snapshot.value().map(<[u8]>::to_vec);
        self.judge(id, key, bytes.as_deref(), Some(snapshot), now)
    }

    /// What a request does first: its share of the sweeping
    /// ([`SessionManager::maintain`]) and the lookup of its session
    /// ([`SessionManager::find`]), reading the index cursor and the record
    /// in one batch. A live session with nothing due costs that one read.
    /// The session comes without a compare-and-swap base: an update reads
    /// one first.
    pub fn lookup(
        &self,
        id: Option<SessionId>,
        now: i64,
    ) -> Result<Found<S::Snapshot>, StoreError> {
        let key = id.as_ref().map(SessionId::record_key);
        let mut keys = vec![index::CURSOR_KEY.to_owned()];
        keys.extend(key.clone());
        let mut values = self.store.get_many(&keys)?.into_iter();
        let cursor = values
            .next()
            .flatten()
            .and_then(|bytes| Cursor::decode(&bytes));
        match cursor {
            Some(cursor) if !cursor.is_due(now) => self.cursor.set(Some(cursor)),
            // Due, absent or unreadable: the step reads the cursor again,
            // with a compare-and-swap handle to claim it.
            _ => {
                self.maintain(now)?;
            }
        }
        let (Some(id), Some(key)) = (id, key) else {
            return Ok(Found::NoCookie);
        };
        let bytes = values.next().flatten();
        self.judge(id, key, bytes.as_deref(), None, now)
    }

    /// Classifies what the store holds for `id`, deleting an expired or
    /// unreadable record (one write) so that it cannot be revived.
    fn judge(
        &self,
        id: SessionId,
        key: String,
        bytes: Option<&[u8]>,
        snapshot: Option<S::Snapshot>,
        now: i64,
    ) -> Result<Found<S::Snapshot>, StoreError> {
        let Some(bytes) = bytes else {
            return Ok(Found::Unknown);
        };
        let record = match SessionRecord::decode(bytes) {
            Ok(record) => record,
            Err(err) => {
                self.store.delete(&key)?;
                return Ok(Found::Undecodable(err));
            }
        };
        if self.policy.is_expired(&record, now) {
            self.store.delete(&key)?;
            return Ok(Found::Expired);
        }
        Ok(Found::Live(Session {
            id,
            key,
            record,
            snapshot,
        }))
    }

    /// Creates and stores a new session with a fresh identifier and CSRF
    /// token, and its index entry (three writes: the session count, a slot,
    /// and one batch with the entry and the record; the identifier is new,
    /// so no one else can be writing its key). When the count passes the
    /// cap, the sessions that expire soonest are evicted first.
    pub fn create<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
    ) -> Result<Session<S::Snapshot>, StoreError> {
        let id = SessionId::generate(rng);
        let key = id.record_key();
        let record = SessionRecord::new(now, random_token(rng, CSRF_TOKEN_LEN));
        // Counted first: if a later write fails, the count is one too high
        // (the cap errs on the safe side), never too low.
        let count = self.store.increment(index::SESSION_COUNT_KEY, 1)?;
        // Never behind the cursor, which eviction may have moved ahead: an
        // entry there would never be swept.
        let bucket = index::bucket_of(self.policy.expires_at(&record))
            .max(self.cursor.get().map_or(i64::MIN, |c| c.bucket));
        let slot = self.store.increment(&index::slot_counter_key(bucket), 1)?;
        self.store.set_many(&[
            (index::entry_key(bucket, slot), key.as_bytes().to_vec()),
            (key.clone(), record.encode()),
        ])?;
        let mut excess = u64::try_from(count)
            .unwrap_or(0)
            .saturating_sub(self.max_sessions);
        for _ in 0..EVICTION_STEPS {
            if excess == 0 {
                break;
            }
            let report = index::step(&self.store, &self.policy, now, excess)?;
            excess = excess.saturating_sub(report.entries_removed);
        }
        Ok(Session {
            id,
            key,
            record,
            snapshot: None,
        })
    }

    /// Records that the session was seen at `now`, if its `last_seen_at`
    /// lags by the touch granularity or more; most reads write nothing.
    /// Returns whether it wrote.
    pub fn touch_if_due(
        &self,
        session: &mut Session<S::Snapshot>,
        now: i64,
    ) -> Result<bool, UpdateError> {
        if !self.policy.needs_touch(&session.record, now) {
            return Ok(false);
        }
        self.update(session, now, |_| {})?;
        Ok(true)
    }

    /// Applies `change` to the session's record and stores it with
    /// compare-and-swap. When another request wrote the record in between,
    /// `change` is applied again to what that request stored, so neither
    /// update is lost. Each applied update counts in `writes` and moves
    /// `last_seen_at` to `now`.
    pub fn update(
        &self,
        session: &mut Session<S::Snapshot>,
        now: i64,
        change: impl Fn(&mut SessionRecord),
    ) -> Result<(), UpdateError> {
        let mut snapshot = match session.snapshot.take() {
            Some(snapshot) => snapshot,
            None => self.store.snapshot(&session.key)?,
        };
        let mut base = match snapshot.value() {
            Some(bytes) if bytes == session.record.encode().as_slice() => session.record.clone(),
            other => self.live_record(other, now)?,
        };
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let mut next = base.clone();
            change(&mut next);
            next.writes += 1;
            next.last_seen_at = next.last_seen_at.max(now);
            match self.store.swap(snapshot, &next.encode())? {
                Swap::Done => {
                    session.record = next;
                    return Ok(());
                }
                Swap::Conflict(fresh) => {
                    base = self.live_record(fresh.value(), now)?;
                    snapshot = fresh;
                }
            }
        }
        Err(UpdateError::Contended)
    }

    /// The record in `bytes`, if it is still a live session.
    fn live_record(&self, bytes: Option<&[u8]>, now: i64) -> Result<SessionRecord, UpdateError> {
        let record = bytes
            .and_then(|b| SessionRecord::decode(b).ok())
            .ok_or(UpdateError::Gone)?;
        if self.policy.is_expired(&record, now) {
            return Err(UpdateError::Gone);
        }
        Ok(record)
    }

    /// Deletes the session's record (one write).
    pub fn delete(&self, session: Session<S::Snapshot>) -> Result<(), StoreError> {
        self.store.delete(&session.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use rand::rngs::OsRng;
    use rand::TryRngCore;

    const T0: i64 = 1_750_000_000;

    fn manager() -> SessionManager<MemoryStore> {
        SessionManager::new(
            MemoryStore::new(),
            ExpiryPolicy {
                idle_timeout_secs: 600,
                absolute_timeout_secs: 3600,
            },
        )
    }

    fn live(found: Found<crate::memory::MemorySnapshot>) -> Session<crate::memory::MemorySnapshot> {
        match found {
            Found::Live(s) => s,
            _ => panic!("expected a live session"),
        }
    }

    #[test]
    fn create_then_find() {
        let m = manager();
        let created = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        // The count, a slot, and one batch with the entry and the record.
        assert_eq!(m.store().writes(), 3);
        let found = live(m.find(Some(created.id().clone()), T0 + 1).unwrap());
        assert_eq!(found.record(), created.record());
        assert_eq!(found.record().csrf_token.len(), CSRF_TOKEN_LEN);
        assert_eq!(m.store().reads(), 1);
        // The raw identifier is nowhere in the store.
        let id = created.id().as_str();
        for key in m.store().keys() {
            assert!(!key.contains(id));
            assert!(!String::from_utf8_lossy(&m.store().peek(&key).unwrap()).contains(id));
        }
    }

    #[test]
    fn lookup_reads_cursor_and_record_in_one_batch() {
        let m = manager();
        m.maintain(T0).unwrap();
        let s = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        let (reads, writes) = (m.store().reads(), m.store().writes());
        let mut found = live(m.lookup(Some(s.id().clone()), T0 + 1).unwrap());
        assert_eq!(
            (m.store().reads() - reads, m.store().writes() - writes),
            (1, 0)
        );
        // An update then reads its compare-and-swap base, and writes once.
        m.update(&mut found, T0 + 2, |r| {
            r.values.insert("v1".into(), "x".into());
        })
        .unwrap();
        assert_eq!(
            (m.store().reads() - reads, m.store().writes() - writes),
            (2, 1)
        );
        assert!(matches!(m.lookup(None, T0).unwrap(), Found::NoCookie));
        let stranger = SessionId::parse(&"y".repeat(64)).unwrap();
        assert!(matches!(
            m.lookup(Some(stranger), T0).unwrap(),
            Found::Unknown
        ));
        assert!(matches!(
            m.lookup(Some(s.id().clone()), T0 + 700).unwrap(),
            Found::Expired
        ));
    }

    #[test]
    fn missing_unknown_and_expired() {
        let m = manager();
        assert!(matches!(m.find(None, T0).unwrap(), Found::NoCookie));
        let stranger = SessionId::parse(&"x".repeat(64)).unwrap();
        assert!(matches!(
            m.find(Some(stranger), T0).unwrap(),
            Found::Unknown
        ));
        let s = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        assert!(matches!(
            m.find(Some(s.id().clone()), T0 + 600).unwrap(),
            Found::Expired
        ));
        assert!(
            m.store().peek(s.key()).is_none(),
            "expired record is deleted"
        );
        assert!(matches!(
            m.find(Some(s.id().clone()), T0).unwrap(),
            Found::Unknown
        ));
    }

    #[test]
    fn undecodable_record_is_deleted() {
        let m = manager();
        let s = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        m.store().put(s.key(), br#"{"format":99}"#);
        assert!(matches!(
            m.find(Some(s.id().clone()), T0).unwrap(),
            Found::Undecodable(DecodeError::UnknownFormat(99))
        ));
        assert!(m.store().peek(s.key()).is_none());
    }

    #[test]
    fn reads_write_only_when_touch_is_due() {
        let m = manager(); // granularity: 600 / 60 = 10 s
        let s = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        let writes = m.store().writes();
        let mut found = live(m.find(Some(s.id().clone()), T0 + 9).unwrap());
        assert!(!m.touch_if_due(&mut found, T0 + 9).unwrap());
        assert_eq!(m.store().writes(), writes);
        let mut found = live(m.find(Some(s.id().clone()), T0 + 10).unwrap());
        assert!(m.touch_if_due(&mut found, T0 + 10).unwrap());
        assert_eq!(m.store().writes(), writes + 1);
        assert_eq!(found.record().last_seen_at, T0 + 10);
        // The touch keeps the session alive past the first idle deadline.
        assert!(matches!(
            m.find(Some(s.id().clone()), T0 + 605).unwrap(),
            Found::Live(_)
        ));
    }

    #[test]
    fn concurrent_updates_are_both_kept() {
        let m = manager();
        let s = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        let mut first = live(m.find(Some(s.id().clone()), T0).unwrap());
        let mut second = live(m.find(Some(s.id().clone()), T0).unwrap());
        m.update(&mut first, T0 + 1, |r| {
            r.values.insert("v1".into(), "one".into());
        })
        .unwrap();
        // `second` read before `first` wrote: its swap conflicts, and its
        // change is re-applied on top of `first`'s.
        m.update(&mut second, T0 + 2, |r| {
            r.values.insert("v2".into(), "two".into());
        })
        .unwrap();
        let stored = live(m.find(Some(s.id().clone()), T0 + 3).unwrap());
        assert_eq!(stored.record().value("v1"), Some("one"));
        assert_eq!(stored.record().value("v2"), Some("two"));
        assert_eq!(stored.record().writes, 2);
        assert_eq!(stored.record().last_seen_at, T0 + 2);
    }

    #[test]
    fn update_of_a_deleted_session_is_gone() {
        let m = manager();
        let s = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        let mut found = live(m.find(Some(s.id().clone()), T0).unwrap());
        m.store().delete(s.key()).unwrap();
        let result = m.update(&mut found, T0, |r| r.submitted_at = Some(T0));
        assert_eq!(result, Err(UpdateError::Gone));
        assert!(m.store().peek(s.key()).is_none(), "nothing resurrected");
    }

    #[test]
    fn store_failures_surface() {
        let m = manager();
        let s = m.create(&mut OsRng.unwrap_err(), T0).unwrap();
        m.store().set_failing(true);
        assert!(m.find(Some(s.id().clone()), T0).is_err());
        assert!(m.create(&mut OsRng.unwrap_err(), T0).is_err());
    }
}
