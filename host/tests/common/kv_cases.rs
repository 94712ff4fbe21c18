//! End-to-end key-value cases that hold on every store backend: each runs
//! against the probe app of a host already started, whose default store is
//! SQLite (`e2e_probe.rs`) or Redis (`redis_probe.rs`).

use std::net::SocketAddr;

use super::{get, send};

/// fermyon:spin/key-value: set, get, delete of a binary value; deleting an
/// absent key is fine.
pub async fn set_get_delete_round_trip(addr: SocketAddr) {
    let put = send(addr, "PUT", "/kv/default/k", b"\x00\x01bin").await;
    assert_eq!(put.status, 204, "{}", put.text());
    let reply = get(addr, "/kv/default/k").await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"\x00\x01bin"[..])
    );
    assert_eq!(send(addr, "DELETE", "/kv/default/k", b"").await.status, 204);
    assert_eq!(get(addr, "/kv/default/k").await.status, 404);
    // Deleting an absent key is fine.
    assert_eq!(send(addr, "DELETE", "/kv/default/k", b"").await.status, 204);
}

/// wasi:keyvalue atomics: a counter counts from zero and is stored as
/// `minus_two` when it reaches -2 (each backend has its own encoding);
/// incrementing a value that is not a counter answers `not_a_counter`
/// (Redis: an `other` error, 503; SQLite: Spin's host panics, so the guest
/// traps, 500).
pub async fn increment_counts_from_zero(addr: SocketAddr, minus_two: &[u8], not_a_counter: u16) {
    let reply = send(addr, "POST", "/incr/hits?delta=5", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "5"));
    let reply = send(addr, "POST", "/incr/hits?delta=-7", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "-2"));
    let raw = get(addr, "/kv/default/hits").await;
    assert_eq!(raw.body, minus_two);
    assert_eq!(
        send(addr, "PUT", "/kv/default/word", b"abc").await.status,
        204
    );
    let reply = send(addr, "POST", "/incr/word?delta=1", b"").await;
    assert_eq!(reply.status, not_a_counter, "{}", reply.text());
    // The host goes on serving, and the value is untouched.
    assert_eq!(get(addr, "/kv/default/word").await.text(), "abc");
}
