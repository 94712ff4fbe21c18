//! The key-value backends the end-to-end tests run on, and raw access to
//! what a backend holds: the SQLite file read with rusqlite, a Redis server
//! read with the `redis` crate. The tests compare these raw records with
//! what the app answers, so they never trust the host to report its own
//! store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spin_sessions_core::SessionId;

use super::redis_server::RedisServer;

/// Every (key, value) a backend holds, sorted by key.
pub type Records = Vec<(String, Vec<u8>)>;

/// Where the `default` store lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Spin's default: `sqlite_key_value.db` in the state directory.
    Sqlite,
    /// A real `redis-server`, through a runtime config `type = "redis"`.
    Redis,
}

impl Backend {
    /// Empty storage of this kind, for one app (a Redis server of its own,
    /// keeping nothing on disk).
    pub fn storage(self) -> Storage {
        self.storage_with(false)
    }

    /// Like [`Backend::storage`], but durable across a crash of the store
    /// itself: Redis fsyncs its append-only log before acknowledging a
    /// write. (SQLite's file always is.)
    pub fn durable_storage(self) -> Storage {
        self.storage_with(true)
    }

    fn storage_with(self, persistent: bool) -> Storage {
        match self {
            Backend::Sqlite => Storage {
                backend: self,
                state: tempfile::tempdir().unwrap(),
                redis: None,
                redis_url: None,
            },
            Backend::Redis => Storage::on_redis(Arc::new(RedisServer::start(persistent))),
        }
    }
}

/// One host's state directory and, on Redis, the server its `default` store
/// is on (possibly shared with other hosts).
pub struct Storage {
    /// Which backend.
    pub backend: Backend,
    /// The host's `--state-dir` (on SQLite, it holds the store's file).
    pub state: tempfile::TempDir,
    /// The Redis server, on Redis.
    pub redis: Option<Arc<RedisServer>>,
    /// The URL the host reaches that server at, when not the server's own
    /// (a proxy in front of it).
    pub redis_url: Option<String>,
}

impl Storage {
    /// A fresh state directory for a host whose store is on `server`.
    pub fn on_redis(server: Arc<RedisServer>) -> Storage {
        Storage {
            backend: Backend::Redis,
            state: tempfile::tempdir().unwrap(),
            redis: Some(server),
            redis_url: None,
        }
    }

    /// Like [`Storage::on_redis`], the host reaching the server at `url`
    /// (a proxy in front of it); the tests still read it directly.
    pub fn on_redis_via(server: Arc<RedisServer>, url: String) -> Storage {
        Storage {
            redis_url: Some(url),
            ..Storage::on_redis(server)
        }
    }

    /// Storage for a second host on the same Redis server (a second Spin
    /// process behind one load balancer, or a SpinKube replica): its own
    /// state directory. (A SQLite store belongs to one Spin process.)
    pub fn beside(&self) -> Storage {
        let server = self.redis.clone().expect("a second host shares Redis");
        Storage {
            redis_url: self.redis_url.clone(),
            ..Storage::on_redis(server)
        }
    }

    /// The runtime config a host needs for this storage (none for SQLite:
    /// the state directory is Spin's default).
    pub fn runtime_config(&self) -> Option<String> {
        let redis = self.redis.as_ref()?;
        let url = self.redis_url.clone().unwrap_or_else(|| redis.url());
        Some(format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n"
        ))
    }

    /// [`Storage::runtime_config`], written to a file in the state
    /// directory, for `--runtime-config-file`.
    pub fn runtime_config_file(&self) -> Option<PathBuf> {
        let text = self.runtime_config()?;
        let file = self.state.path().join("runtime-config.toml");
        std::fs::write(&file, text).unwrap();
        Some(file)
    }

    /// The SQLite file of the default store (absent on Redis).
    pub fn db_path(&self) -> PathBuf {
        self.state.path().join("sqlite_key_value.db")
    }

    /// Every (key, value) of the default store.
    pub fn records(&self) -> Records {
        match &self.redis {
            None => sqlite_records(&self.db_path()),
            Some(redis) => redis_records(&mut redis.connection()),
        }
    }

    /// Only the session records (`session/…`), without the expiry index.
    pub fn session_records(&self) -> Records {
        self.records()
            .into_iter()
            .filter(|(key, _)| key.starts_with(SESSION_KEY_PREFIX))
            .collect()
    }

    /// How many live sessions there are: records that are not tombstones
    /// (an evicted or rotated session's record stays as one until the
    /// sweep removes it).
    pub fn live_session_count(&self) -> usize {
        self.session_records()
            .iter()
            .filter(|(_, value)| {
                spin_sessions_core::SessionRecord::decode(value).is_ok_and(|r| !r.is_ended())
            })
            .count()
    }

    /// How many session records there are, without reading them (the scale
    /// tests count after every request of a 10 000-session sweep).
    pub fn session_count(&self) -> usize {
        match &self.redis {
            None => {
                let db = test_support::sqlite::open(&self.db_path());
                db.query_row(
                    "SELECT COUNT(*) FROM spin_key_value WHERE store = 'default' AND key LIKE ?1",
                    [format!("{SESSION_KEY_PREFIX}%")],
                    |row| row.get::<_, i64>(0),
                )
                .unwrap() as usize
            }
            // Counted in the server: the keys themselves need not travel.
            Some(redis) => redis::cmd("EVAL")
                .arg("return #redis.call('KEYS', ARGV[1])")
                .arg(0)
                .arg(format!("{SESSION_KEY_PREFIX}*"))
                .query(&mut redis.connection())
                .unwrap(),
        }
    }

    /// The stored bytes of the session with cookie value `id`, under the key
    /// the component uses for it.
    pub fn raw_record(&self, id: &str) -> Option<Vec<u8>> {
        let key = key_of(id);
        match &self.redis {
            None => self
                .records()
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v),
            Some(redis) => redis::cmd("GET")
                .arg(&key)
                .query(&mut redis.connection())
                .unwrap(),
        }
    }

    /// [`Storage::raw_record`], decoded as the JSON it is.
    pub fn record_json(&self, id: &str) -> serde_json::Value {
        let bytes = self
            .raw_record(id)
            .unwrap_or_else(|| panic!("no record under {}", key_of(id)));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Writes `value` under `key` straight into the store, behind the live
    /// host's back.
    pub fn overwrite(&self, key: &str, value: &[u8]) {
        match &self.redis {
            None => {
                let db = test_support::sqlite::open(&self.db_path());
                db.execute(
                    "INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2) \
                     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                    rusqlite::params![key, value],
                )
                .unwrap();
            }
            Some(redis) => {
                let () = redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .query(&mut redis.connection())
                    .unwrap();
            }
        }
    }

    /// Looks for `needle` in everything a copy of the store would give: on
    /// SQLite every file of the state directory (the database, its WAL),
    /// on Redis every key and every value, and the server's files. Returns
    /// how many places were searched and the ones holding it.
    pub fn search(&self, needle: &[u8]) -> (usize, Vec<String>) {
        let mut places = Vec::new();
        let dirs: Vec<&Path> = match &self.redis {
            None => vec![self.state.path()],
            Some(redis) => {
                for (key, value) in redis_records(&mut redis.connection()) {
                    places.push((format!("the key {key:?}"), key.clone().into_bytes()));
                    places.push((format!("the value of {key:?}"), value));
                }
                vec![redis.dir()]
            }
        };
        for dir in dirs {
            for path in files_under(dir) {
                places.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
        let holding = places
            .iter()
            .filter(|(_, bytes)| contains(bytes, needle))
            .map(|(place, _)| place.clone())
            .collect();
        (places.len(), holding)
    }
}

/// Record keys are `session/` + the hex SHA-256 of the cookie value.
pub const SESSION_KEY_PREFIX: &str = "session/";

/// The record key of the session with cookie value `id`.
pub fn key_of(id: &str) -> String {
    SessionId::parse(id)
        .expect("a well-formed identifier")
        .record_key()
}

/// Every (key, value) of the default store in a SQLite file, which the host
/// creates with its table when it starts.
pub fn sqlite_records(db: &Path) -> Records {
    test_support::sqlite::rows(db)
}

/// Every key of a Redis server and its value, sorted by key. The backend
/// keeps each key as a Redis string holding the exact bytes; anything else
/// shows as its type (and would differ from any record). Two round trips,
/// whatever the number of keys.
pub fn redis_records(conn: &mut redis::Connection) -> Records {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    keys.sort();
    if keys.is_empty() {
        return Vec::new();
    }
    let mut types = redis::pipe();
    for key in &keys {
        types.cmd("TYPE").arg(key);
    }
    let kinds: Vec<String> = types.query(conn).unwrap();
    let strings: Vec<&String> = keys
        .iter()
        .zip(&kinds)
        .filter(|(_, kind)| *kind == "string")
        .map(|(key, _)| key)
        .collect();
    let mut values: Vec<Option<Vec<u8>>> = if strings.is_empty() {
        Vec::new()
    } else {
        redis::cmd("MGET").arg(&strings).query(conn).unwrap()
    }
    .into_iter()
    .rev()
    .collect();
    keys.into_iter()
        .zip(kinds)
        .filter_map(|(key, kind)| {
            if kind == "string" {
                // A key deleted between KEYS and MGET is no record.
                values.pop().unwrap().map(|value| (key, value))
            } else {
                Some((key, format!("<{kind}>").into_bytes()))
            }
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
