//! Finding, creating, updating and deleting sessions through a store.
//!
//! Every write of an existing record is a compare-and-swap judged by the
//! record's version ([`crate::store::judge`]): its outcome is either known,
//! or reported as unknown ([`UpdateError::Unknown`]), never guessed. So no
//! update is applied twice, and no answer says "not saved" of a write that
//! may have landed.

use std::sync::OnceLock;

use crate::expiry::ExpiryPolicy;
use crate::id::{random_token, SessionId, SigningKey};
use crate::index::{self, Cursor, Entry, Eviction, SlotValue, StepReport};
use crate::record::{DecodeError, EndReason, Ending, SessionRecord};
use crate::signing;
use crate::store::{
    judge, judge_all, remember_write, Attempt, SessionStore, Snapshot, StoreError, Swap, Verdict,
    WRITE_ID_LEN,
};

/// Length of the per-session CSRF token.
pub const CSRF_TOKEN_LEN: usize = 32;

/// How many compare-and-swap attempts an update makes before the request
/// gives up (and answers 503).
pub const MAX_SWAP_ATTEMPTS: usize = 16;

/// The default cap on live sessions.
pub const DEFAULT_MAX_SESSIONS: u64 = 100_000;

/// How many sweep steps a creation may run to make room under the cap.
const EVICTION_STEPS: usize = 2;

/// How many sessions one creation evicts at most: one for itself, and one
/// towards a store that is over the cap for another reason (a lowered
/// cap). Concurrent creations at the cap so evict at most one session each
/// beyond what the cap requires.
const MAX_EVICTIONS_PER_CREATION: u64 = 2;

/// Sessions over a [`SessionStore`], with an [`ExpiryPolicy`], a cap on
/// their number and the expiry index ([`crate::index`]).
pub struct SessionManager<S> {
    store: S,
    policy: ExpiryPolicy,
    max_sessions: u64,
    /// The store's signing key, once read.
    signing_key: OnceLock<SigningKey>,
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

/// Why a session was not created. In every case no cookie is handed out,
/// so nothing that may have been written is reachable: the sweep removes
/// it.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    /// The store failed.
    Store(StoreError),
    /// The client has created its quota of sessions this minute.
    RateLimited {
        /// Seconds until the quota's minute is over.
        retry_after_secs: u64,
    },
    /// The cap is reached and every stored session is protected (or the
    /// room could not be made just now).
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
    /// The session has expired or ended. Its record stays until the sweep
    /// removes it: a read never writes.
    Expired,
    /// The stored record could not be read (the sweep removes it).
    Undecodable(DecodeError),
}

/// Why a write of an existing session did not simply succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// The store failed before anything was written.
    Store(StoreError),
    /// The session had ended (expired, signed out, evicted, or its
    /// identifier replaced); nothing was written.
    Gone,
    /// Too many concurrent writers: [`MAX_SWAP_ATTEMPTS`] swaps lost, none
    /// of which can land any more; nothing was written.
    Contended,
    /// The write may or may not have been stored, and no read can tell.
    Unknown(Uncertainty),
}

/// Why the outcome of a write cannot be known.
#[derive(Debug, PartialEq, Eq)]
pub enum Uncertainty {
    /// The store failed after a compare-and-swap was sent.
    StoreFailed(StoreError),
    /// So many writes landed between this request's swap and its read of
    /// the record that the record no longer lists the version the swap
    /// could have become.
    OutOfWindow,
    /// The request gave up while its last swap could still land.
    MayStillLand,
    /// The session ended (or its record went) after a swap was sent.
    EndedAfterWrite,
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
            UpdateError::Gone => f.write_str("the session ended before the update"),
            UpdateError::Contended => f.write_str("too many concurrent updates of the session"),
            UpdateError::Unknown(why) => write!(f, "the update may or may not be stored: {why}"),
        }
    }
}

impl std::fmt::Display for Uncertainty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uncertainty::StoreFailed(err) => write!(f, "{err} after the write was sent"),
            Uncertainty::OutOfWindow => f.write_str("too many writes landed before the read-back"),
            Uncertainty::MayStillLand => f.write_str("its last write may still land"),
            Uncertainty::EndedAfterWrite => {
                f.write_str("the session ended after the write was sent")
            }
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
            signing_key: OnceLock::new(),
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

    /// The expiry policy.
    pub fn policy(&self) -> &ExpiryPolicy {
        &self.policy
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A share of the sweeping: reads the index cursor (one read) and, when
    /// something is due, does one bounded [`index::step`]. Every creation
    /// runs it first: creations are what make the store grow.
    pub fn maintain<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
    ) -> Result<StepReport, StoreError> {
        self.sweep(rng, now, None)
    }

    /// [`SessionManager::maintain`], with the new queue's slot counter if
    /// the caller has read it.
    fn sweep<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        new_tail: Option<u64>,
    ) -> Result<StepReport, StoreError> {
        let Some(cursor) = index::read_cursor(&self.store, now)? else {
            index::replace_corrupt_cursor(&self.store, now)?;
            return Ok(StepReport::default());
        };
        if !cursor.is_due(now) {
            return Ok(StepReport {
                cursor: Some(cursor),
                ..StepReport::default()
            });
        }
        index::step(
            &self.store,
            &self.policy,
            now,
            Eviction::NONE,
            new_tail,
            &mut || write_id(rng),
        )
    }

    /// Looks up the session of `id`: one read, and never a write (an
    /// expired, ended or unreadable record is left to the sweep).
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
            Err(err) => return Ok(Found::Undecodable(err)),
        };
        if self.policy.is_expired(&record, now) {
            return Ok(Found::Expired);
        }
        Ok(Found::Live(Session { id, key, record }))
    }

    /// The store's [`SigningKey`]: one read the first time a manager needs
    /// it; a store without one gets one ([`crate::signing`]), the same for
    /// every instance and never replaced.
    pub fn signing_key<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<&SigningKey, StoreError> {
        if let Some(key) = self.signing_key.get() {
            return Ok(key);
        }
        let key = signing::get_or_make(&self.store, rng)?;
        Ok(self.signing_key.get_or_init(|| key))
    }

    /// The store's [`SigningKey`] if it has one (one read, the first time):
    /// what checks a pending identifier a client sends. Never writes: a
    /// store without a key has issued no pending identifier.
    pub fn stored_signing_key(&self) -> Result<Option<&SigningKey>, StoreError> {
        if let Some(key) = self.signing_key.get() {
            return Ok(Some(key));
        }
        Ok(signing::stored(&self.store)?.map(|key| self.signing_key.get_or_init(|| key)))
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
    /// 2. the client's quota of new sessions this minute (one read and one
    ///    increment; over it: [`CreateError::RateLimited`]);
    /// 3. room under the cap: the new queue's slot counter read (an
    ///    increment by 0), and over the cap, up to two steps
    ///    (`EVICTION_STEPS`) that evict the sessions that expire soonest, never one seen within the
    ///    protection window ([`CreateError::Full`] when that frees no
    ///    room);
    /// 4. the record and its index entry: one slot increment and one batch
    ///    (the identifier is new, so no one else can be writing its key).
    ///
    /// A refused creation writes nothing but the quota's count.
    pub fn create_with<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        admission: &Admission<'_>,
        fill: impl FnOnce(&mut SessionRecord),
    ) -> Result<Session, CreateError> {
        let mut tail = None;
        let cursor = self.sweep_on_creation(rng, now, &mut tail)?;
        self.take_quota(admission, now)?;
        let tail = match tail {
            Some(tail) => tail,
            None => index::counter(self.store.increment(index::NEW_TAIL_KEY, 0)?),
        };
        self.make_room(rng, now, cursor, tail, admission.refuse_when_full)?;
        Ok(self.insert_new(rng, now, fill)?)
    }

    /// A creation's share of the sweeping: the cursor read, and a step when
    /// one is due (reading the new queue's slot counter into `tail` for
    /// it, as the cap needs it anyway). Returns the cursor as it stands.
    fn sweep_on_creation<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        tail: &mut Option<u64>,
    ) -> Result<Option<Cursor>, StoreError> {
        let Some(cursor) = index::read_cursor(&self.store, now)? else {
            index::replace_corrupt_cursor(&self.store, now)?;
            return Ok(None);
        };
        if !cursor.is_due(now) {
            return Ok(Some(cursor));
        }
        let read = index::counter(self.store.increment(index::NEW_TAIL_KEY, 0)?);
        *tail = Some(read);
        let report = index::step(
            &self.store,
            &self.policy,
            now,
            Eviction::NONE,
            Some(read),
            &mut || write_id(rng),
        )?;
        Ok(report.cursor.or(Some(cursor)))
    }

    /// Counts this creation against the client's quota. The counter's index
    /// entry is written before the counter itself (the first time in its
    /// minute), so that the sweep always gets to delete it.
    fn take_quota(&self, admission: &Admission<'_>, now: i64) -> Result<(), CreateError> {
        let Some(client) = admission.client else {
            return Ok(());
        };
        let key = index::quota_key(now, client);
        if self.store.get(&key)?.is_none() {
            index::add_quota_entry(&self.store, &key, now)?;
        }
        let created = self.store.increment(&key, 1)?;
        if u64::try_from(created).unwrap_or(0) > admission.per_minute {
            let retry_after_secs =
                index::quota_end(&key).map_or(60, |end| (end - now).max(1)) as u64;
            return Err(CreateError::RateLimited { retry_after_secs });
        }
        Ok(())
    }

    /// Makes room for one more session under the cap, evicting if need be.
    /// `cursor`: the index cursor as the sweep left it; `tail`: the new
    /// queue's slot counter.
    fn make_room<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        mut cursor: Option<Cursor>,
        tail: u64,
        refuse: bool,
    ) -> Result<(), CreateError> {
        // The sessions this request evicted still count in the cursor until
        // the next step sees their tombstones: this request knows they are
        // gone.
        let mut evicted = 0;
        let has_room = |cursor: &Option<Cursor>, evicted: u64| match cursor {
            Some(c) => index::count(c, tail).saturating_sub(evicted) < self.max_sessions,
            None => true,
        };
        let mut refusal = None;
        for _ in 0..EVICTION_STEPS {
            if has_room(&cursor, evicted) || evicted >= MAX_EVICTIONS_PER_CREATION {
                break;
            }
            let eviction = Eviction {
                most: MAX_EVICTIONS_PER_CREATION - evicted,
                cap: Some(index::Cap {
                    max_sessions: self.max_sessions,
                    new_tail: tail,
                    evicted,
                }),
                protect_secs: self.protect_secs,
            };
            let report = index::step(
                &self.store,
                &self.policy,
                now,
                eviction,
                Some(tail),
                &mut || write_id(rng),
            )?;
            evicted += report.evicted;
            if let Some(after) = &report.cursor {
                cursor = Some(after.clone());
            }
            if report.unsettled {
                // A store's first two minutes: nothing can be evicted yet,
                // so the cap is not enforced (the quota still bounds a
                // flood, and no session in use can be pushed out).
                return Ok(());
            }
            refusal = Some(self.refusal(&report));
            if report.lost_claim || (report.blocked && report.evicted == 0) {
                break;
            }
        }
        // A creation that evicted replaces a session: it never adds to a
        // store over the cap (a lowered cap) and brings it down by one.
        if has_room(&cursor, evicted) || evicted > 0 || !refuse {
            return Ok(());
        }
        Err(refusal.unwrap_or(CreateError::Full {
            retry_after_secs: 60,
        }))
    }

    /// How a creation that could not make room is told to wait.
    fn refusal(&self, report: &StepReport) -> CreateError {
        // After a lost race another creation is sweeping: worth a quick
        // retry. Otherwise room comes as sessions expire or go idle.
        let retry_after_secs = if report.lost_claim { 1 } else { 60 };
        CreateError::Full { retry_after_secs }
    }

    /// Writes a new session's record and its index entry.
    fn insert_new<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        now: i64,
        fill: impl FnOnce(&mut SessionRecord),
    ) -> Result<Session, StoreError> {
        let id = SessionId::generate(rng);
        let key = id.record_key();
        let mut record = SessionRecord::new(now, random_token(rng, CSRF_TOKEN_LEN));
        fill(&mut record);
        let slot = index::counter(self.store.increment(index::NEW_TAIL_KEY, 1)?);
        let entry = SlotValue::Entry(Entry {
            target: key.clone(),
            due: self.policy.expires_at(&record),
            appended_at: now,
        });
        self.store.set_many(&[
            (index::new_entry_key(slot), entry.encode()),
            (key.clone(), record.encode()),
        ])?;
        Ok(Session { id, key, record })
    }

    /// Records that the session was seen at `now`, if its `last_seen_at`
    /// lags by the touch granularity or more (checked again on the record a
    /// concurrent write left: it may have recorded the visit already).
    /// Returns whether it wrote.
    pub fn touch_if_due<R: rand::CryptoRng + ?Sized>(
        &self,
        session: &mut Session,
        rng: &mut R,
        now: i64,
    ) -> Result<bool, UpdateError> {
        let policy = self.policy;
        if !policy.needs_touch(&session.record, now) {
            // Most reads: not even the compare-and-swap base is read.
            return Ok(false);
        }
        self.update_if(
            session,
            rng,
            now,
            |base| policy.needs_touch(base, now),
            |_| {},
        )
    }

    /// Applies `change` to the session's record and stores it with
    /// compare-and-swap. When another request wrote the record in between,
    /// `change` is applied again to what that request stored, so neither
    /// update is lost; an attempt is only ever made again once the earlier
    /// ones are known not to have landed (or can only land in its place).
    /// Each applied update counts in `writes` and moves `last_seen_at` to
    /// `now`.
    ///
    /// Costs one read (the compare-and-swap base) and one write, plus one
    /// read for each swap the store does not confirm (every swap, on Spin's
    /// Redis store) and one write per lost race.
    pub fn update<R: rand::CryptoRng + ?Sized>(
        &self,
        session: &mut Session,
        rng: &mut R,
        now: i64,
        change: impl Fn(&mut SessionRecord),
    ) -> Result<(), UpdateError> {
        self.update_if(session, rng, now, |_| true, change)
            .map(|_| ())
    }

    /// [`SessionManager::update`], if `wanted` says so of the record it
    /// would build on. Returns whether it wrote.
    fn update_if<R: rand::CryptoRng + ?Sized>(
        &self,
        session: &mut Session,
        rng: &mut R,
        now: i64,
        wanted: impl Fn(&SessionRecord) -> bool,
        change: impl Fn(&mut SessionRecord),
    ) -> Result<bool, UpdateError> {
        let mut snapshot = self.store.snapshot(&session.key)?;
        // The attempts whose outcome is still open (one judged lost is
        // lost for good, and forgotten: judged again after many more
        // writes, it would look unknown).
        let mut open: Vec<Attempt> = Vec::new();
        let mut swaps = 0;
        let mut backed_off = false;
        loop {
            let record = snapshot
                .value()
                .and_then(|bytes| SessionRecord::decode(bytes).ok());
            let verdict = self.judge(&mut open, record.as_ref())?;
            if verdict == Verdict::Stored {
                session.record = record.expect("judged stored on a record");
                return Ok(true);
            }
            let base = match record {
                Some(record) if !self.policy.is_expired(&record, now) => record,
                // Ended or gone with every attempt known lost: nothing of
                // this request is stored.
                _ => return Err(UpdateError::Gone),
            };
            if !wanted(&base) {
                session.record = base;
                return Ok(false);
            }
            if swaps == MAX_SWAP_ATTEMPTS {
                return Err(match verdict {
                    Verdict::Pending => UpdateError::Unknown(Uncertainty::MayStillLand),
                    _ => UpdateError::Contended,
                });
            }
            if verdict == Verdict::Lost && swaps >= 2 && !backed_off {
                // Lost twice in a row: a busy session. Wait a random while,
                // then build on what the key holds by then.
                self.store.back_off(back_off_pause(rng, swaps));
                snapshot = self.store.snapshot(&session.key)?;
                backed_off = true;
                continue;
            }
            backed_off = false;
            swaps += 1;
            let id = write_id(rng);
            open.push(Attempt {
                base: base.version(),
                id: id.clone(),
            });
            let next = self.next_record(base, now, id, &change);
            match self.store.swap(snapshot, &next.encode()) {
                Ok(Swap::Done) => {
                    session.record = next;
                    return Ok(true);
                }
                Ok(Swap::NotConfirmed(fresh)) => snapshot = fresh,
                Err(err) => return Err(UpdateError::Unknown(Uncertainty::StoreFailed(err))),
            }
        }
    }

    /// What a read of the record says about this request's `open` attempts
    /// ([`Verdict::Lost`] when there are none), forgetting those it finds
    /// lost. An outcome that cannot be known is an error: the caller must
    /// say so.
    fn judge(
        &self,
        open: &mut Vec<Attempt>,
        record: Option<&SessionRecord>,
    ) -> Result<Verdict, UpdateError> {
        if open.is_empty() {
            return Ok(Verdict::Lost);
        }
        let Some(record) = record else {
            // Gone: an attempt may have landed before it went.
            return Err(UpdateError::Unknown(Uncertainty::EndedAfterWrite));
        };
        let (version, recent) = (record.version(), &record.recent_writes);
        let verdict = judge_all(open, version, recent);
        open.retain(|attempt| judge(attempt, version, recent) != Verdict::Lost);
        match verdict {
            Verdict::Unknown => Err(UpdateError::Unknown(Uncertainty::OutOfWindow)),
            verdict => Ok(verdict),
        }
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

    /// Gives the session a new identifier, keeping its data, in an order
    /// that never loses it:
    ///
    /// 1. the new record is created first ([`SessionManager::create_with`],
    ///    no quota, never refused) with the old one's data, creation time
    ///    and lifetime, `change` applied, and `csrf_token`;
    /// 2. then the old record is marked [ended](SessionRecord::ended), by
    ///    compare-and-swap of the version the new one was built from. A
    ///    concurrent update of the old identifier lands before (and the
    ///    new record is rebuilt with it) or finds the session ended.
    ///
    /// Should step 2's outcome be unknown (a store error), the new
    /// identifier is handed out all the same: it holds everything, and the
    /// old one at worst lives on, without this request's changes, until it
    /// expires. Should the session have ended meanwhile, the new record is
    /// deleted again and the answer is [`UpdateError::Gone`].
    ///
    /// Returns whether the old record is known to have ended.
    pub fn cycle<R: rand::CryptoRng + ?Sized>(
        &self,
        session: &mut Session,
        rng: &mut R,
        now: i64,
        csrf_token: String,
        change: impl Fn(&mut SessionRecord),
    ) -> Result<bool, UpdateError> {
        let mut snapshot = self.store.snapshot(&session.key)?;
        let mut base = snapshot
            .value()
            .and_then(|bytes| SessionRecord::decode(bytes).ok())
            .filter(|record| !self.policy.is_expired(record, now))
            .ok_or(UpdateError::Gone)?;
        let successor = |base: &SessionRecord, record: &mut SessionRecord| {
            record.created_at = base.created_at;
            record.remember_secs = base.remember_secs;
            record.data = base.data.clone();
            record.flash = base.flash.clone();
            record.csrf_token = csrf_token.clone();
            change(record);
        };
        let mut new = self
            .create_with(rng, now, &Admission::ANYONE, |record| {
                successor(&base, record)
            })
            .map_err(|err| match err {
                CreateError::Store(err) => UpdateError::Store(err),
                other => UpdateError::Store(StoreError(other.to_string())),
            })?;
        let mut open: Vec<Attempt> = Vec::new();
        let mut swaps = 0;
        let outcome = loop {
            if swaps == MAX_SWAP_ATTEMPTS {
                break Rotation::Contended;
            }
            swaps += 1;
            let id = write_id(rng);
            open.push(Attempt {
                base: base.version(),
                id: id.clone(),
            });
            let ended = self.next_record(base.clone(), now, id, |record| {
                record.ended = Some(Ending {
                    at: now,
                    why: EndReason::Rotated,
                });
            });
            let fresh = match self.store.swap(snapshot, &ended.encode()) {
                Ok(Swap::Done) => break Rotation::OldEnded,
                Ok(Swap::NotConfirmed(fresh)) => fresh,
                Err(_) => break Rotation::Unknown,
            };
            let record = fresh
                .value()
                .and_then(|bytes| SessionRecord::decode(bytes).ok());
            match self.judge(&mut open, record.as_ref()) {
                Ok(Verdict::Stored) => break Rotation::OldEnded,
                Err(UpdateError::Unknown(Uncertainty::OutOfWindow)) => break Rotation::Unknown,
                // The old record went (signed out) while this request ran.
                Err(_) => break Rotation::Gone,
                Ok(_) => {}
            }
            let Some(record) = record.filter(|r| !self.policy.is_expired(r, now)) else {
                break Rotation::Gone;
            };
            if record.version() != base.version() {
                // A concurrent update of the old record landed first: the
                // new record takes it over too.
                base = record;
                let mut rebuilt = new.record.clone();
                successor(&base, &mut rebuilt);
                self.store.set(new.key(), &rebuilt.encode())?;
                new.record = rebuilt;
            }
            snapshot = fresh;
        };
        match outcome {
            Rotation::OldEnded | Rotation::Unknown => {
                *session = new;
                Ok(matches!(outcome, Rotation::OldEnded))
            }
            Rotation::Gone | Rotation::Contended => {
                // Nobody has the new identifier: it goes again (or, should
                // this fail, with its entry when the sweep gets there).
                let _ = self.store.delete(new.key());
                Err(match outcome {
                    Rotation::Gone => UpdateError::Gone,
                    _ => UpdateError::Contended,
                })
            }
        }
    }

    /// Deletes the session's record (one write). Its index entry goes when
    /// the sweep reaches it.
    pub fn delete(&self, session: Session) -> Result<(), StoreError> {
        self.store.delete(&session.key)
    }
}

/// How the old record of a rotation ended up.
enum Rotation {
    /// Marked ended.
    OldEnded,
    /// Marked ended, or still live: the store cannot tell.
    Unknown,
    /// It had ended otherwise (signed out, rotated by another request).
    Gone,
    /// Every attempt lost to concurrent updates.
    Contended,
}

/// A fresh random write id ([`crate::store::RECENT_WRITES`]).
/// How long to wait after `lost` swaps in a row: a random time below
/// 2^`lost` ms, at most 32 ms (at most about 0.4 s over all
/// [`MAX_SWAP_ATTEMPTS`]).
fn back_off_pause<R: rand::CryptoRng + ?Sized>(rng: &mut R, lost: usize) -> std::time::Duration {
    let ceiling_micros = 1000u64 << lost.min(5);
    std::time::Duration::from_micros(rand::Rng::random_range(rng, 0..ceiling_micros))
}

fn write_id<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    random_token(rng, WRITE_ID_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{count, IN_FLIGHT_SECS};
    use crate::memory::{MemoryStore, SwapBehaviour};
    use crate::store::{judge, RECENT_WRITES};
    use rand::rngs::OsRng;
    use rand::TryRngCore;

    const T0: i64 = 1_750_000_000;

    const BEHAVIOURS: [SwapBehaviour; 3] = [
        SwapBehaviour::Honest,
        SwapBehaviour::SpinSqlite,
        SwapBehaviour::SpinRedis,
    ];

    fn policy() -> ExpiryPolicy {
        ExpiryPolicy {
            idle_timeout_secs: 600,
            absolute_timeout_secs: 3600,
        }
    }

    /// A manager on a store whose index cursor was made long before `T0`
    /// (a new store's cursor is not claimed for two in-flight bounds).
    fn manager_on(behaviour: SwapBehaviour) -> SessionManager<MemoryStore> {
        let m = SessionManager::new(MemoryStore::with_behaviour(behaviour), policy());
        m.maintain(&mut rng(), T0 - 10_000).unwrap();
        m
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

    fn stored(m: &SessionManager<MemoryStore>, s: &Session) -> SessionRecord {
        SessionRecord::decode(&m.store().peek(s.key()).unwrap()).unwrap()
    }

    fn session_count(m: &SessionManager<MemoryStore>) -> u64 {
        let cursor = Cursor::decode(&m.store().peek(index::CURSOR_KEY).unwrap()).unwrap();
        let tail = m.store().increment(index::NEW_TAIL_KEY, 0).unwrap();
        count(&cursor, index::counter(tail))
    }

    /// A session that other requests write between every read and swap
    /// of this one: it backs off after its second lost swap, waits longer
    /// each time (never more than 32 ms), and gives up after
    /// MAX_SWAP_ATTEMPTS with nothing of it stored; when the others stop
    /// sooner, its update lands on top of theirs.
    #[test]
    fn a_busy_session_backs_off_then_lands_or_is_refused() {
        for (competing, lands) in [(usize::MAX, false), (5, true)] {
            let m = manager();
            let id = m.create(&mut rng(), T0).unwrap().id().clone();
            let mut mine = live(m.lookup(Some(id.clone()), T0).unwrap());
            let other = std::cell::RefCell::new(live(m.lookup(Some(id), T0).unwrap()));
            let others = std::cell::Cell::new(0usize);
            let result = m.update(&mut mine, &mut rng(), T0, |record| {
                if others.get() < competing {
                    others.set(others.get() + 1);
                    // Three writes a round: over all rounds, more than the
                    // window of recent ids, which the lost attempts have
                    // left by the end (they are known lost all the same).
                    for _ in 0..3 {
                        m.update(&mut other.borrow_mut(), &mut rng(), T0, |r| {
                            r.data.insert(format!("other{}", others.get()), 1.into());
                        })
                        .unwrap();
                    }
                }
                record.data.insert("mine".into(), 1.into());
            });
            let pauses = m.store().back_offs();
            let record = stored(&m, &other.borrow());
            if lands {
                result.unwrap();
                assert_eq!(pauses.len(), 4, "{pauses:?}");
                assert!(record.data.contains_key("mine"));
                assert!(record.data.contains_key("other5"));
            } else {
                assert_eq!(result, Err(UpdateError::Contended));
                assert_eq!(pauses.len(), MAX_SWAP_ATTEMPTS - 2);
                assert!(!record.data.contains_key("mine"));
            }
            assert!(pauses
                .iter()
                .all(|p| *p < std::time::Duration::from_millis(32)));
        }
    }

    #[test]
    fn create_then_lookup() {
        let m = manager();
        // The first creation's sweep step writes the cursor's next check.
        m.create(&mut rng(), T0).unwrap();
        let before = ops(&m);
        let created = m.create(&mut rng(), T0).unwrap();
        // The cursor read, the tail read (an increment by 0), a slot, and
        // one batch with the entry and the record.
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
        assert_eq!(session_count(&m), 2);
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
            let record = stored(&m, &s);
            assert_eq!(record.text("v1").as_deref(), Some("x"), "{behaviour:?}");
            assert_eq!(record.writes, 1, "{behaviour:?}");
            assert_eq!(found.record(), &record, "{behaviour:?}");
        }
    }

    #[test]
    fn a_lookup_never_writes() {
        let m = manager();
        assert!(matches!(m.lookup(None, T0).unwrap(), Found::NoCookie));
        let stranger = SessionId::parse(&"x".repeat(64)).unwrap();
        assert!(matches!(
            m.lookup(Some(stranger), T0).unwrap(),
            Found::Unknown
        ));
        let s = m.create(&mut rng(), T0).unwrap();
        m.store().put(&s.key, br#"{"format":99}"#);
        let writes = m.store().writes();
        assert!(matches!(
            m.lookup(Some(s.id().clone()), T0).unwrap(),
            Found::Undecodable(DecodeError::UnknownFormat(99))
        ));
        let t = m.create(&mut rng(), T0).unwrap();
        let writes_after_create = m.store().writes();
        assert!(writes_after_create > writes);
        assert!(matches!(
            m.lookup(Some(t.id().clone()), T0 + 600).unwrap(),
            Found::Expired
        ));
        assert_eq!(m.store().writes(), writes_after_create);
        assert!(m.store().peek(t.key()).is_some(), "left to the sweep");
    }

    #[test]
    fn reads_write_only_when_touch_is_due() {
        let m = manager(); // granularity: 600 / 60 = 10 s
        let s = m.create(&mut rng(), T0).unwrap();
        let writes = m.store().writes();
        let mut found = live(m.lookup(Some(s.id().clone()), T0 + 9).unwrap());
        let before = ops(&m);
        assert!(!m.touch_if_due(&mut found, &mut rng(), T0 + 9).unwrap());
        assert_eq!(ops(&m), before, "not due: no operation at all");
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
    fn concurrent_touches_write_once() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut first = live(m.lookup(Some(s.id().clone()), T0 + 30).unwrap());
            let mut second = live(m.lookup(Some(s.id().clone()), T0 + 30).unwrap());
            assert!(m.touch_if_due(&mut first, &mut rng(), T0 + 30).unwrap());
            // The second finds the visit recorded already, on its retry
            // (its base is the record the first one wrote).
            assert!(!m.touch_if_due(&mut second, &mut rng(), T0 + 30).unwrap());
            assert_eq!(stored(&m, &s).writes, 1, "{behaviour:?}");
        }
    }

    /// Another request's update of `key`, landing between this request's
    /// read and its swap.
    fn concurrent_write(key: String, field: &'static str) -> impl FnOnce(&MemoryStore) {
        move |inner| {
            let mut other = SessionRecord::decode(&inner.peek(&key).unwrap()).unwrap();
            other.data.insert(field.into(), "theirs".into());
            other.writes += 1;
            remember_write(&mut other.recent_writes, format!("other-{}", other.writes));
            inner.put(&key, &other.encode());
        }
    }

    #[test]
    fn concurrent_updates_are_both_kept_on_every_store() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut second = live(m.lookup(Some(s.id().clone()), T0).unwrap());
            m.store()
                .after_next_snapshot(concurrent_write(s.key().to_owned(), "v1"));
            m.update(&mut second, &mut rng(), T0 + 2, |r| {
                r.data.insert("v2".into(), "two".into());
            })
            .unwrap();
            let record = stored(&m, &s);
            assert_eq!(
                record.text("v1").as_deref(),
                Some("theirs"),
                "{behaviour:?}"
            );
            assert_eq!(record.text("v2").as_deref(), Some("two"), "{behaviour:?}");
            assert_eq!(record.writes, 2, "{behaviour:?}");
        }
    }

    #[test]
    fn a_write_that_lands_late_is_not_applied_twice() {
        let m = manager_on(SwapBehaviour::SpinRedis);
        let s = m.create(&mut rng(), T0).unwrap();
        let mut found = live(m.lookup(Some(s.id().clone()), T0).unwrap());
        // The first swap lands late: the store answers "not confirmed" with
        // the old value (a read on another connection overtook the write),
        // and the write lands just before the next swap, which loses.
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
        let record = stored(&m, &s);
        assert_eq!(record.text("v1").as_deref(), Some("x"));
        assert_eq!(record.writes, 1, "one update, one write");
    }

    /// R1: a Redis swap lands, then more than the window of other writes
    /// lands before its read-back. The update is not applied again on top
    /// (which would revert the others' values of the same key): its outcome
    /// is reported as unknown.
    #[test]
    fn a_landed_write_out_of_the_window_is_unknown_never_applied_again() {
        let m = manager_on(SwapBehaviour::SpinRedis);
        let s = m.create(&mut rng(), T0).unwrap();
        let mut found = live(m.lookup(Some(s.id().clone()), T0).unwrap());
        let key = s.key().to_owned();
        m.store()
            .instead_of_next_swap(move |store, snapshot, value| {
                store.put(&key, value);
                for n in 0..RECENT_WRITES + 1 {
                    let mut other = SessionRecord::decode(&store.peek(&key).unwrap()).unwrap();
                    other
                        .data
                        .insert("v1".into(), format!("later-{n}").as_str().into());
                    other.writes += 1;
                    remember_write(&mut other.recent_writes, format!("other-{n}"));
                    store.put(&key, &other.encode());
                }
                Ok(Swap::NotConfirmed(store.snapshot(snapshot.key())?))
            });
        let result = m.update(&mut found, &mut rng(), T0 + 1, |r| {
            r.data.insert("v1".into(), "mine".into());
        });
        assert_eq!(result, Err(UpdateError::Unknown(Uncertainty::OutOfWindow)));
        let record = stored(&m, &s);
        assert_eq!(
            record.text("v1").as_deref(),
            Some(format!("later-{RECENT_WRITES}").as_str()),
            "the newest value stands"
        );
        assert_eq!(record.writes, RECENT_WRITES as u64 + 2);
    }

    /// R3: a store error after the swap was sent is an unknown outcome, not
    /// "nothing was stored".
    #[test]
    fn a_store_error_after_the_swap_is_unknown() {
        let m = manager_on(SwapBehaviour::SpinRedis);
        let s = m.create(&mut rng(), T0).unwrap();
        let mut found = live(m.lookup(Some(s.id().clone()), T0).unwrap());
        m.store().instead_of_next_swap(|store, snapshot, value| {
            store.put(snapshot.key(), value);
            Err(StoreError("connection reset".into()))
        });
        let result = m.update(&mut found, &mut rng(), T0 + 1, |_| {});
        assert!(matches!(
            result,
            Err(UpdateError::Unknown(Uncertainty::StoreFailed(_)))
        ));
        assert_eq!(stored(&m, &s).writes, 1, "it had landed");
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
            // The swap could not have landed on an absent key, but its
            // answer cannot say so on Redis: the record is gone, the
            // outcome reported as unknown there; nothing is re-created.
            assert!(
                matches!(
                    result,
                    Err(UpdateError::Gone | UpdateError::Unknown(Uncertainty::EndedAfterWrite))
                ),
                "{behaviour:?}: {result:?}"
            );
            assert!(m.store().peek(s.key()).is_none(), "{behaviour:?}");
        }
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

    /// R2: the swap that ends the old record lands; before its read-back, a
    /// request with the old cookie looks it up, and the sweep runs. Neither
    /// deletes it, so the read-back finds its own write and the session
    /// lives on under the new identifier.
    #[test]
    fn a_rotation_is_not_lost_to_a_lookup_or_the_sweep_before_its_read_back() {
        let m = manager_on(SwapBehaviour::SpinRedis);
        let s = m
            .create_with(&mut rng(), T0, &Admission::ANYONE, |r| {
                r.data.insert("name".into(), "Ada".into());
            })
            .unwrap();
        let old_id = s.id().clone();
        let mut session = live(m.lookup(Some(old_id.clone()), T0 + 1).unwrap());
        let old = old_id.clone();
        m.store()
            .instead_of_next_swap(move |inner, snapshot, value| {
                inner.put(snapshot.key(), value);
                // Another request: a manager of its own over the same store,
                // at the same time.
                let other = SessionManager::new(inner, policy());
                assert!(matches!(
                    other.lookup(Some(old), T0 + 2).unwrap(),
                    Found::Expired
                ));
                other.maintain(&mut rng(), T0 + 2).unwrap();
                Ok(Swap::NotConfirmed(inner.snapshot(snapshot.key())?))
            });
        m.cycle(&mut session, &mut rng(), T0 + 2, "t".into(), |_| {})
            .unwrap();
        let new = live(m.lookup(Some(session.id().clone()), T0 + 3).unwrap());
        assert_eq!(new.record().text("name").as_deref(), Some("Ada"));
    }

    /// A store error between a rotation's steps never leaves the visitor
    /// without a session: the new identifier holds everything.
    #[test]
    fn a_store_error_between_a_rotations_steps_keeps_the_session() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m
                .create_with(&mut rng(), T0, &Admission::ANYONE, |r| {
                    r.data.insert("name".into(), "Ada".into());
                })
                .unwrap();
            let mut session = live(m.lookup(Some(s.id().clone()), T0 + 1).unwrap());
            m.store().instead_of_next_swap(|store, snapshot, value| {
                store.put(snapshot.key(), value);
                Err(StoreError("connection reset".into()))
            });
            m.cycle(&mut session, &mut rng(), T0 + 2, "t".into(), |r| {
                r.data.insert("role".into(), "admin".into());
            })
            .unwrap();
            let new = live(m.lookup(Some(session.id().clone()), T0 + 3).unwrap());
            assert_eq!(
                new.record().text("role").as_deref(),
                Some("admin"),
                "{behaviour:?}"
            );
        }
    }

    #[test]
    fn a_rotation_takes_over_a_concurrent_update_of_the_old_record() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut session = live(m.lookup(Some(s.id().clone()), T0 + 1).unwrap());
            // The concurrent update lands after the new record was built:
            // at the first swap's snapshot... which `cycle` took first, so
            // the seam runs on the new record's creation (no snapshot) and
            // the old record's swap then loses.
            let key = s.key().to_owned();
            m.store()
                .instead_of_next_swap(move |store, snapshot, value| {
                    concurrent_write(key, "cart")(store);
                    store.swap_as_configured(snapshot, value)
                });
            m.cycle(&mut session, &mut rng(), T0 + 2, "t".into(), |_| {})
                .unwrap();
            let new = live(m.lookup(Some(session.id().clone()), T0 + 3).unwrap());
            assert_eq!(
                new.record().text("cart").as_deref(),
                Some("theirs"),
                "{behaviour:?}"
            );
            assert!(stored(&m, &s).is_ended(), "{behaviour:?}");
        }
    }

    #[test]
    fn a_rotation_of_a_session_signed_out_meanwhile_is_gone_and_leaves_no_new_record() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            let s = m.create(&mut rng(), T0).unwrap();
            let mut session = live(m.lookup(Some(s.id().clone()), T0 + 1).unwrap());
            let key = s.key().to_owned();
            m.store()
                .instead_of_next_swap(move |store, snapshot, value| {
                    store.put_absent(&key);
                    store.swap_as_configured(snapshot, value)
                });
            let keys_before = m.store().keys().len();
            let result = m.cycle(&mut session, &mut rng(), T0 + 2, "t".into(), |_| {});
            assert_eq!(result, Err(UpdateError::Gone), "{behaviour:?}");
            let records = m
                .store()
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(crate::id::RECORD_KEY_PREFIX))
                .count();
            assert_eq!(records, 0, "{behaviour:?}: no record left");
            assert!(m.store().keys().len() <= keys_before + 2);
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
    fn a_clients_first_creation_of_a_minute_indexes_its_counter() {
        let m = manager();
        m.create(&mut rng(), T0).unwrap();
        let before = ops(&m);
        m.create_with(&mut rng(), T0, &from("c", 10), |_| {})
            .unwrap();
        // Reads: the cursor, the counter; writes: the quota entry's slot and
        // entry, the counter, then the creation's three.
        assert_eq!(ops(&m), (before.0 + 2, before.1 + 6), "first of the minute");
        let before = ops(&m);
        m.create_with(&mut rng(), T0, &from("c", 10), |_| {})
            .unwrap();
        assert_eq!(ops(&m), (before.0 + 2, before.1 + 4), "later ones");
    }

    /// Drives the sweep as creations would, far in the future.
    fn sweep_all(m: &SessionManager<MemoryStore>, at: i64) {
        for n in 0..300 {
            m.maintain(&mut rng(), at + n).unwrap();
        }
    }

    #[test]
    fn quota_counters_are_swept_once_their_minute_is_over() {
        let m = manager();
        m.create_with(&mut rng(), T0, &from("c", 10), |_| {})
            .unwrap();
        let quota = index::quota_key(T0, "c");
        assert!(m.store().peek(&quota).is_some());
        sweep_all(&m, T0 + 10_000);
        assert!(m.store().peek(&quota).is_none(), "the counter is swept");
        assert_eq!(session_count(&m), 0);
        let left: Vec<String> = m
            .store()
            .keys()
            .into_iter()
            .filter(|k| !k.ends_with("tail") && k != index::CURSOR_KEY)
            .collect();
        assert!(left.is_empty(), "only the cursor and tails: {left:?}");
    }

    #[test]
    fn sessions_in_use_are_never_evicted_and_a_full_store_refuses() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour)
                .with_max_sessions(3)
                .with_protection_window(300);
            let sessions: Vec<Session> =
                (0..3).map(|_| m.create(&mut rng(), T0).unwrap()).collect();
            let refused = m.create_with(&mut rng(), T0 + 10, &from("c", 100), |_| {});
            assert_eq!(
                refused.err(),
                Some(CreateError::Full {
                    retry_after_secs: 60
                }),
                "{behaviour:?}"
            );
            assert_eq!(session_count(&m), 3, "{behaviour:?}");
            for s in &sessions {
                assert!(!stored(&m, s).is_ended(), "{behaviour:?}");
            }
            // One session is used again; later the other two are idle past
            // the window and may go, but not the one in use.
            let mut used = live(m.lookup(Some(sessions[2].id().clone()), T0 + 350).unwrap());
            m.update(&mut used, &mut rng(), T0 + 350, |_| {}).unwrap();
            m.create_with(&mut rng(), T0 + 400, &from("c", 100), |_| {})
                .unwrap();
            assert!(!stored(&m, &sessions[2]).is_ended(), "{behaviour:?}");
            let gone = sessions[..2]
                .iter()
                .filter(|s| stored(&m, s).is_ended())
                .count();
            assert_eq!(gone, 1, "{behaviour:?}: one idle session made room");
            // The victim's entry counts until the next step settles its
            // slot as void.
            assert_eq!(session_count(&m), 4, "{behaviour:?}");
        }
    }

    /// R6: a session saved between the step that judged it evictable and
    /// its eviction is not evicted.
    #[test]
    fn eviction_only_deletes_the_version_it_decided_on() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour)
                .with_max_sessions(1)
                .with_protection_window(50);
            let s = m.create(&mut rng(), T0).unwrap();
            m.maintain(&mut rng(), T0 + 100).unwrap();
            // Used right after the step read it (the next snapshot is the
            // evicting step's cursor; the one after is the victim's).
            let key = s.key().to_owned();
            m.store().after_next_snapshot(move |store| {
                store.after_next_snapshot(concurrent_write(key, "saved"));
            });
            let refused = m.create_with(&mut rng(), T0 + 100, &from("c", 100), |_| {});
            assert!(
                matches!(refused, Err(CreateError::Full { .. })),
                "{behaviour:?}"
            );
            let record = stored(&m, &s);
            assert!(!record.is_ended(), "{behaviour:?}: not evicted");
            assert_eq!(record.text("saved").as_deref(), Some("theirs"));
            // Its entry is still in the index: the sweep gets to it.
            assert_eq!(session_count(&m), 1, "{behaviour:?}");
            sweep_all(&m, T0 + 100_000);
            assert_eq!(session_count(&m), 0, "{behaviour:?}");
            assert!(m.store().peek(s.key()).is_none(), "{behaviour:?}: swept");
        }
    }

    /// R7: a creation evicts what it needs, at most one session more
    /// (when the store is over the cap for another reason: here, a lowered
    /// cap).
    #[test]
    fn a_creation_at_the_cap_evicts_at_most_two() {
        let m = manager();
        for _ in 0..10 {
            m.create(&mut rng(), T0).unwrap();
        }
        let m = SessionManager::new(m.store, policy()).with_max_sessions(4);
        assert_eq!(session_count(&m), 10);
        m.create_with(&mut rng(), T0 + 100, &from("c", 100), |_| {})
            .unwrap();
        let ended = |m: &SessionManager<MemoryStore>| {
            m.store()
                .keys()
                .iter()
                .filter(|k| k.starts_with(crate::id::RECORD_KEY_PREFIX))
                .filter(|k| {
                    SessionRecord::decode(&m.store().peek(k).unwrap())
                        .unwrap()
                        .is_ended()
                })
                .count()
        };
        assert_eq!(ended(&m), 2);
        // The next creation counts those two as gone (their slots are
        // settled as void by its step) and evicts two more, heading back
        // to the cap.
        m.create_with(&mut rng(), T0 + 101, &from("c", 100), |_| {})
            .unwrap();
        assert_eq!(ended(&m), 4);
    }

    /// R7: creations one after another at the cap evict one session each.
    #[test]
    fn creations_at_the_cap_evict_one_each() {
        let m = manager().with_max_sessions(3);
        for _ in 0..3 {
            m.create(&mut rng(), T0).unwrap();
        }
        // Thirty in a row: the tombstones they leave (each due for sweeping
        // a minute later) never hold up the evictions that follow.
        for n in 0..30 {
            m.create_with(&mut rng(), T0 + 100 + n, &from("c", 100), |_| {})
                .unwrap();
        }
        let records: Vec<SessionRecord> = m
            .store()
            .keys()
            .iter()
            .filter(|k| k.starts_with(crate::id::RECORD_KEY_PREFIX))
            .map(|k| SessionRecord::decode(&m.store().peek(k).unwrap()).unwrap())
            .collect();
        assert_eq!(records.iter().filter(|r| r.is_ended()).count(), 30);
        assert_eq!(records.iter().filter(|r| !r.is_ended()).count(), 3);
    }

    /// A backlog bigger than one step is worked through by the creations
    /// that follow, a step each.
    #[test]
    fn a_backlog_is_swept_a_step_per_creation() {
        let m = manager();
        for _ in 0..40 {
            m.create(&mut rng(), T0).unwrap();
        }
        let later = T0 + 2 * 86_400;
        for n in 0..5 {
            m.create(&mut rng(), later + n).unwrap();
        }
        let records = m
            .store()
            .keys()
            .iter()
            .filter(|k| k.starts_with(crate::id::RECORD_KEY_PREFIX))
            .count();
        assert_eq!(records, 5, "5 steps of 8 swept the 40");
        assert_eq!(session_count(&m), 5);
    }

    #[test]
    fn the_sweep_deletes_records_that_do_not_decode() {
        let m = manager();
        let s = m.create(&mut rng(), T0).unwrap();
        m.store().put(s.key(), b"\xff\x00garbage");
        assert!(matches!(
            m.lookup(Some(s.id().clone()), T0 + 1).unwrap(),
            Found::Undecodable(_)
        ));
        sweep_all(&m, T0 + 100_000);
        assert!(m.store().peek(s.key()).is_none());
        assert_eq!(session_count(&m), 0);
    }

    #[test]
    fn abandoned_sessions_leave_only_the_index_fixtures() {
        for behaviour in BEHAVIOURS {
            let m = manager_on(behaviour);
            for _ in 0..20 {
                m.create(&mut rng(), T0).unwrap();
            }
            let s = m.create(&mut rng(), T0).unwrap();
            let mut s = live(m.lookup(Some(s.id().clone()), T0 + 100).unwrap());
            m.cycle(&mut s, &mut rng(), T0 + 100, "t".into(), |_| {})
                .unwrap();
            sweep_all(&m, T0 + 100_000);
            assert_eq!(session_count(&m), 0, "{behaviour:?}");
            let left: Vec<String> = m
                .store()
                .keys()
                .into_iter()
                .filter(|k| !k.ends_with("tail") && k != index::CURSOR_KEY)
                .collect();
            assert!(left.is_empty(), "{behaviour:?}: {left:?}");
        }
    }

    #[test]
    fn judge_sees_the_window_of_a_real_record() {
        let m = manager_on(SwapBehaviour::SpinRedis);
        let s = m.create(&mut rng(), T0).unwrap();
        let mut found = live(m.lookup(Some(s.id().clone()), T0).unwrap());
        m.update(&mut found, &mut rng(), T0 + 1, |_| {}).unwrap();
        let record = stored(&m, &s);
        let attempt = Attempt {
            base: 0,
            id: record.recent_writes[0].clone(),
        };
        assert_eq!(
            judge(&attempt, record.version(), &record.recent_writes),
            Verdict::Stored
        );
    }

    /// A new store's cursor cannot be claimed for two in-flight bounds, so
    /// nothing can be evicted: creations are admitted over the cap until
    /// then, and refused after.
    #[test]
    fn a_new_store_enforces_the_cap_once_its_cursor_settles() {
        let m = SessionManager::new(MemoryStore::new(), policy())
            .with_max_sessions(1)
            .with_protection_window(600);
        m.create(&mut rng(), T0).unwrap();
        m.create_with(&mut rng(), T0 + 1, &from("c", 100), |_| {})
            .unwrap();
        let settled = T0 + 2 * IN_FLIGHT_SECS;
        let refused = m.create_with(&mut rng(), settled, &from("c", 100), |_| {});
        assert_eq!(
            refused.err(),
            Some(CreateError::Full {
                retry_after_secs: 60
            })
        );
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
