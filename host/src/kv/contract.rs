//! The behaviour every [`KvBackend`] owes the guest interfaces, written once
//! and run on each backend by thin tests in `sqlite.rs` and `redis.rs`.
//!
//! Each function takes a fresh, empty store (or several handles onto the same
//! fresh store, for the concurrent cases) and asserts one behaviour. What
//! legitimately differs between backends is a parameter (the counter
//! encoding) or is returned for the caller to check (the overflow error);
//! what only one backend has (SQLite's file layout, Redis outages) stays in
//! that backend's own tests.

use std::future::Future;
use std::sync::Arc;

use super::{KvBackend, KvError};

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

/// A swap against a value the handle saw: only if the key still holds
/// exactly those bytes.
pub(crate) async fn compare_and_swap_on_an_existing_value(s: &dyn KvBackend) {
    s.set("k", b"v1").await.unwrap();
    // Seen v1, still v1: swap happens.
    assert!(s.compare_and_swap("k", Some(b"v1"), b"v2").await.unwrap());
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    // Seen v1, now v2: swap fails and leaves the value alone.
    assert!(!s.compare_and_swap("k", Some(b"v1"), b"v3").await.unwrap());
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    // Seen v2 but the key was deleted since: fails, nothing recreated.
    s.delete("k").await.unwrap();
    assert!(!s.compare_and_swap("k", Some(b"v2"), b"v4").await.unwrap());
    assert_eq!(s.get("k").await.unwrap(), None);
    // Swapping a value for the same value succeeds.
    s.set("k", b"same").await.unwrap();
    assert!(s
        .compare_and_swap("k", Some(b"same"), b"same")
        .await
        .unwrap());
    // The comparison is byte-exact, binary included.
    s.set("k", &[0, 1, 255]).await.unwrap();
    assert!(!s.compare_and_swap("k", Some(&[0, 1]), b"x").await.unwrap());
    assert!(!s.compare_and_swap("k", Some(b""), b"x").await.unwrap());
    assert!(s
        .compare_and_swap("k", Some(&[0, 1, 255]), &[9, 0])
        .await
        .unwrap());
    assert_eq!(s.get("k").await.unwrap(), Some(vec![9, 0]));
    // An empty value is a value, not an absent key.
    s.set("e", b"").await.unwrap();
    assert!(!s.compare_and_swap("e", None, b"x").await.unwrap());
    assert!(s.compare_and_swap("e", Some(b""), b"x").await.unwrap());
}

/// A swap by a handle that saw no value creates the key, but never
/// overwrites one created in between.
pub(crate) async fn compare_and_swap_on_an_absent_key_never_overwrites(s: &dyn KvBackend) {
    // Seen absent, still absent: the key is created.
    assert!(s.compare_and_swap("new", None, b"first").await.unwrap());
    assert_eq!(s.get("new").await.unwrap().as_deref(), Some(&b"first"[..]));
    // Seen absent, but someone created the row in between: fails.
    assert!(!s.compare_and_swap("new", None, b"second").await.unwrap());
    assert_eq!(s.get("new").await.unwrap().as_deref(), Some(&b"first"[..]));
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

/// Many swaps from one snapshot, on a present and on an absent key, spread
/// over `handles` (several handles: several connections, as several hosts
/// would have): exactly one of each wins, round after round.
pub(crate) async fn concurrent_swaps_have_one_winner(handles: &[Arc<dyn KvBackend>]) {
    for round in 0..20 {
        let key = format!("k{round}");
        handles[0].set(&key, b"0").await.unwrap();
        let absent = format!("absent{round}");
        let outcomes = run_concurrently(handles, 16, |i, s| {
            let (key, absent) = (key.clone(), absent.clone());
            async move {
                let value = format!("v{i}");
                let present = s
                    .compare_and_swap(&key, Some(b"0"), value.as_bytes())
                    .await
                    .unwrap();
                let created = s
                    .compare_and_swap(&absent, None, value.as_bytes())
                    .await
                    .unwrap();
                (present, created)
            }
        })
        .await;
        let (mut wins, mut creations) = (0, 0);
        for (present, created) in outcomes {
            wins += usize::from(present);
            creations += usize::from(created);
        }
        assert_eq!((wins, creations), (1, 1), "round {round}");
    }
}

/// Read, then swap, retrying on failure: what the sessions component does.
/// Every increment must land exactly once.
pub(crate) async fn cas_retry_loops_lose_no_update(handles: &[Arc<dyn KvBackend>]) {
    run_concurrently(handles, 4, |_, s| async move {
        for _ in 0..100 {
            loop {
                let seen = s.get("n").await.unwrap();
                let n: u64 = seen
                    .as_deref()
                    .map(|v| std::str::from_utf8(v).unwrap().parse().unwrap())
                    .unwrap_or(0);
                let next = (n + 1).to_string();
                if s.compare_and_swap("n", seen.as_deref(), next.as_bytes())
                    .await
                    .unwrap()
                {
                    break;
                }
            }
        }
    })
    .await;
    assert_eq!(
        handles[0].get("n").await.unwrap().as_deref(),
        Some(&b"400"[..])
    );
}

/// `increment` counts from 0 and keeps its counter in the backend's own
/// encoding (`encode`: each backend reads back only its own), refuses a
/// value that is not a counter, and refuses an overflow leaving the value as
/// it was. Returns the overflow error, for the backend's own checks.
pub(crate) async fn increment_counts(s: &dyn KvBackend, encode: fn(i64) -> Vec<u8>) -> KvError {
    assert_eq!(s.increment("n", 1).await.unwrap(), 1);
    assert_eq!(s.increment("n", 2).await.unwrap(), 3);
    assert_eq!(s.increment("n", -10).await.unwrap(), -7);
    assert_eq!(s.get("n").await.unwrap(), Some(encode(-7)));
    s.set("text", b"abc").await.unwrap();
    assert!(s.increment("text", 1).await.is_err());
    s.set("max", &encode(i64::MAX)).await.unwrap();
    let overflow = s
        .increment("max", 1)
        .await
        .expect_err("incrementing i64::MAX overflows");
    assert_eq!(s.get("max").await.unwrap(), Some(encode(i64::MAX)));
    overflow
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

/// get-many, set-many and delete-many, empty batches included.
pub(crate) async fn batch_operations(s: &dyn KvBackend) {
    s.set_many(vec![
        ("a".into(), b"1".to_vec()),
        ("b".into(), b"2".to_vec()),
    ])
    .await
    .unwrap();
    let got = s
        .get_many(vec!["b".into(), "missing".into(), "a".into(), "b".into()])
        .await
        .unwrap();
    // Like Spin: absent keys are left out, repeats collapse.
    assert_eq!(
        got,
        vec![
            ("b".to_string(), Some(b"2".to_vec())),
            ("a".to_string(), Some(b"1".to_vec()))
        ]
    );
    s.delete_many(vec!["a".into(), "missing".into()])
        .await
        .unwrap();
    assert_eq!(s.keys().await.unwrap(), ["b"]);
    // Empty batches are no-ops (for Redis: not syntax errors).
    assert_eq!(s.get_many(Vec::new()).await.unwrap(), Vec::new());
    s.set_many(Vec::new()).await.unwrap();
    s.delete_many(Vec::new()).await.unwrap();
    assert_eq!(s.keys().await.unwrap(), ["b"]);

    // A batch longer than one query (SQLite reads 64 keys per statement),
    // asked in an order unlike the stored one, with gaps and repeats.
    let stored: Vec<(String, Vec<u8>)> = (0..150)
        .filter(|i| i % 3 != 0)
        .map(|i| (format!("k{i}'\"x"), i.to_string().into_bytes()))
        .collect();
    s.set_many(stored).await.unwrap();
    let asked: Vec<String> = (0..150)
        .rev()
        .chain(0..10)
        .map(|i| format!("k{i}'\"x"))
        .collect();
    let expected: Vec<(String, Option<Vec<u8>>)> = (0..150)
        .rev()
        .filter(|i| i % 3 != 0)
        .map(|i| (format!("k{i}'\"x"), Some(i.to_string().into_bytes())))
        .collect();
    assert_eq!(s.get_many(asked).await.unwrap(), expected);
}
