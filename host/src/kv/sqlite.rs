//! The `type = "spin"` key-value backend: SQLite, in the same file layout as
//! Spin so a database written here can be opened by `spin up` and back.
//!
//! Layout: one table `spin_key_value(store, key, value)` keyed by
//! `(store, key)`, where `store` is the store's label. One database file can
//! therefore hold several stores, as Spin's default file does.
//!
//! Concurrency: each database has a single connection behind a mutex, held
//! for one short statement or transaction and never across an `.await`.
//! Operations run on the calling worker thread: a statement on a local file
//! in WAL mode takes microseconds, less than handing it to tokio's blocking
//! pool and back (measured with `cargo xtask bench`: the hand-off cost more
//! than the reads it carried).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{KvBackend, KvError, KvResult};

/// The table Spin's SQLite store uses. `IF NOT EXISTS` so an existing Spin
/// database is used as it is.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)";

const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";

const SELECT_VALUE: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";

/// Where a SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A database file (created with its parent directories if missing).
    File(PathBuf),
    /// A private in-memory database, lost when the host stops. Spin uses this
    /// for a `type = "spin"` store configured without a `path`.
    InMemory,
}

impl std::fmt::Display for DbLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbLocation::File(path) => write!(f, "\"{}\"", path.display()),
            DbLocation::InMemory => f.write_str("a temporary in-memory store"),
        }
    }
}

/// One open SQLite database, shared by every store label kept in it.
pub struct SqliteDb {
    conn: Mutex<Connection>,
    location: DbLocation,
}

impl SqliteDb {
    /// Opens (creating if needed) the database at `location` and makes sure
    /// Spin's table exists.
    pub fn open(location: &DbLocation) -> anyhow::Result<Arc<Self>> {
        let conn = match location {
            DbLocation::File(path) => open_file(path)?,
            DbLocation::InMemory => {
                Connection::open_in_memory().context("cannot open an in-memory SQLite database")?
            }
        };
        // Room for every fixed statement plus the batch reads of each length a
        // request uses, so none is prepared again per request.
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(CREATE_TABLE)
            .with_context(|| format!("cannot create the spin_key_value table in {location}"))?;
        Ok(Arc::new(Self {
            conn: Mutex::new(conn),
            location: location.clone(),
        }))
    }

    /// Where this database lives.
    pub fn location(&self) -> &DbLocation {
        &self.location
    }

    /// Runs `work` with the connection, on the calling thread.
    async fn run<T, F>(self: &Arc<Self>, work: F) -> KvResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, KvError> + Send + 'static,
    {
        // A panic inside `work` poisons the mutex; the connection itself is
        // still consistent (SQLite rolls back an unfinished transaction when
        // the `Transaction` is dropped), so keep using it.
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        work(&mut conn)
    }
}

fn open_file(path: &Path) -> anyhow::Result<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "cannot create the key-value store's directory \"{}\"",
                parent.display()
            )
        })?;
    }
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open SQLite database \"{}\"", path.display()))?;
    // Another process (a real `spin up`, or a second host) may use the same
    // file: wait for its locks instead of failing at once.
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL: readers never block the writer, and a commit is one append to the
    // log, so a killed process loses nothing that was committed.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .with_context(|| format!("cannot switch \"{}\" to WAL mode", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!(
            "SQLite database \"{}\" refused WAL mode (journal_mode is {mode})",
            path.display()
        );
    }
    // synchronous = NORMAL: in WAL mode a commit has reached the OS once the
    // log write returns, so it survives the host process being killed at any
    // point; only an OS crash or power loss can roll back the last few
    // commits (never corrupt the file). FULL would add an fsync per write,
    // which a session store hit on every request does not need.
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    // Reads through a memory map of the file (up to 1 GiB) instead of a
    // read() per page into SQLite's small default page cache: a lookup in a
    // store of a million sessions then costs about what it does in a store
    // of a thousand (`cargo xtask bench`). It changes no result.
    conn.execute_batch("PRAGMA mmap_size = 1073741824")?;
    Ok(conn)
}

fn sql_err(e: rusqlite::Error) -> KvError {
    KvError(format!("SQLite error: {e}"))
}

/// One store label inside a SQLite database.
pub struct SqliteStore {
    db: Arc<SqliteDb>,
    name: Arc<str>,
}

impl SqliteStore {
    /// The store called `name` (its rows have `store = name`) in `db`.
    pub fn new(db: Arc<SqliteDb>, name: &str) -> Self {
        Self {
            db,
            name: Arc::from(name),
        }
    }
}

fn read_value(conn: &Connection, store: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(SELECT_VALUE)?
        .query_row(params![store, key], |row| row.get::<_, Vec<u8>>(0))
        .optional()
}

/// The most keys one batch query reads; longer batches take several
/// queries in one read transaction. (SQLite allows 500 terms in a compound
/// `SELECT`.)
const READ_MANY_CHUNK: usize = 64;

/// The batch query for `len` keys (1 ..= [`READ_MANY_CHUNK`]), bound as
/// `?1` = store, `?2`.. = keys. Built once per length for the process: the
/// text is also the statement cache's key, looked up on every batch.
fn batch_select(len: usize) -> &'static str {
    static QUERIES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let queries = QUERIES.get_or_init(|| {
        (1..=READ_MANY_CHUNK)
            .map(|len| {
                (2..len + 2)
                    .map(|n| {
                        format!(
                            "SELECT key, value FROM spin_key_value WHERE store = ?1 AND key = ?{n}"
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ")
            })
            .collect()
    });
    &queries[len - 1]
}

/// Reads the rows of `keys` that exist, in the order the keys were asked
/// for, each key once.
///
/// A batch of up to [`READ_MANY_CHUNK`] keys is one statement, a `UNION ALL`
/// of primary-key lookups: one statement reads a consistent snapshot in one
/// read transaction (each costs file-lock system calls in WAL mode), and
/// unlike `key IN (...)` it needs no temporary table for the list. The
/// statement is cached per batch length (a session lookup always reads two
/// keys).
fn read_many(
    conn: &mut Connection,
    store: &str,
    keys: Vec<String>,
) -> rusqlite::Result<Vec<(String, Option<Vec<u8>>)>> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    let distinct: Vec<String> = keys
        .into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect();
    if distinct.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = std::collections::HashMap::with_capacity(distinct.len());
    let mut read_chunk = |conn: &Connection, chunk: &[String]| -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(batch_select(chunk.len()))?;
        let params = std::iter::once(store).chain(chunk.iter().map(String::as_str));
        let mut found = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = found.next()? {
            rows.insert(row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?);
        }
        Ok(())
    };
    if distinct.len() <= READ_MANY_CHUNK {
        read_chunk(conn, &distinct)?;
    } else {
        let tx = conn.transaction()?;
        for chunk in distinct.chunks(READ_MANY_CHUNK) {
            read_chunk(&tx, chunk)?;
        }
        tx.commit()?;
    }
    // Answer in the order asked, whatever order SQLite's plan returned.
    Ok(distinct
        .into_iter()
        .filter_map(|key| {
            let value = rows.remove(&key)?;
            Some((key, Some(value)))
        })
        .collect())
}

#[async_trait]
impl KvBackend for SqliteStore {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let (name, key) = (self.name.clone(), key.to_owned());
        self.db
            .run(move |conn| read_value(conn, &name, &key).map_err(sql_err))
            .await
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        let (name, key, value) = (self.name.clone(), key.to_owned(), value.to_vec());
        self.db
            .run(move |conn| {
                conn.prepare_cached(UPSERT)
                    .and_then(|mut stmt| stmt.execute(params![&*name, key, value]))
                    .map(drop)
                    .map_err(sql_err)
            })
            .await
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        let (name, key) = (self.name.clone(), key.to_owned());
        self.db
            .run(move |conn| {
                conn.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")
                    .and_then(|mut stmt| stmt.execute(params![&*name, key]))
                    .map(drop)
                    .map_err(sql_err)
            })
            .await
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        let (name, key) = (self.name.clone(), key.to_owned());
        self.db
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2 LIMIT 1",
                )
                .and_then(|mut stmt| stmt.exists(params![&*name, key]))
                .map_err(sql_err)
            })
            .await
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        let name = self.name.clone();
        self.db
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![&*name], |row| row.get::<_, String>(0))
                    .map_err(sql_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
            })
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> KvResult<bool> {
        let (name, key) = (self.name.clone(), key.to_owned());
        let (expected, new) = (expected.map(<[u8]>::to_vec), new.to_vec());
        self.db
            .run(move |conn| {
                // IMMEDIATE takes the write lock up front, so no other
                // connection (another process on the same file) can change
                // the row between our check and our write.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql_err)?;
                let changed = match &expected {
                    // The handle saw a value: swap only if it is still that
                    // value (Spin's SQLite swap compares values the same way).
                    Some(old) => tx
                        .prepare_cached(
                            "UPDATE spin_key_value SET value = ?3
                             WHERE store = ?1 AND key = ?2 AND value = ?4",
                        )
                        .and_then(|mut stmt| stmt.execute(params![&*name, key, new, old])),
                    // The handle saw no value: create the key, but never
                    // overwrite a row someone created in between. (Spin's
                    // SQLite store upserts here; its `Cas` contract says the
                    // swap "should insert the key and value, disallowing an
                    // update", which is what this does.)
                    None => tx
                        .prepare_cached(
                            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT(store, key) DO NOTHING",
                        )
                        .and_then(|mut stmt| stmt.execute(params![&*name, key, new])),
                }
                .map_err(sql_err)?;
                tx.commit().map_err(sql_err)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let (name, key) = (self.name.clone(), key.to_owned());
        self.db
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql_err)?;
                let current = match read_value(&tx, &name, &key).map_err(sql_err)? {
                    None => 0,
                    // Spin stores counters as the 8 little-endian bytes of an
                    // i64; anything else is not a counter.
                    Some(bytes) => {
                        let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                            KvError(format!(
                                "the value under key {key:?} is not a counter \
                                 (expected 8 bytes of little-endian i64, found {} bytes)",
                                bytes.len()
                            ))
                        })?;
                        i64::from_le_bytes(bytes)
                    }
                };
                let next = current.checked_add(delta).ok_or_else(|| {
                    KvError(format!("incrementing key {key:?} by {delta} overflows i64"))
                })?;
                tx.prepare_cached(UPSERT)
                    .and_then(|mut stmt| {
                        stmt.execute(params![&*name, key, next.to_le_bytes().to_vec()])
                    })
                    .map_err(sql_err)?;
                tx.commit().map_err(sql_err)?;
                Ok(next)
            })
            .await
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let name = self.name.clone();
        self.db
            .run(move |conn| read_many(conn, &name, keys).map_err(sql_err))
            .await
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        let name = self.name.clone();
        self.db
            .run(move |conn| {
                let tx = conn.transaction().map_err(sql_err)?;
                for (key, value) in pairs {
                    tx.prepare_cached(UPSERT)
                        .and_then(|mut stmt| stmt.execute(params![&*name, key, value]))
                        .map_err(sql_err)?;
                }
                tx.commit().map_err(sql_err)
            })
            .await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        let name = self.name.clone();
        self.db
            .run(move |conn| {
                let tx = conn.transaction().map_err(sql_err)?;
                for key in keys {
                    tx.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")
                        .and_then(|mut stmt| stmt.execute(params![&*name, key]))
                        .map_err(sql_err)?;
                }
                tx.commit().map_err(sql_err)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::contract;

    /// A database file in a fresh scratch directory (removed on drop).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "spin-sessions-host-sqlite-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }

        fn location(&self) -> DbLocation {
            // A missing parent directory is created on open.
            DbLocation::File(self.0.join("state/kv.db"))
        }

        /// The `default` store of a database opened on this file.
        fn store(&self) -> SqliteStore {
            store(&SqliteDb::open(&self.location()).unwrap(), "default")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store(db: &Arc<SqliteDb>, name: &str) -> SqliteStore {
        SqliteStore::new(db.clone(), name)
    }

    // The backend contract (see `contract.rs`), on a file database.

    #[tokio::test]
    async fn set_get_delete_exists_keys() {
        let scratch = Scratch::new("basic");
        contract::set_get_delete_exists_keys(&scratch.store()).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_existing_value() {
        let scratch = Scratch::new("cas");
        contract::compare_and_swap_on_an_existing_value(&scratch.store()).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_absent_key_never_overwrites() {
        let scratch = Scratch::new("cas-absent");
        contract::compare_and_swap_on_an_absent_key_never_overwrites(&scratch.store()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_swaps_from_one_snapshot_have_one_winner() {
        // One store shared by every task: one connection, as in one host.
        let scratch = Scratch::new("cas-race");
        contract::concurrent_swaps_have_one_winner(&[Arc::new(scratch.store())]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cas_retry_loops_lose_no_update() {
        let scratch = Scratch::new("cas-retry");
        contract::cas_retry_loops_lose_no_update(&[Arc::new(scratch.store())]).await;
    }

    #[tokio::test]
    async fn increment_uses_spins_encoding() {
        // Spin's SQLite store keeps counters as 8 little-endian bytes.
        let scratch = Scratch::new("incr");
        contract::increment_counts(&scratch.store(), |n| n.to_le_bytes().to_vec()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_hand_out_distinct_values() {
        let scratch = Scratch::new("incr-race");
        contract::concurrent_increments_hand_out_distinct_values(&[Arc::new(scratch.store())])
            .await;
    }

    #[tokio::test]
    async fn batch_operations() {
        let scratch = Scratch::new("batch");
        contract::batch_operations(&scratch.store()).await;
    }

    // What only the SQLite backend has: several stores in one file, Spin's
    // file layout, WAL, reopening, in-memory databases.

    #[tokio::test]
    async fn stores_in_one_file_are_separate() {
        let scratch = Scratch::new("separate");
        let db = SqliteDb::open(&scratch.location()).unwrap();
        let (a, b) = (store(&db, "default"), store(&db, "other"));
        a.set("k", b"from-a").await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), None);
        b.set("k", b"from-b").await.unwrap();
        assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"from-a"[..]));
        assert_eq!(b.keys().await.unwrap(), ["k"]);
        let asked = || vec!["k".to_string(), "only-a".to_string()];
        a.set("only-a", b"a").await.unwrap();
        assert_eq!(
            b.get_many(asked()).await.unwrap(),
            [("k".to_string(), Some(b"from-b".to_vec()))]
        );
        assert_eq!(a.get_many(asked()).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let scratch = Scratch::new("reopen");
        {
            let s = scratch.store();
            s.set("kept", b"yes").await.unwrap();
            s.increment("count", 41).await.unwrap();
        }
        let s = scratch.store();
        assert_eq!(s.get("kept").await.unwrap().as_deref(), Some(&b"yes"[..]));
        assert_eq!(s.increment("count", 1).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn the_file_uses_spins_schema_and_wal() {
        let scratch = Scratch::new("schema");
        let DbLocation::File(path) = scratch.location() else {
            unreachable!()
        };
        let db = SqliteDb::open(&scratch.location()).unwrap();
        store(&db, "default").set("k", b"v").await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
        let (store_name, key, value): (String, String, Vec<u8>) = conn
            .query_row("SELECT store, key, value FROM spin_key_value", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(
            (store_name.as_str(), key.as_str(), value.as_slice()),
            ("default", "k", &b"v"[..])
        );
        let pk: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('spin_key_value') WHERE pk > 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pk, 2);
    }

    #[tokio::test]
    async fn in_memory_databases_work() {
        let db = SqliteDb::open(&DbLocation::InMemory).unwrap();
        let s = store(&db, "mem");
        s.set("k", b"v").await.unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }
}
