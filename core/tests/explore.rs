//! Schedules explored, not sampled: several requests run as threads whose
//! every key-value operation is a scheduling point, under shuttle's
//! exhaustive (DFS) and randomised (PCT) schedulers, on a store that
//! behaves as each of Spin's (SQLite, Redis, defects included), with the
//! faults that matter: a read-back that comes late (other requests run
//! between a Redis swap and its read), a swap that lands late (after its
//! reply), a store error after a swap was sent, and a crash between any two
//! operations.
//!
//! After every schedule, three checks:
//! - **linearizability** of the session's history. Every update appends
//!   its id to a log in the session's data, so the final log says how
//!   often, and in which order, each update was applied: an acknowledged
//!   one exactly once, a refused one never, an unknown one at most once, in
//!   an order consistent with real time, and every read saw a prefix of it
//!   that holds everything acknowledged before the read began;
//! - **the index**: the count equals the sessions' entries ahead of the
//!   cursor, every live session has one, none sits behind the cursor;
//! - **the end state**: once everything has expired and creations have
//!   driven the sweep, the store holds only the index's and the signing
//!   key's fixtures, and the count is zero.
//!
//! Budgets: `SESSIONS_EXPLORE_ITERATIONS` randomised schedules per scenario
//! (CI default below; `cargo xtask fuzz explore` runs a long one), and the
//! exhaustive scenarios run to completion. A failing schedule is printed by
//! shuttle and can be replayed with `shuttle::replay`; the randomised runs
//! print their seed (`SESSIONS_EXPLORE_SEED` replays one).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::StdRng;
use rand::SeedableRng;
use shuttle::scheduler::{DfsScheduler, PctScheduler};
use shuttle::{Config, Runner};
use spin_sessions_core::index::{self, Cursor, SlotValue};
use spin_sessions_core::memory::SwapBehaviour;
use spin_sessions_core::store::{SessionStore, Snapshot, StoreError, Swap};
use spin_sessions_core::{
    Admission, CreateError, EndReason, ExpiryPolicy, Found, SessionId, SessionManager,
    SessionRecord, StoredValue, UpdateError,
};
use std::sync::{Arc, Mutex};

const T0: i64 = 1_800_000_000;

const BACKENDS: [SwapBehaviour; 2] = [SwapBehaviour::SpinSqlite, SwapBehaviour::SpinRedis];

/// Randomised schedules per scenario in a CI run.
const CI_ITERATIONS: usize = 300;

fn iterations() -> usize {
    std::env::var("SESSIONS_EXPLORE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_ITERATIONS)
}

fn seed() -> u64 {
    std::env::var("SESSIONS_EXPLORE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}

/// Schedules run by this test binary, for the closing figures.
static SCHEDULES: AtomicUsize = AtomicUsize::new(0);

fn policy() -> ExpiryPolicy {
    ExpiryPolicy {
        idle_timeout_secs: 600,
        absolute_timeout_secs: 3600,
    }
}

// ---------------------------------------------------------------------------
// The store: one map shared by every request, each operation atomic and a
// scheduling point; per-request faults.

#[derive(Default)]
struct World {
    map: BTreeMap<String, Vec<u8>>,
    /// The threads that land late swaps: joined before the checks.
    landers: Vec<shuttle::thread::JoinHandle<()>>,
}

/// Waits for every late swap to have landed (or failed to).
fn join_landers(world: &Arc<Mutex<World>>) {
    loop {
        let lander = world.lock().unwrap().landers.pop();
        match lander {
            Some(lander) => lander.join().unwrap(),
            None => return,
        }
    }
}

/// What goes wrong for one request.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// The request dies before its operation with this number (from 0).
    crash_at: Option<usize>,
    /// This swap (numbered among the request's swaps) lands late: after its
    /// "not confirmed" reply, at a point of the scheduler's choosing.
    late_swap: Option<usize>,
    /// This swap is applied (if it may), then fails with a store error.
    error_after_swap: Option<usize>,
    /// This swap's read-back comes late (Redis): the request yields this
    /// many times between the swap and the read, so that others' writes
    /// can land in between.
    late_read_back: Option<(usize, usize)>,
}

struct ExploreStore {
    world: Arc<Mutex<World>>,
    behaviour: SwapBehaviour,
    faults: Faults,
    ops: Cell<usize>,
    swaps: Cell<usize>,
}

#[derive(Debug)]
struct ExploreSnapshot {
    key: String,
    value: Option<Vec<u8>>,
}

impl Snapshot for ExploreSnapshot {
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

impl ExploreStore {
    fn new(world: &Arc<Mutex<World>>, behaviour: SwapBehaviour, faults: Faults) -> Self {
        ExploreStore {
            world: world.clone(),
            behaviour,
            faults,
            ops: Cell::new(0),
            swaps: Cell::new(0),
        }
    }

    /// Counts an operation, and lets another request run first (the one
    /// scheduling point of each operation: the store's state itself is
    /// behind a plain lock, taken only while the operation runs); fails
    /// every operation from the crash on.
    fn op(&self) -> Result<(), StoreError> {
        shuttle::thread::yield_now();
        let n = self.ops.get();
        self.ops.set(n + 1);
        if self.faults.crash_at.is_some_and(|at| n >= at) {
            return Err(StoreError("crashed".into()));
        }
        Ok(())
    }

    /// True once the request has died.
    fn crashed(&self) -> bool {
        self.faults.crash_at.is_some_and(|at| self.ops.get() > at)
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let mut world = self.world.lock().unwrap();
        f(&mut world)
    }

    fn encode_counter(&self, n: i64) -> Vec<u8> {
        match self.behaviour {
            SwapBehaviour::SpinSqlite => n.to_le_bytes().to_vec(),
            _ => n.to_string().into_bytes(),
        }
    }

    fn decode_counter(&self, bytes: &[u8]) -> Result<i64, StoreError> {
        let n = match self.behaviour {
            SwapBehaviour::SpinSqlite => bytes.try_into().ok().map(i64::from_le_bytes),
            _ => std::str::from_utf8(bytes).ok().and_then(|t| t.parse().ok()),
        };
        n.ok_or_else(|| StoreError(format!("host panic: not a counter: {bytes:?}")))
    }
}

/// The swap's write, as the backend does it: if the key still holds what
/// was read (or, on SQLite, unconditionally when it was absent).
fn swap_write(
    world: &mut World,
    behaviour: SwapBehaviour,
    snapshot: &ExploreSnapshot,
    value: &[u8],
) -> bool {
    let unchanged = world.map.get(&snapshot.key) == snapshot.value.as_ref();
    let upsert = behaviour == SwapBehaviour::SpinSqlite && snapshot.value.is_none();
    if unchanged || upsert {
        world.map.insert(snapshot.key.clone(), value.to_vec());
    }
    unchanged || upsert
}

impl SessionStore for ExploreStore {
    type Snapshot = ExploreSnapshot;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.op()?;
        Ok(self.with(|w| w.map.get(key).cloned()))
    }

    fn snapshot(&self, key: &str) -> Result<ExploreSnapshot, StoreError> {
        self.op()?;
        let value = self.with(|w| w.map.get(key).cloned());
        Ok(ExploreSnapshot {
            key: key.to_owned(),
            value,
        })
    }

    fn swap(
        &self,
        snapshot: ExploreSnapshot,
        value: &[u8],
    ) -> Result<Swap<ExploreSnapshot>, StoreError> {
        self.op()?;
        let n = self.swaps.get();
        self.swaps.set(n + 1);
        let behaviour = self.behaviour;
        if behaviour == SwapBehaviour::SpinRedis && self.faults.late_swap == Some(n) {
            // The reply comes first; the write lands whenever the lander
            // thread is scheduled.
            let world = self.world.clone();
            let (late, value) = (
                ExploreSnapshot {
                    key: snapshot.key.clone(),
                    value: snapshot.value.clone(),
                },
                value.to_vec(),
            );
            let lander = shuttle::thread::spawn(move || {
                shuttle::thread::yield_now();
                let mut world = world.lock().unwrap();
                swap_write(&mut world, behaviour, &late, &value);
            });
            self.with(|w| w.landers.push(lander));
            let current = self.with(|w| w.map.get(&snapshot.key).cloned());
            return Ok(Swap::NotConfirmed(ExploreSnapshot {
                key: snapshot.key,
                value: current,
            }));
        }
        let wrote = self.with(|w| swap_write(w, behaviour, &snapshot, value));
        if self.faults.error_after_swap == Some(n) {
            return Err(StoreError(
                "connection reset after the swap was sent".into(),
            ));
        }
        if wrote && behaviour != SwapBehaviour::SpinRedis {
            return Ok(Swap::Done);
        }
        // Redis answers "failed" either way; the read-back is a separate
        // operation on a fresh connection: others may run in between.
        if let Some((swap, yields)) = self.faults.late_read_back {
            if swap == n {
                for _ in 0..yields {
                    shuttle::thread::yield_now();
                }
            }
        }
        self.op()?;
        let current = self.with(|w| w.map.get(&snapshot.key).cloned());
        Ok(Swap::NotConfirmed(ExploreSnapshot {
            key: snapshot.key,
            value: current,
        }))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.op()?;
        self.with(|w| w.map.insert(key.to_owned(), value.to_vec()));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.op()?;
        self.with(|w| w.map.remove(key));
        Ok(())
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.op()?;
        self.with(|w| {
            for (key, value) in entries {
                w.map.insert(key.clone(), value.clone());
            }
        });
        Ok(())
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        self.op()?;
        self.with(|w| {
            for key in keys {
                w.map.remove(key);
            }
        });
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.op()?;
        let mut world = self.world.lock().unwrap();
        let current = match world.map.get(key) {
            None => 0,
            Some(bytes) => self.decode_counter(bytes)?,
        };
        let next = current + delta;
        world.map.insert(key.to_owned(), self.encode_counter(next));
        Ok(next)
    }
}

fn manager(
    world: &Arc<Mutex<World>>,
    behaviour: SwapBehaviour,
    faults: Faults,
) -> SessionManager<ExploreStore> {
    SessionManager::new(ExploreStore::new(world, behaviour, faults), policy())
}

fn rng(n: u64) -> StdRng {
    StdRng::seed_from_u64(n)
}

// ---------------------------------------------------------------------------
// Histories.

/// What one operation did, as its caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Applied exactly once.
    Applied,
    /// Never applied.
    NotApplied,
    /// Applied at most once.
    Maybe,
    /// A read: the log seen, or `None` when the session was not live.
    Saw(Option<Vec<u32>>),
    /// A rotation that moved the session to this new record key.
    Rotated(String),
    /// A rotation that moved the session to this new record key, the store
    /// unable to say whether the old record ended (it lives on, without
    /// the rotation's change, if not).
    RotatedUncertain(String),
    /// The request died (its store operations failed from some point on):
    /// its client got no answer; applied at most once.
    Crashed,
    /// A flash taken: whether this request got it.
    Took(bool),
}

#[derive(Clone, Debug)]
struct Event {
    id: u32,
    op: Op,
    invoked: usize,
    returned: usize,
    outcome: Outcome,
}

#[derive(Default)]
struct History {
    clock: usize,
    events: Vec<Event>,
}

impl History {
    fn tick(history: &Arc<Mutex<History>>) -> usize {
        let mut h = history.lock().unwrap();
        h.clock += 1;
        h.clock
    }

    fn record(history: &Arc<Mutex<History>>, id: u32, op: Op, invoked: usize, outcome: Outcome) {
        let mut h = history.lock().unwrap();
        h.clock += 1;
        let returned = h.clock;
        h.events.push(Event {
            id,
            op,
            invoked,
            returned,
            outcome,
        });
    }
}

const LOG: &str = "log";

fn log_of(record: &SessionRecord) -> Vec<u32> {
    record
        .data
        .get(LOG)
        .map(|value| value.to().expect("the log is a list of ids"))
        .unwrap_or_default()
}

/// The change an update makes: append its id to the log (a
/// read-modify-write, so that applying it twice shows).
fn append(id: u32) -> impl Fn(&mut SessionRecord) {
    move |record| {
        let mut log = log_of(record);
        log.push(id);
        record.data.insert(
            LOG.into(),
            StoredValue::new(&log).expect("a list serialises"),
        );
    }
}

fn outcome_of(result: Result<(), UpdateError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Applied,
        Err(UpdateError::Unknown(_)) => Outcome::Maybe,
        Err(UpdateError::Store(_) | UpdateError::Gone | UpdateError::Contended) => {
            Outcome::NotApplied
        }
    }
}

// ---------------------------------------------------------------------------
// Requests.

/// What one request does to the session (identified by its cookie).
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Loads the session and appends its id to the log.
    Update,
    /// Loads the session and records the visit if due.
    Touch,
    /// Loads the session and reads the log.
    Read,
    /// Loads the session, gives it a new identifier, and appends its id.
    Cycle,
    /// Loads the session and deletes it.
    Destroy,
    /// Loads the session and appends ids `100 * id + k` for `k` in
    /// `0..n`, one update each (a busy tab).
    Burst(u32),
    /// Loads the session and takes its flash value, by compare-and-swap
    /// (as `Session::take_flash` does).
    TakeFlash,
}

/// Where a request runs: the store, its backend, and the history.
struct Context<'a> {
    world: &'a Arc<Mutex<World>>,
    behaviour: SwapBehaviour,
    history: &'a Arc<Mutex<History>>,
}

fn run_op(op: Op, id: u32, cookie: &SessionId, faults: Faults, now: i64, ctx: &Context<'_>) {
    let (world, behaviour, history) = (ctx.world, ctx.behaviour, ctx.history);
    let m = manager(world, behaviour, faults);
    let mut rng = rng(u64::from(id));
    let invoked = History::tick(history);
    let found = m.lookup(Some(cookie.clone()), now);
    let mut session = match found {
        Ok(Found::Live(session)) => session,
        Ok(_) => {
            let outcome = match op {
                Op::Read => Outcome::Saw(None),
                _ => Outcome::NotApplied,
            };
            return History::record(history, id, op, invoked, outcome);
        }
        Err(_) => return History::record(history, id, op, invoked, Outcome::NotApplied),
    };
    let outcome = match op {
        Op::Update => outcome_of(m.update(&mut session, &mut rng, now, append(id))),
        Op::Touch => match m.touch_if_due(&mut session, &mut rng, now) {
            Ok(_) => Outcome::NotApplied,
            Err(_) => Outcome::NotApplied,
        },
        Op::Read => Outcome::Saw(Some(log_of(session.record()))),
        Op::Cycle => match m.cycle(&mut session, &mut rng, now, "token".into(), append(id)) {
            Ok(true) => Outcome::Rotated(session.key().to_owned()),
            Ok(false) => Outcome::RotatedUncertain(session.key().to_owned()),
            Err(err) => outcome_of(Err(err)),
        },
        Op::Destroy => match m.delete(session) {
            Ok(()) => Outcome::Applied,
            Err(_) => Outcome::Maybe,
        },
        Op::TakeFlash => {
            let taken = Mutex::new(None);
            match m.update(&mut session, &mut rng, now, |record| {
                *taken.lock().unwrap() = record.flash.remove("notice");
            }) {
                Ok(()) => Outcome::Took(taken.into_inner().unwrap().is_some()),
                Err(UpdateError::Unknown(_)) => Outcome::Maybe,
                Err(_) => Outcome::NotApplied,
            }
        }
        Op::Burst(n) => {
            for k in 0..n {
                if m.update(&mut session, &mut rng, now, append(100 * id + k))
                    .is_err()
                {
                    break;
                }
            }
            // The burst's own ids are checked for duplicates only.
            Outcome::Maybe
        }
    };
    let outcome = if m.store().crashed() {
        Outcome::Crashed
    } else {
        outcome
    };
    History::record(history, id, op, invoked, outcome);
}

/// A scenario on one session: the requests (each one operation, with its
/// faults), on a backend.
#[derive(Clone, Debug)]
struct SessionScenario {
    behaviour: SwapBehaviour,
    requests: Vec<(Op, Faults)>,
    /// Writes landed on the record before the requests start (a busy
    /// session near the end of its window).
    prior_writes: u32,
}

impl SessionScenario {
    /// Runs the scenario once (under the current shuttle schedule) and
    /// checks its history.
    fn run(&self) {
        SCHEDULES.fetch_add(1, Ordering::Relaxed);
        let world = Arc::new(Mutex::new(World::default()));
        let history = Arc::new(Mutex::new(History::default()));
        let setup = manager(&world, self.behaviour, Faults::default());
        let mut setup_rng = rng(9_999);
        setup.maintain(&mut setup_rng, T0 - 10_000).unwrap();
        let session = setup
            .create_with(&mut setup_rng, T0, &Admission::ANYONE, |record| {
                append(0)(record);
                record
                    .flash
                    .insert("notice".into(), StoredValue::from("hello"));
            })
            .unwrap_or_else(|_| panic!("setup"));
        let cookie = session.id().clone();
        let first_key = session.key().to_owned();
        let mut live = session;
        for n in 0..self.prior_writes {
            setup
                .update(&mut live, &mut setup_rng, T0, |r| {
                    r.data.insert("pad".into(), StoredValue::from(i64::from(n)));
                })
                .unwrap();
        }
        let threads: Vec<_> = self
            .requests
            .iter()
            .enumerate()
            .map(|(n, &(op, faults))| {
                let (world, history, cookie) = (world.clone(), history.clone(), cookie.clone());
                let behaviour = self.behaviour;
                shuttle::thread::spawn(move || {
                    let id = n as u32 + 1;
                    let ctx = Context {
                        world: &world,
                        behaviour,
                        history: &history,
                    };
                    run_op(op, id, &cookie, faults, T0 + 1, &ctx);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        join_landers(&world);
        let history = history.lock().unwrap().events.clone();
        let world = world.lock().unwrap();
        check_history(self, &history, &world.map, &first_key);
    }
}

/// The linearizability check of a session's log (see the module docs).
fn check_history(
    scenario: &SessionScenario,
    events: &[Event],
    map: &BTreeMap<String, Vec<u8>>,
    first_key: &str,
) {
    let context = || format!("{scenario:?}\n{events:#?}");
    let record_at = |key: &str| {
        map.get(key)
            .and_then(|bytes| SessionRecord::decode(bytes).ok())
    };
    // Where the session lives now: a rotation that returned moved it.
    let rotated: Vec<(&String, bool)> = events
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Rotated(key) => Some((key, true)),
            Outcome::RotatedUncertain(key) => Some((key, false)),
            _ => None,
        })
        .collect();
    assert!(
        rotated.len() <= 1,
        "two rotations of one session both won: {}",
        context()
    );
    let final_key = rotated.first().map_or(first_key, |(k, _)| k.as_str());
    let final_record = record_at(final_key).filter(|r| !r.is_ended());
    let old = record_at(first_key);
    if let Some((_, true)) = rotated.first() {
        assert!(
            old.as_ref().is_none_or(SessionRecord::is_ended),
            "a rotation returned but the old record lives: {}",
            context()
        );
    }
    // What may have ended the session without the client learning where
    // it went: a destroy, or a rotation whose request died.
    let ended_by = |e: &Event| match e.op {
        Op::Destroy => e.outcome != Outcome::NotApplied,
        Op::Cycle => e.outcome == Outcome::Crashed,
        _ => false,
    };
    let may_be_gone = events.iter().any(ended_by);
    let final_log = final_record.as_ref().map(log_of);
    match &final_log {
        Some(log) => check_final_log(log, events, &context),
        None => assert!(
            may_be_gone,
            "the session is gone though nothing ended it: {}",
            context()
        ),
    }
    check_reads(events, final_log.as_deref(), &context);
    check_flash(events, &context);
}

/// A flash value is taken at most once, and exactly once when every taker
/// got an answer and none failed.
fn check_flash(events: &[Event], context: &dyn Fn() -> String) {
    let takers: Vec<&Event> = events.iter().filter(|e| e.op == Op::TakeFlash).collect();
    if takers.is_empty() {
        return;
    }
    let got = takers
        .iter()
        .filter(|e| e.outcome == Outcome::Took(true))
        .count();
    assert!(got <= 1, "the flash was shown {got} times: {}", context());
    let all_answered = takers.iter().all(|e| matches!(e.outcome, Outcome::Took(_)));
    let session_ended = events
        .iter()
        .any(|e| matches!(e.op, Op::Destroy | Op::Cycle));
    if all_answered && !session_ended {
        assert_eq!(got, 1, "nobody got the flash: {}", context());
    }
}

fn check_final_log(log: &[u32], events: &[Event], context: &dyn Fn() -> String) {
    let distinct: BTreeSet<u32> = log.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        log.len(),
        "an update applied twice: {log:?}\n{}",
        context()
    );
    assert_eq!(log.first(), Some(&0), "the creation's entry: {}", context());
    let position: HashMap<u32, usize> = log.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for event in events {
        let present = position.contains_key(&event.id);
        match &event.outcome {
            Outcome::Applied | Outcome::Rotated(_) | Outcome::RotatedUncertain(_)
                if is_write(event) =>
            {
                assert!(
                    present,
                    "acknowledged update {} is missing from {log:?}: {}",
                    event.id,
                    context()
                )
            }
            Outcome::NotApplied => assert!(
                !present,
                "refused update {} is in {log:?}: {}",
                event.id,
                context()
            ),
            _ => {}
        }
    }
    // Real-time order: what returned before another began comes first.
    for a in events.iter().filter(|e| position.contains_key(&e.id)) {
        for b in events.iter().filter(|e| position.contains_key(&e.id)) {
            if a.returned < b.invoked {
                assert!(
                    position[&a.id] < position[&b.id],
                    "{} returned before {} began, but comes after it in {log:?}: {}",
                    a.id,
                    b.id,
                    context()
                );
            }
        }
    }
}

/// Whether the event's operation writes the log (under its own id).
fn is_write(event: &Event) -> bool {
    matches!(event.op, Op::Update | Op::Cycle)
}

fn check_reads(events: &[Event], final_log: Option<&[u32]>, context: &dyn Fn() -> String) {
    let reads: Vec<(&Event, &Vec<u32>)> = events
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Saw(Some(log)) => Some((e, log)),
            _ => None,
        })
        .collect();
    for (read, seen) in &reads {
        if let Some(log) = final_log {
            assert!(
                log.starts_with(seen),
                "read {} saw {seen:?}, not a prefix of {log:?}: {}",
                read.id,
                context()
            );
        }
        for event in events {
            let acknowledged = matches!(
                event.outcome,
                Outcome::Applied | Outcome::Rotated(_) | Outcome::RotatedUncertain(_)
            ) && is_write(event);
            if acknowledged && event.returned < read.invoked && final_log.is_some() {
                assert!(
                    seen.contains(&event.id),
                    "read {} began after {} was acknowledged but missed it: {}",
                    read.id,
                    event.id,
                    context()
                );
            }
            if event.invoked > read.returned {
                assert!(
                    !seen.contains(&event.id),
                    "read {} saw {} which began after it: {}",
                    read.id,
                    event.id,
                    context()
                );
            }
        }
    }
    // A read that found no live session: something had ended it (or was
    // ending it) by then.
    for read in events.iter().filter(|e| e.outcome == Outcome::Saw(None)) {
        let ended_by = events
            .iter()
            .any(|e| matches!(e.op, Op::Destroy | Op::Cycle) && e.invoked < read.returned);
        assert!(ended_by, "read {} found no session: {}", read.id, context());
    }
    for (a, seen_a) in &reads {
        for (b, seen_b) in &reads {
            if a.returned < b.invoked {
                assert!(
                    seen_b.starts_with(seen_a),
                    "reads went backwards: {seen_a:?} then {seen_b:?}: {}",
                    context()
                );
            }
        }
    }
}

impl PartialEq for Op {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

// ---------------------------------------------------------------------------
// Runners.

fn exhaustive(scenario: SessionScenario) -> usize {
    let runner = Runner::new(DfsScheduler::new(None, false), Config::default());
    runner.run(move || scenario.run())
}

fn randomised<F: Fn() + Send + Sync + 'static>(name: &str, f: F) -> usize {
    let seed = seed();
    eprintln!("{name}: seed {seed} (SESSIONS_EXPLORE_SEED={seed} replays it)");
    let scheduler = PctScheduler::new_from_seed(seed, 3, iterations());
    Runner::new(scheduler, Config::default()).run(f)
}

fn report(name: &str, schedules: usize) {
    eprintln!("{name}: {schedules} schedules explored");
}

fn faults_none() -> Faults {
    Faults::default()
}

// ---------------------------------------------------------------------------
// Scenarios on one session.

/// Two concurrent updates and a read, every interleaving, on each backend.
#[test]
fn concurrent_updates_and_a_read_every_schedule() {
    for behaviour in BACKENDS {
        let scenario = SessionScenario {
            behaviour,
            requests: vec![
                (Op::Update, faults_none()),
                (Op::Update, faults_none()),
                (Op::Read, faults_none()),
            ],
            prior_writes: 0,
        };
        report("updates and a read", exhaustive(scenario));
    }
}

/// R1: a Redis swap that lands late, against a concurrent update, every
/// interleaving: never applied twice, never reported lost if it landed.
#[test]
fn a_late_landing_swap_is_never_applied_twice() {
    let late = Faults {
        late_swap: Some(0),
        ..Faults::default()
    };
    let scenario = SessionScenario {
        behaviour: SwapBehaviour::SpinRedis,
        requests: vec![(Op::Update, late), (Op::Update, faults_none())],
        prior_writes: 0,
    };
    report("late swap", exhaustive(scenario));
}

/// R1, the window: a swap's read-back comes late, behind a burst of more
/// writes than the record keeps ids of: the outcome is unknown, never
/// guessed (a guess of "lost" applies the update a second time).
#[test]
fn a_late_read_back_behind_a_full_window_is_unknown_never_guessed() {
    let late = Faults {
        late_read_back: Some((0, 200)),
        ..Faults::default()
    };
    let scenario = SessionScenario {
        behaviour: SwapBehaviour::SpinRedis,
        requests: vec![(Op::Update, late), (Op::Burst(34), faults_none())],
        prior_writes: 0,
    };
    let s = scenario.clone();
    report("full window", randomised("full window", move || s.run()));
}

/// R3: a store error after a swap was sent is reported as unknown, and the
/// update is applied at most once.
#[test]
fn an_error_after_a_swap_is_unknown() {
    for behaviour in BACKENDS {
        let error = Faults {
            error_after_swap: Some(0),
            ..Faults::default()
        };
        let scenario = SessionScenario {
            behaviour,
            requests: vec![
                (Op::Update, error),
                (Op::Update, faults_none()),
                (Op::Read, faults_none()),
            ],
            prior_writes: 0,
        };
        report("error after swap", exhaustive(scenario));
    }
}

/// R2: a rotation racing an update, a read and a touch: the session lives
/// on under the new identifier with every acknowledged update, every
/// schedule.
#[test]
fn a_rotation_racing_updates_never_loses_the_session() {
    for behaviour in BACKENDS {
        let scenario = SessionScenario {
            behaviour,
            requests: vec![(Op::Cycle, faults_none()), (Op::Update, faults_none())],
            prior_writes: 0,
        };
        report("rotation and update", exhaustive(scenario));
        let scenario = SessionScenario {
            behaviour,
            requests: vec![
                (Op::Cycle, faults_none()),
                (Op::Update, faults_none()),
                (Op::Read, faults_none()),
                (Op::Touch, faults_none()),
            ],
            prior_writes: 0,
        };
        let s = scenario.clone();
        report("rotation mix", randomised("rotation mix", move || s.run()));
    }
}

/// A flash taken by two requests at once, every schedule: exactly one
/// gets it; with an update racing, both land; three takers at once, on
/// randomised schedules (every schedule of three is too many for CI).
#[test]
fn a_flash_is_taken_exactly_once_every_schedule() {
    for behaviour in BACKENDS {
        for requests in [
            vec![
                (Op::TakeFlash, faults_none()),
                (Op::TakeFlash, faults_none()),
            ],
            vec![(Op::TakeFlash, faults_none()), (Op::Update, faults_none())],
        ] {
            let scenario = SessionScenario {
                behaviour,
                requests,
                prior_writes: 0,
            };
            report("flash", exhaustive(scenario));
        }
        let scenario = SessionScenario {
            behaviour,
            requests: vec![(Op::TakeFlash, faults_none()); 3],
            prior_writes: 0,
        };
        report(
            "three flash takers",
            randomised("flash", move || scenario.run()),
        );
    }
}

/// Two rotations at once: one wins, the other is refused; a destroy
/// racing a rotation: the session is gone, or lives on rotated.
#[test]
fn rotations_and_destroy_race() {
    for behaviour in BACKENDS {
        for requests in [
            vec![(Op::Cycle, faults_none()), (Op::Cycle, faults_none())],
            vec![(Op::Cycle, faults_none()), (Op::Destroy, faults_none())],
        ] {
            let scenario = SessionScenario {
                behaviour,
                requests,
                prior_writes: 0,
            };
            report("rotation races", exhaustive(scenario));
        }
    }
}

/// Crashes between any two operations of an update or a rotation, with a
/// concurrent update: nothing is applied twice or lost.
#[test]
fn crashes_between_steps() {
    for behaviour in BACKENDS {
        for op in [Op::Update, Op::Cycle] {
            for crash_at in 0..12 {
                let crash = Faults {
                    crash_at: Some(crash_at),
                    ..Faults::default()
                };
                let scenario = SessionScenario {
                    behaviour,
                    requests: vec![(op, crash), (Op::Update, faults_none())],
                    prior_writes: 0,
                };
                let s = scenario.clone();
                let runner = Runner::new(
                    PctScheduler::new_from_seed(seed(), 2, iterations() / 10 + 1),
                    Config::default(),
                );
                report("crash", runner.run(move || s.run()));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The index: creations at a small cap, evictions, sweeps and crashes.

/// What one request of an index scenario does.
#[derive(Clone, Copy, Debug)]
enum IndexOp {
    /// A new session from this client, at this time offset.
    Create(&'static str, i64),
    /// A pre-existing session (by number) is used at this time offset.
    Use(usize, i64),
    /// The sweep's share at this time offset.
    Sweep(i64),
}

#[derive(Clone, Debug)]
struct IndexScenario {
    behaviour: SwapBehaviour,
    cap: u64,
    protect_secs: u64,
    /// Sessions created before, at T0.
    existing: usize,
    requests: Vec<(IndexOp, Faults)>,
}

fn index_manager(
    world: &Arc<Mutex<World>>,
    scenario: &IndexScenario,
    faults: Faults,
) -> SessionManager<ExploreStore> {
    manager(world, scenario.behaviour, faults)
        .with_max_sessions(scenario.cap)
        .with_protection_window(scenario.protect_secs)
}

impl IndexScenario {
    /// Runs the scenario once and checks it, ending with a drain.
    fn run(&self) {
        self.run_checking(true);
    }

    /// Runs the scenario once and checks the index (and, with `drain`,
    /// that everything goes once expired: the costly part of a check).
    fn run_checking(&self, drain: bool) {
        SCHEDULES.fetch_add(1, Ordering::Relaxed);
        let world = Arc::new(Mutex::new(World::default()));
        let setup = index_manager(&world, self, Faults::default());
        let mut setup_rng = rng(9_999);
        setup.maintain(&mut setup_rng, T0 - 10_000).unwrap();
        let sessions: Vec<SessionId> = (0..self.existing)
            .map(|_| {
                setup
                    .create(&mut setup_rng, T0)
                    .unwrap_or_else(|_| panic!("setup"))
                    .id()
                    .clone()
            })
            .collect();
        let sessions = Arc::new(sessions);
        let evicting = Arc::new(AtomicUsize::new(0));
        // Sessions whose use (an update at a time within the protection
        // window of every creation here) was acknowledged.
        let used: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = self
            .requests
            .iter()
            .enumerate()
            .map(|(n, &(op, faults))| {
                let (world, scenario, sessions) = (world.clone(), self.clone(), sessions.clone());
                let (evicting, used) = (evicting.clone(), used.clone());
                shuttle::thread::spawn(move || {
                    let m = index_manager(&world, &scenario, faults);
                    let mut rng = rng(n as u64 + 1);
                    match op {
                        IndexOp::Create(client, at) => {
                            let admission = Admission {
                                client: Some(client),
                                per_minute: 100,
                                refuse_when_full: true,
                            };
                            match m.create_with(&mut rng, T0 + at, &admission, |_| {}) {
                                Ok(_) | Err(CreateError::Store(_)) => {
                                    evicting.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => {}
                            }
                        }
                        IndexOp::Use(which, at) => {
                            if let Ok(Found::Live(mut s)) =
                                m.lookup(Some(sessions[which].clone()), T0 + at)
                            {
                                if m.update(&mut s, &mut rng, T0 + at, |_| {}).is_ok() {
                                    used.lock().unwrap().push(s.key().to_owned());
                                }
                            }
                        }
                        IndexOp::Sweep(at) => {
                            let _ = m.maintain(&mut rng, T0 + at);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        join_landers(&world);
        let last = self
            .requests
            .iter()
            .map(|(op, _)| match op {
                IndexOp::Create(_, at) | IndexOp::Use(_, at) | IndexOp::Sweep(at) => *at,
            })
            .max()
            .unwrap_or(0);
        let creations = evicting.load(Ordering::Relaxed);
        // A session in use is never evicted (R6): the scenarios use it at the
        // time of the creations, within the protection window.
        for key in used.lock().unwrap().iter() {
            let record = world.lock().unwrap().map.get(key).cloned();
            let evicted = record
                .and_then(|b| SessionRecord::decode(&b).ok())
                .is_some_and(|r| matches!(r.ended.map(|e| e.why), Some(EndReason::Evicted(_))));
            assert!(!evicted, "a session in use was evicted: {self:?}");
        }
        self.check(&world, T0 + last, creations, drain);
    }

    /// The index invariants, then the end state after a drain.
    fn check(&self, world: &Arc<Mutex<World>>, now: i64, creations: usize, drain: bool) {
        let map = || world.lock().unwrap().map.clone();
        let context = || format!("{self:?}\n{:#?}", printable(&map()));
        let m = index_manager(world, self, Faults::default());
        let mut rng = rng(77_777);
        // One step carries out (or verifies) the last plan, whoever left it.
        settle(&m, &mut rng, now);
        check_index(&map(), &context);
        let evicted = map()
            .values()
            .filter_map(|v| SessionRecord::decode(v).ok())
            .filter(|r| {
                matches!(
                    r.ended.as_ref().map(|e| &e.why),
                    Some(EndReason::Evicted(_))
                )
            })
            .count();
        let required = (self.existing + creations).saturating_sub(self.cap as usize);
        assert!(
            evicted <= required + creations,
            "{evicted} evictions where {required} were needed by {creations} creations: {}",
            context()
        );
        if !drain {
            return;
        }
        // Everything expires; creations drive the sweep.
        for n in 0..400 {
            m.maintain(&mut rng, now + 1_000_000 + n).unwrap();
        }
        check_only_fixtures(&map(), &context);
    }
}

/// Runs a step that verifies the last plan (an eviction of nothing forces
/// a step even when nothing is due).
fn settle(m: &SessionManager<ExploreStore>, rng: &mut StdRng, now: i64) {
    let eviction = index::Eviction {
        most: 1,
        cap: Some(index::Cap {
            max_sessions: u64::MAX,
            new_tail: 0,
            evicted: 0,
        }),
        protect_secs: 0,
    };
    let mut id = 0u64;
    let _ = rng;
    index::step(m.store(), m.policy(), now, eviction, None, &mut || {
        id += 1;
        format!("settle-{id}")
    })
    .unwrap();
}

fn printable(map: &BTreeMap<String, Vec<u8>>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn counter_value(bytes: &[u8]) -> u64 {
    if bytes.len() == 8 && !bytes.iter().all(u8::is_ascii_digit) {
        return i64::from_le_bytes(bytes.try_into().unwrap()) as u64;
    }
    std::str::from_utf8(bytes).unwrap().parse().unwrap()
}

/// The index invariants, on a store whose last plan is carried out.
fn check_index(map: &BTreeMap<String, Vec<u8>>, context: &dyn Fn() -> String) {
    let cursor = Cursor::decode(&map[index::CURSOR_KEY]).expect("a cursor");
    let tail = map.get(index::NEW_TAIL_KEY).map_or(0, |b| counter_value(b));
    let count = index::count(&cursor, tail);
    // Entries ahead, by slot.
    let mut ahead_new = 0;
    let mut targets = BTreeSet::new();
    for slot in cursor.new.done + 1..=tail {
        match map
            .get(&index::new_entry_key(slot))
            .and_then(|b| SlotValue::decode(b))
        {
            Some(SlotValue::Entry(entry)) => {
                targets.insert(entry.target);
                ahead_new += 1;
            }
            _ => ahead_new += 1, // an empty slot still counts until passed
        }
    }
    let mut voids = 0;
    let mut pending = 0;
    for slot in cursor.moved_done + 1..=cursor.moved_tail {
        match map
            .get(&index::moved_entry_key(cursor.born, slot))
            .and_then(|b| SlotValue::decode(b))
        {
            Some(SlotValue::Entry(entry)) => {
                targets.insert(entry.target);
            }
            Some(SlotValue::Void(_)) => voids += 1,
            None => pending += 1,
        }
    }
    // Slots the current plan set aside for its victims are settled by the
    // next step; their sessions are still indexed through them.
    let plan = cursor.plan.clone().unwrap_or_default();
    assert_eq!(
        pending,
        plan.victims.len() as u64,
        "unwritten moved slots: {}",
        context()
    );
    for victim in &plan.victims {
        targets.insert(victim.key.clone());
    }
    assert_eq!(voids, cursor.voids, "voids miscounted: {}", context());
    assert_eq!(
        count,
        ahead_new + (cursor.moved_tail - cursor.moved_done) - voids,
        "the count is not the entries ahead: {}",
        context()
    );
    // Every live session is indexed; nothing is behind the cursor.
    for (key, value) in map {
        if key.starts_with("session/") {
            let live = SessionRecord::decode(value).is_ok_and(|r| !r.is_ended());
            if live {
                assert!(targets.contains(key), "{key} is not indexed: {}", context());
            }
        }
        if let Some(slot) = key
            .strip_prefix("index/new/")
            .and_then(|s| s.parse::<u64>().ok())
        {
            assert!(
                slot > cursor.new.done,
                "{key} is behind the cursor: {}",
                context()
            );
        }
        if let Some(rest) = key.strip_prefix(&format!("index/moved/{}/", cursor.born)) {
            let slot: u64 = rest.parse().unwrap();
            assert!(
                slot > cursor.moved_done,
                "{key} is behind the cursor: {}",
                context()
            );
        }
    }
}

/// Only the fixtures are left: the cursor, the queues' slot counters, the
/// signing key's keys; the count is zero.
fn check_only_fixtures(map: &BTreeMap<String, Vec<u8>>, context: &dyn Fn() -> String) {
    let fixtures = [
        index::CURSOR_KEY,
        index::NEW_TAIL_KEY,
        index::QUOTA_TAIL_KEY,
    ];
    for key in map.keys() {
        assert!(
            fixtures.contains(&key.as_str()) || key.starts_with("sessions/signing-key"),
            "{key} outlived the sweep: {}",
            context()
        );
    }
    let cursor = Cursor::decode(&map[index::CURSOR_KEY]).unwrap();
    let tail = map.get(index::NEW_TAIL_KEY).map_or(0, |b| counter_value(b));
    assert_eq!(index::count(&cursor, tail), 0, "{}", context());
}

fn index_scenarios(behaviour: SwapBehaviour) -> Vec<IndexScenario> {
    let none = Faults::default();
    vec![
        // R7: creations at the cap at once.
        IndexScenario {
            behaviour,
            cap: 2,
            protect_secs: 0,
            existing: 2,
            requests: vec![
                (IndexOp::Create("a", 100), none),
                (IndexOp::Create("b", 100), none),
                (IndexOp::Create("c", 100), none),
            ],
        },
        // R6: a session used while a creation at the cap evicts.
        IndexScenario {
            behaviour,
            cap: 1,
            protect_secs: 50,
            existing: 1,
            requests: vec![
                (IndexOp::Create("a", 100), none),
                (IndexOp::Use(0, 100), none),
            ],
        },
        // R4/R5: sweeps and creations at once, after the sessions expired.
        IndexScenario {
            behaviour,
            cap: 100,
            protect_secs: 0,
            existing: 3,
            requests: vec![
                (IndexOp::Sweep(2000), none),
                (IndexOp::Sweep(2000), none),
                (IndexOp::Create("a", 2000), none),
            ],
        },
    ]
}

/// R6, every schedule: a session used while a creation at the cap judges
/// it evictable is not evicted.
#[test]
fn a_session_used_while_judged_evictable_is_kept_every_schedule() {
    for behaviour in BACKENDS {
        let scenario = index_scenarios(behaviour).remove(1);
        let runner = Runner::new(DfsScheduler::new(None, false), Config::default());
        report(
            "eviction and use",
            runner.run(move || scenario.run_checking(false)),
        );
    }
}

/// The index scenarios, under randomised schedules.
#[test]
fn the_index_stays_exact_under_concurrency() {
    for behaviour in BACKENDS {
        for scenario in index_scenarios(behaviour) {
            let s = scenario.clone();
            report("index", randomised("index", move || s.run()));
        }
    }
}

/// Crashes at every point of a creation, an eviction and a sweep: the
/// count heals, and nothing is left behind.
#[test]
fn the_index_heals_after_crashes() {
    for behaviour in BACKENDS {
        for base in index_scenarios(behaviour) {
            for crash_at in 0..30 {
                let mut scenario = base.clone();
                scenario.requests[0].1.crash_at = Some(crash_at);
                let s = scenario.clone();
                let runner = Runner::new(
                    PctScheduler::new_from_seed(seed(), 2, iterations() / 30 + 1),
                    Config::default(),
                );
                report("index crash", runner.run(move || s.run()));
            }
        }
    }
}

/// Late swaps of the cursor's claims and of evictions (R4 on Redis).
#[test]
fn late_claims_and_evictions() {
    for late in 0..3 {
        for base in index_scenarios(SwapBehaviour::SpinRedis) {
            let mut scenario = base;
            scenario.requests[0].1.late_swap = Some(late);
            let s = scenario.clone();
            report("late claims", randomised("late claims", move || s.run()));
        }
    }
}

// ---------------------------------------------------------------------------
// R9: one signing key.

#[test]
fn one_signing_key_whatever_the_schedule() {
    for behaviour in BACKENDS {
        for crash_first in [None, Some(2), Some(3), Some(4), Some(5)] {
            let schedules = Runner::new(DfsScheduler::new(Some(20_000), false), Config::default())
                .run(move || {
                    SCHEDULES.fetch_add(1, Ordering::Relaxed);
                    let world = Arc::new(Mutex::new(World::default()));
                    let keys = Arc::new(Mutex::new(Vec::new()));
                    let threads: Vec<_> = (0..2)
                        .map(|n| {
                            let (world, keys) = (world.clone(), keys.clone());
                            shuttle::thread::spawn(move || {
                                let faults = Faults {
                                    crash_at: if n == 0 { crash_first } else { None },
                                    ..Faults::default()
                                };
                                let m = manager(&world, behaviour, faults);
                                if let Ok(key) = m.signing_key(&mut rng(n)) {
                                    keys.lock().unwrap().push(key.clone());
                                }
                            })
                        })
                        .collect();
                    for t in threads {
                        t.join().unwrap();
                    }
                    // A request after all of them reads the one key.
                    let m = manager(&world, behaviour, Faults::default());
                    let stored = m.signing_key(&mut rng(5)).unwrap().clone();
                    for key in keys.lock().unwrap().iter() {
                        assert_eq!(key, &stored, "two signing keys");
                    }
                });
            report("signing key", schedules);
        }
    }
}

/// The figure for the closing note: schedules this binary explored (the
/// tests of one binary run in one process; this one runs last by name).
#[test]
fn zz_schedules_explored() {
    eprintln!(
        "schedules explored so far in this process: {}",
        SCHEDULES.load(Ordering::Relaxed)
    );
}
