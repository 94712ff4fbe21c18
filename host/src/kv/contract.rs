//! The behaviour every [`KvBackend`] owes the guest interfaces, written once
//! and run on each backend by thin tests in `sqlite.rs` and `redis.rs`.
//!
//! Each function takes a fresh, empty store (or several handles onto the same
//! fresh store, for the concurrent cases) and asserts one behaviour. Where
//! Spin's two stores behave differently (compare-and-swap outcomes, counter
//! encodings) the difference is a parameter, so each backend is held to what
//! Spin's store of that type does; what only one backend has (SQLite's file
//! layout, Redis's get-many and outages) stays in that backend's own tests.

use std::future::Future;
use std::sync::Arc;

use super::{CasHandle, KvBackend, SwapError};

/// get, set, delete, exists and keys, and values kept as exact bytes.
pub(crate) async fn set_get_delete_exists_keys(s: &dyn KvBackend) {
    assert_eq!(s.get("a").await.unwrap(), None);
    assert!(!s.exists("a").await.unwrap());
    s.set("a", b"1").await.unwrap();
    s.set("b", b"2").await.unwrap();
    s.set("a", b"one").await.unwrap();
    assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(s.exists("a").await.unwrap());
    let mut keys = s.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    s.delete("a").await.unwrap();
    s.delete("a").await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), None);
    assert_eq!(s.keys().await.unwrap(), ["b"]);
    // Values are bytes, kept exactly: empty, not UTF-8, NUL inside.
    s.set("bin", &[0, 255, 0, 10]).await.unwrap();
    assert_eq!(s.get("bin").await.unwrap(), Some(vec![0, 255, 0, 10]));
    s.set("empty", b"").await.unwrap();
    assert_eq!(s.get("empty").await.unwrap(), Some(Vec::new()));
    assert!(s.exists("empty").await.unwrap());
}

/// How Spin's store of one type answers compare-and-swap.
pub(crate) struct CasRules {
    /// Whether a swap that wrote reports `Ok` (SQLite) or `cas-failed`
    /// (Redis, whose swap always ends in a refused `UNWATCH key`).
    pub write_reports_ok: bool,
    /// Whether a handle that saw the key absent overwrites a value created
    /// since (SQLite's upsert) or is refused (Redis's `WATCH`).
    pub absent_overwrites: bool,
    /// New connections per handle (SQLite 0, Redis 1).
    pub connections_per_handle: u64,
}

/// A new handle on `key`, checking the connections it reports.
async fn handle(s: &dyn KvBackend, key: &str, rules: &CasRules) -> Arc<dyn CasHandle> {
    let made = s.new_cas(key).await.unwrap();
    assert_eq!(made.connections, rules.connections_per_handle);
    made.value
}

/// The outcome of one swap as written or refused, asserting the reported
/// result matches `rules` for a swap that wrote.
async fn swap(h: &dyn CasHandle, value: &[u8], wrote: bool, rules: &CasRules) {
    let result = h.swap(value.to_vec()).await;
    match result {
        Ok(()) => assert!(wrote && rules.write_reports_ok, "swap reported Ok"),
        Err(SwapError::CasFailed(_)) => {
            assert!(
                !wrote || !rules.write_reports_ok,
                "swap reported cas-failed"
            )
        }
        Err(SwapError::Store(e)) => panic!("swap failed: {e}"),
    }
}

/// `current` then `swap`, with the key unchanged, changed or deleted in
/// between; and a swap with no `current` at all.
pub(crate) async fn compare_and_swap_on_an_existing_value(s: &dyn KvBackend, rules: &CasRules) {
    s.set("k", b"v1").await.unwrap();
    // Seen v1, still v1: written.
    let h = handle(s, "k", rules).await;
    assert_eq!(h.current().await.unwrap().as_deref(), Some(&b"v1"[..]));
    swap(&*h, b"v2", true, rules).await;
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    // Seen v2, then changed: refused, nothing written.
    let h = handle(s, "k", rules).await;
    assert_eq!(h.current().await.unwrap().as_deref(), Some(&b"v2"[..]));
    s.set("k", b"other").await.unwrap();
    swap(&*h, b"v3", false, rules).await;
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"other"[..]));
    // Seen, then deleted: refused, nothing recreated.
    let h = handle(s, "k", rules).await;
    h.current().await.unwrap();
    s.delete("k").await.unwrap();
    swap(&*h, b"v4", false, rules).await;
    assert_eq!(s.get("k").await.unwrap(), None);
    // Binary values, byte-exact.
    s.set("k", &[0, 1, 255]).await.unwrap();
    let h = handle(s, "k", rules).await;
    assert_eq!(h.current().await.unwrap(), Some(vec![0, 1, 255]));
    swap(&*h, &[9, 0], true, rules).await;
    assert_eq!(s.get("k").await.unwrap(), Some(vec![9, 0]));
    // No `current` at all: both of Spin's stores write unconditionally
    // (SQLite upserts, Redis runs MULTI/SET/EXEC with nothing watched).
    let h = handle(s, "k", rules).await;
    swap(&*h, b"blind", true, rules).await;
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"blind"[..]));
}

/// A handle that saw the key absent, and a creation in between.
pub(crate) async fn compare_and_swap_on_an_absent_key(s: &dyn KvBackend, rules: &CasRules) {
    // Seen absent, still absent: created.
    let h = handle(s, "new", rules).await;
    assert_eq!(h.current().await.unwrap(), None);
    swap(&*h, b"first", true, rules).await;
    assert_eq!(s.get("new").await.unwrap().as_deref(), Some(&b"first"[..]));
    // Seen absent, created since.
    let h = handle(s, "late", rules).await;
    assert_eq!(h.current().await.unwrap(), None);
    s.set("late", b"theirs").await.unwrap();
    swap(&*h, b"mine", rules.absent_overwrites, rules).await;
    let expected: &[u8] = if rules.absent_overwrites {
        b"mine"
    } else {
        b"theirs"
    };
    assert_eq!(s.get("late").await.unwrap().as_deref(), Some(expected));
}

/// Runs `tasks` copies of `work` at once, task `i` on handle
/// `i % handles.len()`, and returns their results in task order.
async fn run_concurrently<T, F, Fut>(
    handles: &[Arc<dyn KvBackend>],
    tasks: usize,
    work: F,
) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Arc<dyn KvBackend>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let running: Vec<_> = (0..tasks)
        .map(|i| tokio::spawn(work(i, handles[i % handles.len()].clone())))
        .collect();
    let mut results = Vec::with_capacity(tasks);
    for task in running {
        results.push(task.await.unwrap());
    }
    results
}

/// Many handles that all read the same present value, then all swap:
/// exactly one write lands (the value is one of theirs, and every other
/// swap was refused), whatever each backend reports for it.
pub(crate) async fn concurrent_swaps_on_a_present_key_write_once(
    handles: &[Arc<dyn KvBackend>],
    rules: &CasRules,
) {
    handles[0].set("k", b"0").await.unwrap();
    let readers: Vec<Arc<dyn CasHandle>> = {
        let mut readers = Vec::new();
        for i in 0..8 {
            let h = handle(&*handles[i % handles.len()], "k", rules).await;
            assert_eq!(h.current().await.unwrap().as_deref(), Some(&b"0"[..]));
            readers.push(h);
        }
        readers
    };
    let outcomes: Vec<_> = {
        let running: Vec<_> = readers
            .into_iter()
            .enumerate()
            .map(|(i, h)| tokio::spawn(async move { h.swap(format!("v{i}").into_bytes()).await }))
            .collect();
        let mut outcomes = Vec::new();
        for task in running {
            outcomes.push(task.await.unwrap());
        }
        outcomes
    };
    let oks = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(oks, usize::from(rules.write_reports_ok));
    let stored = handles[0].get("k").await.unwrap().unwrap();
    assert!(stored.starts_with(b"v"), "{stored:?}");
}

/// `increment` counts from 0 and keeps its counter in the backend's own
/// encoding (`encode`: each backend reads back only its own).
pub(crate) async fn increment_counts(s: &dyn KvBackend, encode: fn(i64) -> Vec<u8>) {
    assert_eq!(s.increment("n", 1).await.unwrap(), 1);
    assert_eq!(s.increment("n", 1).await.unwrap(), 2);
    assert_eq!(s.increment("n", -9).await.unwrap(), -7);
    assert_eq!(s.get("n").await.unwrap(), Some(encode(-7)));
    // A delta of 0 reads the counter.
    assert_eq!(s.increment("n", 0).await.unwrap(), -7);
    // A counter written in the backend's encoding is a counter.
    s.set("preset", &encode(41)).await.unwrap();
    assert_eq!(s.increment("preset", 1).await.unwrap(), 42);
}

/// Concurrent increments spread over `handles` hand out every value once.
pub(crate) async fn concurrent_increments_hand_out_distinct_values(handles: &[Arc<dyn KvBackend>]) {
    let per_task = run_concurrently(handles, 4, |_, s| async move {
        let mut got = Vec::new();
        for _ in 0..50 {
            got.push(s.increment("slots", 1).await.unwrap());
        }
        got
    })
    .await;
    let mut all: Vec<i64> = per_task.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<i64>>());
}

/// set-many and delete-many (absent keys are skipped).
pub(crate) async fn set_many_and_delete_many(s: &dyn KvBackend) {
    s.set_many(vec![
        ("a".into(), b"1".to_vec()),
        ("b".into(), b"2".to_vec()),
        ("c".into(), b"3".to_vec()),
    ])
    .await
    .unwrap();
    assert_eq!(s.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
    s.delete_many(vec!["a".into(), "missing".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(s.keys().await.unwrap(), ["b"]);
}

/// Spin's result limit on `get` and `cas.current`, on a store built with
/// a `limit` of a few hundred bytes: a value of `limit - 24` bytes (24 =
/// `size_of::<Option<Vec<u8>>>()`) passes, one byte more is refused.
pub(crate) async fn results_over_the_limit_are_refused(
    s: &dyn KvBackend,
    limit: usize,
    rules: &CasRules,
) {
    let fits = vec![b'x'; limit - std::mem::size_of::<Option<Vec<u8>>>()];
    let mut over = fits.clone();
    over.push(b'x');
    s.set("fits", &fits).await.unwrap();
    s.set("over", &over).await.unwrap();
    let message = format!("query result exceeds limit of {limit} bytes");
    assert_eq!(s.get("fits").await.unwrap(), Some(fits.clone()));
    assert_eq!(s.get("over").await.unwrap_err().message(), message);
    let h = handle(s, "fits", rules).await;
    assert_eq!(h.current().await.unwrap(), Some(fits));
    let h = handle(s, "over", rules).await;
    assert_eq!(h.current().await.unwrap_err().message(), message);
}

/// The result limit of a key listing, on a store built with a limit of
/// [`KEYS_LIMIT`]: 24 for the `Vec`, then 24 + the length per key.
pub(crate) async fn key_listings_over_the_limit_are_refused(s: &dyn KvBackend) {
    s.set("a", b"").await.unwrap();
    s.set("b", b"").await.unwrap();
    assert_eq!(s.keys().await.unwrap().len(), 2);
    s.set("c", b"").await.unwrap();
    let err = s.keys().await.unwrap_err();
    assert_eq!(
        err.message(),
        format!("query result exceeds limit of {KEYS_LIMIT} bytes")
    );
}

/// Room for the listing of two one-letter keys, not three.
pub(crate) const KEYS_LIMIT: usize = 24 + 2 * (24 + 1);
