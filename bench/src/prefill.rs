//! Filling a store with sessions, exactly as the sessions component would
//! have left them, without going through HTTP.
//!
//! Creating a million sessions over HTTP would take far longer than the
//! benchmark itself. Instead, the `spin-sessions` library creates them here
//! through its public API, as the tutorial does for a visitor's first form
//! post (load, a first value, save), on an in-memory store ([`Recorder`]):
//! the records (with their `recent_writes`), their expiry index entries and
//! the new queue's slot counter, the sweep cursor (with its `claims`) and
//! the signing key (with the counters that chose it) are what the
//! component writes, byte for byte,
//! because they are written by the same code. The visitors have no
//! address, so no per-client quota counter is written: the store is one
//! whose quota counters are past their minute and swept. What it holds is
//! then copied into the real store: SQLite in one transaction, in Spin's
//! table, or Redis with pipelined `MSET`s; each counter in the encoding of
//! that backend's `increment` (8 little-endian bytes in SQLite, decimal text
//! in Redis).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use host::kv::sqlite::{DbLocation, SqliteDb};
use host::runtime_config::DEFAULT_STORE_FILE;
use spin_sessions::{Config, Sessions};
use spin_sessions_core::id::SIGNING_KEY_KEY;
use spin_sessions_core::SigningKey;

use crate::recorder::{Contents, Recorder};
use test_support::redis_server::RedisServer;

use crate::resp::{self, info_field};

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

/// Where the sessions go.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// The default store's SQLite file in this state directory.
    Sqlite(&'a Path),
    /// This (empty) Redis server.
    Redis(&'a RedisServer),
}

/// What [`prefill`] wrote.
pub struct Prefilled {
    /// Keys written in all (records, index entries, counters, cursor).
    pub rows: u64,
    /// The sessions kept for the load clients (the last ones created).
    pub live: Vec<LiveSession>,
    /// Wall time of the whole prefill, generation included.
    pub elapsed: Duration,
    /// Of which creating the sessions in memory (the rest is the store).
    pub generate: Duration,
    /// The store's size afterwards: the SQLite file, or Redis's
    /// `used_memory`.
    pub store_bytes: u64,
    /// The store's signing key, for clients that play first visits.
    pub signing_key: SigningKey,
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

/// Writes `n` sessions into `target`, created as the component creates them
/// with its cap at `max_sessions`, and returns the last `live` of them (at
/// most `n`) for the clients.
pub fn prefill(
    target: Target<'_>,
    n: u64,
    live: usize,
    max_sessions: u64,
) -> anyhow::Result<Prefilled> {
    let started = Instant::now();
    let (contents, live) = generate(n, live, max_sessions)?;
    let generate = started.elapsed();
    let signing_key = contents
        .values
        .iter()
        .find(|(key, _)| *key == SIGNING_KEY_KEY)
        .and_then(|(_, value)| SigningKey::decode(value))
        .context("the prefill made the store's signing key")?;
    let (rows, store_bytes) = match target {
        Target::Sqlite(state_dir) => write_sqlite(state_dir, rows(contents, sqlite_counter))?,
        Target::Redis(server) => write_redis(server, rows(contents, redis_counter))?,
    };
    Ok(Prefilled {
        rows,
        live,
        elapsed: started.elapsed(),
        generate,
        store_bytes,
        signing_key,
    })
}

/// Creates `n` sessions in memory; returns what the store then holds and
/// the last `live` sessions.
fn generate(
    n: u64,
    live: usize,
    max_sessions: u64,
) -> anyhow::Result<(Contents, Vec<LiveSession>)> {
    let recorder = Recorder::default();
    let live_count = u64::try_from(live).unwrap_or(u64::MAX).min(n);
    let bulk = n - live_count;
    // Ids, hashes and JSON for a million sessions are seconds of CPU: use
    // every core.
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get() as u64);
    let now = unix_now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share = bulk / threads + u64::from(t < bulk % threads);
                let recorder = &recorder;
                scope.spawn(move || create(recorder, share, now, max_sessions, |_| {}))
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a prefill thread panicked"))
    })?;
    // The clients' sessions are created last, after the bulk (seconds for a
    // million), so that none is due for a touch (60 s) while measured.
    let mut clients = Vec::with_capacity(live_count as usize);
    create(&recorder, live_count, unix_now(), max_sessions, |s| {
        clients.push(s)
    })?;
    Ok((recorder.into_contents(), clients))
}

/// `count` sessions created at `now` through the library, each handed to
/// `each`, with the policy and cap the host runs the component with.
fn create(
    recorder: &Recorder,
    count: u64,
    now: i64,
    max_sessions: u64,
    mut each: impl FnMut(LiveSession),
) -> anyhow::Result<()> {
    let config = Config {
        max_sessions,
        ..Config::default()
    };
    let sessions = Sessions::new(recorder, config)?;
    let visit = http::Request::get("/").body(())?;
    for _ in 0..count {
        // A visitor's first form post: a pending identifier's token on the
        // page, then the first value creates the session.
        let mut session = sessions.load_at(&visit, now)?;
        let csrf_token = session.csrf_token()?;
        session.insert("v1", "")?;
        let mut response = http::Response::new(());
        session.save(&mut response)?;
        let set_cookie = response
            .headers()
            .get(http::header::SET_COOKIE)
            .context("a created session hands over its cookie")?
            .to_str()?;
        let cookie = set_cookie
            .strip_prefix("session=")
            .and_then(|rest| rest.split(';').next())
            .context("the session cookie")?;
        each(LiveSession {
            cookie: cookie.to_owned(),
            csrf_token,
        });
    }
    Ok(())
}

/// Spin's SQLite store keeps a counter as the 8 little-endian bytes of an
/// i64.
fn sqlite_counter(n: i64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// Spin's Redis store increments with `INCRBY`: a counter is decimal text.
fn redis_counter(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// Every key and value, counters encoded with `counter`.
fn rows(contents: Contents, counter: fn(i64) -> Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let counters = contents
        .counters
        .into_iter()
        .map(|(key, n)| (key, counter(n)));
    contents.values.into_iter().chain(counters).collect()
}

/// Inserts `rows` into the default store's SQLite file in `state_dir`, in
/// one transaction; returns the rows and the file's size.
fn write_sqlite(state_dir: &Path, mut rows: Vec<(String, Vec<u8>)>) -> anyhow::Result<(u64, u64)> {
    let path = db_path(state_dir);
    // The host's own opener creates the table, so the schema (and the
    // journal mode) are exactly the ones the host (and Spin) use.
    drop(SqliteDb::open(&DbLocation::File(path.clone()))?);
    // Hex digests are random: in key order, the (store, key) index grows by
    // appends instead of random writes all over a B-tree far bigger than
    // the page cache.
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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
    drop(conn);
    Ok((rows.len() as u64, std::fs::metadata(&path)?.len()))
}

/// Keys per `MSET`, and `MSET`s sent before their answers are read.
const MSET_PAIRS: usize = 1000;
const MSETS_IN_FLIGHT: usize = 16;

/// Sets `rows` in the (empty) Redis `server`, checks that it holds exactly
/// them, and returns their number and Redis's `used_memory`.
fn write_redis(server: &RedisServer, rows: Vec<(String, Vec<u8>)>) -> anyhow::Result<(u64, u64)> {
    let mut conn = resp::connect(server)?;
    for window in rows.chunks(MSET_PAIRS * MSETS_IN_FLIGHT) {
        let msets: Vec<_> = window.chunks(MSET_PAIRS).collect();
        for pairs in &msets {
            let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 2 * pairs.len());
            args.push(b"MSET");
            for (key, value) in *pairs {
                args.push(key.as_bytes());
                args.push(value);
            }
            conn.send(&args)?;
        }
        conn.flush()?;
        for _ in &msets {
            conn.reply()?.ok()?;
        }
    }
    let keys = conn.command(&[b"DBSIZE"])?.into_integer()?;
    anyhow::ensure!(
        u64::try_from(keys) == Ok(rows.len() as u64),
        "Redis holds {keys} keys after the prefill, not {}",
        rows.len()
    );
    let info = conn.command(&[b"INFO", b"memory"])?.into_text()?;
    let used = info_field(&info, "used_memory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((rows.len() as u64, used))
}

#[cfg(test)]
mod tests {
    //! The prefill must be indistinguishable from what the component
    //! writes, or the benchmark measures something else: these run the real
    //! component (built by `cargo xtask build`) in the host, on SQLite and
    //! on a real Redis.

    use super::*;
    use crate::resp::Reply;
    use spin_sessions_core::index::{count, Cursor, CURSOR_KEY, NEW_TAIL_KEY};
    use spin_sessions_core::SessionRecord;
    use std::net::SocketAddr;
    use test_support::http::{request_bytes, send};
    use test_support::tempdir::TempDir;

    fn start(
        rt: &tokio::runtime::Runtime,
        dir: &Path,
        runtime_config: Option<&str>,
    ) -> host::RunningHost {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut options = host::HostOptions::new(root.join("spin.toml"));
        options.state_dir = Some(dir.to_path_buf());
        options.quiet = true;
        // Prefilled sessions model a store whose quota counters are past
        // their minute and swept; the component compared with them keeps
        // none either.
        options.variable_env = Some(vec![(
            "SPIN_VARIABLE_NEW_SESSIONS_PER_MINUTE".into(),
            "0".into(),
        )]);
        if let Some(config) = runtime_config {
            let file = dir.join("runtime-config.toml");
            std::fs::write(&file, config).unwrap();
            options.runtime_config_file = Some(file);
        }
        rt.block_on(host::start(options)).expect("the host starts")
    }

    /// A visitor's first page and first form post, over HTTP: what makes
    /// the component store a session.
    fn create_over_http(addr: SocketAddr) {
        test_support::http::start_session_at(addr);
    }

    fn sqlite_rows(dir: &Path) -> Vec<(String, Vec<u8>)> {
        test_support::sqlite::rows(&db_path(dir))
    }

    /// Every key of a Redis server and its value, in key order.
    fn redis_rows(server: &RedisServer) -> Vec<(String, Vec<u8>)> {
        let mut conn = resp::connect(server).unwrap();
        let Reply::Array(Some(keys)) = conn.command(&[b"KEYS", b"*"]).unwrap() else {
            panic!("KEYS answers an array");
        };
        let mut rows: Vec<(String, Vec<u8>)> = keys
            .into_iter()
            .map(|key| {
                let key = key.into_text().unwrap();
                let Reply::Bulk(Some(value)) = conn.command(&[b"GET", key.as_bytes()]).unwrap()
                else {
                    panic!("{key} holds a string");
                };
                (key, value)
            })
            .collect();
        rows.sort();
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

    fn sqlite_number(value: &[u8]) -> i64 {
        i64::from_le_bytes(value.try_into().expect("a counter is 8 bytes"))
    }

    fn redis_number(value: &[u8]) -> i64 {
        std::str::from_utf8(value).unwrap().parse().unwrap()
    }

    /// The rows of a store the component wrote and of one prefilled with
    /// one session have the same keys, and the same values but for the
    /// random and time-dependent parts; `counter` reads that backend's
    /// counters.
    fn assert_alike(
        real: &[(String, Vec<u8>)],
        ours: &[(String, Vec<u8>)],
        counter: fn(&[u8]) -> i64,
    ) {
        let shapes =
            |rows: &[(String, Vec<u8>)]| rows.iter().map(|(k, _)| shape(k)).collect::<Vec<_>>();
        assert_eq!(shapes(real), shapes(ours));
        for ((key, a), (_, b)) in real.iter().zip(ours) {
            match shape(key).as_str() {
                "session/<digest>" => {
                    let (a, b) = (
                        SessionRecord::decode(a).unwrap(),
                        SessionRecord::decode(b).unwrap(),
                    );
                    assert_eq!(
                        (a.writes, &a.data, a.recent_writes.len()),
                        (b.writes, &b.data, b.recent_writes.len())
                    );
                    assert_eq!(a.csrf_token.len(), b.csrf_token.len());
                }
                "index/cursor" => {
                    let a: Cursor = serde_json::from_slice(a).unwrap();
                    let b: Cursor = serde_json::from_slice(b).unwrap();
                    assert_eq!(
                        (a.new.done, a.moved_tail, a.claims.len()),
                        (b.new.done, b.moved_tail, b.claims.len())
                    );
                }
                "index/new/tail"
                | "sessions/signing-key/tickets"
                | "sessions/signing-key/winner" => assert_eq!(counter(a), counter(b)),
                "sessions/signing-key" | "sessions/signing-key/candidate/<n>" => {
                    assert_eq!(a.len(), b.len())
                }
                // The entry holds its record's key.
                "index/new/<n>" => assert!(String::from_utf8(b.clone())
                    .unwrap()
                    .contains("\"k\":\"session/")),
                other => panic!("unexpected key {other}"),
            }
        }
    }

    #[test]
    fn one_prefilled_session_looks_like_one_the_component_created() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let real = TempDir::new("real");
        let app = start(&rt, real.path(), None);
        create_over_http(app.addr());
        rt.block_on(app.shutdown());
        let ours = TempDir::new("ours");
        prefill(Target::Sqlite(ours.path()), 1, 1, 1000).unwrap();
        assert_alike(
            &sqlite_rows(real.path()),
            &sqlite_rows(ours.path()),
            sqlite_number,
        );
    }

    #[test]
    fn on_redis_too() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let real = RedisServer::start(false);
        let state = TempDir::new("redis-state");
        let app = start(&rt, state.path(), Some(&real.runtime_config()));
        create_over_http(app.addr());
        rt.block_on(app.shutdown());
        let ours = RedisServer::start(false);
        let filled = prefill(Target::Redis(&ours), 1, 1, 1000).unwrap();
        assert_eq!(filled.rows, 8);
        assert_alike(&redis_rows(&real), &redis_rows(&ours), redis_number);
    }

    #[test]
    fn prefilled_sessions_are_live_and_swept_when_they_expire() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = TempDir::new("sweep");
        let filled = prefill(Target::Sqlite(dir.path()), 40, 2, 1000).unwrap();
        assert_eq!(filled.rows, 2 * 40 + 6);
        let app = start(&rt, dir.path(), None);
        let live = &filled.live[0];

        // The page of a prefilled session: found (no new cookie), and the
        // usual cost: one read of the record; the POST reads it again as
        // its compare-and-swap base and swaps once. No new connections.
        let addr = app.addr();
        let cookie = test_support::http::cookie(&live.cookie);
        let get = request_bytes(addr, "GET", "/2", Some(&cookie), None, b"");
        let page = send(addr, &get);
        assert_eq!(page.status, 200);
        assert!(page.header("set-cookie").is_none(), "{:?}", page.headers);
        let form = format!("csrf_token={}&v1=x", live.csrf_token);
        let form_type = Some("application/x-www-form-urlencoded");
        let post = request_bytes(
            addr,
            "POST",
            "/2",
            Some(&cookie),
            form_type,
            form.as_bytes(),
        );
        assert_eq!(send(addr, &post).status, 303);
        // The 303 has no body: wait for its stats.
        let stats = app.take_request_stats_of(2, Duration::from_secs(5));
        let costs: Vec<(u64, u64, u64)> = stats
            .iter()
            .map(|s| (s.kv_reads, s.kv_writes, s.kv_connections))
            .collect();
        assert_eq!(costs, [(1, 0, 0), (2, 1, 0)]);

        // Two days later every prefilled session has expired: new visitors
        // (each creation sweeps one bounded step) sweep them all through
        // the index.
        app.advance_clock(Duration::from_secs(2 * 86_400));
        let visitors = 30;
        for _ in 0..visitors {
            create_over_http(app.addr());
        }
        rt.block_on(app.shutdown());
        let rows = sqlite_rows(dir.path());
        let records = rows
            .iter()
            .filter(|(k, _)| k.starts_with("session/"))
            .count();
        assert_eq!(
            records, visitors,
            "only the new visitors' sessions are left"
        );
        let tail = rows.iter().find(|(k, _)| k == NEW_TAIL_KEY).unwrap();
        let cursor = rows.iter().find(|(k, _)| k == CURSOR_KEY).unwrap();
        let cursor = Cursor::decode(&cursor.1).unwrap();
        assert!(!cursor.claims.is_empty());
        let tail = u64::try_from(sqlite_number(&tail.1)).unwrap();
        assert_eq!(count(&cursor, tail), visitors as u64);
    }
}
