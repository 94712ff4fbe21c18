//! The expiry index: what the tutorial's heap was for, in a key-value store
//! without listing, TTLs, transactions or background tasks.
//!
//! Every stored session has an *entry* in one of two queues, each a run of
//! numbered slots walked in order by one *cursor*:
//!
//! - the **new** queue (`index/new/<slot>`): a creation takes the next slot
//!   with an atomic `increment` of `index/new/tail` (concurrent creations
//!   never contend on a compare-and-swap) and writes its entry there;
//! - the **moved** queue (`index/moved/<epoch>/<slot>`): entries the sweep
//!   puts back, because their session was used since and expires later;
//!   its slots are handed out by the cursor itself, in the same
//!   compare-and-swap that claims the work.
//!
//! A third queue (`index/quota/<slot>`) holds the per-client counters of
//! new sessions ([`quota_key`]), so that the sweep deletes them once their
//! minute is over.
//!
//! **The count is exact by construction.** The number of sessions is the
//! number of entries ahead of the cursor: `new tail − new done + moved tail
//! − moved done − voids` ([`count`]). There is no separate counter to drift
//! when a request dies between two writes: every number in it is either
//! the new queue's slot counter or a field of the cursor, which moves by
//! compare-and-swap only.
//!
//! **Work is claimed, then done, and anyone can finish it.** A sweep
//! [`step`] reads a few entries at the queue heads and what they point to,
//! decides each one's fate, and writes the whole decision (a [`Plan`]: the
//! keys to delete, the entries to put back, the sessions to evict) into
//! the cursor in the same compare-and-swap that moves the heads past them.
//! The winner then carries the plan out; the next step verifies it was and
//! carries it out otherwise (every part of it is idempotent). So a request
//! that dies after its claim leaves nothing behind, and a claim whose
//! outcome it cannot learn ([`crate::store::Verdict::Unknown`]) is safe to
//! walk away from.
//!
//! **Nothing is deleted on a stale read.** A live session is evicted only
//! by a compare-and-swap of the version that was judged evictable (so a
//! session used in between stays), into a tombstone the sweep removes
//! later. Expired and ended records are deleted blindly, but only
//! [`IN_FLIGHT_SECS`] after their end: a request that saw the session live
//! has finished its writes by then (the one timing assumption, below).
//!
//! **The timing assumption.** A request's store operations happen within
//! [`IN_FLIGHT_SECS`] of its clock reading (and the instances' clocks agree
//! to within that). The index relies on it in three places only: an
//! expired or ended record is deleted without a compare-and-swap once
//! that long past its end; an empty slot (a creation that died between
//! taking the slot and writing it) is passed once the slot was handed out
//! that long ago; and a new store's cursor, made by a blind write, is not
//! claimed until twice that long after it was made.

use serde::{Deserialize, Serialize};

use crate::expiry::{secs, ExpiryPolicy};
use crate::record::{EndReason, Ending, SessionRecord};
use crate::store::{
    judge, remember_write, Attempt, SessionStore, Snapshot, StoreError, Swap, Verdict,
};

/// How long after its clock reading a request may still be writing: the
/// index's one timing assumption (see the module docs).
pub const IN_FLIGHT_SECS: i64 = 60;

/// Session entries one step examines at most (one read each, and one for
/// each one's record).
pub const STEP_ENTRIES: usize = 8;

/// Quota entries one step examines at most (one read each).
pub const STEP_QUOTA_ENTRIES: usize = 4;

/// Empty slots one step passes at most (one read each).
pub const STEP_HOLES: u64 = 8;

/// The cursor's key.
pub const CURSOR_KEY: &str = "index/cursor";

/// The new queue's slot counter: the number of slots handed out.
pub const NEW_TAIL_KEY: &str = "index/new/tail";

/// The quota queue's slot counter.
pub const QUOTA_TAIL_KEY: &str = "index/quota/tail";

/// Prefix of the per-client counters of new sessions: `quota/<minute>/<client>`.
pub const QUOTA_KEY_PREFIX: &str = "quota/";

/// How often a store whose new queue was empty at the last step is looked
/// at again (a creation since may have put an entry there).
const EMPTY_QUEUE_RECHECK_SECS: i64 = 60;

/// The key of slot `slot` of the new queue.
pub fn new_entry_key(slot: u64) -> String {
    format!("index/new/{slot}")
}

/// The key of slot `slot` of the moved queue of cursor epoch `epoch`.
pub fn moved_entry_key(epoch: i64, slot: u64) -> String {
    format!("index/moved/{epoch}/{slot}")
}

/// The key of slot `slot` of the quota queue.
pub fn quota_entry_key(slot: u64) -> String {
    format!("index/quota/{slot}")
}

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

/// One index entry: the key it stands for, and from when that key may be
/// looked at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key of a session record or of a quota counter.
    #[serde(rename = "k")]
    pub target: String,
    /// When the target was due to end as the entry was written: the
    /// session's expiry, the end of its tombstone's life, the end of the
    /// quota's minute. The entry is looked at [`IN_FLIGHT_SECS`] later.
    #[serde(rename = "e")]
    pub due: i64,
    /// When the entry was written.
    #[serde(rename = "a")]
    pub appended_at: i64,
}

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotValue {
    /// An entry.
    Entry(Entry),
    /// No session: the slot set aside for an evicted session in case it
    /// had to stay (see [`Victim`]). It may still point to the session's
    /// tombstone, for the sweep to delete once due. Counted in
    /// [`Cursor::voids`] until the cursor passes it.
    Void(Option<Entry>),
}

const VOID: &[u8] = b"void";

/// The stored form of a void slot that points to a tombstone.
#[derive(Serialize, Deserialize)]
struct VoidWithTarget {
    void: Entry,
}

impl SlotValue {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SlotValue::Entry(entry) => serde_json::to_vec(entry).expect("entries serialise"),
            SlotValue::Void(None) => VOID.to_vec(),
            SlotValue::Void(Some(entry)) => serde_json::to_vec(&VoidWithTarget {
                void: entry.clone(),
            })
            .expect("entries serialise"),
        }
    }

    /// Reads a stored slot; `None` for bytes no version of this code wrote.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes == VOID {
            return Some(SlotValue::Void(None));
        }
        if let Ok(entry) = serde_json::from_slice::<Entry>(bytes) {
            return Some(SlotValue::Entry(entry));
        }
        serde_json::from_slice::<VoidWithTarget>(bytes)
            .ok()
            .map(|v| SlotValue::Void(Some(v.void)))
    }
}

/// A session the step that planned it evicts: by compare-and-swap of
/// exactly `version` into a tombstone. Its moved-queue `slot` is set aside
/// in case it cannot be (it was used in between): the next step looks, and
/// fills the slot with its entry, or marks it void.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victim {
    /// The record's key.
    pub key: String,
    /// The version judged evictable.
    pub version: u64,
    /// Its slot in the moved queue.
    pub slot: u64,
}

/// What a step claimed to do, kept in the cursor until the next step has
/// verified it was done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The claim id (also what the evicted sessions' tombstones name).
    pub id: String,
    /// Slots to fill: entries put back, and the last plan's victims' slots.
    pub writes: Vec<(String, String)>,
    /// Keys to delete: the entries passed, and the records and counters
    /// that ended. Deleted last, in one batch: a plan whose first key is
    /// gone has been carried out.
    pub deletes: Vec<String>,
    /// Sessions to evict.
    pub victims: Vec<Victim>,
}

/// A queue's slot counter, as a step once read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The counter's value: slots up to it had been handed out...
    pub tail: u64,
    /// ...at this time.
    pub at: i64,
}

/// Where the cursor stands in a queue whose slots creations hand out with
/// `increment` (the new queue, the quota queue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbered {
    /// Slots passed.
    pub done: u64,
    /// The slot counter as last read.
    pub fresh: Seen,
    /// The slot counter as read at least [`IN_FLIGHT_SECS`] before the
    /// last read: an empty slot up to its `tail` will stay empty (its
    /// writer is gone), and is passed.
    pub mature: Seen,
}

impl Numbered {
    /// Notes the slot counter read at `now`.
    fn saw(&mut self, tail: u64, now: i64) {
        if now >= self.fresh.at.saturating_add(IN_FLIGHT_SECS) {
            self.mature = self.fresh;
        }
        if tail >= self.fresh.tail {
            self.fresh = Seen { tail, at: now };
        }
    }

    /// True when the empty slot `slot` will stay empty.
    fn abandoned(&self, slot: u64) -> bool {
        slot <= self.mature.tail
    }
}

/// Where the sweep stands, and the last step's plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// How many claims built it (a claim built on version `v` can only land
    /// as `v + 1`).
    pub version: u64,
    /// The ids of the last claims, newest last ([`crate::store::judge`]).
    pub claims: Vec<String>,
    /// When this cursor was first written; also the epoch of its moved
    /// queue (a replaced cursor starts a moved queue of its own).
    pub born: i64,
    /// The new queue.
    pub new: Numbered,
    /// Moved-queue slots handed out.
    pub moved_tail: u64,
    /// Moved-queue slots passed.
    pub moved_done: u64,
    /// Void slots ahead of the cursor (not sessions).
    pub voids: u64,
    /// The quota queue.
    pub quota: Numbered,
    /// When the session queues next have something to do, as far as the
    /// last step saw.
    pub next_check: i64,
    /// When the quota queue next has something to do.
    pub quota_check: i64,
    /// The last step's plan, until the next step has verified it.
    pub plan: Option<Plan>,
}

impl Cursor {
    /// The cursor of a new store at `now`, or of a store whose cursor was
    /// lost: it starts after `new_done` and `quota_done`, with an empty
    /// moved queue of its own.
    pub fn genesis(now: i64, new_done: u64, quota_done: u64) -> Self {
        let start = |done| Numbered {
            done,
            ..Numbered::default()
        };
        Cursor {
            version: 0,
            claims: Vec::new(),
            born: now,
            new: start(new_done),
            moved_tail: 0,
            moved_done: 0,
            voids: 0,
            quota: start(quota_done),
            next_check: now,
            quota_check: now,
            plan: None,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a cursor always serialises")
    }

    /// Reads a stored cursor; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// True once the cursor may be claimed: twice [`IN_FLIGHT_SECS`] after
    /// it was made, when no blind write of a competing new cursor can land
    /// any more.
    pub fn is_settled(&self, now: i64) -> bool {
        now >= self.born.saturating_add(2 * IN_FLIGHT_SECS)
    }

    /// True when a sweep step at `now` has something to do.
    pub fn is_due(&self, now: i64) -> bool {
        self.is_settled(now) && (now >= self.next_check || now >= self.quota_check)
    }
}

/// The number of sessions' entries ahead of `cursor`, with the new queue's
/// slot counter at `new_tail`: what the cap is checked against.
pub fn count(cursor: &Cursor, new_tail: u64) -> u64 {
    // Saturating throughout: a corrupted cursor may hold any numbers.
    new_tail
        .saturating_sub(cursor.new.done)
        .saturating_add(cursor.moved_tail.saturating_sub(cursor.moved_done))
        .saturating_sub(cursor.voids)
}

/// Reads the cursor (one plain read); a store without one gets one (one
/// blind write: see the module docs for why that is safe). A cursor that
/// does not decode is reported as `None`: the caller may
/// [`replace_corrupt_cursor`].
pub fn read_cursor<S: SessionStore>(store: &S, now: i64) -> Result<Option<Cursor>, StoreError> {
    match store.get(CURSOR_KEY)? {
        Some(bytes) => Ok(Cursor::decode(&bytes)),
        None => {
            let fresh = Cursor::genesis(now, 0, 0);
            store.set(CURSOR_KEY, &fresh.encode())?;
            Ok(Some(fresh))
        }
    }
}

/// Replaces a cursor that does not decode with a fresh one (by
/// compare-and-swap: the key is present) that starts at the queues' ends.
/// The entries the lost cursor had not passed are left behind: nothing
/// knows where it stood.
pub fn replace_corrupt_cursor<S: SessionStore>(store: &S, now: i64) -> Result<(), StoreError> {
    let snapshot = store.snapshot(CURSOR_KEY)?;
    if snapshot.value().is_none_or(|b| Cursor::decode(b).is_some()) {
        return Ok(());
    }
    let new_done = counter(store.increment(NEW_TAIL_KEY, 0)?);
    let quota_done = counter(store.increment(QUOTA_TAIL_KEY, 0)?);
    let fresh = Cursor::genesis(now, new_done, quota_done);
    store.swap(snapshot, &fresh.encode())?;
    Ok(())
}

/// A counter's value as a slot number.
pub fn counter(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// What a step is asked to do beyond sweeping what is due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    /// How many live sessions to evict at most, soonest to expire first (0:
    /// only sweep, and only what is due).
    pub most: u64,
    /// Evict only as many as it takes to make room for one more session
    /// under this cap, counted once the last step's plan is settled.
    pub cap: Option<Cap>,
    /// A session seen this recently (seconds, to the touch granularity) is
    /// never evicted: a flood of new sessions cannot push out the people
    /// using the site.
    pub protect_secs: u64,
}

/// The cap an evicting step makes room under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// At most this many sessions.
    pub max_sessions: u64,
    /// The new queue's slot counter, as the creation read it.
    pub new_tail: u64,
    /// Sessions this creation evicted in an earlier step, whose entries
    /// still count.
    pub evicted: u64,
}

impl Eviction {
    /// Just sweeping.
    pub const NONE: Eviction = Eviction {
        most: 0,
        cap: None,
        protect_secs: 0,
    };
}

/// What one [`step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// The cursor after the step, as this request knows it: the one it
    /// stored, or the one it read.
    pub cursor: Option<Cursor>,
    /// This request's claim is stored and its plan carried out.
    pub claimed: bool,
    /// Another request claimed first (or this claim's outcome cannot be
    /// known): this one did nothing more.
    pub lost_claim: bool,
    /// Eviction was asked for, and the entries at the cursor were sessions
    /// it may not evict.
    pub blocked: bool,
    /// The cursor is too new to be claimed ([`Cursor::is_settled`]).
    pub unsettled: bool,
    /// Entries passed (sessions, quota counters, void and empty slots).
    pub passed: u64,
    /// Session records deleted because they had expired or ended.
    pub expired: u64,
    /// Sessions evicted by this request (their tombstones confirmed).
    pub evicted: u64,
    /// Entries put back in the moved queue.
    pub moved: u64,
}

/// One bounded step of the sweep. Does nothing (beyond reading the cursor)
/// unless something is due, or eviction is asked for. `new_tail`: the new
/// queue's slot counter, if the caller has read it (otherwise read here
/// when needed).
///
/// Work, whatever the size of the store: at most about 40 reads (the
/// cursor, the last plan's check and its victims, [`STEP_ENTRIES`] entries
/// and their records, [`STEP_HOLES`] empty slots, [`STEP_QUOTA_ENTRIES`]
/// quota entries) and at most 5 writes plus one compare-and-swap per
/// victim (the claim, one batch write, one batch delete, two slot counters
/// read), and as much again when the last step's plan was left undone.
pub fn step<S: SessionStore>(
    store: &S,
    policy: &ExpiryPolicy,
    now: i64,
    eviction: Eviction,
    new_tail: Option<u64>,
    new_id: &mut dyn FnMut() -> String,
) -> Result<StepReport, StoreError> {
    let snapshot = store.snapshot(CURSOR_KEY)?;
    let Some(cursor) = snapshot.value().and_then(Cursor::decode) else {
        match snapshot.value() {
            None => drop(read_cursor(store, now)?),
            Some(_) => replace_corrupt_cursor(store, now)?,
        }
        return Ok(StepReport::default());
    };
    let mut idle = StepReport {
        cursor: Some(cursor.clone()),
        ..StepReport::default()
    };
    if !cursor.is_settled(now) {
        idle.unsettled = true;
        return Ok(idle);
    }
    if eviction.most == 0 && !cursor.is_due(now) {
        return Ok(idle);
    }
    let previous = verify_previous(store, &cursor, now)?;
    let mut planner = Planner::new(store, policy, now, eviction, cursor.clone(), new_id());
    planner.new_tail = new_tail;
    planner.resolve_previous_victims(previous)?;
    planner.set_evictions()?;
    if eviction.most > 0 || now >= cursor.next_check {
        planner.walk_sessions()?;
    }
    if now >= cursor.quota_check {
        planner.walk_quotas()?;
    }
    let (next, plan, mut report) = planner.finish();
    let changes_nothing = plan_is_empty(&plan)
        && cursor.plan.is_none()
        && next.next_check == cursor.next_check
        && next.quota_check == cursor.quota_check;
    if changes_nothing {
        idle.blocked = report.blocked;
        return Ok(idle);
    }
    match claim(store, snapshot, &next)? {
        Verdict::Stored => {
            report.evicted = carry_out(store, &plan, now)?;
            report.claimed = true;
            report.cursor = Some(next);
            Ok(report)
        }
        _ => {
            idle.lost_claim = true;
            Ok(idle)
        }
    }
}

fn plan_is_empty(plan: &Plan) -> bool {
    plan.writes.is_empty() && plan.deletes.is_empty() && plan.victims.is_empty()
}

/// Stores `next` in place of the cursor `snapshot` read, and judges whether
/// this claim is the one that landed.
fn claim<S: SessionStore>(
    store: &S,
    snapshot: S::Snapshot,
    next: &Cursor,
) -> Result<Verdict, StoreError> {
    let attempt = Attempt {
        base: next.version - 1,
        id: next.claims.last().cloned().unwrap_or_default(),
    };
    match store.swap(snapshot, &next.encode())? {
        Swap::Done => Ok(Verdict::Stored),
        Swap::NotConfirmed(fresh) => Ok(match fresh.value().and_then(Cursor::decode) {
            Some(cursor) => judge(&attempt, cursor.version, &cursor.claims),
            None => Verdict::Unknown,
        }),
    }
}

/// The last plan, once it is known to be carried out (doing what is left
/// of it, if anything).
fn verify_previous<S: SessionStore>(
    store: &S,
    cursor: &Cursor,
    now: i64,
) -> Result<Option<Plan>, StoreError> {
    let Some(plan) = cursor.plan.clone() else {
        return Ok(None);
    };
    if !is_carried_out(store, &plan)? {
        carry_out(store, &plan, now)?;
    }
    Ok(Some(plan))
}

/// True when `plan` has been carried out: its batch delete comes last, so
/// its first key (one that existed when it was planned) being gone says
/// the rest is done; a plan that deletes nothing is done once its first
/// write is there.
fn is_carried_out<S: SessionStore>(store: &S, plan: &Plan) -> Result<bool, StoreError> {
    if let Some(first) = plan.deletes.first() {
        return Ok(store.get(first)?.is_none());
    }
    match plan.writes.first() {
        Some((key, _)) => Ok(store.get(key)?.is_some()),
        None => Ok(plan.victims.is_empty()),
    }
}

/// Carries `plan` out, all of it idempotent: the slot writes, the victims'
/// tombstones (each by compare-and-swap of the version judged evictable),
/// then the batch delete. Returns how many tombstones this call confirmed.
fn carry_out<S: SessionStore>(store: &S, plan: &Plan, now: i64) -> Result<u64, StoreError> {
    if !plan.writes.is_empty() {
        let writes: Vec<(String, Vec<u8>)> = plan
            .writes
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().into_bytes()))
            .collect();
        store.set_many(&writes)?;
    }
    let mut evicted = 0;
    for victim in &plan.victims {
        if evict(store, victim, &plan.id, now)? {
            evicted += 1;
        }
    }
    if !plan.deletes.is_empty() {
        store.delete_many(&plan.deletes)?;
    }
    Ok(evicted)
}

/// Turns `victim`'s record into a tombstone if it is still at the version
/// judged evictable. True when this call's write is confirmed.
fn evict<S: SessionStore>(
    store: &S,
    victim: &Victim,
    plan_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let snapshot = store.snapshot(&victim.key)?;
    let Some(record) = snapshot.value().and_then(|b| SessionRecord::decode(b).ok()) else {
        return Ok(false);
    };
    if record.version() != victim.version || record.is_ended() {
        return Ok(false);
    }
    let mut tombstone = record;
    tombstone.data.clear();
    tombstone.flash.clear();
    tombstone.ended = Some(Ending {
        at: now,
        why: EndReason::Evicted(plan_id.to_owned()),
    });
    tombstone.writes += 1;
    // The plan id is this write's id: unique to the plan, and what the
    // next step looks for.
    remember_write(&mut tombstone.recent_writes, plan_id.to_owned());
    let attempt = Attempt {
        base: victim.version,
        id: plan_id.to_owned(),
    };
    Ok(match store.swap(snapshot, &tombstone.encode())? {
        Swap::Done => true,
        Swap::NotConfirmed(fresh) => fresh
            .value()
            .and_then(|b| SessionRecord::decode(b).ok())
            .is_some_and(|r| judge(&attempt, r.version(), &r.recent_writes) == Verdict::Stored),
    })
}

/// Which session queue an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    New = 0,
    Moved = 1,
}

/// The slot at a queue head, read but not yet decided on.
struct Head {
    /// The slot.
    slot: u64,
    /// Empty, abandoned slots before it, passed with it.
    holes: u64,
    /// What the slot holds.
    value: HeadValue,
}

/// What a slot at a queue head holds.
enum HeadValue {
    Entry(Entry),
    /// A void slot of the moved queue (counted in [`Cursor::voids`]),
    /// perhaps with a tombstone to sweep.
    Void(Option<Entry>),
    /// Bytes no entry has: passed, and nothing else.
    Garbage,
    /// Empty slots up to the queue's end whose writers are gone: passed,
    /// with nothing to delete.
    Holes,
}

impl Head {
    fn entry(&self) -> Option<&Entry> {
        match &self.value {
            HeadValue::Entry(entry) | HeadValue::Void(Some(entry)) => Some(entry),
            _ => None,
        }
    }

    /// When the head is due to be looked at: slots without an entry at
    /// once.
    fn due(&self) -> i64 {
        self.entry().map_or(i64::MIN, |e| e.due)
    }
}

/// What becomes of one session entry.
enum Fate {
    /// The entry goes; its record is gone already.
    Drop,
    /// The entry and its record go (expired, ended, or unreadable).
    Delete,
    /// The entry is put back, due at this time.
    Move(i64),
    /// The session is evicted at this version.
    Evict(u64),
    /// Not due: the walk of this queue stops here.
    Stop,
}

/// Builds one step's plan and the cursor that claims it.
struct Planner<'a, S> {
    store: &'a S,
    policy: &'a ExpiryPolicy,
    now: i64,
    eviction: Eviction,
    /// The cursor this step would store.
    next: Cursor,
    plan: Plan,
    report: StepReport,
    /// The new queue's slot counter, once known.
    new_tail: Option<u64>,
    heads: [Option<Head>; 2],
    /// Queues whose walk has stopped.
    stopped: [bool; 2],
    /// Empty slots passed so far.
    holes: u64,
    /// The earliest time something left in the session queues is due.
    next_check: i64,
    /// Sessions still to evict.
    to_evict: u64,
}

impl<'a, S: SessionStore> Planner<'a, S> {
    fn new(
        store: &'a S,
        policy: &'a ExpiryPolicy,
        now: i64,
        eviction: Eviction,
        cursor: Cursor,
        id: String,
    ) -> Self {
        let mut next = cursor;
        next.version += 1;
        remember_write(&mut next.claims, id.clone());
        next.plan = None;
        let next_check = next.next_check;
        Planner {
            store,
            policy,
            now,
            eviction,
            next,
            plan: Plan {
                id,
                ..Plan::default()
            },
            report: StepReport::default(),
            new_tail: None,
            heads: [None, None],
            stopped: [false, false],
            holes: 0,
            next_check,
            to_evict: 0,
        }
    }

    /// Decides what the last plan's victims' slots hold: the session's
    /// entry if it is still there to sweep, void if the plan's tombstone
    /// (or anything else) removed it.
    fn resolve_previous_victims(&mut self, previous: Option<Plan>) -> Result<(), StoreError> {
        let Some(previous) = previous else {
            return Ok(());
        };
        let evicted_here = EndReason::Evicted(previous.id.clone());
        for victim in previous.victims {
            let record = self
                .store
                .get(&victim.key)?
                .and_then(|bytes| SessionRecord::decode(&bytes).ok());
            let entry = |record: &SessionRecord, target: String| Entry {
                target,
                due: due_of(self.policy, record),
                appended_at: self.now,
            };
            let value = match record {
                Some(record) if record.ended.as_ref().map(|e| &e.why) == Some(&evicted_here) => {
                    // Evicted: no longer a session, but its tombstone is
                    // still to be swept.
                    self.next.voids += 1;
                    SlotValue::Void(Some(entry(&record, victim.key)))
                }
                Some(record) => SlotValue::Entry(entry(&record, victim.key)),
                None => {
                    self.next.voids += 1;
                    SlotValue::Void(None)
                }
            };
            let key = moved_entry_key(self.next.born, victim.slot);
            self.write_slot(key, &value);
        }
        Ok(())
    }

    /// How many sessions this step evicts: what it was asked for, but no
    /// more than the cap needs once the last plan's victims are counted.
    fn set_evictions(&mut self) -> Result<(), StoreError> {
        self.to_evict = match self.eviction.cap {
            None => self.eviction.most,
            Some(cap) => {
                let ahead = count(&self.next, cap.new_tail).saturating_sub(cap.evicted);
                (ahead + 1)
                    .saturating_sub(cap.max_sessions)
                    .min(self.eviction.most)
            }
        };
        Ok(())
    }

    /// Walks the session queues, soonest due first, deciding up to
    /// [`STEP_ENTRIES`] entries.
    fn walk_sessions(&mut self) -> Result<(), StoreError> {
        let mut decided = 0;
        self.next_check = i64::MAX;
        while decided < STEP_ENTRIES {
            for queue in [Queue::New, Queue::Moved] {
                self.peek(queue)?;
            }
            let Some(queue) = self.soonest() else { break };
            let head = self.heads[queue as usize].take().expect("peeked");
            let entry = match &head.value {
                HeadValue::Entry(entry) => entry.clone(),
                HeadValue::Void(tombstone) => {
                    if self.void_is_done(queue, tombstone.as_ref(), &head) {
                        decided += 1;
                    }
                    continue;
                }
                HeadValue::Garbage => {
                    self.pass(queue, &head);
                    continue;
                }
                HeadValue::Holes => {
                    self.next.new.done = head.slot;
                    self.report.passed += head.holes;
                    continue;
                }
            };
            match self.fate(queue, &entry)? {
                Fate::Stop => {
                    self.stopped[queue as usize] = true;
                    self.heads[queue as usize] = Some(head);
                }
                fate => {
                    self.pass(queue, &head);
                    self.apply(entry, fate);
                    decided += 1;
                }
            }
        }
        // What is left at the heads says when the next step is due: at
        // once, when this one stopped at its limit with more due.
        for queue in [Queue::New, Queue::Moved] {
            self.peek(queue)?;
        }
        self.note_heads_left();
        Ok(())
    }

    /// Passes a void slot (no longer counted), deleting the tombstone it
    /// points to, once that is due; before, the queue's walk stops there
    /// (in an evicting step too: a tombstone is due within
    /// [`IN_FLIGHT_SECS`], and the other queue goes on). True when it took
    /// a share of the step's work.
    fn void_is_done(&mut self, queue: Queue, tombstone: Option<&Entry>, head: &Head) -> bool {
        let Some(entry) = tombstone else {
            self.pass(queue, head);
            self.next.voids = self.next.voids.saturating_sub(1);
            return false;
        };
        if entry.due.saturating_add(IN_FLIGHT_SECS) > self.now {
            self.next_check = self
                .next_check
                .min(entry.due.saturating_add(IN_FLIGHT_SECS));
            self.stopped[queue as usize] = true;
            self.heads[queue as usize] = Some(Head {
                slot: head.slot,
                holes: head.holes,
                value: HeadValue::Void(Some(entry.clone())),
            });
            return false;
        }
        self.pass(queue, head);
        self.next.voids = self.next.voids.saturating_sub(1);
        self.plan.deletes.push(entry.target.clone());
        self.report.expired += 1;
        true
    }

    /// Reads the head of `queue`, if not read yet and its walk goes on.
    fn peek(&mut self, queue: Queue) -> Result<(), StoreError> {
        let i = queue as usize;
        if self.heads[i].is_some() || self.stopped[i] {
            return Ok(());
        }
        let head = match queue {
            Queue::New => self.read_new_head()?,
            Queue::Moved => self.read_moved_head()?,
        };
        match head {
            Some(head) => self.heads[i] = Some(head),
            None => self.stopped[i] = true,
        }
        Ok(())
    }

    /// The new queue's slot counter, read once.
    fn new_tail(&mut self) -> Result<u64, StoreError> {
        if let Some(tail) = self.new_tail {
            return Ok(tail);
        }
        let tail = counter(self.store.increment(NEW_TAIL_KEY, 0)?);
        self.new_tail = Some(tail);
        Ok(tail)
    }

    /// The next entry of the new queue, past abandoned empty slots; `None`
    /// at its end, or at an empty slot whose writer may still come.
    fn read_new_head(&mut self) -> Result<Option<Head>, StoreError> {
        let tail = self.new_tail()?;
        self.next.new.saw(tail, self.now);
        let state = self.next.new;
        read_numbered(self.store, &state, tail, &mut self.holes, new_entry_key)
    }

    /// The next slot of the moved queue. Its slots are only handed out by
    /// claims whose plans write them, and the last plan is carried out
    /// before a step walks: an empty one is past its end.
    fn read_moved_head(&self) -> Result<Option<Head>, StoreError> {
        if self.next.moved_done >= self.next.moved_tail {
            return Ok(None);
        }
        let slot = self.next.moved_done + 1;
        let key = moved_entry_key(self.next.born, slot);
        Ok(self.store.get(&key)?.map(|bytes| Head {
            slot,
            holes: 0,
            value: match SlotValue::decode(&bytes) {
                Some(SlotValue::Entry(entry)) => HeadValue::Entry(entry),
                Some(SlotValue::Void(tombstone)) => HeadValue::Void(tombstone),
                None => HeadValue::Garbage,
            },
        }))
    }

    /// The queue whose head is due soonest.
    fn soonest(&self) -> Option<Queue> {
        let due = |q: Queue| {
            self.heads[q as usize]
                .as_ref()
                .filter(|_| !self.stopped[q as usize])
                .map(Head::due)
        };
        match (due(Queue::New), due(Queue::Moved)) {
            (Some(a), Some(b)) => Some(if b < a { Queue::Moved } else { Queue::New }),
            (Some(_), None) => Some(Queue::New),
            (None, Some(_)) => Some(Queue::Moved),
            (None, None) => None,
        }
    }

    /// Moves `queue`'s head past `head` (and the empty slots before it),
    /// and deletes the slot.
    fn pass(&mut self, queue: Queue, head: &Head) {
        let key = match queue {
            Queue::New => {
                self.next.new.done = head.slot;
                new_entry_key(head.slot)
            }
            Queue::Moved => {
                self.next.moved_done = head.slot;
                moved_entry_key(self.next.born, head.slot)
            }
        };
        self.plan.deletes.push(key);
        self.report.passed += 1 + head.holes;
    }

    /// The fate of a session entry at a queue head.
    fn fate(&mut self, queue: Queue, entry: &Entry) -> Result<Fate, StoreError> {
        let due = entry.due.saturating_add(IN_FLIGHT_SECS) <= self.now;
        if !due && self.to_evict == 0 {
            return Ok(self.not_due(queue, entry));
        }
        let stored = self.store.get(&entry.target)?;
        Ok(self.session_fate(stored.as_deref()))
    }

    /// A head that is not due stops its queue's walk; one that will not be
    /// due for longer than a session normally lives (a remembered one) goes
    /// to the back of the moved queue instead, so that it holds up nothing
    /// behind it (in the moved queue only when something else is there to
    /// sweep, or the walk would go round in circles).
    fn not_due(&mut self, queue: Queue, entry: &Entry) -> Fate {
        let horizon = self.now.saturating_add(secs(self.policy.idle_timeout_secs));
        let others_behind = self.next.moved_tail.saturating_sub(self.next.moved_done) > 1;
        if entry.due > horizon && (queue == Queue::New || others_behind) {
            Fate::Move(entry.due)
        } else {
            self.next_check = self
                .next_check
                .min(entry.due.saturating_add(IN_FLIGHT_SECS));
            Fate::Stop
        }
    }

    /// The fate of a session whose entry is due (or wanted for eviction),
    /// by what its record says.
    fn session_fate(&mut self, stored: Option<&[u8]>) -> Fate {
        let Some(bytes) = stored else {
            return Fate::Drop;
        };
        let Ok(record) = SessionRecord::decode(bytes) else {
            return Fate::Delete;
        };
        let due = due_of(self.policy, &record);
        if due.saturating_add(IN_FLIGHT_SECS) <= self.now {
            return Fate::Delete;
        }
        if self.to_evict > 0 && !record.is_ended() {
            let seen_for = self.now.saturating_sub(record.last_seen_at);
            if seen_for >= secs(self.eviction.protect_secs) {
                self.to_evict -= 1;
                return Fate::Evict(record.version());
            }
            self.report.blocked = true;
        }
        Fate::Move(due)
    }

    /// Writes `fate` into the plan.
    fn apply(&mut self, entry: Entry, fate: Fate) {
        match fate {
            Fate::Drop | Fate::Stop => {}
            Fate::Delete => {
                self.plan.deletes.push(entry.target);
                self.report.expired += 1;
            }
            Fate::Move(due) => {
                let slot = self.hand_out_moved_slot();
                let value = SlotValue::Entry(Entry {
                    target: entry.target,
                    due,
                    appended_at: self.now,
                });
                self.write_slot(moved_entry_key(self.next.born, slot), &value);
                self.report.moved += 1;
            }
            Fate::Evict(version) => {
                let slot = self.hand_out_moved_slot();
                self.plan.victims.push(Victim {
                    key: entry.target,
                    version,
                    slot,
                });
            }
        }
    }

    fn hand_out_moved_slot(&mut self) -> u64 {
        self.next.moved_tail += 1;
        self.next.moved_tail
    }

    fn write_slot(&mut self, key: String, value: &SlotValue) {
        let text = String::from_utf8(value.encode()).expect("slots are JSON text");
        self.plan.writes.push((key, text));
    }

    /// Heads left unread or undecided (the step's limit, an empty queue,
    /// an empty slot to wait for) still say when to look again.
    fn note_heads_left(&mut self) {
        for head in self.heads.iter().flatten() {
            let due = head.due().saturating_add(IN_FLIGHT_SECS);
            self.next_check = self.next_check.min(due.max(self.now));
        }
        if self.heads[Queue::New as usize].is_none() {
            // Empty, or waiting on an empty slot: a creation since may have
            // put an entry there, or the slot's writer may be gone by then.
            self.next_check = self
                .next_check
                .min(self.now.saturating_add(EMPTY_QUEUE_RECHECK_SECS));
        }
    }

    /// Walks the quota queue: deletes the counters whose minute is over.
    fn walk_quotas(&mut self) -> Result<(), StoreError> {
        self.next.quota_check = self.now;
        let tail = counter(self.store.increment(QUOTA_TAIL_KEY, 0)?);
        self.next.quota.saw(tail, self.now);
        for _ in 0..STEP_QUOTA_ENTRIES {
            let state = self.next.quota;
            let Some(head) =
                read_numbered(self.store, &state, tail, &mut self.holes, quota_entry_key)?
            else {
                self.next.quota_check = self.now.saturating_add(EMPTY_QUEUE_RECHECK_SECS);
                return Ok(());
            };
            if let Some(entry) = head.entry() {
                let due = entry.due.saturating_add(IN_FLIGHT_SECS);
                if due > self.now {
                    self.next.quota_check = due;
                    return Ok(());
                }
            }
            // The entry's key before its counter's: the plan's first key
            // must be one that existed (see `is_carried_out`).
            self.next.quota.done = head.slot;
            if matches!(head.value, HeadValue::Holes) {
                self.report.passed += head.holes;
                continue;
            }
            self.plan.deletes.push(quota_entry_key(head.slot));
            if let Some(entry) = head.entry() {
                self.plan.deletes.push(entry.target.clone());
            }
            self.report.passed += 1 + head.holes;
        }
        Ok(())
    }

    /// The claim's cursor, its plan, and the report so far.
    fn finish(mut self) -> (Cursor, Plan, StepReport) {
        self.next.next_check = self.next_check;
        self.next.plan = (!plan_is_empty(&self.plan)).then(|| self.plan.clone());
        (self.next, self.plan, self.report)
    }
}

/// The next slot of a numbered queue after `state.done` that holds
/// something, past empty slots whose writers are gone
/// ([`Numbered::abandoned`]); `None` at the queue's end (`tail`), at an
/// empty slot whose writer may still come, or after [`STEP_HOLES`] empty
/// slots in this step (`holes` counts them).
fn read_numbered<S: SessionStore>(
    store: &S,
    state: &Numbered,
    tail: u64,
    holes: &mut u64,
    key_of: fn(u64) -> String,
) -> Result<Option<Head>, StoreError> {
    let mut slot = state.done + 1;
    let mut passed = 0;
    while slot <= tail {
        if let Some(bytes) = store.get(&key_of(slot))? {
            let value = match SlotValue::decode(&bytes) {
                Some(SlotValue::Entry(entry)) => HeadValue::Entry(entry),
                _ => HeadValue::Garbage,
            };
            return Ok(Some(Head {
                slot,
                holes: passed,
                value,
            }));
        }
        if !state.abandoned(slot) || *holes >= STEP_HOLES {
            break;
        }
        *holes += 1;
        passed += 1;
        slot += 1;
    }
    // Abandoned empty slots with no entry after them (yet): passed all the
    // same, or the count would keep them.
    Ok((passed > 0).then(|| Head {
        slot: slot - 1,
        holes: passed,
        value: HeadValue::Holes,
    }))
}

/// When the sweep may look at a session's record again: its expiry, or
/// when its tombstone ended.
fn due_of(policy: &ExpiryPolicy, record: &SessionRecord) -> i64 {
    match &record.ended {
        Some(ending) => ending.at,
        None => policy.expires_at(record),
    }
}

/// Adds an index entry for the quota counter `key` (one increment, one
/// write): written before the counter itself is, so that a counter never
/// exists without an entry to delete it.
pub fn add_quota_entry<S: SessionStore>(store: &S, key: &str, now: i64) -> Result<(), StoreError> {
    let slot = counter(store.increment(QUOTA_TAIL_KEY, 1)?);
    let entry = SlotValue::Entry(Entry {
        target: key.to_owned(),
        due: quota_end(key).unwrap_or(now),
        appended_at: now,
    });
    store.set(&quota_entry_key(slot), &entry.encode())
}
