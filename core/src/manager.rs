//! Finding, creating, updating and deleting sessions through a store.

use std::cell::{Cell, OnceCell};

use crate::expiry::ExpiryPolicy;
use crate::id::{random_token, SessionId, SigningKey, SIGNING_KEY_KEY};
use crate::index::{self, StepReport};
use crate::record::{DecodeError, SessionRecord};
use crate::store::{
    remember_write, swap_and_confirm, Confirmed, SessionStore, Snapshot, StoreError, WRITE_ID_LEN,
};

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
    /// The index cursor's bucket as [`SessionManager::maintain`] last read
    /// it.
    cursor_bucket: Cell<Option<i64>>,
    /// The store's signing key, once read.
    signing_key: OnceCell<SigningKey>,
}

/// A live session, as read for the current request.
pub struct Session {
    id: SessionId,
    key: String,
    record: SessionRecord,
}

impl Session {
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
pub enum Found {
    /// A live session.
    Live(Session),
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
            cursor_bucket: Cell::new(None),
            signing_key: OnceCell::new(),
        }
    }

    /// Caps the number of live sessions (at least 1).
    pub fn with_max_sessions(mut self, max_sessions: u64) -> Self {
        self.max_sessions = max_sessions.max(1);
        self
    }

    /// A share of the sweeping: reads the index cursor (one read) and,
    /// once its bucket has ended, does one bounded [`index::step`]. Every
    /// creation runs it first: creations are what make the store grow.
    pub fn maintain<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
    ) -> Result<StepReport, StoreError> {
        let report = index::maintain(&self.store, &self.policy, now, &mut || write_id(rng))?;
        self.cursor_bucket
            .set(report.cursor.as_ref().map(|cursor| cursor.bucket));
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

    /// Looks up the session of `id`: one read. An expired or unreadable
    /// record is deleted on the spot (one more write), so it cannot be
    /// revived.
    pub fn lookup(&self, id: Option<SessionId>, now: i64) -> Result<Found, StoreError> {
        let Some(id) = id else {
            return Ok(Found::NoCookie);
        };
        let key = id.record_key();
        let Some(bytes) = self.store.get(&key)? else {
            return Ok(Found::Unknown);
        };
        let record = match SessionRecord::decode(&bytes) {
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
        Ok(Found::Live(Session { id, key, record }))
    }

    /// The store's [`SigningKey`]: one read, the first time a manager
    /// needs it. A store without one gets one (one write, then a read
    /// back: when two instances make one at once, both use whichever was
    /// stored last).
    pub fn signing_key<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<&SigningKey, StoreError> {
        if let Some(key) = self.signing_key.get() {
            return Ok(key);
        }
        let stored = self.store.get(SIGNING_KEY_KEY)?;
        let key = match stored.as_deref().and_then(SigningKey::decode) {
            Some(key) => key,
            None => {
                self.store
                    .set(SIGNING_KEY_KEY, &SigningKey::generate(rng).encode())?;
                let stored = self.store.get(SIGNING_KEY_KEY)?;
                stored
                    .as_deref()
                    .and_then(SigningKey::decode)
                    .ok_or_else(|| StoreError("the signing key did not read back".into()))?
            }
        };
        Ok(self.signing_key.get_or_init(|| key))
    }

    /// The store's [`SigningKey`] if it has one (one read, the first time):
    /// what checks a pending identifier a client sends. Never writes: a
    /// store without a key has issued no pending identifier.
    pub fn stored_signing_key(&self) -> Result<Option<&SigningKey>, StoreError> {
        if let Some(key) = self.signing_key.get() {
            return Ok(Some(key));
        }
        let stored = self.store.get(SIGNING_KEY_KEY)?;
        Ok(stored
            .as_deref()
            .and_then(SigningKey::decode)
            .map(|key| self.signing_key.get_or_init(|| key)))
    }

    /// Creates and stores a new, empty session ([`SessionManager::create_with`]).
    pub fn create<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
    ) -> Result<Session, StoreError> {
        self.create_with(rng, now, |_| {})
    }

    /// Creates and stores a new session with a fresh identifier and CSRF
    /// token, holding what `fill` puts in its record, and its index entry:
    /// its share of the sweeping ([`SessionManager::maintain`]), then three
    /// writes (the session count, a slot, and one batch with the entry and
    /// the record; the identifier is new, so no one else can be writing its
    /// key). When the count passes the cap, the sessions that expire
    /// soonest are evicted.
    pub fn create_with<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        fill: impl FnOnce(&mut SessionRecord),
    ) -> Result<Session, StoreError> {
        self.maintain(rng, now)?;
        let id = SessionId::generate(rng);
        let key = id.record_key();
        let mut record = SessionRecord::new(now, random_token(rng, CSRF_TOKEN_LEN));
        fill(&mut record);
        // Counted first: if a later write fails, the count is one too high
        // (the cap errs on the safe side), never too low.
        let count = self.store.increment(index::SESSION_COUNT_KEY, 1)?;
        // Never behind the cursor, which eviction may have moved ahead: an
        // entry there would never be swept.
        let bucket = index::bucket_of(self.policy.expires_at(&record))
            .max(self.cursor_bucket.get().unwrap_or(i64::MIN));
        let slot = self.store.increment(&index::slot_counter_key(bucket), 1)?;
        self.store.set_many(&[
            (index::entry_key(bucket, slot), key.as_bytes().to_vec()),
            (key.clone(), record.encode()),
        ])?;
        let excess = u64::try_from(count)
            .unwrap_or(0)
            .saturating_sub(self.max_sessions);
        self.evict(rng, now, excess)?;
        Ok(Session { id, key, record })
    }

    /// Removes up to `excess` sessions, those that expire soonest, in at
    /// most [`EVICTION_STEPS`] steps.
    fn evict<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        mut excess: u64,
    ) -> Result<(), StoreError> {
        for _ in 0..EVICTION_STEPS {
            if excess == 0 {
                break;
            }
            let report = index::step(&self.store, &self.policy, now, excess, &mut || {
                write_id(rng)
            })?;
            excess = excess.saturating_sub(report.entries_removed);
        }
        Ok(())
    }

    /// Records that the session was seen at `now`, if its `last_seen_at`
    /// lags by the touch granularity or more; most reads write nothing.
    /// Returns whether it wrote.
    pub fn touch_if_due<R: rand::CryptoRng + ?Sized>(
        &self,
        session: &mut Session,
        rng: &mut R,
        now: i64,
    ) -> Result<bool, UpdateError> {
        if !self.policy.needs_touch(&session.record, now) {
            return Ok(false);
        }
        self.update(session, rng, now, |_| {})?;
        Ok(true)
    }

    /// Applies `change` to the session's record and stores it with
    /// compare-and-swap. When another request wrote the record in between,
    /// `change` is applied again to what that request stored, so neither
    /// update is lost. Each applied update counts in `writes` and moves
    /// `last_seen_at` to `now`.
    ///
    /// Costs one read (the compare-and-swap base) and one write, plus one
    /// read for each swap the store does not confirm (every swap, on Spin's
    /// Redis store) and one read and one write per lost race.
    pub fn update<R: rand::CryptoRng + ?Sized>(
        &self,
        session: &mut Session,
        rng: &mut R,
        now: i64,
        change: impl Fn(&mut SessionRecord),
    ) -> Result<(), UpdateError> {
        let mut snapshot = self.store.snapshot(&session.key)?;
        // The ids of every attempt: an attempt judged lost may still land
        // later (a swap whose reply timed out, then a read that overtook
        // it), and a later read must then see the change as applied rather
        // than apply it twice.
        let mut attempts: Vec<String> = Vec::new();
        for _ in 0..MAX_SWAP_ATTEMPTS {
            // Never swapped when absent: the session is gone, and a swap
            // would re-create it on Spin's SQLite store.
            let base = self.live_record(snapshot.value(), now)?;
            let id = write_id(rng);
            attempts.push(id.clone());
            let next = self.next_record(base, now, id, &change);
            let is_ours = |bytes: &[u8]| {
                SessionRecord::decode(bytes)
                    .is_ok_and(|stored| attempts.iter().any(|id| stored.includes_write(id)))
            };
            match swap_and_confirm(&self.store, snapshot, &next.encode(), is_ours)? {
                Confirmed::Stored => {
                    session.record = next;
                    return Ok(());
                }
                Confirmed::Lost(fresh) => snapshot = fresh,
            }
        }
        Err(UpdateError::Contended)
    }

    /// `base` with `change` applied, as written by the write `id`.
    fn next_record(
        &self,
        base: SessionRecord,
        now: i64,
        id: String,
        change: impl Fn(&mut SessionRecord),
    ) -> SessionRecord {
        let mut next = base;
        change(&mut next);
        next.writes += 1;
        next.last_seen_at = next.last_seen_at.max(now);
        remember_write(&mut next.recent_writes, id);
        next
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

    /// Gives the session a new identifier, keeping its data: applies
    /// `change` and marks the old record [ended](SessionRecord::ended) in
    /// one compare-and-swap update (so no concurrent update of the old
    /// identifier is lost: it lands before, and is carried over, or finds
    /// the session gone), then creates the new record
    /// ([`SessionManager::create_with`]) with the data, the creation time
    /// and the lifetime of the old one, and `csrf_token` (a fresh one: the
    /// token changes with the identifier). The old identifier is dead from
    /// the first step on.
    pub fn cycle<R: rand::CryptoRng + ?Sized>(
        &self,
        session: &mut Session,
        rng: &mut R,
        now: i64,
        csrf_token: String,
        change: impl Fn(&mut SessionRecord),
    ) -> Result<(), UpdateError> {
        self.update(session, rng, now, |record| {
            change(record);
            record.ended = true;
        })?;
        let old = &session.record;
        let fresh = self.create_with(rng, now, |record| {
            record.created_at = old.created_at;
            record.remember_secs = old.remember_secs;
            record.data = old.data.clone();
            record.flash = old.flash.clone();
            record.csrf_token = csrf_token;
        })?;
        *session = fresh;
        Ok(())
    }

    /// Deletes the session's record (one write).
    pub fn delete(&self, session: Session) -> Result<(), StoreError> {
        self.store.delete(&session.key)
    }
}

/// A fresh random write id ([`crate::store::RECENT_WRITES`]).
fn write_id<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    random_token(rng, WRITE_ID_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryStore, SwapBehaviour};
    use crate::store::Swap;
    use rand::rngs::OsRng;
    use rand::TryRngCore;

    const T0: i64 = 1_750_000_000;

    const BEHAVIOURS: [SwapBehaviour; 3] = [
        SwapBehaviour::Honest,
        SwapBehaviour::SpinSqlite,
        SwapBehaviour::SpinRedis,
    ];

    fn manager_on(behaviour: SwapBehaviour) -> SessionManager<MemoryStore> {
        SessionManager::new(
            MemoryStore::with_behaviour(behaviour),
            ExpiryPolicy {
                idle_timeout_secs: 600,
                absolute_timeout_secs: 3600,
            },
        )
    }

    fn manager() -> SessionManager<MemoryStore> {
        manager_on(SwapBehaviour::Honest)
    }

    fn rng() -> rand::rand_core::UnwrapErr<OsRng> {
        OsRng.unwrap_err()
    }

    fn live(found: Found) -> Session {
        match found {
            Found::Live(s) => s,
            _ => panic!("expected a live session"),
        }
    }

    fn ops(m: &SessionManager<MemoryStore>) -> (u64, u64) {
        (m.store().reads(), m.store().writes())
    }

    #[test]
    fn create_then_lookup() {
        let m = manager();
        m.maintain(&mut rng(), T0).unwrap(); // the cursor of a new store
        let before = ops(&m);
        let created = m.create(&mut rng(), T0).unwrap();
        // The cursor read, then the count, a slot, and one batch with the
        // entry and the record.
        assert_eq!(ops(&m), (before.0 + 1, before.1 + 3));
        let before = ops(&m);
        let found = live(m.lookup(Some(created.id().clone()), T0 + 1).unwrap());
        assert_eq!(found.record(), created.record());
        assert_eq!(found.record().csrf_token.len(), CSRF_TOKEN_LEN);
        assert_eq!(ops(&m), (before.0 + 1, before.1), "a lookup is one read");
        // The raw identifier is nowhere in the store.
        let id = created.id().as_str();
        for key in m.store().keys() {
            assert!(!key.contains(id));
            assert!(!String::from_utf8_lossy(&m.store().peek(&key).unwrap()).contains(id));
        }
    }

    #[test]
    fn an_update_costs_its_base_and_one_write_and_one_read_back_on_redis() {
        for (behaviour, reads) in [
            (SwapBehaviour::Honest, 1),
            (SwapBehaviour::SpinSqlite, 1),
            (SwapBehaviour::SpinRedis, 2),
        ] {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut found = live(m.lookup(Some(s.id().clone()), T0 + 1).unwrap());
            let before = ops(&m);
            m.update(&mut found, &mut rng(), T0 + 2, |r| {
                r.data.insert("v1".into(), "x".into());
            })
            .unwrap();
            assert_eq!(ops(&m), (before.0 + reads, before.1 + 1), "{behaviour:?}");
            let stored = live(m.lookup(Some(s.id().clone()), T0 + 3).unwrap());
            assert_eq!(stored.record().text("v1"), Some("x"), "{behaviour:?}");
            assert_eq!(stored.record().writes, 1, "{behaviour:?}");
        }
    }

    #[test]
    fn missing_unknown_and_expired() {
        let m = manager();
        assert!(matches!(m.lookup(None, T0).unwrap(), Found::NoCookie));
        let stranger = SessionId::parse(&"x".repeat(64)).unwrap();
        assert!(matches!(
            m.lookup(Some(stranger), T0).unwrap(),
            Found::Unknown
        ));
        let s = m.create(&mut rng(), T0).unwrap();
        assert!(matches!(
            m.lookup(Some(s.id().clone()), T0 + 600).unwrap(),
            Found::Expired
        ));
        assert!(
            m.store().peek(s.key()).is_none(),
            "expired record is deleted"
        );
        assert!(matches!(
            m.lookup(Some(s.id().clone()), T0).unwrap(),
            Found::Unknown
        ));
    }

    #[test]
    fn undecodable_record_is_deleted() {
        let m = manager();
        let s = m.create(&mut rng(), T0).unwrap();
        m.store().put(s.key(), br#"{"format":99}"#);
        assert!(matches!(
            m.lookup(Some(s.id().clone()), T0).unwrap(),
            Found::Undecodable(DecodeError::UnknownFormat(99))
        ));
        assert!(m.store().peek(s.key()).is_none());
    }

    #[test]
    fn reads_write_only_when_touch_is_due() {
        let m = manager(); // granularity: 600 / 60 = 10 s
        let s = m.create(&mut rng(), T0).unwrap();
        let writes = m.store().writes();
        let mut found = live(m.lookup(Some(s.id().clone()), T0 + 9).unwrap());
        assert!(!m.touch_if_due(&mut found, &mut rng(), T0 + 9).unwrap());
        assert_eq!(m.store().writes(), writes);
        let mut found = live(m.lookup(Some(s.id().clone()), T0 + 10).unwrap());
        assert!(m.touch_if_due(&mut found, &mut rng(), T0 + 10).unwrap());
        assert_eq!(m.store().writes(), writes + 1);
        assert_eq!(found.record().last_seen_at, T0 + 10);
        // The touch keeps the session alive past the first idle deadline.
        assert!(matches!(
            m.lookup(Some(s.id().clone()), T0 + 605).unwrap(),
            Found::Live(_)
        ));
    }

    #[test]
    fn concurrent_updates_are_both_kept_on_every_store() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut first = live(m.lookup(Some(s.id().clone()), T0).unwrap());
            let mut second = live(m.lookup(Some(s.id().clone()), T0).unwrap());
            // `first` writes while `second` holds its snapshot: `second`'s
            // swap conflicts, and its change is re-applied on top.
            let key = s.key().to_owned();
            m.store().after_next_snapshot(move |inner| {
                let base = SessionRecord::decode(&inner.peek(&key).unwrap()).unwrap();
                let mut other = base;
                other.data.insert("v1".into(), "one".into());
                other.writes += 1;
                remember_write(&mut other.recent_writes, "someone-else".into());
                inner.put(&key, &other.encode());
            });
            m.update(&mut second, &mut rng(), T0 + 2, |r| {
                r.data.insert("v2".into(), "two".into());
            })
            .unwrap();
            let stored = live(m.lookup(Some(s.id().clone()), T0 + 3).unwrap());
            assert_eq!(stored.record().text("v1"), Some("one"), "{behaviour:?}");
            assert_eq!(stored.record().text("v2"), Some("two"), "{behaviour:?}");
            assert_eq!(stored.record().writes, 2, "{behaviour:?}");
            assert_eq!(stored.record().last_seen_at, T0 + 2, "{behaviour:?}");
            // And a plain second update counts once more, not twice.
            m.update(&mut first, &mut rng(), T0 + 4, |r| {
                r.remember_secs = Some(60)
            })
            .unwrap();
            let stored = live(m.lookup(Some(s.id().clone()), T0 + 5).unwrap());
            assert_eq!(stored.record().writes, 3, "{behaviour:?}");
        }
    }

    #[test]
    fn a_write_that_lands_late_is_not_applied_twice() {
        let m = manager_on(SwapBehaviour::SpinRedis);
        let s = m.create(&mut rng(), T0).unwrap();
        let mut found = live(m.lookup(Some(s.id().clone()), T0).unwrap());
        // The first swap lands late, as on Redis when its reply timed out:
        // the store answers "not confirmed" with the old value (a read on
        // another connection overtook the write), and the write lands just
        // before the next swap.
        m.store().instead_of_next_swap(|store, snapshot, value| {
            let (key, late) = (snapshot.key().to_owned(), value.to_vec());
            store.instead_of_next_swap(move |store, snapshot, value| {
                store.put(&key, &late);
                store.swap_as_configured(snapshot, value)
            });
            Ok(Swap::NotConfirmed(store.snapshot(snapshot.key())?))
        });
        m.update(&mut found, &mut rng(), T0 + 1, |r| {
            r.data.insert("v1".into(), "x".into());
        })
        .unwrap();
        let stored = live(m.lookup(Some(s.id().clone()), T0 + 2).unwrap());
        assert_eq!(stored.record().text("v1"), Some("x"));
        assert_eq!(stored.record().writes, 1, "one update, one write");
    }

    #[test]
    fn update_of_a_deleted_session_is_gone_and_resurrects_nothing() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut found = live(m.lookup(Some(s.id().clone()), T0).unwrap());
            m.store().delete(s.key()).unwrap();
            let result = m.update(&mut found, &mut rng(), T0, |r| r.remember_secs = Some(60));
            assert_eq!(result, Err(UpdateError::Gone), "{behaviour:?}");
            assert!(m.store().peek(s.key()).is_none(), "{behaviour:?}");
        }
    }

    #[test]
    fn a_session_deleted_between_snapshot_and_swap_stays_deleted() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut found = live(m.lookup(Some(s.id().clone()), T0).unwrap());
            let key = s.key().to_owned();
            m.store()
                .after_next_snapshot(move |inner| inner.put_absent(&key));
            let result = m.update(&mut found, &mut rng(), T0, |r| r.remember_secs = Some(60));
            assert_eq!(result, Err(UpdateError::Gone), "{behaviour:?}");
            assert!(m.store().peek(s.key()).is_none(), "{behaviour:?}");
        }
    }

    #[test]
    fn the_signing_key_is_made_once_and_then_read() {
        let m = manager();
        let key = m.signing_key(&mut rng()).unwrap().clone();
        assert_eq!(m.store().writes(), 1);
        // Another instance reads it: one read, no write, the same key.
        let other = SessionManager::new(m.store(), ExpiryPolicy::default());
        let (reads, writes) = ops(&m);
        assert_eq!(other.signing_key(&mut rng()).unwrap(), &key);
        assert_eq!(other.signing_key(&mut rng()).unwrap(), &key, "cached");
        assert_eq!(ops(&m), (reads + 1, writes));
        // A damaged key is replaced.
        m.store().put(SIGNING_KEY_KEY, b"garbage");
        let third = SessionManager::new(m.store(), ExpiryPolicy::default());
        let replaced = third.signing_key(&mut rng()).unwrap();
        assert_ne!(replaced, &key);
    }

    #[test]
    fn cycle_moves_the_data_to_a_new_identifier_and_ends_the_old() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m
                .create_with(&mut rng(), T0, |r| {
                    r.data.insert("name".into(), "Ada".into());
                })
                .unwrap();
            let old_id = s.id().clone();
            let mut session = live(m.lookup(Some(old_id.clone()), T0 + 1).unwrap());
            m.cycle(&mut session, &mut rng(), T0 + 2, "new-token".into(), |r| {
                r.data.insert("role".into(), "admin".into());
            })
            .unwrap();
            assert_ne!(session.id(), &old_id);
            assert_eq!(session.record().csrf_token, "new-token");
            let new = live(m.lookup(Some(session.id().clone()), T0 + 3).unwrap());
            assert_eq!(new.record().text("name"), Some("Ada"), "{behaviour:?}");
            assert_eq!(new.record().text("role"), Some("admin"), "{behaviour:?}");
            assert_eq!(new.record().created_at, T0, "{behaviour:?}");
            // The old identifier is dead, and an update through it is refused.
            let mut stale = Session {
                id: old_id.clone(),
                key: old_id.record_key(),
                record: s.record().clone(),
            };
            assert_eq!(
                m.update(&mut stale, &mut rng(), T0 + 3, |_| {}),
                Err(UpdateError::Gone),
                "{behaviour:?}"
            );
            assert!(matches!(
                m.lookup(Some(old_id), T0 + 4).unwrap(),
                Found::Expired
            ));
        }
    }

    #[test]
    fn create_with_stores_what_fill_puts_in() {
        let m = manager();
        let s = m
            .create_with(&mut rng(), T0, |r| {
                r.data.insert("name".into(), "Ada".into());
            })
            .unwrap();
        let found = live(m.lookup(Some(s.id().clone()), T0 + 1).unwrap());
        assert_eq!(found.record().text("name"), Some("Ada"));
        assert_eq!(found.record().writes, 0);
    }

    #[test]
    fn store_failures_surface() {
        let m = manager();
        let s = m.create(&mut rng(), T0).unwrap();
        m.store().set_failing(true);
        assert!(m.lookup(Some(s.id().clone()), T0).is_err());
        assert!(m.create(&mut rng(), T0).is_err());
    }
}
