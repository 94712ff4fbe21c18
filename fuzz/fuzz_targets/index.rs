//! The expiry index's arithmetic (`spin_sessions_core::index`) and
//! `ExpiryPolicy`'s over arbitrary times, counters and timeouts, the whole
//! i64 / u64 range included (a corrupted record or cursor can hold any
//! number, a setting any timeout). Built with overflow checks, so an
//! overflow is a crash. Properties:
//! - no panic, no overflow;
//! - the count of sessions ahead of a cursor never exceeds what its queues
//!   hold, and a cursor decodes back to itself;
//! - a cursor is settled exactly twice the in-flight bound after its birth
//!   (saturating), and never due before it is settled;
//! - the queue keys spell `index/new/<slot>`, `index/moved/<epoch>/<slot>`
//!   and `index/quota/<slot>` and read back to the same numbers; a quota
//!   key's end is the end of its minute;
//! - `expires_at` is `min(last_seen + idle, created + absolute)` with
//!   saturation (a timeout counting at most `i64::MAX` s), so never after
//!   either bound; `is_expired` agrees with it;
//!   a new session's expiry is that of a fresh record; the touch granularity
//!   is between 1 second and the idle timeout.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use spin_sessions_core::index::{
    count, moved_entry_key, new_entry_key, quota_end, quota_entry_key, quota_key, Cursor,
    IN_FLIGHT_SECS,
};
use spin_sessions_core::{ExpiryPolicy, SessionRecord};

#[derive(Debug, Arbitrary)]
struct Input {
    born: i64,
    now: i64,
    slot: u64,
    new_done: u64,
    new_tail: u64,
    moved_done: u64,
    moved_tail: u64,
    voids: u64,
    idle_timeout_secs: u64,
    absolute_timeout_secs: u64,
    created_at: i64,
    last_seen_at: i64,
}

/// `a + b` in i64, saturating, computed without i64 arithmetic. A timeout
/// counts at most `i64::MAX` seconds (`ExpiryPolicy` clamps it first), so
/// with a negative `a` and a timeout beyond that the end is `a + i64::MAX`,
/// not `i64::MAX`: a difference of no consequence, but exact equality below
/// needs it.
fn sat_add(a: i64, b: u64) -> i64 {
    let b = b.min(i64::MAX as u64);
    (i128::from(a) + i128::from(b)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fuzz_target!(|input: Input| {
    cursor(&input);
    keys(&input);
    expiry(&input);
});

fn cursor(input: &Input) {
    let mut cursor = Cursor::genesis(input.born, input.new_done, 0);
    cursor.moved_done = input.moved_done;
    cursor.moved_tail = input.moved_tail;
    cursor.voids = input.voids;
    let n = count(&cursor, input.new_tail);
    let held = u128::from(input.new_tail.saturating_sub(input.new_done))
        + u128::from(input.moved_tail.saturating_sub(input.moved_done));
    assert!(u128::from(n) <= held, "{n} > {held}");
    assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor.clone()));
    let settles = i128::from(input.born) + 2 * i128::from(IN_FLIGHT_SECS);
    assert_eq!(
        cursor.is_settled(input.now),
        i128::from(input.now) >= settles.min(i128::from(i64::MAX)),
        "born={} now={}",
        input.born,
        input.now
    );
    if !cursor.is_settled(input.now) {
        assert!(!cursor.is_due(input.now));
    }
}

fn keys(input: &Input) {
    let slot = input.slot;
    let new = new_entry_key(slot);
    assert_eq!(new.strip_prefix("index/new/").map(str::parse), Some(Ok(slot)));
    let quota = quota_entry_key(slot);
    assert_eq!(quota.strip_prefix("index/quota/").map(str::parse), Some(Ok(slot)));
    let moved = moved_entry_key(input.born, slot);
    let parts: Vec<&str> = moved.split('/').collect();
    assert_eq!(parts.len(), 4, "{moved}");
    assert_eq!((parts[0], parts[1]), ("index", "moved"));
    assert_eq!(parts[2].parse::<i64>(), Ok(input.born));
    assert_eq!(parts[3].parse::<u64>(), Ok(slot));
    let counter = quota_key(input.now, "client");
    let minute = input.now.div_euclid(60);
    match minute.checked_add(1).and_then(|m| m.checked_mul(60)) {
        Some(end) => {
            assert_eq!(quota_end(&counter), Some(end));
            assert!(input.now < end);
        }
        None => assert_eq!(quota_end(&counter), None),
    }
}

fn expiry(input: &Input) {
    let policy = ExpiryPolicy {
        idle_timeout_secs: input.idle_timeout_secs,
        absolute_timeout_secs: input.absolute_timeout_secs,
    };
    let mut record = SessionRecord::new(input.created_at, String::new());
    record.last_seen_at = input.last_seen_at;

    let expires_at = policy.expires_at(&record);
    let idle_end = sat_add(record.last_seen_at, policy.idle_timeout_secs);
    let absolute_end = sat_add(record.created_at, policy.absolute_timeout_secs);
    assert!(
        i128::from(expires_at)
            <= i128::from(record.created_at) + i128::from(policy.absolute_timeout_secs)
    );
    assert!(
        i128::from(expires_at)
            <= i128::from(record.last_seen_at) + i128::from(policy.idle_timeout_secs)
    );
    assert_eq!(expires_at, idle_end.min(absolute_end));
    assert_eq!(
        policy.is_expired(&record, input.now),
        input.now >= expires_at
    );

    let fresh = SessionRecord::new(input.now, String::new());
    let new_expiry = policy.expiry_of_new_session(input.now);
    assert_eq!(new_expiry, policy.expires_at(&fresh));
    assert!(new_expiry >= input.now);

    let granularity = policy.touch_granularity_secs();
    assert!(granularity >= 1);
    assert!(granularity <= policy.idle_timeout_secs.max(1));
    let lag = i128::from(input.now) - i128::from(record.last_seen_at);
    assert_eq!(
        policy.needs_touch(&record, input.now),
        lag >= i128::from(granularity).min(i128::from(i64::MAX)),
        "needs_touch: now={} last_seen={} granularity={granularity}",
        input.now,
        record.last_seen_at
    );
}
