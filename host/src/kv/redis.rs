//! The `type = "redis"` key-value backend, as Spin's Redis store
//! (crates/key-value-redis) behaves, defects included.
//!
//! Mapping:
//! - keys are used as they are, without a prefix per store label: like in
//!   Spin, two labels on the same URL share one key space, and a key written
//!   by a component is the same key `redis-cli` sees;
//! - `get`/`set`/`delete`/`exists` are `GET`/`SET`/`DEL`/`EXISTS`, `get-keys`
//!   is `KEYS *`, `set-many` is `MSET`, `delete-many` is `DEL k…`, and
//!   `increment` is `INCRBY`, so a counter is decimal text (where the SQLite
//!   store keeps 8 little-endian bytes);
//! - `get-many` sends its keys to `KEYS`, as Spin does: with two keys or
//!   more Redis answers an arity error; with one, `KEYS` treats it as a
//!   pattern and answers key *names*, which are paired up as redis-rs pairs
//!   a flat array (an odd count is where Spin's host panics: the guest
//!   traps). See [`pairs_like_spin`];
//! - compare-and-swap: every handle opens its own connection; `current` is
//!   `WATCH key` + `GET`; `swap` is `MULTI`/`SET`/`EXEC` and then `UNWATCH
//!   key`, which Redis refuses (UNWATCH takes no argument), so every swap
//!   reports `cas-failed`, whether `EXEC` wrote or not;
//! - the store's shared connection is a redis-rs `ConnectionManager`, made
//!   at the store's first open that succeeds (the open waits for it), and
//!   every open pings it, ignoring the outcome;
//! - every compare-and-swap handle gets a connection manager of its own;
//! - no operation has a timeout, and no command is ever sent twice: when
//!   Redis goes away, the command that meets the dead connection fails at
//!   once (`broken pipe`), and every command after it waits for the
//!   reconnection, whose schedule is Spin's ([`spin_config`]): connection
//!   attempts about 0, 1.5, 118, 210, 307, 377 and 473 s after it began,
//!   then `Reconnecting failed: …` and a new cycle. A request may so wait
//!   473 s or more; when Redis comes back, the waiting commands go through
//!   at the cycle's next attempt;
//! - error messages are those of the redis-rs release Spin builds with
//!   (0.32): see [`spin_message`].
//!
//! Spin's client is redis-rs 0.32.5–0.32.7; this host's is 1.8. Their
//! connection managers reconnect alike, with the same backoff (backon,
//! built without its `std` feature, so its jitter is the same fixed
//! sequence in both): the schedule above, measured under both.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, RedisResult, ServerErrorKind,
    Value,
};
use tokio::sync::OnceCell;

use super::{
    check_keys_size, check_pairs_size, check_value_size, CasHandle, Connected, KvBackend, KvError,
    KvResult, SwapError, MAX_RESULT_BYTES,
};

/// The connection manager's settings as Spin's client ends up with them:
/// redis-rs 0.32's defaults, which hand the factor (100) to backon as the
/// growth of its delays, from backon's own 1 s minimum to its 60 s maximum,
/// with jitter, for 6 retries; no connection or response timeout.
pub fn spin_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_exponent_base(100.0)
        .set_min_delay(Duration::from_secs(1))
        .set_max_delay(Duration::from_secs(60))
        .set_number_of_retries(6)
        .set_connection_timeout(None)
        .set_response_timeout(None)
}

/// A validated `url` of a `type = "redis"` store.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: String,
    /// `host:port` (or the socket path): what messages show, never the
    /// password the URL may carry.
    addr: String,
}

impl RedisUrl {
    /// Checks `url` the way the `redis` crate will read it when connecting
    /// (`redis://`, or `unix://` / `redis+unix://` for a local socket).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if url.is_empty() {
            bail!("the URL is empty");
        }
        let info = url.into_connection_info().map_err(|e| match e.detail() {
            Some(detail) => anyhow::anyhow!("{detail}"),
            None => anyhow::anyhow!("{e}"),
        })?;
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // Not reached while the crate is built without TLS (it refuses
            // `rediss://` itself), but say so plainly if that changes.
            bail!("TLS (`rediss://`) is not supported by this host");
        }
        Ok(Self {
            url: url.to_owned(),
            addr: info.addr().to_string(),
        })
    }

    /// Where the server is, without credentials.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl fmt::Display for RedisUrl {
    /// As Spin summarises a Redis store: `Redis at host:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis at {}", self.addr)
    }
}

impl fmt::Debug for RedisUrl {
    // Without the URL itself: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A redis-rs error as Spin reports it, `format!("{err:?}")` with the
/// redis-rs Spin builds with (0.32), whose `Debug` is its `Display`:
/// a server error reads `An error was signalled by the server - <Kind>:
/// <detail>`, an error code redis-rs 0.32 does not know reads `<CODE>:
/// <detail>`, an I/O error is the I/O error's text.
pub fn spin_message(e: &RedisError) -> String {
    const SIGNALLED: &str = "An error was signalled by the server";
    if let ErrorKind::Server(kind) = e.kind() {
        if let Some(name) = kind_name_in_0_32(kind) {
            return match e.detail() {
                Some(detail) => format!("{SIGNALLED} - {name}: {detail}"),
                None => format!("{SIGNALLED}- {name}"),
            };
        }
    }
    match (e.kind(), e.code()) {
        (ErrorKind::Server(_) | ErrorKind::Extension, Some(code)) => format!(
            "{code}: {}",
            e.detail().unwrap_or("Unknown extension error encountered")
        ),
        _ => e.to_string(),
    }
}

/// The `ErrorKind` name redis-rs 0.32 gives a server error code it knows.
fn kind_name_in_0_32(kind: ServerErrorKind) -> Option<&'static str> {
    Some(match kind {
        ServerErrorKind::ResponseError => "ResponseError",
        ServerErrorKind::ExecAbort => "ExecAbortError",
        ServerErrorKind::BusyLoading => "BusyLoadingError",
        ServerErrorKind::NoScript => "NoScriptError",
        ServerErrorKind::Moved => "Moved",
        ServerErrorKind::Ask => "Ask",
        ServerErrorKind::TryAgain => "TryAgain",
        ServerErrorKind::ClusterDown => "ClusterDown",
        ServerErrorKind::CrossSlot => "CrossSlot",
        ServerErrorKind::MasterDown => "MasterDown",
        ServerErrorKind::ReadOnly => "ReadOnly",
        ServerErrorKind::NotBusy => "NotBusy",
        _ => return None,
    })
}

/// redis-rs 0.32's error for a string that is not UTF-8 (`Invalid UTF-8`,
/// `TypeError`, written as its `Display` writes a detail-less error).
const INVALID_UTF8: &str = "Invalid UTF-8- TypeError";

/// A reply item read as a `String`, as redis-rs 0.32 reads one.
fn item_string(item: Value) -> KvResult<String> {
    match item {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| KvError::other(INVALID_UTF8))
        }
        Value::SimpleString(text) => Ok(text),
        Value::Okay => Ok("OK".to_owned()),
        other => Err(incompatible(&other, "Response type not string compatible.")),
    }
}

/// A reply item read as an `Option<Vec<u8>>`, as redis-rs 0.32 reads one.
fn item_bytes(item: Value) -> KvResult<Option<Vec<u8>>> {
    match item {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        Value::Okay => Ok(Some(b"OK".to_vec())),
        other => Err(incompatible(&other, "Response type not vector compatible.")),
    }
}

fn incompatible(value: &Value, what: &str) -> KvError {
    KvError::other(format!(
        "Response was of incompatible type - TypeError: {what:?} (response was {value:?})"
    ))
}

/// What Spin's get-many makes of the reply to `KEYS <keys>`: redis-rs 0.32
/// reading a flat array as `Vec<(String, Option<Vec<u8>>)>`. Empty → empty;
/// otherwise the items are taken two by two (name, then value) and
/// converted in order, and an odd item left at the end hits redis-rs's
/// `unreachable!()`, a panic of Spin's host: here a trap.
pub fn pairs_like_spin(reply: Value) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
    let items = match reply {
        Value::Array(items) | Value::Set(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(incompatible(&other, "Response type not vector compatible.")),
    };
    let mut pairs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let Some(first) = items.next() {
        let Some(second) = items.next() else {
            return Err(KvError::trap(
                "internal error: entered unreachable code (redis-rs pairing an odd-length \
                 reply of KEYS)",
            ));
        };
        pairs.push((item_string(first)?, item_bytes(second)?));
    }
    Ok(pairs)
}

/// A redis-rs error on the shared connection as Spin reports it: one
/// that comes from waiting for a reconnection that failed reads
/// `Reconnecting failed: <error>` (redis-rs 0.32 says so; 1.8 no longer
/// does).
fn shared_message(e: &RedisError) -> String {
    let message = spin_message(e);
    if e.is_connection_refusal() {
        format!("Reconnecting failed: {message}")
    } else {
        message
    }
}

/// One `type = "redis"` store.
pub struct RedisStore {
    client: redis::Client,
    /// The shared connection, made by the first open that succeeds in
    /// making it (Spin's `OnceCell`).
    conn: OnceCell<ConnectionManager>,
    limit: usize,
}

impl RedisStore {
    /// A store on the server at `url`. Does not connect: like Spin, the host
    /// starts while Redis is down, and the first open connects.
    pub fn open(url: &RedisUrl) -> anyhow::Result<Self> {
        Self::with_result_limit(url, MAX_RESULT_BYTES)
    }

    /// The same, with another result limit (for tests of the arithmetic).
    pub fn with_result_limit(url: &RedisUrl, limit: usize) -> anyhow::Result<Self> {
        let client = redis::Client::open(url.url.as_str())
            .with_context(|| format!("invalid Redis URL for {}", url.addr))?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            limit,
        })
    }

    /// A connection manager of its own, on Spin's schedule: waits for its
    /// first connection as long as that takes.
    async fn connect(&self) -> RedisResult<ConnectionManager> {
        ConnectionManager::new_with_config(self.client.clone(), spin_config()).await
    }

    /// The shared connection, made now if no open has made it yet; and
    /// whether this call made it.
    async fn shared(&self) -> KvResult<(ConnectionManager, bool)> {
        let made = AtomicBool::new(false);
        let conn = self
            .conn
            .get_or_try_init(|| async {
                made.store(true, Ordering::Relaxed);
                self.connect().await
            })
            .await
            .map_err(|e| KvError::other(spin_message(&e)))?;
        Ok((conn.clone(), made.load(Ordering::Relaxed)))
    }

    /// Sends one command on the shared connection, once.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> KvResult<T> {
        let (mut conn, _) = self.shared().await?;
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| KvError::other(shared_message(&e)))
    }
}

#[async_trait]
impl KvBackend for RedisStore {
    async fn opened(&self) -> KvResult<Connected<()>> {
        let (mut conn, made) = self.shared().await?;
        // Spin's `after_open`: a ping whose failure is ignored (a failure
        // starts the connection manager's reconnection).
        let _: RedisResult<()> = redis::cmd("PING").query_async(&mut conn).await;
        Ok(Connected {
            value: (),
            connections: u64::from(made),
        })
    }

    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let value = self.query(redis::cmd("GET").arg(key)).await?;
        check_value_size(value, self.limit)
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.query(redis::cmd("DEL").arg(key)).await
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        // Every key of the database, as Spin lists a Redis store: the keys
        // carry no store prefix to select by.
        let names: Vec<Value> = self.query(redis::cmd("KEYS").arg("*")).await?;
        let keys = names
            .into_iter()
            .map(item_string)
            .collect::<KvResult<Vec<_>>>()?;
        check_keys_size(keys, self.limit)
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.query(redis::cmd("INCRBY").arg(key).arg(delta)).await
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        // Spin's defect, kept: the keys go to KEYS, not MGET.
        let reply: Value = self.query(redis::cmd("KEYS").arg(&keys)).await?;
        check_pairs_size(pairs_like_spin(reply)?, self.limit)
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        let mut cmd = redis::cmd("MSET");
        for (key, value) in &pairs {
            cmd.arg(key).arg(value);
        }
        self.query(&cmd).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        self.query(redis::cmd("DEL").arg(&keys)).await
    }

    async fn new_cas(&self, key: &str) -> KvResult<Connected<Arc<dyn CasHandle>>> {
        let conn = self
            .connect()
            .await
            .map_err(|e| KvError::other(spin_message(&e)))?;
        let handle = RedisCas {
            conn,
            key: key.to_owned(),
            limit: self.limit,
        };
        Ok(Connected {
            value: Arc::new(handle),
            connections: 1,
        })
    }
}

/// A compare-and-swap handle on a connection manager of its own, where its
/// `WATCH` lives (and is lost, silently, should that connection drop: as
/// in Spin).
struct RedisCas {
    conn: ConnectionManager,
    key: String,
    limit: usize,
}

impl RedisCas {
    /// Sends `cmd` on the handle's connection, once.
    async fn send<T: FromRedisValue>(&self, cmd: &Cmd) -> KvResult<T> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| KvError::other(shared_message(&e)))
    }
}

#[async_trait]
impl CasHandle for RedisCas {
    async fn current(&self) -> KvResult<Option<Vec<u8>>> {
        self.send::<()>(redis::cmd("WATCH").arg(&self.key)).await?;
        let value = self.send(redis::cmd("GET").arg(&self.key)).await?;
        check_value_size(value, self.limit)
    }

    async fn swap(&self, value: Vec<u8>) -> Result<(), SwapError> {
        let mut transaction = redis::pipe();
        transaction.atomic().cmd("SET").arg(&self.key).arg(value);
        let mut conn = self.conn.clone();
        let written = transaction
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| KvError::other(shared_message(&e)));
        // Spin ends the transaction with `UNWATCH <key>`; UNWATCH takes no
        // argument, so Redis always refuses it and the swap is reported as
        // failed whatever EXEC did.
        self.send::<()>(redis::cmd("UNWATCH").arg(&self.key))
            .await
            .map_err(|e| SwapError::CasFailed(e.message().to_owned()))?;
        written.map_err(|e| SwapError::CasFailed(e.message().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::contract;
    use redis::aio::MultiplexedConnection;
    use std::net::TcpListener;
    use std::time::Instant;
    use test_support::redis_server::RedisServer;

    fn url(server: &RedisServer) -> RedisUrl {
        RedisUrl::parse(&server.url()).unwrap()
    }

    /// A store on `server`, with its own connection.
    fn store(server: &RedisServer) -> RedisStore {
        RedisStore::open(&url(server)).unwrap()
    }

    /// `count` stores on `server`: separate connections, as separate hosts
    /// would have.
    fn stores(server: &RedisServer, count: usize) -> Vec<Arc<dyn KvBackend>> {
        (0..count)
            .map(|_| Arc::new(store(server)) as Arc<dyn KvBackend>)
            .collect()
    }

    /// A raw connection to `server`, as another client.
    async fn raw(server: &RedisServer) -> MultiplexedConnection {
        let client = redis::Client::open(server.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// Spin's Redis compare-and-swap: every swap reports `cas-failed`, a
    /// `WATCH` protects a key seen absent, and each handle opens a
    /// connection.
    const RULES: contract::CasRules = contract::CasRules {
        write_reports_ok: false,
        absent_overwrites: false,
        connections_per_handle: 1,
    };

    // The backend contract (see `contract.rs`), each on a fresh server.

    #[tokio::test]
    async fn set_get_delete_exists_keys() {
        let server = RedisServer::start(false);
        contract::set_get_delete_exists_keys(&store(&server)).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_existing_value() {
        let server = RedisServer::start(false);
        contract::compare_and_swap_on_an_existing_value(&store(&server), &RULES).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_absent_key_is_watched() {
        let server = RedisServer::start(false);
        contract::compare_and_swap_on_an_absent_key(&store(&server), &RULES).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_swaps_on_a_present_key_write_once() {
        let server = RedisServer::start(false);
        contract::concurrent_swaps_on_a_present_key_write_once(&stores(&server, 2), &RULES).await;
    }

    #[tokio::test]
    async fn increment_is_incrby_on_decimal_text() {
        // Redis keeps counters as decimal text (Spin's SQLite store keeps
        // 8 little-endian bytes; each backend reads back its own).
        let server = RedisServer::start(false);
        let s = store(&server);
        contract::increment_counts(&s, |n| n.to_string().into_bytes()).await;
        // Not a number, and an overflow: Redis refuses, with its message in
        // redis-rs 0.32's words.
        s.set("text", b"abc").await.unwrap();
        let err = s.increment("text", 1).await.unwrap_err();
        assert_eq!(
            err.message(),
            "An error was signalled by the server - ResponseError: value is not an integer or \
             out of range"
        );
        assert!(!err.is_trap());
        s.set("max", i64::MAX.to_string().as_bytes()).await.unwrap();
        let err = s.increment("max", 1).await.unwrap_err();
        assert_eq!(
            err.message(),
            "An error was signalled by the server - ResponseError: increment or decrement would \
             overflow"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_hand_out_distinct_values() {
        let server = RedisServer::start(false);
        contract::concurrent_increments_hand_out_distinct_values(&stores(&server, 2)).await;
    }

    #[tokio::test]
    async fn set_many_and_delete_many() {
        let server = RedisServer::start(false);
        contract::set_many_and_delete_many(&store(&server)).await;
    }

    #[tokio::test]
    async fn results_over_the_limit_are_refused() {
        let server = RedisServer::start(false);
        let s = RedisStore::with_result_limit(&url(&server), 300).unwrap();
        contract::results_over_the_limit_are_refused(&s, 300, &RULES).await;
    }

    #[tokio::test]
    async fn key_listings_over_the_limit_are_refused() {
        let server = RedisServer::start(false);
        let s = RedisStore::with_result_limit(&url(&server), contract::KEYS_LIMIT).unwrap();
        contract::key_listings_over_the_limit_are_refused(&s).await;
    }

    // What only Spin's Redis store does.

    #[tokio::test]
    async fn get_many_sends_its_keys_to_keys() {
        let server = RedisServer::start(false);
        let s = store(&server);
        s.set("k", b"v0").await.unwrap();
        // Two keys or more: KEYS takes one pattern.
        let err = s
            .get_many(vec!["k".into(), "missing".into()])
            .await
            .unwrap_err();
        assert_eq!(
            err.message(),
            "An error was signalled by the server - ResponseError: wrong number of arguments for \
             'keys' command"
        );
        assert!(!err.is_trap());
        // One key that exists: KEYS answers its name, an odd count: trap.
        let err = s.get_many(vec!["k".into()]).await.unwrap_err();
        assert!(err.is_trap(), "{err}");
        // One key that does not exist: nothing matches, an empty answer.
        assert_eq!(s.get_many(vec!["missing".into()]).await.unwrap(), []);
        // A pattern matching two keys: their names, paired up.
        s.set("k2", b"v2").await.unwrap();
        let mut got = s.get_many(vec!["k*".into()]).await.unwrap();
        assert_eq!(got.len(), 1);
        let (first, second) = got.pop().unwrap();
        let mut names = [first.into_bytes(), second.unwrap()];
        names.sort();
        assert_eq!(names, [b"k".to_vec(), b"k2".to_vec()]);
    }

    #[test]
    fn pairs_are_made_as_redis_rs_makes_them() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(pairs_like_spin(Value::Array(vec![])).unwrap(), []);
        assert_eq!(pairs_like_spin(Value::Nil).unwrap(), []);
        assert_eq!(
            pairs_like_spin(Value::Array(vec![
                bulk("a"),
                bulk("b"),
                bulk("c"),
                Value::Nil
            ]))
            .unwrap(),
            [
                ("a".to_string(), Some(b"b".to_vec())),
                ("c".to_string(), None)
            ]
        );
        assert!(pairs_like_spin(Value::Array(vec![bulk("a")]))
            .unwrap_err()
            .is_trap());
        assert!(
            pairs_like_spin(Value::Array(vec![bulk("a"), bulk("b"), bulk("c")]))
                .unwrap_err()
                .is_trap()
        );
        // A name that is not UTF-8 fails before the odd item is reached.
        let err = pairs_like_spin(Value::Array(vec![
            Value::BulkString(vec![0xff]),
            bulk("b"),
            bulk("c"),
        ]))
        .unwrap_err();
        assert_eq!((err.message(), err.is_trap()), (INVALID_UTF8, false));
    }

    #[tokio::test]
    async fn every_cas_handle_opens_a_connection() {
        let server = RedisServer::start(false);
        let s = store(&server);
        s.opened().await.unwrap();
        let mut conn = raw(&server).await;
        let clients = |conn: &mut MultiplexedConnection| {
            let mut conn = conn.clone();
            async move {
                let list: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                list.lines().count()
            }
        };
        let before = clients(&mut conn).await;
        let handles: Vec<_> = {
            let mut handles = Vec::new();
            for _ in 0..3 {
                handles.push(s.new_cas("k").await.unwrap());
            }
            handles
        };
        assert!(handles.iter().all(|h| h.connections == 1));
        assert_eq!(clients(&mut conn).await, before + 3);
        drop(handles);
    }

    /// Waits up to `within` for `task`; `None` if it is still running.
    async fn within<T>(within: Duration, task: &mut tokio::task::JoinHandle<T>) -> Option<T> {
        tokio::time::timeout(within, task)
            .await
            .ok()
            .map(|joined| joined.unwrap())
    }

    #[tokio::test]
    async fn the_first_open_waits_for_redis_and_later_opens_only_ping() {
        let server = RedisServer::not_started(false);
        let s = Arc::new(store(&server));
        // Down at the first open: the open waits (Spin's connection manager
        // retries its first connection on its schedule, with no timeout).
        let started = Instant::now();
        let mut open = tokio::spawn({
            let s = s.clone();
            async move { s.opened().await.map(|c| c.connections) }
        });
        assert!(within(Duration::from_millis(800), &mut open)
            .await
            .is_none());
        server.restart();
        // Its second attempt comes 1.48 s after the first.
        let made = within(Duration::from_secs(10), &mut open).await;
        assert_eq!(made.map(Result::unwrap), Some(1));
        assert!(started.elapsed() >= Duration::from_millis(1400));
        assert_eq!(s.opened().await.unwrap().connections, 0);
    }

    #[tokio::test]
    async fn redis_down_stalls_operations_until_it_is_back() {
        let server = RedisServer::start(false);
        let s = Arc::new(store(&server));
        s.set("kept", b"yes").await.unwrap();
        server.stop();
        // The command that meets the dead connection fails at once, and is
        // not sent again; it starts the reconnection.
        let started = Instant::now();
        let err = s.get("kept").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{err}");
        // The next ones wait for the reconnection, with no timeout...
        let waited = Instant::now();
        let mut get = tokio::spawn({
            let s = s.clone();
            async move { s.get("kept").await }
        });
        let mut cas = tokio::spawn({
            let s = s.clone();
            async move { s.new_cas("kept").await.map(|c| c.connections) }
        });
        assert!(within(Duration::from_millis(800), &mut get).await.is_none());
        assert!(within(Duration::from_millis(1), &mut cas).await.is_none());
        // ... and go through at its next attempt once Redis is back (empty:
        // this server keeps nothing).
        server.restart();
        let got = within(Duration::from_secs(10), &mut get).await.unwrap();
        assert_eq!(got.unwrap(), None);
        assert!(waited.elapsed() >= Duration::from_millis(1000));
        let cas = within(Duration::from_secs(10), &mut cas).await.unwrap();
        assert_eq!(cas.unwrap(), 1);
        s.set("kept", b"again").await.unwrap();
        assert_eq!(s.increment("n", 5).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn an_idle_store_meets_a_restart_once() {
        // Redis restarts while nobody uses the store: the first command
        // meets the dead connection and fails (Spin sends nothing twice);
        // the reconnection finds Redis there at once.
        let server = RedisServer::start(false);
        let s = store(&server);
        s.set("k", b"v").await.unwrap();
        server.stop();
        server.restart();
        assert!(s.get("k").await.is_err());
        assert_eq!(s.get("k").await.unwrap(), None);
        s.set("k", b"w").await.unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"w"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_that_never_answers_holds_operations() {
        // Accepts connections and reads nothing: a hung server, or a
        // network that drops packets after the handshake. Spin sets no
        // response timeout: the operation waits.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut open = Vec::new();
            for conn in listener.incoming().take(64) {
                open.push(conn);
            }
        });
        let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let s = Arc::new(RedisStore::open(&url).unwrap());
        let mut get = tokio::spawn({
            let s = s.clone();
            async move { s.get("k").await.map(drop) }
        });
        assert!(within(Duration::from_secs(2), &mut get).await.is_none());
        get.abort();
    }

    /// Spin's reconnection schedule, from the backoff its client builds:
    /// backon without its `std` feature jitters with a fixed seed, so the
    /// sleeps are the same in every process (the figures measured under
    /// Spin's redis-rs 0.32).
    #[test]
    fn the_reconnection_schedule_is_spins() {
        use backon::BackoffBuilder;
        let sleeps: Vec<u64> = backon::ExponentialBuilder::default()
            .with_factor(100.0)
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(6)
            .with_jitter()
            .build()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(sleeps, [1480, 116895, 91735, 97066, 70086, 96185]);
        assert_eq!(sleeps.iter().sum::<u64>() / 1000, 473);
    }

    #[tokio::test]
    async fn keys_are_not_prefixed_by_store() {
        // As in Spin: the raw key is the Redis key, so two stores on one
        // server share one key space, and other clients see the same keys.
        let server = RedisServer::start(false);
        let (a, b) = (store(&server), store(&server));
        a.set("session/x", b"v").await.unwrap();
        assert_eq!(
            b.get("session/x").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg("session/x")
            .query_async(&mut raw(&server).await)
            .await
            .unwrap();
        assert_eq!(raw.as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn messages_are_redis_rs_0_32s() {
        let server_error = |code: &str, detail: &str| {
            redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
        };
        assert_eq!(
            spin_message(&server_error("WRONGTYPE", "Operation against a key")),
            "WRONGTYPE: Operation against a key"
        );
    }

    #[test]
    fn urls_are_checked_and_never_shown_with_a_password() {
        let url = RedisUrl::parse("redis://user:pw@example.org:7000/3").unwrap();
        assert_eq!(url.addr(), "example.org:7000");
        assert_eq!(url.to_string(), "Redis at example.org:7000");
        assert!(!format!("{url:?}").contains("pw"));
        assert_eq!(
            RedisUrl::parse("redis://localhost").unwrap().addr(),
            "localhost:6379"
        );
        for bad in ["", "localhost:6379", "http://h", "rediss://h", "redis://"] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
