//! End-to-end on Redis: the real sessions component in TWO host instances
//! whose `default` store is one real `redis-server` (runtime config
//! `type = "redis"`), as two `spin up` replicas behind a load balancer
//! would share it. Sessions move between instances, concurrent updates
//! through both lose nothing, the cap holds across them, and a Redis outage
//! gives 503s, loses nothing acknowledged and heals by itself.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    cookie, ops, session_json, start_session, start_session_at, App, RedisServer, Response, Storage,
};

/// Two hosts on `redis`, each with its own (unused) state directory.
fn two_instances(redis: &Arc<RedisServer>, variables: &[(&str, &str)]) -> (App, App) {
    let a = App::start_on(Storage::on_redis(redis.clone()), variables);
    let b = App::start_on(Storage::on_redis(redis.clone()), variables);
    (a, b)
}

fn post(app: &App, page: &str, id: &str, token: &str, fields: &str) -> Response {
    app.post_form(
        page,
        Some(&cookie(id)),
        &format!("csrf_token={token}&{fields}"),
    )
}

#[test]
fn a_session_continues_on_the_other_instance() {
    let redis = Arc::new(RedisServer::start(false));
    let (a, b) = two_instances(&redis, &[]);
    let (id, token) = start_session(&a);
    let c = cookie(&id);

    // B knows the session A created: no new cookie, same form token.
    let page = b.get("/2", Some(&c));
    assert_eq!(page.status, 200);
    assert!(page.header("set-cookie").is_none(), "B adopted the session");
    assert_eq!(page.csrf_token(), token);

    // A form posted on B with the token A handed out is accepted...
    let posted = post(&b, "/2", &id, &token, "v1=Ada+Lovelace");
    assert_eq!(
        (posted.status, posted.header("location")),
        (303, Some("/2"))
    );
    // ...and A sees it, and the other way round.
    let (status, json) = session_json(&a, &id);
    assert_eq!(
        (status, &json["v1"]),
        (200, &serde_json::json!("Ada Lovelace"))
    );
    assert_eq!(post(&a, "/S", &id, &token, "v2=Engineer").status, 303);
    let summary = b.get("/S", Some(&c)).text();
    assert!(summary.contains("Ada Lovelace") && summary.contains("Engineer"));
    // A forged token is refused on either instance.
    assert_eq!(post(&b, "/2", &id, "forged", "v1=x").status, 403);

    // Logging out on B ends the session for A too.
    let out = post(&b, "/logout", &id, &token, "");
    assert_eq!((out.status, out.header("location")), (303, Some("/")));
    assert_eq!(session_json(&a, &id).0, 404);

    // The store is Redis: neither host made a SQLite file.
    assert!(!a.db_path().exists() && !b.db_path().exists());
}

#[test]
fn concurrent_posts_through_both_instances_lose_no_update() {
    let redis = Arc::new(RedisServer::start(false));
    let (a, b) = two_instances(&redis, &[]);
    let (id, token) = start_session(&a);
    let rounds = 500;
    let acked = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for (app, field) in [(&a, "v1"), (&b, "v2")] {
            let (id, token, acked) = (&id, &token, &acked);
            scope.spawn(move || {
                for i in 0..rounds {
                    let response = post(app, "/2", id, token, &format!("{field}={field}-{i}"));
                    assert_eq!(response.status, 303, "{}", response.text());
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let acked = acked.into_inner() as u64;
    assert_eq!(acked, 2 * rounds);
    // Read before any other request: a GET may touch the record.
    assert_eq!(a.session_count(), 1);
    let record = a.storage.record_json(&id);
    // Every acknowledged post was applied exactly once: no swap overwrote
    // another. Nothing else wrote the record: the creation set the
    // counter's start, a POST never touches besides its own update, and no
    // GET came between (only a GET or the API touches, when the record's
    // last-seen time lags by a minute).
    assert_eq!(record["writes"], ops::WRITES_AT_CREATION + acked);
    assert_eq!(record["data"]["v1"], format!("v1-{}", rounds - 1));
    assert_eq!(record["data"]["v2"], format!("v2-{}", rounds - 1));
    for app in [&a, &b] {
        let (status, json) = session_json(app, &id);
        assert_eq!(status, 200);
        assert_eq!(json["v1"], format!("v1-{}", rounds - 1));
        assert_eq!(json["v2"], format!("v2-{}", rounds - 1));
    }
}

/// R1 on a real link: one host's new Redis connections are slow (300 ms
/// before their first bytes pass, as over a congested network). Its swaps
/// are read back on a fresh connection, so that many of the other host's
/// saves land in between: more than the record keeps ids of. Those saves'
/// outcomes are unknown, and answered as such (503); none is applied a
/// second time, and every acknowledged value stands.
#[test]
fn a_slow_hosts_saves_are_never_applied_twice() {
    let redis = Arc::new(RedisServer::start(false));
    let proxy = test_support::tcp_proxy::TcpProxy::start(
        format!("127.0.0.1:{}", redis.port()).parse().unwrap(),
    );
    let fast = App::start_on(Storage::on_redis(redis.clone()), &[]);
    let slow = App::start_on(Storage::on_redis_via(redis.clone(), proxy.redis_url()), &[]);
    let (id, token) = start_session(&fast);
    // The slow host's shared connection is made at its first request; the
    // delay holds only the connections after it (one per swap).
    assert_eq!(session_json(&slow, &id).0, 200);
    proxy.delay_new_connections(Duration::from_millis(300));
    let stop = AtomicBool::new(false);
    let (fast_acked, fast_unknown) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (slow_acked, slow_unknown, last_acked) = std::thread::scope(|scope| {
        for client in 0..8 {
            let (fast, id, token, stop) = (&fast, &id, &token, &stop);
            let (acked, unknown) = (&fast_acked, &fast_unknown);
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let fields = format!("v1=fast-{client}-{n}");
                    match post(fast, "/2", id, token, &fields).status {
                        303 => acked.fetch_add(1, Ordering::Relaxed),
                        503 => unknown.fetch_add(1, Ordering::Relaxed),
                        other => panic!("the fast host answered {other}"),
                    };
                    n += 1;
                }
            });
        }
        // One visitor on the slow host, saving 1, 2, 3, ... in turn.
        let (mut acked, mut unknown, mut last_acked) = (0u64, 0u64, 0u64);
        for n in 1..=12u64 {
            let response = post(&slow, "/2", &id, &token, &format!("v2={n}"));
            match response.status {
                303 => {
                    acked += 1;
                    last_acked = n;
                }
                503 => {
                    assert!(
                        response.text().contains("may or may not have been saved"),
                        "{}",
                        response.text()
                    );
                    unknown += 1;
                }
                other => panic!("{other}: {}", response.text()),
            }
        }
        stop.store(true, Ordering::Relaxed);
        (acked, unknown, last_acked)
    });
    let fast_acked = fast_acked.into_inner() as u64;
    let fast_unknown = fast_unknown.into_inner() as u64;
    eprintln!(
        "slow host: {slow_acked} saves acknowledged, {slow_unknown} unknown; fast host: \
         {fast_acked} acknowledged, {fast_unknown} unknown or contended; {} connections \
         through the proxy",
        proxy.connections()
    );
    assert!(
        slow_unknown > 0,
        "the window never opened: the fast host was not fast enough"
    );
    // Read before any other request: a GET may touch the record.
    let record = fast.storage.record_json(&id);
    let writes = record["writes"].as_u64().unwrap();
    let acked = fast_acked + slow_acked;
    let unknown = fast_unknown + slow_unknown;
    // Each save is in the record once if acknowledged, at most once if
    // unknown: never twice (re-applied on a guess, the slow host's saves
    // landed 3 to 9 times each).
    assert!(
        (acked..=acked + unknown).contains(&writes),
        "{writes} writes for {acked} acknowledged and {unknown} unknown saves"
    );
    // The slow visitor's last acknowledged value stands, or a later one
    // whose save was unknown; an earlier one applied again would have
    // reverted it.
    let v2: u64 = record["data"]["v2"].as_str().unwrap().parse().unwrap();
    assert!(v2 >= last_acked, "v2 went back from {last_acked} to {v2}");
}

#[test]
fn the_cap_holds_across_instances() {
    if !common::instrumented("the whole test, which advances the clock to settle the index") {
        return;
    }
    let redis = Arc::new(RedisServer::start(false));
    // The cap by itself: no quota, no protection window (tests/abuse.rs).
    let (a, b) = two_instances(
        &redis,
        &[
            ("max_sessions", "100"),
            ("new_sessions_per_minute", "0"),
            ("protection_window_secs", "0"),
        ],
    );
    // The cap is enforced once the store's cursor has settled (each host
    // keeps a clock of its own).
    a.settle_index();
    b.advance_clock(2 * spin_sessions_core::index::IN_FLIGHT_SECS as u64);
    let mut cookies = Vec::new();
    for i in 0..1000 {
        let app = if i % 2 == 0 { &a } else { &b };
        cookies.push(start_session_at(app.addr));
        if i % 50 == 49 {
            let stored = a.live_session_count();
            assert!(
                stored <= 100 + 2,
                "{stored} records after {} clients",
                i + 1
            );
        }
    }
    // The newest clients' sessions work, on the instance that did not
    // create them as well.
    for (i, (id, token)) in cookies.iter().enumerate().skip(990) {
        let other = if i % 2 == 0 { &b } else { &a };
        let page = other.get("/", Some(&cookie(id)));
        assert_eq!(page.status, 200);
        assert!(
            page.header("set-cookie").is_none(),
            "client {i} kept its session"
        );
        assert_eq!(post(other, "/2", id, token, "v1=new").status, 303);
        assert_eq!(session_json(other, id).1["v1"], "new");
    }
    // The first one was evicted. (Which of the other old ones go is the
    // core's eviction order, the same on SQLite: tests/scale.rs.)
    assert_eq!(session_json(&b, &cookies[0].0).0, 404);
    let stored = a.live_session_count();
    assert!(stored <= 100 + 2, "{stored} live records at the end");
}

/// What Spin does when Redis goes away (`../shared/reference/spin-kv-behaviour.md`,
/// and the host's README): no timeout anywhere. The ping of a store's open
/// meets the dead connection (its failure ignored), and every key-value
/// call then waits for the reconnection, whose attempts come about 0, 1.5, 118, 210, 307, 377 and
/// 473 s into a cycle. So a request during an outage hangs (for minutes,
/// under a longer outage); when Redis comes back, the waiting requests go
/// through at the next attempt. Here Redis comes back within the cycle's
/// first 1.5 s: the requests that were waiting answer right after the
/// second attempt, and nothing acknowledged is lost.
#[test]
fn a_redis_outage_stalls_requests_as_under_spin_and_they_go_through_when_it_is_back() {
    let redis = Arc::new(RedisServer::start(true));
    let (a, b) = two_instances(&redis, &[]);
    let apps = [&a, &b];

    // Sessions written before the outage, half through each instance.
    let mut written = Vec::new();
    for i in 0..20 {
        let (app, other) = (apps[i % 2], apps[(i + 1) % 2]);
        let (id, token) = start_session(app);
        assert_eq!(
            post(other, "/2", &id, &token, &format!("v1=before-{i}")).status,
            303
        );
        assert_eq!(
            post(app, "/S", &id, &token, &format!("v2=kept-{i}")).status,
            303
        );
        written.push((id, token, i));
    }

    redis.stop();
    // Every request now waits: no answer, not a 503. (Each instance's first
    // open pings the dead connection, which fails at once, is ignored, and
    // starts the reconnection its key-value calls then wait for.)
    let cycle_began = Instant::now();
    let (statuses, waited) = std::thread::scope(|scope| {
        let waiting: Vec<_> = written[..4]
            .iter()
            .map(|(id, token, i)| {
                let app = apps[*i % 2];
                scope.spawn(move || {
                    let started = Instant::now();
                    let status = if i % 4 < 2 {
                        app.get("/2", Some(&cookie(id))).status
                    } else {
                        post(app, "/S", id, token, &format!("v2=kept-{i}")).status
                    };
                    (status, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            waiting.iter().all(|w| !w.is_finished()),
            "a request answered while Redis was down"
        );
        redis.restart();
        let outcomes: Vec<(u16, Duration)> =
            waiting.into_iter().map(|w| w.join().unwrap()).collect();
        (
            outcomes.iter().map(|o| o.0).collect::<Vec<_>>(),
            outcomes.iter().map(|o| o.1).min().unwrap(),
        )
    });
    eprintln!(
        "outage: waiting requests answered {statuses:?}, after at least {waited:?} \
         ({:?} since the reconnection began)",
        cycle_began.elapsed()
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 303)),
        "{statuses:?}"
    );
    // They went through at the reconnection's second attempt, 1.48 s into
    // its cycle.
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(cycle_began.elapsed() >= Duration::from_millis(1400));

    // Both hosts, never restarted, serve every request again.
    for app in apps {
        for _ in 0..20 {
            assert_eq!(app.get("/", None).status, 200);
        }
    }

    // Everything acknowledged before the stop survived it, seen from both.
    for (id, token, i) in &written {
        for app in apps {
            let (status, json) = session_json(app, id);
            assert_eq!(status, 200, "session {i}");
            assert_eq!(json["v1"], format!("before-{i}"), "session {i}");
            assert_eq!(json["v2"], format!("kept-{i}"), "session {i}");
        }
        // And they go on working.
        assert_eq!(post(apps[*i % 2], "/F", id, token, "DONE=yes").status, 303);
    }
}
