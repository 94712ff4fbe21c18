//! Filling a state directory's SQLite store with sessions, exactly as the
//! sessions component would have left them, without going through HTTP.
//!
//! Creating a million sessions over HTTP would take far longer than the
//! benchmark itself, so the rows are written directly: the records under
//! their hashed keys, the expiry index entries and counters, the session
//! count and the sweep cursor, all in one transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use host::kv::sqlite::{DbLocation, SqliteDb};
use host::runtime_config::DEFAULT_STORE_FILE;
use session_core::id::random_token;
use session_core::index::{self, Cursor, CURSOR_KEY, SESSION_COUNT_KEY};
use session_core::manager::CSRF_TOKEN_LEN;
use session_core::{ExpiryPolicy, SessionId, SessionRecord};

/// The store label the sessions component opens (`key_value_stores`).
pub const STORE: &str = "default";

/// What a browser holds for one prefilled session: enough to use it.
#[derive(Clone)]
pub struct LiveSession {
    /// The `session` cookie's value.
    pub cookie: String,
    /// The CSRF token the session's forms must carry.
    pub csrf_token: String,
}

/// What [`prefill`] wrote.
pub struct Prefilled {
    /// Rows written in all (records, index entries, counters, cursor).
    pub rows: u64,
    /// The sessions kept for the load clients (the last ones created).
    pub live: Vec<LiveSession>,
    /// Wall time of the whole prefill, generation included.
    pub elapsed: Duration,
    /// Of which generating and sorting the rows.
    pub generate: Duration,
    /// Size of the database file afterwards (its WAL is checkpointed away).
    pub db_bytes: u64,
}

/// The SQLite file of the default store in `state_dir`, where the host
/// looks for it.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DEFAULT_STORE_FILE)
}

/// Whole seconds since the Unix epoch, as the component reads its clock.
pub fn unix_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("the time fits in i64")
}

/// Writes `n` sessions into the store of `state_dir` and returns the last
/// `live` of them (at most `n`) for the clients.
pub fn prefill(state_dir: &Path, n: u64, live: usize) -> anyhow::Result<Prefilled> {
    let started = Instant::now();
    let path = db_path(state_dir);
    // The host's own opener creates the table and switches the file to WAL,
    // so the schema is exactly the one the host (and Spin) use.
    drop(SqliteDb::open(&DbLocation::File(path.clone()))?);

    let generating = Instant::now();
    let rows = generate(n, live);
    let live_sessions = rows.live;
    let mut rows = rows.rows;
    // Hex digests are random: in key order, the (store, key) index grows by
    // appends instead of random writes all over a B-tree far bigger than
    // the page cache.
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let generate = generating.elapsed();

    let mut conn = rusqlite::Connection::open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Enough page cache that the single big transaction never spills.
    conn.execute_batch("PRAGMA cache_size = -262144")?;
    let tx = conn.transaction()?;
    {
        let mut insert =
            tx.prepare("INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)")?;
        for (key, value) in &rows {
            insert.execute(rusqlite::params![STORE, key, value])?;
        }
    }
    tx.commit()?;
    // Move everything from the WAL into the database file and truncate the
    // WAL: the host then reads the B-tree directly, as it would after any
    // checkpoint, instead of a WAL as big as the store.
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
    anyhow::ensure!(
        busy == 0,
        "the WAL checkpoint of {} was blocked",
        path.display()
    );
    drop(conn);
    let db_bytes = std::fs::metadata(&path)?.len();
    Ok(Prefilled {
        rows: rows.len() as u64,
        live: live_sessions,
        elapsed: started.elapsed(),
        generate,
        db_bytes,
    })
}

struct Generated {
    rows: Vec<(String, Vec<u8>)>,
    live: Vec<LiveSession>,
}

/// One session as `SessionManager::create` makes it.
struct Made {
    key: String,
    value: Vec<u8>,
    bucket: i64,
    session: LiveSession,
}

/// `count` sessions created at `now`.
fn make(count: u64, now: i64) -> Vec<Made> {
    let policy = ExpiryPolicy::default();
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let id = SessionId::generate(&mut rng);
            let csrf_token = random_token(&mut rng, CSRF_TOKEN_LEN);
            let record = SessionRecord::new(now, csrf_token.clone());
            Made {
                key: id.record_key(),
                value: record.encode(),
                bucket: index::bucket_of(policy.expires_at(&record)),
                session: LiveSession {
                    cookie: id.as_str().to_owned(),
                    csrf_token,
                },
            }
        })
        .collect()
}

/// The rows of `n` sessions and of their index, as `SessionManager::create`
/// and the sweep cursor's first step would have written them.
fn generate(n: u64, live: usize) -> Generated {
    let live_count = u64::try_from(live).unwrap_or(u64::MAX).min(n);
    let bulk = n - live_count;
    // Ids, hashes and JSON for a million sessions are seconds of CPU: use
    // every core.
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get() as u64);
    let made: Vec<Vec<Made>> = std::thread::scope(|scope| {
        let now = unix_now();
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share = bulk / threads + u64::from(t < bulk % threads);
                scope.spawn(move || make(share, now))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a prefill thread panicked"))
            .collect()
    });
    // The clients' sessions are stamped after the bulk is generated (seconds
    // for a million), so that none is due for a touch (60 s) while the GET
    // phase runs.
    let now = unix_now();
    let clients = make(live_count, now);

    let mut rows: Vec<(String, Vec<u8>)> = Vec::with_capacity(2 * n as usize + 8);
    let mut live_sessions = Vec::with_capacity(clients.len());
    // Slots per bucket, handed out 1, 2, 3... as the slot counters would.
    let mut slots: BTreeMap<i64, i64> = BTreeMap::new();
    let bulk_rows = made.into_iter().flatten().map(|m| (m, false));
    for (m, is_client) in bulk_rows.chain(clients.into_iter().map(|m| (m, true))) {
        let slot = slots.entry(m.bucket).or_insert(0);
        *slot += 1;
        rows.push((index::entry_key(m.bucket, *slot), m.key.as_bytes().to_vec()));
        rows.push((m.key, m.value));
        if is_client {
            live_sessions.push(m.session);
        }
    }
    // Spin's counters are the 8 little-endian bytes of an i64.
    for (bucket, count) in &slots {
        rows.push((
            index::slot_counter_key(*bucket),
            count.to_le_bytes().to_vec(),
        ));
    }
    let count = i64::try_from(n).expect("the size fits in i64");
    rows.push((SESSION_COUNT_KEY.to_owned(), count.to_le_bytes().to_vec()));
    let cursor = serde_json::to_vec(&Cursor::start(now)).expect("a cursor serialises");
    rows.push((CURSOR_KEY.to_owned(), cursor));
    Generated {
        rows,
        live: live_sessions,
    }
}

#[cfg(test)]
mod tests {
    //! The prefill must be indistinguishable from what the component
    //! writes, or the benchmark measures something else: these run the real
    //! component (built by `cargo xtask build`) in the host.

    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::{SocketAddr, TcpStream};

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let path = std::env::temp_dir()
                .join(format!("sessions-bench-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn start(rt: &tokio::runtime::Runtime, dir: &Path) -> host::RunningHost {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut options = host::HostOptions::new(root.join("spin.toml"));
        options.state_dir = Some(dir.to_path_buf());
        options.quiet = true;
        options.variable_env = Some(vec![]);
        rt.block_on(host::start(options)).expect("the host starts")
    }

    /// One request on its own connection: the status and the raw head.
    fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> (u16, String) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(cookie) = cookie {
            head.push_str(&format!("Cookie: session={cookie}\r\n"));
        }
        let body = form.unwrap_or("");
        if form.is_some() {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(format!("{head}\r\n{body}").as_bytes())
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).unwrap().parse().unwrap();
        let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        (status, head)
    }

    fn rows(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let db = rusqlite::Connection::open(db_path(dir)).unwrap();
        let mut query = db
            .prepare("SELECT key, value FROM spin_key_value WHERE store = 'default' ORDER BY key")
            .unwrap();
        let rows = query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    }

    /// A key with its numbers and digest blanked out.
    fn shape(key: &str) -> String {
        if key.starts_with("session/") {
            return "session/<digest>".into();
        }
        key.split('/')
            .map(|part| {
                if part.bytes().all(|b| b.is_ascii_digit()) {
                    "<n>"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn counter(value: &[u8]) -> i64 {
        i64::from_le_bytes(value.try_into().expect("a counter is 8 bytes"))
    }

    #[test]
    fn one_prefilled_session_looks_like_one_the_component_created() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let real = Dir::new("real");
        let app = start(&rt, &real.0);
        let (status, head) = request(app.addr(), "GET", "/", None, None);
        assert_eq!(status, 200);
        assert!(head.contains("set-cookie: session="));
        rt.block_on(app.shutdown());
        let ours = Dir::new("ours");
        prefill(&ours.0, 1, 1).unwrap();

        let (real, ours) = (rows(&real.0), rows(&ours.0));
        let shapes =
            |rows: &[(String, Vec<u8>)]| rows.iter().map(|(k, _)| shape(k)).collect::<Vec<_>>();
        assert_eq!(shapes(&real), shapes(&ours));
        for ((key, a), (_, b)) in real.iter().zip(&ours) {
            match shape(key).as_str() {
                "session/<digest>" => {
                    let (a, b) = (
                        SessionRecord::decode(a).unwrap(),
                        SessionRecord::decode(b).unwrap(),
                    );
                    assert_eq!(
                        (a.writes, a.submitted_at, a.values.len()),
                        (b.writes, b.submitted_at, b.values.len())
                    );
                    assert_eq!(a.csrf_token.len(), b.csrf_token.len());
                }
                "expiry/cursor" => {
                    let a: Cursor = serde_json::from_slice(a).unwrap();
                    let b: Cursor = serde_json::from_slice(b).unwrap();
                    assert_eq!(a.next, b.next);
                }
                "expiry/<n>/count" | "sessions/count" => assert_eq!(counter(a), counter(b)),
                // The entry holds its record's key.
                _ => assert!(String::from_utf8(b.clone())
                    .unwrap()
                    .starts_with("session/")),
            }
        }
    }

    #[test]
    fn prefilled_sessions_are_live_and_swept_when_they_expire() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = Dir::new("sweep");
        let filled = prefill(&dir.0, 40, 2).unwrap();
        assert_eq!(filled.rows, 2 * 40 + 3);
        let app = start(&rt, &dir.0);
        let live = &filled.live[0];
        // If a minute has ended since the prefill, the cursor's bucket is
        // due and the next request sweeps a step: let that be this one.
        assert_eq!(
            request(app.addr(), "GET", "/api/session", None, None).0,
            404
        );
        app.take_request_stats();

        // The page of a prefilled session: found (no new cookie), and the
        // usual cost: one batch read of the cursor and the record; the POST
        // reads its compare-and-swap base and swaps once.
        let (status, head) = request(app.addr(), "GET", "/2", Some(&live.cookie), None);
        assert_eq!(status, 200);
        assert!(!head.contains("set-cookie"), "{head}");
        let form = format!("csrf_token={}&v1=x", live.csrf_token);
        let (status, _) = request(app.addr(), "POST", "/2", Some(&live.cookie), Some(&form));
        assert_eq!(status, 303);
        // The 303 has no body: wait for its stats.
        let stats = app.take_request_stats_of(2, Duration::from_secs(5));
        let costs: Vec<(u64, u64)> = stats.iter().map(|s| (s.kv_reads, s.kv_writes)).collect();
        assert_eq!(costs, [(1, 0), (2, 1)]);

        // Two days later every prefilled session has expired: requests
        // that create nothing sweep them all through the index.
        app.advance_clock(Duration::from_secs(2 * 86_400));
        for _ in 0..20 {
            assert_eq!(
                request(app.addr(), "GET", "/api/session", None, None).0,
                404
            );
        }
        rt.block_on(app.shutdown());
        let rows = rows(&dir.0);
        assert!(
            !rows.iter().any(|(k, _)| k.starts_with("session/")),
            "all swept"
        );
        let count = rows.iter().find(|(k, _)| k == SESSION_COUNT_KEY).unwrap();
        assert_eq!(counter(&count.1), 0);
    }
}
