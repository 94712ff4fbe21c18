//! End-to-end: store faults, on the real host binary
//! (`target/debug/spin-sessions-host`, which `cargo test --workspace`
//! builds; the external spin under `SPIN_BIN`), on each real store (the
//! SQLite file, a redis-server): a host killed with SIGKILL in the middle
//! of a write-heavy load loses no acknowledged update, and a record that
//! does not decode is replaced, never a 500.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{backend_tests, key_of, start_session_at, Backend, SpinProcess, Storage};

const SESSIONS: usize = 20;
const CLIENT_THREADS: usize = 4;

backend_tests! {
    sigkill_during_writes_loses_no_acknowledged_update =>
        sigkill_during_writes_loses_no_acknowledged_update_on_sqlite,
        sigkill_during_writes_loses_no_acknowledged_update_on_redis;
    undecodable_records_are_replaced_and_logged =>
        undecodable_records_are_replaced_and_logged_on_sqlite,
        undecodable_records_are_replaced_and_logged_on_redis;
}

/// On Redis the server outlives the host, as a shared Redis would; it runs
/// with `appendfsync always` and is itself killed with SIGKILL and
/// restarted from its log before the check, so what the check finds is
/// what Redis had on disk when it acknowledged the writes.
fn sigkill_during_writes_loses_no_acknowledged_update(backend: Backend) {
    let storage = backend.durable_storage();
    let mut host = start_host(&storage, true);

    let sessions: Vec<(String, String)> =
        (0..SESSIONS).map(|_| start_session_at(host.addr)).collect();

    // Per session: the last value acknowledged with a 303, and the value
    // of a request sent but not answered (at most one: each session belongs
    // to one client thread, which sends one request at a time).
    #[derive(Default, Clone)]
    struct Ledger {
        acked: Option<u64>,
        in_flight: Option<u64>,
        acks: usize,
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let mine: Vec<(usize, String, String)> = sessions
                .iter()
                .enumerate()
                .filter(|(i, _)| i % CLIENT_THREADS == t)
                .map(|(i, (id, token))| (i, id.clone(), token.clone()))
                .collect();
            let (addr, stop, acks) = (host.addr, stop.clone(), acks.clone());
            std::thread::spawn(move || {
                let mut ledgers: HashMap<usize, Ledger> = HashMap::new();
                let mut seq: u64 = 0;
                'load: loop {
                    for (i, id, token) in &mine {
                        if stop.load(Ordering::Relaxed) {
                            break 'load;
                        }
                        seq += 1;
                        let ledger = ledgers.entry(*i).or_default();
                        ledger.in_flight = Some(seq);
                        let body = format!("csrf_token={token}&v1={}&v2=s{i}", value(*i, seq));
                        match post_form(addr, "/2", id, &body) {
                            Ok(response) if response.status == 303 => {
                                ledger.acked = Some(seq);
                                ledger.in_flight = None;
                                ledger.acks += 1;
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(response) => panic!(
                                "session {i}: {} {}",
                                response.status,
                                String::from_utf8_lossy(&response.body)
                            ),
                            // The host is gone: this request may or may not
                            // have been stored.
                            Err(_) => break 'load,
                        }
                    }
                }
                ledgers
            })
        })
        .collect();

    // Let the load run, then kill the host in the middle of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks.load(Ordering::Relaxed) < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    host.kill();
    let acked_before_kill = acks.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut ledgers: HashMap<usize, Ledger> = HashMap::new();
    for thread in threads {
        ledgers.extend(thread.join().expect("a client thread failed"));
    }
    let in_flight = ledgers.values().filter(|l| l.in_flight.is_some()).count();
    eprintln!(
        "killed after {acked_before_kill} acknowledged updates, {in_flight} requests in flight"
    );
    assert!(
        acked_before_kill >= 50,
        "the load was too light to test anything: {acked_before_kill} updates"
    );

    // Restarted on the same store: it opens and every acknowledged update
    // is there.
    if let Some(redis) = &storage.redis {
        redis.crash_and_restart();
    }
    let host = start_host(&storage, true);
    for (i, (id, _)) in sessions.iter().enumerate() {
        let ledger = ledgers.get(&i).cloned().unwrap_or_default();
        let response = get(host.addr, "/api/session", Some(id)).expect("the host answers");
        assert_eq!(response.status, 200, "session {i} survived");
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        let stored = json["v1"].as_str().map(str::to_owned);
        let acked = ledger.acked.map(|seq| value(i, seq));
        let in_flight = ledger.in_flight.map(|seq| value(i, seq));
        assert!(
            stored == acked || (stored.is_some() && stored == in_flight),
            "session {i}: stored {stored:?}, last acknowledged {acked:?} (of {} acks), \
             in flight {in_flight:?}",
            ledger.acks
        );
        if ledger.acked.is_some() {
            assert_eq!(json["v2"], format!("s{i}"));
        }
    }

    // The store itself: intact, and every session record decodes.
    match &storage.redis {
        None => {
            let db = rusqlite::Connection::open(storage.db_path()).unwrap();
            let integrity: String = db
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
            assert_eq!(integrity, "ok");
        }
        Some(redis) => {
            // What was checked above came from the log: the server ran
            // with it, and its last write to it succeeded.
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query(&mut redis.connection())
                .unwrap();
            for field in ["aof_enabled:1", "aof_last_write_status:ok"] {
                assert!(info.lines().any(|l| l.trim() == field), "{field}:\n{info}");
            }
        }
    }
    let records = storage.session_records();
    assert_eq!(records.len(), SESSIONS);
    for (key, bytes) in &records {
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {bytes:?}"));
        assert_eq!(json["format"], 2, "{key}: {json}");
        assert!(json["csrf_token"].is_string() && json["data"].is_object());
    }
    let expected_keys: Vec<String> = sessions.iter().map(|(id, _)| key_of(id)).collect();
    for key in &expected_keys {
        assert!(records.iter().any(|(k, _)| k == key), "{key} is missing");
    }
}

fn undecodable_records_are_replaced_and_logged(backend: Backend) {
    let storage = backend.storage();
    let host = start_host(&storage, false);

    let garbage: &[u8] = b"\xff\x00garbage{\"format\":1";
    let future: &[u8] = br#"{"format":99,"whatever":"comes next"}"#;
    // The deepest the component's (small, see build.rs) stack goes: the
    // decoder descends into the unknown field until serde's depth limit.
    let nested = format!(
        r#"{{"deep":{}1{},"format":1}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: [(&str, &[u8], &str); 4] = [
        ("garbage bytes", garbage, "malformed session record"),
        (
            "a future format",
            future,
            "session record of unknown format 99",
        ),
        (
            "JSON of the wrong shape",
            br#"{"format":1,"values":7}"#,
            "malformed session record",
        ),
        (
            "JSON nested 100 000 deep",
            nested.as_bytes(),
            "malformed session record",
        ),
    ];
    for (case, bytes, logged) in cases {
        let line = format!("sessions: replacing a session whose record does not decode: {logged}");
        let logged_before = host.stderr().lines().filter(|l| l.contains(&line)).count();
        let (id, token) = start_session_at(host.addr);
        let posted = post_form(host.addr, "/2", &id, &format!("csrf_token={token}&v1=Ada"))
            .expect("the host answers");
        assert_eq!(posted.status, 303);
        let key = key_of(&id);
        storage.overwrite(&key, bytes);

        // A form with that cookie: no live session, so refused, not a 500.
        let refused = post_form(host.addr, "/2", &id, &format!("csrf_token={token}&v1=Eve"))
            .expect("the host answers");
        assert_eq!(
            refused.status, 403,
            "{case}: a form on an undecodable record"
        );
        // The next page starts afresh: a new (pending) identifier, nothing
        // stored. (A read never writes: the record is left to the sweep,
        // which deletes it once its entry is due; the core's tests show
        // that.)
        let page = get(host.addr, "/", Some(&id)).expect("the host answers");
        assert_eq!(
            page.status,
            200,
            "{case}: {}",
            String::from_utf8_lossy(&page.body)
        );
        let fresh = page.session_cookie().expect("a fresh cookie");
        assert_ne!(fresh, id, "{case}: the old identifier is not kept");
        assert_eq!(
            get(host.addr, "/api/session", Some(&id)).unwrap().status,
            404
        );
        assert_eq!(
            get(host.addr, "/api/session", Some(&fresh)).unwrap().status,
            404
        );
        let records = storage.session_records();
        assert!(
            records
                .iter()
                .any(|(k, v)| *k == key && v.as_slice() == bytes),
            "{case}: the undecodable record is left as it was, for the sweep"
        );

        // One line for the form, one for the page, one for the API (the
        // record stays until the sweep removes it).
        let log = host.stderr();
        assert_eq!(
            log.lines().filter(|l| l.contains(&line)).count() - logged_before,
            3,
            "{case}: the host's stderr says why it replaced the record:\n{log}"
        );
    }
    let log = host.stderr();
    assert!(
        !log.lines().any(|l| l.contains(" 500 ")),
        "no request failed:\n{log}"
    );
}

// ---------------------------------------------------------------------
// The host binary.
// ---------------------------------------------------------------------

/// `up` of the host's binary (the external spin under `SPIN_BIN`) in a
/// process of its own, to be killed, on `storage` (its state directory, and
/// its runtime config on Redis) on a free port.
fn start_host(storage: &Storage, quiet: bool) -> SpinProcess {
    let flags: &[&str] = if quiet { &["--quiet"] } else { &[] };
    SpinProcess::start(
        &common::spin_binary(),
        &common::manifest(),
        storage,
        &[],
        flags,
    )
}

// ---------------------------------------------------------------------
// A small HTTP/1.1 client whose failures are values (the host may die).
// ---------------------------------------------------------------------

fn value(session: usize, seq: u64) -> String {
    format!("s{session}-n{seq}")
}

fn get(addr: SocketAddr, path: &str, id: Option<&str>) -> std::io::Result<common::Response> {
    let cookie = id.map(common::cookie);
    let raw = common::request_bytes(addr, "GET", path, cookie.as_deref(), None, b"");
    common::try_send(addr, &raw)
}

fn post_form(
    addr: SocketAddr,
    path: &str,
    id: &str,
    body: &str,
) -> std::io::Result<common::Response> {
    let raw = common::request_bytes(
        addr,
        "POST",
        path,
        Some(&common::cookie(id)),
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    );
    common::try_send(addr, &raw)
}
