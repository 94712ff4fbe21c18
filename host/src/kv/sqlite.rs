//! The `type = "spin"` key-value backend: SQLite, as Spin's own store
//! (crates/key-value-spin) uses it, in the same file layout, so a database
//! written here can be opened by `spin up` and back.
//!
//! Layout: one table `spin_key_value(store, key, value)` keyed by
//! `(store, key)`, where `store` is the store's label. One database file can
//! therefore hold several stores, as Spin's default file does.
//!
//! Faithful to Spin, defects included:
//! - no pragmas: the rollback journal (`journal_mode = DELETE`),
//!   `synchronous = FULL`, no memory map, and rusqlite's own 5 s busy
//!   timeout; every write is synced to disk before it returns;
//! - one connection per database behind a mutex, held for one statement or
//!   transaction (deferred, as rusqlite's default);
//! - `get-many` and `delete-many` are one statement over `rarray(?)`:
//!   `get-many` lists only the keys found, in SQLite's order;
//! - `increment` keeps the counter as 8 little-endian bytes and wraps on
//!   overflow (Spin's release build); a value of another length is where
//!   Spin's host panics, so the guest traps;
//! - compare-and-swap: `current` reads and remembers the value; `swap`
//!   updates only a row still holding that value, but when `current` saw no
//!   value (or was never called) it upserts, so two racing creations both
//!   succeed and the later one wins;
//! - results over [`MAX_RESULT_BYTES`] are refused as Spin refuses them.
//!
//! Statements run in `tokio::task::block_in_place`, as Spin runs them (on a
//! multi-thread runtime; inline on a current-thread one).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{named_params, params, Connection, OptionalExtension};

use super::{
    check_keys_size, check_value_size, too_large, CasHandle, Connected, KvBackend, KvError,
    KvResult, SwapError, MAX_RESULT_BYTES,
};

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

const SELECT_MANY: &str =
    "SELECT key, value FROM spin_key_value WHERE store = :name AND key IN rarray(:keys)";

const DELETE_MANY: &str = "DELETE FROM spin_key_value WHERE store = :name AND key IN rarray(:keys)";

const SWAP_IF_UNCHANGED: &str = "UPDATE spin_key_value SET value = :new
     WHERE store = :name AND key = :key AND value = :old";

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
    /// Opens (creating if needed) the database at `location` as Spin does:
    /// Spin's table, the `rarray` module, and no pragmas.
    pub fn open(location: &DbLocation) -> anyhow::Result<Arc<Self>> {
        let conn = match location {
            DbLocation::File(path) => open_file(path)?,
            DbLocation::InMemory => {
                Connection::open_in_memory().context("cannot open an in-memory SQLite database")?
            }
        };
        conn.execute(CREATE_TABLE, [])
            .with_context(|| format!("cannot create the spin_key_value table in {location}"))?;
        rusqlite::vtab::array::load_module(&conn)
            .with_context(|| format!("cannot load SQLite's array module for {location}"))?;
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
    fn run<T>(&self, work: impl FnOnce(&mut Connection) -> KvResult<T>) -> KvResult<T> {
        let locked = || {
            // Nothing here panics while holding the lock, so a poisoned
            // mutex can only come from a bug elsewhere; the connection is
            // still consistent (an unfinished transaction rolls back on
            // drop).
            let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut conn)
        };
        // As Spin runs every statement: in `block_in_place`, which hands
        // this worker's other tasks (the request's HTTP connection among
        // them) to another thread while the statement runs. That changes
        // when hyper sees a response relative to its body, and so which
        // responses wait on Nagle's algorithm: a host that ran statements
        // inline would hide the stall Spin shows. A current-thread runtime
        // (some tests) cannot hand off; there the statement runs inline.
        if on_multi_thread_runtime() {
            tokio::task::block_in_place(locked)
        } else {
            locked()
        }
    }
}

fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
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
    // rusqlite sets a 5 s busy timeout on every connection it opens; Spin
    // keeps it, and so does this.
    Connection::open(path)
        .with_context(|| format!("cannot open SQLite database \"{}\"", path.display()))
}

/// A rusqlite error as Spin reports it: `format!("{err:?}")`.
fn sql_err(e: rusqlite::Error) -> KvError {
    KvError::other(format!("{e:?}"))
}

/// One store label inside a SQLite database.
pub struct SqliteStore {
    db: Arc<SqliteDb>,
    name: Arc<str>,
    limit: usize,
}

impl SqliteStore {
    /// The store called `name` (its rows have `store = name`) in `db`.
    pub fn new(db: Arc<SqliteDb>, name: &str) -> Self {
        Self::with_result_limit(db, name, MAX_RESULT_BYTES)
    }

    /// The same, with another result limit (for tests of the arithmetic).
    pub fn with_result_limit(db: Arc<SqliteDb>, name: &str, limit: usize) -> Self {
        Self {
            db,
            name: Arc::from(name),
            limit,
        }
    }
}

fn read_value(conn: &Connection, store: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(SELECT_VALUE)?
        .query_row(params![store, key], |row| row.get::<_, Vec<u8>>(0))
        .optional()
}

/// `keys` as the array `rarray(?)` reads.
fn key_array(keys: Vec<String>) -> Rc<Vec<Value>> {
    Rc::new(keys.into_iter().map(Value::from).collect())
}

/// The rows of `keys` that exist, in the order SQLite returns them, with
/// Spin's running size check.
fn read_many(
    conn: &Connection,
    store: &str,
    keys: Vec<String>,
    limit: usize,
) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
    let mut stmt = conn.prepare_cached(SELECT_MANY).map_err(sql_err)?;
    let rows = stmt
        .query_map(
            named_params! {":name": store, ":keys": key_array(keys)},
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<Vec<u8>>>(1)?)),
        )
        .map_err(sql_err)?;
    let mut size = std::mem::size_of::<Vec<(String, Option<Vec<u8>>)>>();
    let mut found = Vec::new();
    for row in rows {
        let (key, value) = row.map_err(sql_err)?;
        // Counted per row as Spin counts: a huge answer stops early.
        size += std::mem::size_of::<(String, Option<Vec<u8>>)>()
            + key.len()
            + value.as_ref().map_or(0, Vec::len);
        if size > limit {
            return Err(too_large(limit));
        }
        found.push((key, value));
    }
    Ok(found)
}

/// Spin's increment: read, decode 8 bytes (anything else is Spin's panic),
/// add with wrap-around, write, in one deferred transaction.
fn increment_in(conn: &mut Connection, store: &str, key: &str, delta: i64) -> KvResult<i64> {
    let tx = conn.transaction().map_err(sql_err)?;
    let current = match read_value(&tx, store, key).map_err(sql_err)? {
        None => 0,
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .try_into()
                .map_err(|bytes: Vec<u8>| KvError::trap(format!("incorrect length: {bytes:?}")))?;
            i64::from_le_bytes(bytes)
        }
    };
    let next = current.wrapping_add(delta);
    tx.prepare_cached(UPSERT)
        .and_then(|mut stmt| stmt.execute(params![store, key, next.to_le_bytes().to_vec()]))
        .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(next)
}

#[async_trait]
impl KvBackend for SqliteStore {
    async fn opened(&self) -> KvResult<Connected<()>> {
        // The connection was made at start-up (Spin makes it at the first
        // open; see the README's differences).
        Ok(Connected {
            value: (),
            connections: 0,
        })
    }

    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let value = self
            .db
            .run(|conn| read_value(conn, &self.name, key).map_err(sql_err))?;
        check_value_size(value, self.limit)
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.db.run(|conn| {
            conn.prepare_cached(UPSERT)
                .and_then(|mut stmt| stmt.execute(params![&*self.name, key, value]))
                .map(drop)
                .map_err(sql_err)
        })
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.db.run(|conn| {
            conn.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")
                .and_then(|mut stmt| stmt.execute(params![&*self.name, key]))
                .map(drop)
                .map_err(sql_err)
        })
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        self.db.run(|conn| {
            conn.prepare_cached(
                "SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2 LIMIT 1",
            )
            .and_then(|mut stmt| stmt.exists(params![&*self.name, key]))
            .map_err(sql_err)
        })
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        let keys = self.db.run(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![&*self.name], |row| row.get::<_, String>(0))
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })?;
        check_keys_size(keys, self.limit)
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.db
            .run(|conn| increment_in(conn, &self.name, key, delta))
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        self.db
            .run(|conn| read_many(conn, &self.name, keys, self.limit))
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        self.db.run(|conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            for (key, value) in pairs {
                tx.prepare_cached(UPSERT)
                    .and_then(|mut stmt| stmt.execute(params![&*self.name, key, value]))
                    .map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)
        })
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        self.db.run(|conn| {
            conn.prepare_cached(DELETE_MANY)
                .and_then(|mut stmt| {
                    stmt.execute(named_params! {":name": &*self.name, ":keys": key_array(keys)})
                })
                .map(drop)
                .map_err(sql_err)
        })
    }

    async fn new_cas(&self, key: &str) -> KvResult<Connected<Arc<dyn CasHandle>>> {
        // No I/O: the handle only remembers what `current` will read.
        let handle = SqliteCas {
            db: self.db.clone(),
            name: self.name.clone(),
            key: key.to_owned(),
            seen: Mutex::new(None),
            limit: self.limit,
        };
        Ok(Connected {
            value: Arc::new(handle),
            connections: 0,
        })
    }
}

/// A compare-and-swap handle on the SQLite store.
struct SqliteCas {
    db: Arc<SqliteDb>,
    name: Arc<str>,
    key: String,
    /// What `current` read last (`None`: absent, or never read).
    seen: Mutex<Option<Vec<u8>>>,
    limit: usize,
}

impl SqliteCas {
    fn seen(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spin's swap when `current` saw no value: an upsert in a transaction,
    /// which overwrites whatever was created in between.
    fn upsert(&self, conn: &mut Connection, value: &[u8]) -> rusqlite::Result<usize> {
        let tx = conn.transaction()?;
        let changed = tx
            .prepare_cached(UPSERT)?
            .execute(params![&*self.name, self.key, value])?;
        tx.commit()?;
        Ok(changed)
    }
}

#[async_trait]
impl CasHandle for SqliteCas {
    async fn current(&self) -> KvResult<Option<Vec<u8>>> {
        let value = self
            .db
            .run(|conn| read_value(conn, &self.name, &self.key).map_err(sql_err))?;
        // Remembered before the size check, as Spin does.
        self.seen().clone_from(&value);
        check_value_size(value, self.limit)
    }

    async fn swap(&self, value: Vec<u8>) -> Result<(), SwapError> {
        let old = self.seen().clone();
        let changed = self
            .db
            .run(|conn| {
                match old {
                    Some(old) => conn.prepare_cached(SWAP_IF_UNCHANGED).and_then(|mut stmt| {
                        stmt.execute(named_params! {
                            ":name": &*self.name,
                            ":key": self.key,
                            ":old": old,
                            ":new": value,
                        })
                    }),
                    None => self.upsert(conn, &value),
                }
                .map_err(sql_err)
            })
            .map_err(SwapError::Store)?;
        if changed == 1 {
            Ok(())
        } else {
            Err(SwapError::CasFailed("failed to update 1 row".to_owned()))
        }
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

    /// Spin's SQLite compare-and-swap: a write reports `Ok`, a handle that
    /// saw no value upserts, and no handle opens a connection.
    const RULES: contract::CasRules = contract::CasRules {
        write_reports_ok: true,
        absent_overwrites: true,
        connections_per_handle: 0,
    };

    // The backend contract (see `contract.rs`), on a file database.

    #[tokio::test]
    async fn set_get_delete_exists_keys() {
        let scratch = Scratch::new("basic");
        contract::set_get_delete_exists_keys(&scratch.store()).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_existing_value() {
        let scratch = Scratch::new("cas");
        contract::compare_and_swap_on_an_existing_value(&scratch.store(), &RULES).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_absent_key_upserts() {
        let scratch = Scratch::new("cas-absent");
        contract::compare_and_swap_on_an_absent_key(&scratch.store(), &RULES).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_swaps_on_a_present_key_write_once() {
        let scratch = Scratch::new("cas-race");
        contract::concurrent_swaps_on_a_present_key_write_once(
            &[Arc::new(scratch.store())],
            &RULES,
        )
        .await;
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
    async fn set_many_and_delete_many() {
        let scratch = Scratch::new("batch");
        contract::set_many_and_delete_many(&scratch.store()).await;
    }

    #[tokio::test]
    async fn results_over_the_limit_are_refused() {
        let scratch = Scratch::new("limit");
        let db = SqliteDb::open(&scratch.location()).unwrap();
        let s = SqliteStore::with_result_limit(db, "default", 300);
        contract::results_over_the_limit_are_refused(&s, 300, &RULES).await;
    }

    #[tokio::test]
    async fn key_listings_over_the_limit_are_refused() {
        let scratch = Scratch::new("keys-limit");
        let db = SqliteDb::open(&scratch.location()).unwrap();
        let s = SqliteStore::with_result_limit(db, "default", contract::KEYS_LIMIT);
        contract::key_listings_over_the_limit_are_refused(&s).await;
    }

    // What only Spin's SQLite store does.

    #[tokio::test]
    async fn a_value_that_is_not_8_bytes_makes_increment_trap() {
        let scratch = Scratch::new("incr-trap");
        let s = scratch.store();
        s.set("text", b"abc").await.unwrap();
        let err = s.increment("text", 1).await.unwrap_err();
        assert!(err.is_trap(), "{err}");
        assert_eq!(err.message(), "incorrect length: [97, 98, 99]");
        // Nothing was written, and the connection still works.
        assert_eq!(s.get("text").await.unwrap().as_deref(), Some(&b"abc"[..]));
    }

    #[tokio::test]
    async fn increment_wraps_on_overflow_as_spins_release_build() {
        let scratch = Scratch::new("incr-wrap");
        let s = scratch.store();
        s.set("max", &i64::MAX.to_le_bytes()).await.unwrap();
        assert_eq!(s.increment("max", 1).await.unwrap(), i64::MIN);
    }

    #[tokio::test]
    async fn get_many_lists_only_the_keys_found() {
        let scratch = Scratch::new("get-many");
        let s = scratch.store();
        s.set("a", b"1").await.unwrap();
        s.set("b", b"2").await.unwrap();
        let asked = vec!["b".into(), "missing".into(), "a".into(), "b".into()];
        let mut got = s.get_many(asked).await.unwrap();
        got.sort();
        // No entry for the missing key; a repeated key is one row.
        assert_eq!(
            got,
            [
                ("a".to_string(), Some(b"1".to_vec())),
                ("b".to_string(), Some(b"2".to_vec()))
            ]
        );
    }

    #[tokio::test]
    async fn get_many_over_the_limit_is_refused() {
        let scratch = Scratch::new("get-many-limit");
        let db = SqliteDb::open(&scratch.location()).unwrap();
        // 24 for the Vec, then 48 + key + value per pair.
        let s = SqliteStore::with_result_limit(db, "default", 24 + 2 * (48 + 1 + 10));
        s.set("a", &[0; 10]).await.unwrap();
        s.set("b", &[0; 10]).await.unwrap();
        s.set("c", &[0; 9]).await.unwrap();
        assert_eq!(
            s.get_many(vec!["a".into(), "b".into()])
                .await
                .unwrap()
                .len(),
            2
        );
        let err = s
            .get_many(vec!["a".into(), "b".into(), "c".into()])
            .await
            .unwrap_err();
        assert_eq!(err.message(), "query result exceeds limit of 142 bytes");
    }

    #[tokio::test]
    async fn racing_creations_both_succeed_and_the_later_wins() {
        let scratch = Scratch::new("cas-create-race");
        let s = scratch.store();
        let (a, b) = (
            s.new_cas("fresh").await.unwrap().value,
            s.new_cas("fresh").await.unwrap().value,
        );
        assert_eq!(a.current().await.unwrap(), None);
        assert_eq!(b.current().await.unwrap(), None);
        b.swap(b"B".to_vec()).await.unwrap();
        a.swap(b"A".to_vec()).await.unwrap();
        assert_eq!(s.get("fresh").await.unwrap().as_deref(), Some(&b"A"[..]));
    }

    #[tokio::test]
    async fn sqlite_errors_read_as_rusqlites_debug() {
        let scratch = Scratch::new("errors");
        let DbLocation::File(path) = scratch.location() else {
            unreachable!()
        };
        let s = scratch.store();
        // Another connection holds the write lock past the 5 s busy timeout
        // would be slow; a dropped table gives an error at once.
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE spin_key_value")
            .unwrap();
        let err = s.get("k").await.unwrap_err();
        assert!(
            err.message().starts_with("SqliteFailure(Error { code: Unknown, extended_code: 1 }, Some(\"no such table: spin_key_value\"))"),
            "{err}"
        );
    }

    // Several stores in one file, Spin's file layout and journal, reopening,
    // in-memory databases.

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
        b.delete_many(asked()).await.unwrap();
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
    async fn the_file_uses_spins_schema_and_the_rollback_journal() {
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
        // Spin sets no pragmas: the rollback journal, full syncs, no map.
        assert_eq!(mode.to_lowercase(), "delete");
        assert!(!path.with_extension("db-wal").exists());
        let pragma = |name: &str| -> i64 {
            db.run(|c| {
                c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                    .map_err(sql_err)
            })
            .unwrap()
        };
        assert_eq!(pragma("synchronous"), 2, "FULL");
        assert_eq!(pragma("mmap_size"), 0);
        assert_eq!(pragma("busy_timeout"), 5000, "rusqlite's default");
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
