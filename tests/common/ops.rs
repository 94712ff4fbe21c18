//! What the tests expect of the component's store protocol: key-value
//! operations per request, as the host counts them (one guest call is one
//! operation; `connections` are the new store connections the request
//! caused: Spin's Redis store opens one per compare-and-swap handle), and
//! the numbers of the expiry index. They are the figures of
//! ARCHITECTURE.md's "Key-value operations per request"; when the protocol
//! changes, they change here and nowhere else.

use host::RequestStats;

use super::Backend;

/// Key-value operations of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ops {
    pub reads: u64,
    pub writes: u64,
    pub connections: u64,
}

/// A page GET of a live session, no touch due: one `get` of the record, on
/// either store.
pub const LIVE_GET: Ops = Ops {
    reads: 1,
    writes: 0,
    connections: 0,
};

/// A page view without a cookie: one read (the store's signing key, for the
/// form token of a pending identifier), no write.
pub const ANONYMOUS_GET: Ops = Ops {
    reads: 1,
    writes: 0,
    connections: 0,
};

/// The first form post of a visitor with a pending identifier: the signing
/// key, the sweep cursor and the client's quota counter are read; the
/// quota counter, the new queue's slot counter (read by an increment of
/// 0, for the cap), an index slot and one batch (the index entry and the
/// record) are written. The client's first creation of a minute also
/// writes its quota counter's index entry first (a slot and the entry).
/// No compare-and-swap, so no connection on Redis either.
pub fn first_post(_backend: Backend, first_of_its_minute: bool) -> Ops {
    Ops {
        reads: 3,
        writes: if first_of_its_minute { 6 } else { 4 },
        connections: 0,
    }
}

/// A form POST to a live session, no race: the record, the
/// compare-and-swap base, one swap; on Redis, whose swap always reports
/// `cas-failed`, the read that confirms it, and a connection for each of
/// the two handles.
pub fn live_post(backend: Backend) -> Ops {
    match backend {
        Backend::Sqlite => Ops {
            reads: 2,
            writes: 1,
            connections: 0,
        },
        Backend::Redis => Ops {
            reads: 3,
            writes: 1,
            connections: 2,
        },
    }
}

/// Most any request costs (once the store has its signing key): a lookup
/// (or the signing key), the cursor, a due sweep step and two eviction
/// steps (each at most 43 reads, 11 writes and 10 connections, with the
/// last step's plan to finish: ARCHITECTURE.md), and the creation's own
/// (the quota counter's read, entry and increment, the slot counter read,
/// a slot, the batch).
pub const ANY_MAX: Ops = Ops {
    reads: 134,
    writes: 39,
    connections: 30,
};

/// The expiry index's cursor: the only key a store may hold after requests
/// that create no session (the first creation in a store writes it).
pub const CURSOR_KEY: &str = "index/cursor";

/// Entries one sweep step examines (`spin_sessions_core::index::STEP_ENTRIES`).
pub const SWEEP_BATCH: usize = 8;

/// Most keys a store holds besides its live sessions' records and their
/// index entries: the bookkeeping (the cursor, the queues' slot counters,
/// the signing key with its winning candidate and the two counters that
/// chose it, and a few clients' quota counters with their entries).
pub const BOOKKEEPING_KEYS_MAX: usize = 13;

/// The record's write counter right after its creation; every applied
/// update (a form POST, a touch) adds one.
pub const WRITES_AT_CREATION: u64 = 0;

fn ops_of(stats: &RequestStats) -> Ops {
    Ops {
        reads: stats.kv_reads,
        writes: stats.kv_writes,
        connections: stats.kv_connections,
    }
}

/// The request cost exactly `expected`.
pub fn expect_ops(stats: &RequestStats, expected: Ops, what: &str) {
    assert_eq!(ops_of(stats), expected, "{what}: {stats:?}");
}

/// The request cost at most `bound`: reads, writes and connections each.
pub fn expect_ops_within(stats: &RequestStats, bound: Ops) {
    let ops = ops_of(stats);
    assert!(
        ops.reads <= bound.reads
            && ops.writes <= bound.writes
            && ops.connections <= bound.connections,
        "{stats:?} over {bound:?}"
    );
}
