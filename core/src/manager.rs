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

/// Where requests draw lots for who makes the store's signing key.
pub const SIGNING_KEY_ELECTION_KEY: &str = "sessions/signing-key-election";

/// How many times a request that lost the draw reads the signing key
/// before it writes one itself.
pub const SIGNING_KEY_WAITS: usize = 20;

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
    /// Sessions seen this recently (seconds) are never evicted.
    protect_secs: u64,
}

/// Who may create a session ([`SessionManager::create_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission<'a> {
    /// The client, as a short key (a hash of its address), for the quota of
    /// new sessions; `None`: no quota.
    pub client: Option<&'a str>,
    /// At most this many new sessions per client and minute.
    pub per_minute: u64,
    /// Refuse the creation when the cap is reached and nothing can be
    /// evicted ([`CreateError::Full`]); otherwise go over the cap.
    pub refuse_when_full: bool,
}

impl Admission<'_> {
    /// No quota, and never refused.
    pub const ANYONE: Admission<'static> = Admission {
        client: None,
        per_minute: u64::MAX,
        refuse_when_full: false,
    };
}

/// What [`SessionManager::evict`] achieved.
struct EvictionOutcome {
    /// Sessions it could not remove.
    left: u64,
    /// A step moved the cursor across empty buckets.
    walked: bool,
    /// A step lost the cursor to a concurrent sweeper.
    contended: bool,
}

/// Why a session was not created.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    /// The store failed.
    Store(StoreError),
    /// The client has created its quota of sessions this minute; nothing
    /// was stored.
    RateLimited {
        /// Seconds until the quota's minute is over.
        retry_after_secs: u64,
    },
    /// The cap is reached and every stored session is protected; nothing
    /// was stored.
    Full {
        /// Seconds after which room may have been made.
        retry_after_secs: u64,
    },
}

impl From<StoreError> for CreateError {
    fn from(err: StoreError) -> Self {
        CreateError::Store(err)
    }
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::Store(err) => err.fmt(f),
            CreateError::RateLimited { .. } => {
                f.write_str("this client has created too many sessions this minute")
            }
            CreateError::Full { .. } => f.write_str("the session store is full of sessions in use"),
        }
    }
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
            protect_secs: 0,
        }
    }

    /// Never evicts a session seen within the last `secs` seconds (to the
    /// touch granularity) to make room for a new one.
    pub fn with_protection_window(mut self, secs: u64) -> Self {
        self.protect_secs = secs;
        self
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
    /// needs it. A store without one gets one, made by exactly one of the
    /// requests that find it missing: they draw lots with an `increment`
    /// of [`SIGNING_KEY_ELECTION_KEY`] (a key no one ever swaps, so it can
    /// be created race-free), the first writes the key, and the others read
    /// until it is there, calling `pause` between reads. Every instance
    /// then signs with the same key, so no visitor's form token is lost to
    /// two keys made at once. Should the elected writer fail, a waiter
    /// writes one after [`SIGNING_KEY_WAITS`] reads.
    pub fn signing_key<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        pause: &dyn Fn(),
    ) -> Result<&SigningKey, StoreError> {
        if let Some(key) = self.stored_signing_key()? {
            return Ok(key);
        }
        if self.store.increment(SIGNING_KEY_ELECTION_KEY, 1)? == 1 {
            self.store
                .set(SIGNING_KEY_KEY, &SigningKey::generate(rng).encode())?;
        }
        for _ in 0..SIGNING_KEY_WAITS {
            if let Some(key) = self.read_signing_key()? {
                return Ok(self.signing_key.get_or_init(|| key));
            }
            pause();
        }
        self.store
            .set(SIGNING_KEY_KEY, &SigningKey::generate(rng).encode())?;
        let key = self
            .read_signing_key()?
            .ok_or_else(|| StoreError("the signing key did not read back".into()))?;
        Ok(self.signing_key.get_or_init(|| key))
    }

    fn read_signing_key(&self) -> Result<Option<SigningKey>, StoreError> {
        Ok(self
            .store
            .get(SIGNING_KEY_KEY)?
            .as_deref()
            .and_then(SigningKey::decode))
    }

    /// The store's [`SigningKey`] if it has one (one read, the first time):
    /// what checks a pending identifier a client sends. Never writes: a
    /// store without a key has issued no pending identifier.
    pub fn stored_signing_key(&self) -> Result<Option<&SigningKey>, StoreError> {
        if let Some(key) = self.signing_key.get() {
            return Ok(Some(key));
        }
        Ok(self
            .read_signing_key()?
            .map(|key| self.signing_key.get_or_init(|| key)))
    }

    /// Creates and stores a new, empty session, admitting anyone
    /// ([`SessionManager::create_with`]).
    pub fn create<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
    ) -> Result<Session, CreateError> {
        self.create_with(rng, now, &Admission::ANYONE, |_| {})
    }

    /// Creates and stores a new session with a fresh identifier and CSRF
    /// token, holding what `fill` puts in its record, if `admission`
    /// allows:
    ///
    /// 1. its share of the sweeping ([`SessionManager::maintain`]);
    /// 2. the client's quota of new sessions this minute (one increment;
    ///    over it: [`CreateError::RateLimited`], nothing else written);
    /// 3. room under the cap (one increment of the session count; over the
    ///    cap, up to [`EVICTION_STEPS`] steps evict the sessions that expire
    ///    soonest, never one seen within the protection window; when that
    ///    frees no room: the count is restored and [`CreateError::Full`]);
    /// 4. the record and its index entry: one slot increment and one batch
    ///    (the identifier is new, so no one else can be writing its key).
    pub fn create_with<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        admission: &Admission<'_>,
        fill: impl FnOnce(&mut SessionRecord),
    ) -> Result<Session, CreateError> {
        self.maintain(rng, now)?;
        let quota = self.take_quota(admission, now)?;
        let evicted = match self.make_room(rng, now, admission.refuse_when_full) {
            Ok(evicted) => evicted,
            Err(full) => {
                // The quota counter was made by this request: it still
                // needs its index entry, or nothing would ever delete it.
                if let Some(key) = quota {
                    let bucket = index::bucket_of(index::quota_end(&key).unwrap_or(now));
                    index::add_entries(
                        &self.store,
                        bucket.max(self.entry_floor(now, true)),
                        &[key],
                    )?;
                }
                return Err(full);
            }
        };
        Ok(self.insert_new(rng, now, evicted, quota, fill)?)
    }

    /// Counts this creation against the client's quota. Returns the quota
    /// counter's key when this is the client's first creation of the
    /// minute: the counter then needs an index entry, so that the sweep
    /// deletes it.
    fn take_quota(
        &self,
        admission: &Admission<'_>,
        now: i64,
    ) -> Result<Option<String>, CreateError> {
        let Some(client) = admission.client else {
            return Ok(None);
        };
        let key = index::quota_key(now, client);
        let created = self.store.increment(&key, 1)?;
        if u64::try_from(created).unwrap_or(0) > admission.per_minute {
            let retry_after_secs =
                index::quota_end(&key).map_or(60, |end| (end - now).max(1)) as u64;
            return Err(CreateError::RateLimited { retry_after_secs });
        }
        Ok((created == 1).then_some(key))
    }

    /// Counts one more session and, over the cap, evicts. Returns whether
    /// eviction ran; `Err(Full)` when it freed no room and `refuse` is set
    /// (the count is then restored).
    fn make_room<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        refuse: bool,
    ) -> Result<bool, CreateError> {
        // Counted first: if a later write fails, the count is one too high
        // (the cap errs on the safe side), never too low.
        let count = self.store.increment(index::SESSION_COUNT_KEY, 1)?;
        let excess = u64::try_from(count)
            .unwrap_or(0)
            .saturating_sub(self.max_sessions);
        if excess == 0 {
            return Ok(false);
        }
        // Refused when eviction freed no room: it met sessions it may not
        // evict, or lost the cursor to a concurrent sweeper (then worth a
        // quick retry). Steps spent walking empty buckets leave the rest of
        // the work to the next creation instead: the count stays over the
        // cap by a few while the cursor walks up to the first sessions.
        let outcome = self.evict(rng, now, excess)?;
        if outcome.left > 0 && !outcome.walked && refuse {
            self.store.increment(index::SESSION_COUNT_KEY, -1)?;
            let retry_after_secs = if outcome.contended {
                1
            } else {
                index::BUCKET_SECS as u64
            };
            return Err(CreateError::Full { retry_after_secs });
        }
        Ok(true)
    }

    /// Writes the new session's record and index entry (and the entry of
    /// the client's new quota counter, in the same bucket: one slot
    /// increment reserves both).
    fn insert_new<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        after_eviction: bool,
        quota: Option<String>,
        fill: impl FnOnce(&mut SessionRecord),
    ) -> Result<Session, StoreError> {
        let id = SessionId::generate(rng);
        let key = id.record_key();
        let mut record = SessionRecord::new(now, random_token(rng, CSRF_TOKEN_LEN));
        fill(&mut record);
        let bucket = index::bucket_of(self.policy.expires_at(&record))
            .max(self.entry_floor(now, after_eviction));
        let targets: Vec<String> = std::iter::once(key.clone()).chain(quota).collect();
        let last = self
            .store
            .increment(&index::slot_counter_key(bucket), targets.len() as i64)?;
        let first = last - targets.len() as i64 + 1;
        let mut batch: Vec<(String, Vec<u8>)> = targets
            .into_iter()
            .zip(first..)
            .map(|(target, slot)| (index::entry_key(bucket, slot), target.into_bytes()))
            .collect();
        batch.push((key.clone(), record.encode()));
        self.store.set_many(&batch)?;
        Ok(Session { id, key, record })
    }

    /// The earliest bucket a new entry may go in: never behind the cursor,
    /// which the last [`SessionManager::maintain`] read, and which an
    /// eviction since may have moved as far as the bucket where sessions
    /// created now expire. An entry behind it would never be swept.
    fn entry_floor(&self, now: i64, after_eviction: bool) -> i64 {
        let read = self.cursor_bucket.get().unwrap_or(i64::MIN);
        if after_eviction {
            read.max(index::bucket_of(self.policy.expiry_of_new_session(now)))
        } else {
            read
        }
    }

    /// Removes up to `excess` sessions, those that expire soonest and were
    /// not seen within the protection window, in at most
    /// [`EVICTION_STEPS`] steps.
    fn evict<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        excess: u64,
    ) -> Result<EvictionOutcome, StoreError> {
        let mut outcome = EvictionOutcome {
            left: excess,
            walked: false,
            contended: false,
        };
        for _ in 0..EVICTION_STEPS {
            if outcome.left == 0 {
                break;
            }
            let eviction = index::Eviction {
                sessions: outcome.left,
                protect_secs: self.protect_secs,
            };
            let report = index::step(&self.store, &self.policy, now, eviction, &mut || {
                write_id(rng)
            })?;
            outcome.left = outcome.left.saturating_sub(report.sessions_removed);
            outcome.walked |= report.walked;
            outcome.contended |= report.lost_claim;
            if report.blocked {
                break;
            }
        }
        Ok(outcome)
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
        // A session that exists already: no quota, and never refused for
        // the cap (the old record is counted until it is swept).
        self.maintain(rng, now)?;
        let evicted = self.make_room(rng, now, false).map_err(|err| match err {
            CreateError::Store(err) => err,
            other => StoreError(other.to_string()),
        })?;
        let fresh = self.insert_new(rng, now, evicted, None, |record| {
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
            assert_eq!(
                stored.record().text("v1").as_deref(),
                Some("x"),
                "{behaviour:?}"
            );
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
            assert_eq!(
                stored.record().text("v1").as_deref(),
                Some("one"),
                "{behaviour:?}"
            );
            assert_eq!(
                stored.record().text("v2").as_deref(),
                Some("two"),
                "{behaviour:?}"
            );
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
        assert_eq!(stored.record().text("v1").as_deref(), Some("x"));
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
        let key = m.signing_key(&mut rng(), &|| {}).unwrap().clone();
        assert_eq!(m.store().writes(), 2, "the draw and the key");
        // Another instance reads it: one read, no write, the same key.
        let other = SessionManager::new(m.store(), ExpiryPolicy::default());
        let (reads, writes) = ops(&m);
        assert_eq!(other.signing_key(&mut rng(), &|| {}).unwrap(), &key);
        assert_eq!(
            other.signing_key(&mut rng(), &|| {}).unwrap(),
            &key,
            "cached"
        );
        assert_eq!(ops(&m), (reads + 1, writes));
        // A damaged key is replaced.
        m.store().put(SIGNING_KEY_KEY, b"garbage");
        let third = SessionManager::new(m.store(), ExpiryPolicy::default());
        let replaced = third.signing_key(&mut rng(), &|| {}).unwrap();
        assert_ne!(replaced, &key);
    }

    #[test]
    fn requests_that_find_no_key_at_once_all_use_the_one_made() {
        let store = MemoryStore::new();
        let first = SessionManager::new(&store, ExpiryPolicy::default());
        let second = SessionManager::new(&store, ExpiryPolicy::default());
        // Both found no key; the second drew second and waits while the
        // first, elected, writes it.
        assert_eq!(store.increment(SIGNING_KEY_ELECTION_KEY, 1).unwrap(), 1);
        let waits = Cell::new(0);
        let made = SigningKey::generate(&mut rng());
        let key = second
            .signing_key(&mut rng(), &|| {
                waits.set(waits.get() + 1);
                if waits.get() == 3 {
                    store.put(SIGNING_KEY_KEY, &made.encode());
                }
            })
            .unwrap()
            .clone();
        assert_eq!(key, made, "the waiter takes the elected writer's key");
        assert_eq!(first.signing_key(&mut rng(), &|| {}).unwrap(), &made);
        // An elected writer that never writes: the waiter makes one.
        let store = MemoryStore::new();
        store.increment(SIGNING_KEY_ELECTION_KEY, 1).unwrap();
        let lonely = SessionManager::new(&store, ExpiryPolicy::default());
        let key = lonely.signing_key(&mut rng(), &|| {}).unwrap().clone();
        assert_eq!(
            SigningKey::decode(&store.peek(SIGNING_KEY_KEY).unwrap()),
            Some(key)
        );
    }

    #[test]
    fn cycle_moves_the_data_to_a_new_identifier_and_ends_the_old() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m
                .create_with(&mut rng(), T0, &Admission::ANYONE, |r| {
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
            assert_eq!(
                new.record().text("name").as_deref(),
                Some("Ada"),
                "{behaviour:?}"
            );
            assert_eq!(
                new.record().text("role").as_deref(),
                Some("admin"),
                "{behaviour:?}"
            );
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
            .create_with(&mut rng(), T0, &Admission::ANYONE, |r| {
                r.data.insert("name".into(), "Ada".into());
            })
            .unwrap();
        let found = live(m.lookup(Some(s.id().clone()), T0 + 1).unwrap());
        assert_eq!(found.record().text("name").as_deref(), Some("Ada"));
        assert_eq!(found.record().writes, 0);
    }

    fn from(client: &str, per_minute: u64) -> Admission<'_> {
        Admission {
            client: Some(client),
            per_minute,
            refuse_when_full: true,
        }
    }

    #[test]
    fn a_client_over_its_quota_is_refused_and_nothing_is_stored() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let minute_start = T0 - T0.rem_euclid(60);
            let now = minute_start + 45;
            for _ in 0..3 {
                m.create_with(&mut rng(), now, &from("c1", 3), |_| {})
                    .unwrap();
            }
            let (keys, writes) = (m.store().keys().len(), m.store().writes());
            let refused = m.create_with(&mut rng(), now, &from("c1", 3), |_| {});
            assert_eq!(
                refused.err(),
                Some(CreateError::RateLimited {
                    retry_after_secs: 15
                }),
                "{behaviour:?}"
            );
            // One write: the quota counter itself; no key added.
            assert_eq!(m.store().writes(), writes + 1, "{behaviour:?}");
            assert_eq!(m.store().keys().len(), keys, "{behaviour:?}");
            // Other clients, and the next minute, are not affected.
            m.create_with(&mut rng(), now, &from("c2", 3), |_| {})
                .unwrap();
            m.create_with(&mut rng(), now + 15, &from("c1", 3), |_| {})
                .unwrap();
        }
    }

    #[test]
    fn a_creation_costs_one_write_more_for_its_quota() {
        let m = manager();
        m.maintain(&mut rng(), T0).unwrap();
        let before = ops(&m);
        m.create_with(&mut rng(), T0, &from("c", 10), |_| {})
            .unwrap();
        assert_eq!(ops(&m), (before.0 + 1, before.1 + 4), "first of the minute");
        let before = ops(&m);
        m.create_with(&mut rng(), T0, &from("c", 10), |_| {})
            .unwrap();
        assert_eq!(ops(&m), (before.0 + 1, before.1 + 4), "later ones");
    }

    #[test]
    fn quota_counters_are_swept_once_their_minute_is_over() {
        let m = manager();
        m.maintain(&mut rng(), T0).unwrap();
        m.create_with(&mut rng(), T0, &from("c", 10), |_| {})
            .unwrap();
        let quota = crate::index::quota_key(T0, "c");
        assert!(m.store().peek(&quota).is_some());
        for _ in 0..20 {
            m.maintain(&mut rng(), T0 + 10_000).unwrap();
        }
        assert!(m.store().peek(&quota).is_none(), "the counter is swept");
        assert!(
            m.store()
                .keys()
                .iter()
                .all(|k| !k.starts_with("expiry/") || k == crate::index::CURSOR_KEY),
            "{:?}",
            m.store().keys()
        );
    }

    #[test]
    fn sessions_in_use_are_never_evicted_and_a_full_store_refuses() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour)
                .with_max_sessions(3)
                .with_protection_window(300);
            m.maintain(&mut rng(), T0).unwrap();
            let sessions: Vec<Session> =
                (0..3).map(|_| m.create(&mut rng(), T0).unwrap()).collect();
            // The sweep cursor first walks the empty buckets up to the
            // sessions' (8 per step, two steps per creation), admitting a
            // few over the cap; once it reaches sessions in use, it stops
            // there and creation is refused.
            let mut admitted = Vec::new();
            let refused = loop {
                match m.create_with(&mut rng(), T0 + 10, &from("c", 100), |_| {}) {
                    Ok(session) => admitted.push(session),
                    Err(err) => break err,
                }
                assert!(admitted.len() <= 2, "{behaviour:?}: too many over the cap");
            };
            assert_eq!(
                refused,
                CreateError::Full {
                    retry_after_secs: 60
                },
                "{behaviour:?}"
            );
            let count_before = m.store().peek(crate::index::SESSION_COUNT_KEY);
            let keys = m.store().keys();
            let again = m.create_with(&mut rng(), T0 + 10, &from("c", 100), |_| {});
            assert!(
                matches!(again, Err(CreateError::Full { .. })),
                "{behaviour:?}"
            );
            // Nothing of the refused sessions; the count is as it was.
            assert_eq!(m.store().keys(), keys, "{behaviour:?}");
            assert_eq!(
                m.store().peek(crate::index::SESSION_COUNT_KEY),
                count_before
            );
            for s in &sessions {
                assert!(m.store().peek(s.key()).is_some(), "{behaviour:?}");
            }
            // One session is used again; later the other two are idle past
            // the window and may go, but not the one in use.
            let mut used = live(m.lookup(Some(sessions[2].id().clone()), T0 + 350).unwrap());
            m.update(&mut used, &mut rng(), T0 + 350, |_| {}).unwrap();
            m.create_with(&mut rng(), T0 + 400, &from("c", 100), |_| {})
                .unwrap();
            assert!(m.store().peek(sessions[2].key()).is_some(), "{behaviour:?}");
            let gone = sessions[..2]
                .iter()
                .filter(|s| m.store().peek(s.key()).is_none())
                .count();
            assert!(gone >= 1, "{behaviour:?}: an idle session made room");
        }
    }

    #[test]
    fn a_refused_clients_quota_counter_is_swept_too() {
        let m = manager().with_max_sessions(2).with_protection_window(300);
        m.maintain(&mut rng(), T0).unwrap();
        for _ in 0..2 {
            m.create(&mut rng(), T0).unwrap();
        }
        // Walk the cursor up to the sessions in use, until creation is refused.
        let refused = (0..10).map(|n| format!("walker-{n}")).find_map(|client| {
            m.create_with(&mut rng(), T0, &from(&client, 9), |_| {})
                .err()
        });
        assert!(matches!(refused, Some(CreateError::Full { .. })));
        // A new client's first creation of the minute, refused as full: its
        // counter exists, with an index entry the cursor has not passed.
        let late = m.create_with(&mut rng(), T0, &from("late", 9), |_| {});
        assert!(matches!(late, Err(CreateError::Full { .. })));
        let counter = crate::index::quota_key(T0, "late");
        assert!(m.store().peek(&counter).is_some());
        for step in 0..200 {
            m.maintain(&mut rng(), T0 + 100_000 + step).unwrap();
        }
        assert!(m.store().peek(&counter).is_none(), "the counter is swept");
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
