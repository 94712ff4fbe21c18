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
/// incrementing a value that is not a counter is an error, not a trap.
pub async fn increment_counts_from_zero(addr: SocketAddr, minus_two: &[u8]) {
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
    assert_eq!(reply.status, 503, "{}", reply.text());
}

/// A cas race between two requests, on a fresh and on an existing key:
/// exactly one wins, and its value is stored.
pub async fn a_cas_race_has_exactly_one_winner(addr: SocketAddr) {
    for (round, key) in ["fresh", "existing"].into_iter().enumerate() {
        if round == 1 {
            assert_eq!(
                send(addr, "PUT", "/kv/default/existing", b"start")
                    .await
                    .status,
                204
            );
        }
        let path = format!("/cas/{key}?delay_ms=300");
        let (a, b) = tokio::join!(
            send(addr, "POST", &path, b"alpha"),
            send(addr, "POST", &path, b"beta")
        );
        let mut outcomes = [(a.status, a.text()), (b.status, b.text())];
        outcomes.sort();
        assert_eq!(
            outcomes,
            [(200, "won".to_string()), (409, "lost".to_string())],
            "key {key}"
        );
        let winner = if a.status == 200 { "alpha" } else { "beta" };
        let stored = get(addr, &format!("/kv/default/{key}")).await;
        assert_eq!(
            (stored.status, stored.text().as_str()),
            (200, winner),
            "key {key}"
        );
    }
}
