//! The expiry index's arithmetic (`spin_sessions_core::index`) and
//! `ExpiryPolicy`'s over arbitrary times and timeouts, the whole i64 / u64
//! range included (a corrupted record can hold any timestamp, a setting any
//! timeout). Built with overflow checks, so an overflow is a crash.
//! Properties:
//! - no panic, no overflow;
//! - `bucket_of(t) * BUCKET_SECS <= t < bucket_end(bucket_of(t))` wherever
//!   those bounds are representable; otherwise `bucket_end` saturates to
//!   `i64::MAX`; both functions are monotonic;
//! - `entry_key` / `slot_counter_key` spell `expiry/<bucket>/<slot|count>`
//!   and read back to the same numbers;
//! - `expires_at` is `min(last_seen + idle, created + absolute)` with
//!   saturation (a timeout counting at most `i64::MAX` s), so never after
//!   either bound; `is_expired` agrees with it;
//!   a new session's expiry is that of a fresh record; the touch granularity
//!   is between 1 second and the idle timeout.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use spin_sessions_core::index::{
    bucket_end, bucket_of, entry_key, slot_counter_key, Cursor, BUCKET_SECS,
};
use spin_sessions_core::{ExpiryPolicy, SessionRecord};

#[derive(Debug, Arbitrary)]
struct Input {
    t: i64,
    u: i64,
    bucket: i64,
    slot: i64,
    idle_timeout_secs: u64,
    absolute_timeout_secs: u64,
    created_at: i64,
    last_seen_at: i64,
    now: i64,
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
    buckets(&input);
    keys(&input);
    expiry(&input);
});

fn buckets(input: &Input) {
    let (t, u) = (input.t, input.u);
    let b = bucket_of(t);
    let secs = i128::from(BUCKET_SECS);
    // In i128 everything is representable: the exact floor division.
    let start = i128::from(b) * secs;
    let exact_end = (i128::from(b) + 1) * secs;
    assert!(
        start <= i128::from(t) && i128::from(t) < exact_end,
        "t={t} b={b}"
    );
    if let Some(start) = b.checked_mul(BUCKET_SECS) {
        assert!(start <= t);
    }
    let end = bucket_end(b);
    match i64::try_from(exact_end) {
        Ok(exact_end) => {
            assert_eq!(end, exact_end);
            assert!(t < end);
            assert!(
                !Cursor::start(t).is_due(t),
                "a new cursor is due at once: t={t}"
            );
            assert!(Cursor::start(t).is_due(end));
            assert_eq!(bucket_of(end), b + 1);
        }
        Err(_) => assert_eq!(end, i64::MAX, "bucket_end({b}) does not saturate"),
    }
    // Monotonic.
    let (lo, hi) = if t <= u { (t, u) } else { (u, t) };
    assert!(bucket_of(lo) <= bucket_of(hi));
    let (bl, bh) = if input.bucket <= b {
        (input.bucket, b)
    } else {
        (b, input.bucket)
    };
    assert!(bucket_end(bl) <= bucket_end(bh));
    // bucket_end of any bucket, even ones no time maps to.
    let any_end = bucket_end(input.bucket);
    let exact = (i128::from(input.bucket) + 1) * secs;
    assert_eq!(
        i128::from(any_end),
        exact.clamp(i128::from(i64::MIN), i128::from(i64::MAX))
    );
}

fn keys(input: &Input) {
    let (bucket, slot) = (input.bucket, input.slot);
    let entry = entry_key(bucket, slot);
    let counter = slot_counter_key(bucket);
    assert_ne!(entry, counter);
    let parts: Vec<&str> = entry.split('/').collect();
    assert_eq!(parts.len(), 3, "{entry}");
    assert_eq!(parts[0], "expiry");
    assert_eq!(parts[1].parse::<i64>(), Ok(bucket));
    assert_eq!(parts[2].parse::<i64>(), Ok(slot));
    assert_eq!(counter, format!("expiry/{bucket}/count"));
    assert!(counter.starts_with(&format!("{}/", parts[..2].join("/"))));
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
