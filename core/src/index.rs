//! The expiry index: what the tutorial's heap was for, in a key-value store
//! without listing, TTLs or background tasks.
//!
//! Every session has exactly one *entry* in the index, in the time bucket of
//! its expiry as it was when the entry was written:
//!
//! - `expiry/<bucket>/count`: a counter; `increment` hands out slot numbers
//!   1, 2, 3… so that concurrent writers never collide (no CAS retries);
//! - `expiry/<bucket>/<slot>`: the record key of one session;
//! - `expiry/cursor`: `{"bucket":B,"next":N}`, the first slot not yet swept;
//! - `sessions/count`: how many sessions' entries exist (≈ sessions), for
//!   the cap.
//!
//! An entry may also point to a per-client quota counter
//! (`quota/<minute>/<client>`, [`quota_key`]), written with the first
//! session a client creates in a minute: the sweep deletes the counter once
//! its minute is over, so quotas leave nothing behind either.
//!
//! Each creation reads the cursor (one read, [`maintain`]). Once the
//! cursor's bucket has ended, it does one bounded [`step`]: it reads up to
//! [`SWEEP_BATCH`] entries and their records (one `get` each: Spin's Redis
//! store has no working batch read), claims them by moving the cursor with
//! compare-and-swap (only the winner goes on; the winner knows it won from
//! the claim id the cursor then holds, as Spin's Redis store does not say),
//! then deletes the expired records and their entries, and moves the
//! entries of sessions that are still live to the bucket of their current
//! expiry. A touch writes
//! nothing to the index: a busy session's entry moves forward only when the
//! sweep reaches it, at most once per bucket it passes through. Stale
//! entries (logged-out, already deleted sessions) are harmless: a record is
//! deleted only when the record itself says it has expired, and the
//! session count drops exactly when an entry is removed.

use serde::{Deserialize, Serialize};

use crate::expiry::{secs, ExpiryPolicy};
use crate::record::SessionRecord;
use crate::store::{
    remember_write, swap_and_confirm, Confirmed, SessionStore, Snapshot, StoreError,
};

/// Width of a time bucket, in seconds. Fixed, so that the index keeps its
/// meaning when the timeouts are reconfigured.
pub const BUCKET_SECS: i64 = 60;

/// Entries examined by one sweep step (one read each, and one for each
/// entry's record).
pub const SWEEP_BATCH: i64 = 8;

/// Empty buckets one step may skip over when the cursor's bucket is done
/// (one read each).
pub const SKIP_BUCKETS: i64 = 8;

/// The sweep cursor's key.
pub const CURSOR_KEY: &str = "expiry/cursor";

/// The counter of index entries, which the cap is checked against.
pub const SESSION_COUNT_KEY: &str = "sessions/count";

/// The bucket holding time `t` (Unix seconds).
pub fn bucket_of(t: i64) -> i64 {
    t.div_euclid(BUCKET_SECS)
}

/// The first second after `bucket`: once `now` reaches it, every session
/// whose entry is in the bucket, and whose expiry has not moved, has expired.
pub fn bucket_end(bucket: i64) -> i64 {
    bucket.saturating_add(1).saturating_mul(BUCKET_SECS)
}

/// The slot counter of `bucket`.
pub fn slot_counter_key(bucket: i64) -> String {
    format!("expiry/{bucket}/count")
}

/// The key of entry `slot` of `bucket`.
pub fn entry_key(bucket: i64, slot: i64) -> String {
    format!("expiry/{bucket}/{slot}")
}

/// Where the sweep stands: slots before `next` in `bucket`, and every
/// earlier bucket, are done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The bucket being swept.
    pub bucket: i64,
    /// Its first slot not yet swept (slots start at 1).
    pub next: i64,
    /// The ids of the last few claims (moves of the cursor), newest last:
    /// how a sweeper knows its claim won.
    #[serde(default)]
    pub claims: Vec<String>,
}

impl Cursor {
    /// The cursor of a new store: nothing before `now` can be indexed yet.
    pub fn start(now: i64) -> Self {
        Cursor {
            bucket: bucket_of(now),
            next: 1,
            claims: Vec::new(),
        }
    }

    /// This cursor moved to `bucket` / `next` by the claim `id`.
    fn moved(&self, bucket: i64, next: i64, id: String) -> Self {
        let mut claims = self.claims.clone();
        remember_write(&mut claims, id);
        Cursor {
            bucket,
            next,
            claims,
        }
    }

    /// True when the stored `bytes` are a cursor that the claim `id` made
    /// (or that later claims built on it).
    fn made_by(bytes: &[u8], id: &str) -> bool {
        Cursor::decode(bytes).is_some_and(|c| c.claims.iter().any(|claim| claim == id))
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a cursor always serialises")
    }

    /// Reads a stored cursor. One whose numbers are far outside anything
    /// this code writes (a corrupted value) is no cursor: the sweep then
    /// restarts from now rather than overflowing its arithmetic.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        const LIMIT: i64 = i64::MAX / 4;
        let cursor: Cursor = serde_json::from_slice(bytes).ok()?;
        let sane = (1..LIMIT).contains(&cursor.next) && (-LIMIT..LIMIT).contains(&cursor.bucket);
        sane.then_some(cursor)
    }

    /// True when the cursor's bucket has ended at `now`.
    pub fn is_due(&self, now: i64) -> bool {
        now >= bucket_end(self.bucket)
    }
}

/// Adds entries for `record_keys`, all expiring in `bucket`: one increment
/// reserves the slots, one batch write fills them.
pub fn add_entries<S: SessionStore>(
    store: &S,
    bucket: i64,
    record_keys: &[String],
) -> Result<(), StoreError> {
    if record_keys.is_empty() {
        return Ok(());
    }
    let count = record_keys.len() as i64;
    let last = store.increment(&slot_counter_key(bucket), count)?;
    let entries: Vec<(String, Vec<u8>)> = record_keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            (
                entry_key(bucket, last - count + 1 + i as i64),
                key.as_bytes().to_vec(),
            )
        })
        .collect();
    store.set_many(&entries)
}

/// The furthest bucket the cursor may reach at `now`. Sweeping stops at the
/// current bucket: later ones have not ended. Evicting must reach live
/// sessions, so it may go on to the bucket where sessions created now
/// expire, and no further: every entry written later lands there or after
/// it, so the cursor never passes a bucket that can still gain entries.
fn furthest_bucket(policy: &ExpiryPolicy, now: i64, evict: u64) -> i64 {
    if evict > 0 {
        bucket_of(policy.expiry_of_new_session(now))
    } else {
        bucket_of(now)
    }
}

/// What one [`step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// The cursor as the step read it (`None` for a new store).
    pub cursor: Option<Cursor>,
    /// The cursor was due, or eviction was asked for: the step did work.
    pub ran: bool,
    /// Another request moved the cursor first; this one did nothing more.
    pub lost_claim: bool,
    /// Eviction found only sessions it may not evict at the cursor.
    pub blocked: bool,
    /// The cursor moved on across buckets without entries.
    pub walked: bool,
    /// Sessions' entries removed from the index (each lowers the session
    /// count).
    pub sessions_removed: u64,
    /// Session records deleted because they had expired.
    pub expired: u64,
    /// Live session records deleted to respect the cap.
    pub evicted: u64,
    /// Entries of live sessions moved to a later bucket.
    pub moved: u64,
}

/// The sweep's share of a request: reads the cursor (one plain read) and,
/// if its bucket has ended, does one [`step`]. A new store gets its cursor
/// here (one blind write: the first writer's cursor is as good as any).
/// `new_id` makes the random id of a claim.
pub fn maintain<S: SessionStore>(
    store: &S,
    policy: &ExpiryPolicy,
    now: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Result<StepReport, StoreError> {
    match store.get(CURSOR_KEY)?.as_deref().map(Cursor::decode) {
        Some(Some(cursor)) if !cursor.is_due(now) => Ok(StepReport {
            cursor: Some(cursor),
            ..StepReport::default()
        }),
        Some(Some(_)) => step(store, policy, now, Eviction::NONE, new_id),
        _ => {
            let fresh = Cursor::start(now);
            store.set(CURSOR_KEY, &fresh.encode())?;
            Ok(StepReport {
                cursor: Some(fresh),
                ..StepReport::default()
            })
        }
    }
}

/// What a [`step`] is asked to do beyond sweeping expired sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    /// How many live sessions to delete for the cap, soonest to expire
    /// first (0: only sweep, and only once the cursor's bucket has ended).
    pub sessions: u64,
    /// A session seen this recently (seconds, to the touch granularity) is
    /// never evicted: a flood of new sessions cannot push out the people
    /// using the site.
    pub protect_secs: u64,
}

impl Eviction {
    /// Just sweeping.
    pub const NONE: Eviction = Eviction {
        sessions: 0,
        protect_secs: 0,
    };
}

/// One bounded step of sweeping from the cursor. With `eviction.sessions >
/// 0` it also deletes that many live, unprotected sessions (soonest to
/// expire first), for the cap; otherwise it does nothing until the
/// cursor's bucket has ended.
///
/// Work, whatever the size of the store: at most 2 + 2 × [`SWEEP_BATCH`]
/// reads (the cursor's compare-and-swap base, the entries and what they
/// point to, or the entries and the next buckets' first slots, and the read
/// of an unconfirmed claim) and at most 5 writes (the cursor claim, a slot
/// increment and a batch write for moved entries, a batch delete, the
/// session count).
pub fn step<S: SessionStore>(
    store: &S,
    policy: &ExpiryPolicy,
    now: i64,
    eviction: Eviction,
    new_id: &mut dyn FnMut() -> String,
) -> Result<StepReport, StoreError> {
    let snapshot = store.snapshot(CURSOR_KEY)?;
    let Some(cursor) = snapshot.value().and_then(Cursor::decode) else {
        // No cursor (a new store, or one deleted behind our back), or one
        // that does not parse: start again at the current bucket, with a
        // blind write (a swap of an absent key is one on Spin's SQLite).
        store.set(CURSOR_KEY, &Cursor::start(now).encode())?;
        return Ok(StepReport::default());
    };
    let mut report = StepReport {
        cursor: Some(cursor.clone()),
        ..StepReport::default()
    };
    if !cursor.is_due(now) && eviction.sessions == 0 {
        return Ok(report);
    }
    report.ran = true;
    let (entries, looked_to) = read_entries(store, &cursor, now)?;
    if entries.is_empty() {
        return leave_bucket(store, policy, now, eviction, snapshot, report, new_id);
    }
    let settled = settle(store, policy, now, eviction, &cursor, entries)?;
    let Some(last) = settled.last() else {
        // Every entry at the cursor is a session that may not go and must
        // stay where it is: nothing to claim.
        report.blocked = true;
        return Ok(report);
    };
    let claimed_next = if cursor.is_due(now) {
        looked_to
    } else {
        last.entry.slot + 1
    };
    // Claim before writing anything: of concurrent sweepers, only the one
    // whose swap is stored deletes, so each entry is removed (and counted
    // down) exactly once.
    if !claim(
        store,
        snapshot,
        &cursor,
        cursor.bucket,
        claimed_next,
        new_id,
    )? {
        report.lost_claim = true;
        return Ok(report);
    }
    apply(store, &cursor, settled, &mut report)?;
    Ok(report)
}

/// Moves the cursor, read as `snapshot`, to `bucket` / `next` with a fresh
/// claim id, and tells whether this claim is the one stored (of concurrent
/// sweepers, only one's is).
fn claim<S: SessionStore>(
    store: &S,
    snapshot: S::Snapshot,
    cursor: &Cursor,
    bucket: i64,
    next: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Result<bool, StoreError> {
    let id = new_id();
    let moved = cursor.moved(bucket, next, id.clone());
    let outcome = swap_and_confirm(store, snapshot, &moved.encode(), |bytes| {
        Cursor::made_by(bytes, &id)
    })?;
    Ok(matches!(outcome, Confirmed::Stored))
}

/// One index entry: its slot number, its key, and the key it points to.
struct Entry {
    slot: i64,
    key: String,
    target: String,
}

/// Reads up to [`SWEEP_BATCH`] entries from the cursor on, one `get` each,
/// and returns those that hold a key, with the slot after the last one
/// looked at.
///
/// In a bucket that has ended, no entry can be on its way any more, so a
/// missing slot (a writer that failed between taking the slot and filling
/// it) is skipped. In a bucket that has not ended, a missing slot may be a
/// creation in flight: the read stops short of it.
fn read_entries<S: SessionStore>(
    store: &S,
    cursor: &Cursor,
    now: i64,
) -> Result<(Vec<Entry>, i64), StoreError> {
    let due = cursor.is_due(now);
    let mut entries = Vec::new();
    let mut next = cursor.next;
    while next < cursor.next + SWEEP_BATCH {
        let key = entry_key(cursor.bucket, next);
        match store.get(&key)? {
            Some(value) => {
                if let Ok(target) = String::from_utf8(value) {
                    entries.push(Entry {
                        slot: next,
                        key,
                        target,
                    });
                }
            }
            None if !due => break,
            None => {}
        }
        next += 1;
    }
    Ok((entries, next))
}

/// The cursor's bucket is done: moves the cursor to the next bucket that
/// holds entries (probing up to [`SKIP_BUCKETS`] first slots, one read
/// each), but never past a bucket that may still receive entries.
fn leave_bucket<S: SessionStore>(
    store: &S,
    policy: &ExpiryPolicy,
    now: i64,
    eviction: Eviction,
    snapshot: S::Snapshot,
    mut report: StepReport,
    new_id: &mut dyn FnMut() -> String,
) -> Result<StepReport, StoreError> {
    let cursor = report.cursor.clone().expect("a step has read its cursor");
    let last_probe =
        (cursor.bucket + SKIP_BUCKETS).min(furthest_bucket(policy, now, eviction.sessions));
    if last_probe <= cursor.bucket {
        return Ok(report);
    }
    let mut next_bucket = last_probe;
    for bucket in cursor.bucket + 1..last_probe {
        if store.get(&entry_key(bucket, 1))?.is_some() {
            next_bucket = bucket;
            break;
        }
    }
    if !claim(store, snapshot, &cursor, next_bucket, 1, new_id)? {
        report.lost_claim = true;
        return Ok(report);
    }
    store.delete(&slot_counter_key(cursor.bucket))?;
    report.walked = true;
    Ok(report)
}

/// What becomes of one entry.
enum Fate {
    /// The entry goes; so does the key it points to when `delete_target`.
    /// `session` when the entry stood for a session (the count drops).
    Remove {
        delete_target: bool,
        session: bool,
        why: Removal,
    },
    /// The entry moves to this later bucket, where what it points to ends.
    Move(i64),
}

/// Why an entry is removed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Its session is gone or unreadable, or its quota counter has ended.
    Stale,
    /// Its session had expired.
    Expired,
    /// Its session was evicted for the cap.
    Evicted,
}

/// An entry with its fate.
struct Settled {
    entry: Entry,
    fate: Fate,
}

/// Reads what each entry points to (one `get` each) and decides its fate.
/// In a bucket that has not ended, only the entries before the first one
/// that would have to stay in this very bucket are settled: moving it to
/// the end of the bucket would put it behind newer sessions, and
/// eviction's soonest-first order would be lost.
fn settle<S: SessionStore>(
    store: &S,
    policy: &ExpiryPolicy,
    now: i64,
    eviction: Eviction,
    cursor: &Cursor,
    entries: Vec<Entry>,
) -> Result<Vec<Settled>, StoreError> {
    let due = cursor.is_due(now);
    let mut evicted = 0;
    let mut settled = Vec::with_capacity(entries.len());
    for entry in entries {
        let fate = match quota_end(&entry.target) {
            Some(end) if now >= end => Fate::Remove {
                delete_target: true,
                session: false,
                why: Removal::Stale,
            },
            // Still counting: it goes ahead of the cursor (its own bucket
            // may be behind it), never in the way of eviction.
            Some(end) => Fate::Move(bucket_of(end).max(cursor.bucket.saturating_add(1))),
            None => {
                let stored = store.get(&entry.target)?;
                let may_evict = evicted < eviction.sessions;
                let fate = session_fate(policy, now, eviction, may_evict, stored.as_deref());
                if matches!(
                    fate,
                    Fate::Remove {
                        why: Removal::Evicted,
                        ..
                    }
                ) {
                    evicted += 1;
                }
                fate
            }
        };
        if !due && matches!(fate, Fate::Move(bucket) if bucket <= cursor.bucket) {
            break;
        }
        settled.push(Settled { entry, fate });
    }
    Ok(settled)
}

/// The fate of a session's entry, by what its record says.
fn session_fate(
    policy: &ExpiryPolicy,
    now: i64,
    eviction: Eviction,
    may_evict: bool,
    stored: Option<&[u8]>,
) -> Fate {
    let remove = |delete_target, why| Fate::Remove {
        delete_target,
        session: true,
        why,
    };
    let Some(bytes) = stored else {
        // Gone (logged out, expired on read): only the entry is left.
        return remove(false, Removal::Stale);
    };
    let Ok(record) = SessionRecord::decode(bytes) else {
        return remove(true, Removal::Stale);
    };
    if policy.is_expired(&record, now) {
        return remove(true, Removal::Expired);
    }
    let protected = now.saturating_sub(record.last_seen_at) < secs(eviction.protect_secs);
    if may_evict && !protected {
        return remove(true, Removal::Evicted);
    }
    Fate::Move(bucket_of(policy.expires_at(&record)))
}

/// Writes the fates: the moved entries first, then one batch delete, then
/// the session count.
fn apply<S: SessionStore>(
    store: &S,
    cursor: &Cursor,
    settled: Vec<Settled>,
    report: &mut StepReport,
) -> Result<(), StoreError> {
    let mut to_delete: Vec<String> = Vec::new();
    let mut to_move: Vec<String> = Vec::new();
    let mut move_to = i64::MAX;
    for Settled { entry, fate, .. } in settled {
        to_delete.push(entry.key);
        match fate {
            Fate::Move(bucket) => {
                move_to = move_to.min(bucket);
                to_move.push(entry.target);
            }
            Fate::Remove {
                delete_target,
                session,
                why,
            } => {
                if delete_target {
                    to_delete.push(entry.target);
                }
                report.sessions_removed += u64::from(session);
                report.expired += u64::from(why == Removal::Expired);
                report.evicted += u64::from(why == Removal::Evicted);
            }
        }
    }
    // The moved entries all go to the earliest bucket any of them ends in:
    // one increment and one batch write, whatever their spread. An entry
    // that is early is only looked at again sooner. They are written before
    // the old entries are deleted, so a failure in between leaves a
    // duplicate entry (harmless), never a session the index lost.
    add_entries(store, move_to.max(cursor.bucket), &to_move)?;
    store.delete_many(&to_delete)?;
    report.moved = to_move.len() as u64;
    if report.sessions_removed > 0 {
        store.increment(SESSION_COUNT_KEY, -(report.sessions_removed as i64))?;
    }
    Ok(())
}

/// Prefix of the per-client counters of new sessions: `quota/<minute>/<client>`.
pub const QUOTA_KEY_PREFIX: &str = "quota/";

/// The counter of the sessions `client` has created in the minute of `now`.
pub fn quota_key(now: i64, client: &str) -> String {
    format!("{QUOTA_KEY_PREFIX}{}/{client}", now.div_euclid(60))
}

/// When the counter at `key` stops counting, if `key` is a quota counter.
pub fn quota_end(key: &str) -> Option<i64> {
    let minute: i64 = key
        .strip_prefix(QUOTA_KEY_PREFIX)?
        .split('/')
        .next()?
        .parse()
        .ok()?;
    minute.checked_add(1)?.checked_mul(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::{Found, SessionManager};
    use crate::memory::{MemoryStore, SwapBehaviour};
    use crate::store::Snapshot;
    use rand::rngs::OsRng;
    use rand::TryRngCore;

    fn rng() -> rand::rand_core::UnwrapErr<OsRng> {
        OsRng.unwrap_err()
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("claim-{n}")
        }
    }

    const BEHAVIOURS: [SwapBehaviour; 3] = [
        SwapBehaviour::Honest,
        SwapBehaviour::SpinSqlite,
        SwapBehaviour::SpinRedis,
    ];

    /// A whole bucket boundary, for readable times.
    const T0: i64 = 1_000_000 * BUCKET_SECS;

    fn policy() -> ExpiryPolicy {
        ExpiryPolicy {
            idle_timeout_secs: 600,
            absolute_timeout_secs: 3600,
        }
    }

    fn manager(store: MemoryStore) -> SessionManager<MemoryStore> {
        SessionManager::new(store, policy())
    }

    fn session_records(store: &MemoryStore) -> usize {
        store
            .keys()
            .iter()
            .filter(|k| k.starts_with(crate::id::RECORD_KEY_PREFIX))
            .count()
    }

    fn count(store: &MemoryStore) -> i64 {
        store
            .peek(SESSION_COUNT_KEY)
            .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
            .unwrap_or(0)
    }

    #[test]
    fn bucket_boundaries() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(BUCKET_SECS - 1), 0);
        assert_eq!(bucket_of(BUCKET_SECS), 1);
        assert_eq!(bucket_of(-1), -1);
        assert_eq!(bucket_end(0), BUCKET_SECS);
        let cursor = Cursor {
            bucket: 5,
            next: 1,
            claims: Vec::new(),
        };
        assert!(!cursor.is_due(bucket_end(5) - 1));
        assert!(cursor.is_due(bucket_end(5)));
        assert_eq!(entry_key(7, 3), "expiry/7/3");
        assert_eq!(slot_counter_key(-2), "expiry/-2/count");
    }

    #[test]
    fn a_corrupted_cursor_restarts_from_now() {
        for bad in [
            r#"{"bucket":0,"next":9223372036854775800}"#,
            r#"{"bucket":9223372036854775800,"next":1}"#,
            r#"{"bucket":-9223372036854775800,"next":1}"#,
            r#"{"bucket":5,"next":0}"#,
            "not json",
        ] {
            let store = MemoryStore::new();
            store.put(CURSOR_KEY, bad.as_bytes());
            let evict_one = Eviction {
                sessions: 1,
                protect_secs: 0,
            };
            step(&store, &policy(), T0, evict_one, &mut ids()).unwrap();
            let cursor = Cursor::decode(&store.peek(CURSOR_KEY).unwrap()).unwrap();
            assert_eq!(cursor, Cursor::start(T0), "{bad}");
        }
    }

    #[test]
    fn a_request_with_nothing_due_costs_one_read() {
        let m = manager(MemoryStore::new());
        m.maintain(&mut rng(), T0).unwrap(); // creates the cursor
        let (reads, writes) = (m.store().reads(), m.store().writes());
        let report = m.maintain(&mut rng(), T0 + 30).unwrap();
        assert!(!report.ran);
        assert_eq!(
            (m.store().reads() - reads, m.store().writes() - writes),
            (1, 0)
        );
    }

    #[test]
    fn abandoned_sessions_are_swept_in_bounded_steps() {
        for behaviour in BEHAVIOURS {
            let m = manager(MemoryStore::with_behaviour(behaviour));
            m.maintain(&mut rng(), T0).unwrap();
            let n = 100;
            for i in 0..n {
                m.create(&mut rng(), T0 + i).unwrap(); // spread over two buckets
            }
            assert_eq!(session_records(m.store()), n as usize);
            assert_eq!(count(m.store()), n);
            // Long after they all expired (600 s idle): steps of bounded work
            // delete them all, then the store holds no session at all.
            let later = T0 + 10_000;
            let mut steps = 0;
            while session_records(m.store()) > 0 || count(m.store()) > 0 {
                let (reads, writes) = (m.store().reads(), m.store().writes());
                m.maintain(&mut rng(), later).unwrap();
                let most_reads = 3 + 2 * SWEEP_BATCH as u64;
                assert!(m.store().reads() - reads <= most_reads, "reads per step");
                assert!(m.store().writes() - writes <= 5, "writes per step");
                steps += 1;
                assert!(steps < 100, "the sweep does not finish");
            }
            // 100 entries in batches of 16, plus skipping the empty buckets in
            // between (at most 16 per step).
            let buckets = bucket_of(later) - bucket_of(T0);
            assert!(
                steps <= n / SWEEP_BATCH + 2 + buckets / SKIP_BUCKETS + 2,
                "{steps} steps"
            );
            let cursor = m.maintain(&mut rng(), later).unwrap().cursor.unwrap();
            assert!(
                cursor.bucket <= bucket_of(later),
                "the cursor never passes now"
            );
        }
    }

    #[test]
    fn live_sessions_move_forward_instead_of_being_deleted() {
        for behaviour in BEHAVIOURS {
            let m = manager(MemoryStore::with_behaviour(behaviour));
            m.maintain(&mut rng(), T0).unwrap();
            let idle = m.create(&mut rng(), T0).unwrap();
            let busy = m.create(&mut rng(), T0).unwrap();
            // The busy one is seen 500 s later: its expiry moves to T0 + 1100.
            let mut found = match m.lookup(Some(busy.id().clone()), T0 + 500).unwrap() {
                Found::Live(s) => s,
                _ => panic!("live"),
            };
            m.update(&mut found, &mut rng(), T0 + 500, |_| {}).unwrap();
            // At T0 + 700 the bucket of T0 + 600 has ended.
            let mut now = T0 + 700;
            for _ in 0..10 {
                m.maintain(&mut rng(), now).unwrap();
            }
            assert!(
                m.store().peek(idle.key()).is_none(),
                "the idle session is swept"
            );
            assert!(
                m.store().peek(busy.key()).is_some(),
                "the busy session stays"
            );
            assert_eq!(count(m.store()), 1);
            // ...and is swept once it has expired too.
            now = T0 + 1200;
            for _ in 0..10 {
                m.maintain(&mut rng(), now).unwrap();
            }
            assert!(m.store().peek(busy.key()).is_none());
            assert_eq!(count(m.store()), 0);
        }
    }

    #[test]
    fn stale_entries_are_dropped_and_counted_once() {
        let m = manager(MemoryStore::new());
        m.maintain(&mut rng(), T0).unwrap();
        let gone = m.create(&mut rng(), T0).unwrap();
        m.delete(gone).unwrap(); // a logout: the entry stays behind
        assert_eq!(count(m.store()), 1);
        for _ in 0..5 {
            m.maintain(&mut rng(), T0 + 700).unwrap();
        }
        assert_eq!(count(m.store()), 0);
        assert!(!m
            .store()
            .keys()
            .iter()
            .any(|k| k.starts_with("expiry/") && k != CURSOR_KEY));
    }

    #[test]
    fn a_lost_cursor_claim_deletes_nothing() {
        let m = manager(MemoryStore::new());
        m.maintain(&mut rng(), T0).unwrap();
        let s = m.create(&mut rng(), T0).unwrap();
        // Another sweeper moves the cursor just before this one's claim.
        m.store().instead_of_next_swap(|store, snapshot, value| {
            let mut other = Cursor::decode(snapshot.value().unwrap()).unwrap();
            other.next += SWEEP_BATCH;
            other.claims.push("another-sweeper".into());
            store.put(CURSOR_KEY, &other.encode());
            store.swap_as_configured(snapshot, value)
        });
        let report = step(m.store(), &policy(), T0 + 700, Eviction::NONE, &mut ids()).unwrap();
        assert!(report.ran && report.lost_claim);
        assert_eq!(report.expired, 0);
        assert!(
            m.store().peek(s.key()).is_some(),
            "the loser deleted nothing"
        );
        // The winner's position stands.
        let cursor = Cursor::decode(&m.store().peek(CURSOR_KEY).unwrap()).unwrap();
        assert_eq!(cursor.next, 1 + SWEEP_BATCH);
    }

    #[test]
    fn the_cap_evicts_the_sessions_that_expire_soonest() {
        for behaviour in BEHAVIOURS {
            let m = manager(MemoryStore::with_behaviour(behaviour)).with_max_sessions(3);
            m.maintain(&mut rng(), T0).unwrap();
            let mut sessions = Vec::new();
            for i in 0..10 {
                let now = T0 + i * BUCKET_SECS; // one bucket apart: a clear order
                m.maintain(&mut rng(), now).unwrap();
                sessions.push(m.create(&mut rng(), now).unwrap());
                assert!(
                    session_records(m.store()) <= 3 + 1,
                    "at most the cap plus one"
                );
            }
            assert!(count(m.store()) <= 3);
            let last = T0 + 9 * BUCKET_SECS;
            let newest = &sessions[9];
            assert!(matches!(
                m.lookup(Some(newest.id().clone()), last).unwrap(),
                Found::Live(_)
            ));
            assert!(matches!(
                m.lookup(Some(sessions[0].id().clone()), last).unwrap(),
                Found::Unknown
            ));
        }
    }

    #[test]
    fn eviction_within_one_bucket_goes_oldest_first() {
        let m = manager(MemoryStore::new()).with_max_sessions(10);
        m.maintain(&mut rng(), T0).unwrap();
        let sessions: Vec<_> = (0..100)
            .map(|_| {
                m.maintain(&mut rng(), T0).unwrap();
                m.create(&mut rng(), T0).unwrap()
            })
            .collect();
        for (i, s) in sessions.iter().enumerate() {
            let live = matches!(m.lookup(Some(s.id().clone()), T0).unwrap(), Found::Live(_));
            assert_eq!(live, i >= 90, "session {i}");
        }
        // No entry was rewritten: the slots handed out are the creations.
        let bucket = bucket_of(policy().expiry_of_new_session(T0));
        let slots = m.store().peek(&slot_counter_key(bucket)).unwrap();
        assert_eq!(String::from_utf8(slots).unwrap(), "100");
    }

    #[test]
    fn eviction_never_moves_the_cursor_past_new_sessions() {
        let m = manager(MemoryStore::new()).with_max_sessions(1);
        m.maintain(&mut rng(), T0).unwrap();
        for _ in 0..5 {
            m.maintain(&mut rng(), T0).unwrap();
            m.create(&mut rng(), T0).unwrap();
        }
        let cursor = m.maintain(&mut rng(), T0).unwrap().cursor.unwrap();
        assert!(cursor.bucket <= bucket_of(policy().expiry_of_new_session(T0)));
        // The last session is still indexed: it is swept once expired.
        for _ in 0..40 {
            m.maintain(&mut rng(), T0 + 5000).unwrap();
        }
        assert_eq!(session_records(m.store()), 0);
        assert_eq!(count(m.store()), 0);
    }
}
