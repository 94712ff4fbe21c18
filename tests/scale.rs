//! End-to-end: sessions at scale. Concurrent updates, the sweeping of
//! abandoned sessions in bounded work per request, and the cap.

mod common;

use common::{cookie, App};

/// Per-request bounds stated in ARCHITECTURE.md: a request of a live
/// session (one sweep step, the record, maybe a touch), and any request
/// including a creation that evicts (two more sweep steps).
const LIVE_MAX_READS: u64 = 5;
const LIVE_MAX_WRITES: u64 = 6;
const ANY_MAX_READS: u64 = 10;
const ANY_MAX_WRITES: u64 = 19;

/// Entries one sweep step examines (`session_core::index::SWEEP_BATCH`).
const SWEEP_BATCH: usize = 16;

fn new_sessions(app: &App, count: usize) {
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..count / 2 {
                    let page = app.get("/", None);
                    assert_eq!(page.status, 200);
                    assert!(page.session_cookie().is_some());
                }
            });
        }
    });
}

#[test]
fn abandoned_sessions_are_swept_by_other_clients_requests() {
    let app = App::start(&[("idle_timeout_secs", "60")]);
    let abandoned = 10_000;
    new_sessions(&app, abandoned);
    assert_eq!(app.session_records().len(), abandoned);
    for stats in app.take_stats() {
        assert!(
            stats.kv_reads <= ANY_MAX_READS && stats.kv_writes <= ANY_MAX_WRITES,
            "{stats:?}"
        );
    }

    // Every one of them is idle past its timeout; one client is live.
    app.advance_clock(120);
    let live = app.get("/", None).session_cookie().unwrap();
    let mut requests = 0;
    while app.session_records().len() > 1 {
        let page = app.get("/2", Some(&cookie(&live)));
        assert_eq!(page.status, 200);
        assert!(
            page.header("set-cookie").is_none(),
            "the live session survives the sweep"
        );
        requests += 1;
        assert!(requests <= abandoned, "the sweep does not finish");
    }
    // The bound of ARCHITECTURE.md: one batch per request, plus the empty
    // buckets walked (a handful here: the sessions span a few minutes).
    let bound = abandoned.div_ceil(SWEEP_BATCH) + 10;
    eprintln!("swept {abandoned} abandoned sessions in {requests} requests (bound {bound})");
    assert!(
        requests <= bound,
        "{requests} requests to sweep, bound {bound}"
    );
    for stats in app.take_stats().iter().filter(|s| s.path == "/2") {
        assert!(
            stats.kv_reads <= LIVE_MAX_READS && stats.kv_writes <= LIVE_MAX_WRITES,
            "{stats:?}"
        );
    }
    // Only the live session, its index entry and the bookkeeping are left.
    let keys: Vec<String> = app.records().into_iter().map(|(k, _)| k).collect();
    assert!(keys.len() <= 6, "{keys:?}");
    assert_eq!(app.get("/api/session", Some(&cookie(&live))).status, 200);
}

#[test]
fn the_cap_keeps_the_newest_sessions() {
    let app = App::start(&[("max_sessions", "100")]);
    let mut cookies = Vec::new();
    for i in 0..1000 {
        let page = app.get("/", None);
        assert_eq!(page.status, 200);
        cookies.push(page.session_cookie().unwrap());
        if i % 100 == 99 {
            let stored = app.session_records().len();
            assert!(
                stored <= 100 + 2,
                "{stored} records after {} clients",
                i + 1
            );
        }
    }
    for stats in app.take_stats() {
        assert!(
            stats.kv_reads <= ANY_MAX_READS && stats.kv_writes <= ANY_MAX_WRITES,
            "{stats:?}"
        );
    }
    // Eviction went oldest first: the newest 98 are all live, the first
    // 900 all gone.
    for (i, id) in cookies.iter().enumerate() {
        let status = app.get("/api/session", Some(&cookie(id))).status;
        if i < 900 {
            assert_eq!(status, 404, "client {i} should have been evicted");
        } else if i >= 902 {
            assert_eq!(status, 200, "client {i} should still have its session");
        }
    }
    // The newest clients' sessions work: no new cookie, and a form post.
    for id in &cookies[990..] {
        let page = app.get("/", Some(&cookie(id)));
        assert_eq!(page.status, 200);
        assert!(page.header("set-cookie").is_none());
        let posted = app.post_form(
            "/2",
            Some(&cookie(id)),
            &format!("csrf_token={}&v1=new", page.csrf_token()),
        );
        assert_eq!(posted.status, 303);
    }
    assert!(app.session_records().len() <= 100 + 2);
}

#[test]
fn concurrent_posts_of_one_session_lose_no_update() {
    let app = App::start(&[]);
    let page = app.get("/", None);
    let (id, token) = (page.session_cookie().unwrap(), page.csrf_token());
    let rounds = 500;
    std::thread::scope(|scope| {
        for field in ["v1", "v2"] {
            let (app, id, token) = (&app, &id, &token);
            scope.spawn(move || {
                for i in 0..rounds {
                    let body = format!("csrf_token={token}&{field}={field}-{i}");
                    let response = app.post_form("/2", Some(&cookie(id)), &body);
                    assert_eq!(response.status, 303, "{}", response.text());
                }
            });
        }
    });
    let records = app.session_records();
    assert_eq!(records.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&records[0].1).unwrap();
    assert_eq!(record["values"]["v1"], format!("v1-{}", rounds - 1));
    assert_eq!(record["values"]["v2"], format!("v2-{}", rounds - 1));
    // Every applied update counts once: 1000 posts, and no touch happened
    // (the clock did not move past the touch granularity).
    assert_eq!(record["writes"], 2 * rounds);
}
