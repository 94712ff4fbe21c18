//! What a Spin SQLite key-value file holds, read with rusqlite behind the
//! host's back: tests compare it with what the app answers, so they never
//! trust the host to report its own store.

use std::path::Path;
use std::time::Duration;

/// Every (key, value) of the `default` store in the SQLite file `db`,
/// sorted by key.
pub fn rows(db: &Path) -> Vec<(String, Vec<u8>)> {
    let db = open(db);
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

/// A connection to the existing file (never creating one: a missing file is
/// a host that wrote elsewhere), waiting for the host's writes instead of
/// failing busy.
pub fn open(db: &Path) -> rusqlite::Connection {
    assert!(db.exists(), "{} is missing", db.display());
    let db = rusqlite::Connection::open(db).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}
