//! What the tests expect of the component's store protocol: key-value
//! operations per request (as the host counts them: one guest call is one
//! operation, a batch is one), and the numbers of the expiry index. They
//! are the figures of ARCHITECTURE.md's "Key-value operations per request";
//! when the protocol changes, they change here and nowhere else.

use host::RequestStats;

/// Key-value operations of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ops {
    pub reads: u64,
    pub writes: u64,
}

/// A page GET of a live session, no touch due: one batch read (the sweep
/// cursor and the record), no write.
pub const LIVE_GET: Ops = Ops {
    reads: 1,
    writes: 0,
};

/// A form POST to a live session, no race: the batch, then the record's
/// compare-and-swap base; one swap.
pub const LIVE_POST: Ops = Ops {
    reads: 2,
    writes: 1,
};

/// Most a request of a live session costs: a sweep step, the record, maybe
/// a touch.
pub const LIVE_MAX: Ops = Ops {
    reads: 5,
    writes: 6,
};

/// Most any request costs, a creation that evicts included (two more
/// sweep steps).
pub const ANY_MAX: Ops = Ops {
    reads: 10,
    writes: 19,
};

/// The expiry index's cursor: the only key a store may hold after requests
/// that create no session (the first session request of a store writes it).
pub const CURSOR_KEY: &str = "expiry/cursor";

/// Entries one sweep step examines (`session_core::index::SWEEP_BATCH`).
pub const SWEEP_BATCH: usize = 16;

/// Most keys a store holds besides one live session's record: its index
/// entry and the bookkeeping (cursor, counters).
pub const KEYS_WITH_ONE_SESSION_MAX: usize = 6;

/// The record's write counter right after its creation; every applied
/// update (a form POST, a touch) adds one.
pub const WRITES_AT_CREATION: u64 = 0;

/// The request cost exactly `expected`.
pub fn expect_ops(stats: &RequestStats, expected: Ops, what: &str) {
    assert_eq!(
        Ops {
            reads: stats.kv_reads,
            writes: stats.kv_writes
        },
        expected,
        "{what}: {stats:?}"
    );
}

/// The request cost at most `bound`, reads and writes each.
pub fn expect_ops_within(stats: &RequestStats, bound: Ops) {
    assert!(
        stats.kv_reads <= bound.reads && stats.kv_writes <= bound.writes,
        "{stats:?} over {bound:?}"
    );
}
