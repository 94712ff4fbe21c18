//! End-to-end: sessions at scale, on each real store (the SQLite file, a
//! redis-server). Concurrent updates, the sweeping of abandoned sessions in
//! bounded work per request, and the cap.

mod common;

use common::ops::{self, ANY_MAX, SWEEP_BATCH};
use common::{backend_tests, cookie, expect_ops_within, start_session, App, Backend};

backend_tests! {
    abandoned_sessions_are_swept_by_other_clients_requests =>
        abandoned_sessions_are_swept_by_other_clients_requests_on_sqlite,
        abandoned_sessions_are_swept_by_other_clients_requests_on_redis;
    the_cap_keeps_the_newest_sessions =>
        the_cap_keeps_the_newest_sessions_on_sqlite,
        the_cap_keeps_the_newest_sessions_on_redis;
    concurrent_posts_of_one_session_lose_no_update =>
        concurrent_posts_of_one_session_lose_no_update_on_sqlite,
        concurrent_posts_of_one_session_lose_no_update_on_redis;
}

fn new_sessions(app: &App, count: usize) {
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..count / 2 {
                    start_session(app);
                }
            });
        }
    });
}

fn abandoned_sessions_are_swept_by_other_clients_requests(backend: Backend) {
    if !common::instrumented("the whole test, which advances the clock past the idle timeout") {
        return;
    }
    // Long enough that none expires while they are being created, however
    // slow the machine.
    // One test client stands for 10 000 visitors: no per-address quota.
    let app = backend.start(&[
        ("idle_timeout_secs", "600"),
        ("new_sessions_per_minute", "0"),
    ]);
    let abandoned = 10_000;
    new_sessions(&app, abandoned);
    assert_eq!(app.session_count(), abandoned);
    for stats in app.take_stats() {
        expect_ops_within(&stats, ANY_MAX);
    }

    // Every one of them is idle past its timeout; one client is live, and
    // uses its session throughout: that costs it no sweeping.
    app.advance_clock(1200);
    let (live, _) = start_session(&app);
    app.take_stats();
    // Creations pay for the sweep: new visitors come until the abandoned
    // sessions are gone (every visitor adds a session of its own).
    let mut visitors = 0;
    while app.session_count() > 1 + visitors {
        let page = app.get("/2", Some(&cookie(&live)));
        assert_eq!(page.status, 200);
        assert!(
            page.header("set-cookie").is_none(),
            "the live session survives the sweep"
        );
        start_session(&app);
        visitors += 1;
        assert!(visitors <= abandoned, "the sweep does not finish");
    }
    // The bound of ARCHITECTURE.md: one step of SWEEP_BATCH entries per
    // creation, plus the empty buckets walked (a few: one step per 8).
    let bound = abandoned.div_ceil(SWEEP_BATCH) + 10;
    eprintln!("swept {abandoned} abandoned sessions in {visitors} creations (bound {bound})");
    assert!(
        visitors <= bound,
        "{visitors} creations to sweep, bound {bound}"
    );
    for stats in app.take_stats() {
        if stats.method == "GET" && stats.path == "/2" {
            // The live client's page views: one read, or a touch (every
            // 10 s of real time here), never a sweep.
            let cost = common::Ops {
                reads: stats.kv_reads,
                writes: stats.kv_writes,
                connections: stats.kv_connections,
            };
            assert!(
                cost == ops::LIVE_GET || cost == ops::live_post(backend),
                "GET of the live session: {stats:?}"
            );
        } else {
            expect_ops_within(&stats, ANY_MAX);
        }
    }
    // The abandoned sessions' records are gone: what is left is the live
    // session and the visitors', with their index entries and bookkeeping.
    let left = app.session_count();
    assert_eq!(left, 1 + visitors);
    let keys = app.records().len();
    assert!(
        keys <= 2 * left + ops::BOOKKEEPING_KEYS_MAX,
        "{keys} keys for {left} sessions: index entries were left behind"
    );
    assert_eq!(app.get("/api/session", Some(&cookie(&live))).status, 200);
}

fn the_cap_keeps_the_newest_sessions(backend: Backend) {
    if !common::instrumented("the whole test, which advances the clock to settle the index") {
        return;
    }
    // Eviction order by itself: one address for all clients (no quota),
    // and no protection window (tests/abuse.rs has both).
    let app = backend.start(&[
        ("max_sessions", "100"),
        ("new_sessions_per_minute", "0"),
        ("protection_window_secs", "0"),
    ]);
    // The cap is enforced once the store's cursor has settled; the session
    // that makes it is the oldest, and goes first.
    app.settle_index();
    let mut cookies = Vec::new();
    for i in 0..1000 {
        cookies.push(start_session(&app).0);
        if i % 100 == 99 {
            let stored = app.live_session_count();
            assert!(
                stored <= 100 + 2,
                "{stored} records after {} clients",
                i + 1
            );
        }
    }
    for stats in app.take_stats() {
        expect_ops_within(&stats, ANY_MAX);
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
    assert!(app.live_session_count() <= 100 + 2);
}

fn concurrent_posts_of_one_session_lose_no_update(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
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
    assert_eq!(record["data"]["v1"], format!("v1-{}", rounds - 1));
    assert_eq!(record["data"]["v2"], format!("v2-{}", rounds - 1));
    // Every applied update counts once: 1000 posts, and no touch happened
    // (the clock did not move past the touch granularity).
    assert_eq!(record["writes"], ops::WRITES_AT_CREATION + 2 * rounds);
}
