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
//! - the store's shared connection is made at the store's first open (an
//!   open fails while that cannot connect), and every open pings it,
//!   ignoring the outcome;
//! - error messages are those of the redis-rs release Spin builds with
//!   (0.32): see [`spin_message`].
//!
//! Where this backend knowingly differs from Spin (see the host's README):
//! every operation is bounded by [`OPERATION_TIMEOUT`] (connect
//! [`CONNECT_TIMEOUT`], answer [`RESPONSE_TIMEOUT`]) and fails with a
//! message when Redis is unreachable or slow; reads are tried once more after
//! a connection failure; the shared connection is a [`ConnectionManager`]
//! re-established in the background after a failure.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError,
    RedisResult, ServerErrorKind, Value,
};
use tokio::sync::Mutex;

use super::{
    check_keys_size, check_pairs_size, check_value_size, CasHandle, Connected, KvBackend, KvError,
    KvResult, SwapError, MAX_RESULT_BYTES,
};

/// How long one attempt to open a TCP connection (and say hello) to Redis
/// may take. Short, because a request waits for it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long Redis may take to answer one command on an open connection.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The hard bound on one backend operation, whatever happens inside it:
/// waiting for a reconnection in progress, the command, the one retry. A
/// request that finds Redis gone gets its error within this time.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection attempts after the first, per reconnection. Few and close
/// together: while Redis is down each reconnection should fail fast (the
/// requests waiting on it then get their error promptly), and the next
/// command starts another one anyway.
const RECONNECT_RETRIES: usize = 1;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

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

/// Which failed attempts may be repeated once, within the operation's time.
#[derive(Clone, Copy)]
enum Retry {
    /// Only when the command certainly never reached Redis (the connection
    /// was refused): for writes, which must not run twice.
    IfNotSent,
    /// After any connection failure: for reads, which may run twice. This
    /// hides the one stale connection a restart of Redis leaves behind.
    IfConnectionFailed,
}

impl Retry {
    fn allows(self, e: &RedisError) -> bool {
        match self {
            Retry::IfNotSent => e.is_connection_refusal(),
            Retry::IfConnectionFailed => {
                e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error()
            }
        }
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

/// A command's outcome as Spin reports it, or this host's timeout.
async fn bounded<T>(
    addr: &str,
    what: &str,
    work: impl Future<Output = RedisResult<T>>,
) -> KvResult<T> {
    match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(KvError::other(spin_message(&e))),
        Err(_) => Err(KvError::other(format!(
            "Redis at {addr}: {what} got no answer within {} ms",
            OPERATION_TIMEOUT.as_millis()
        ))),
    }
}

/// One `type = "redis"` store.
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    addr: String,
    /// Whether the shared connection has been made (at the first open that
    /// reached Redis); held while connecting, so only one open connects.
    connected: Mutex<bool>,
    limit: usize,
}

impl RedisStore {
    /// A store on the server at `url`. Does not connect: like Spin, the host
    /// starts while Redis is down, and the first open connects.
    ///
    /// Must be called inside a tokio runtime, which then drives the
    /// connection.
    pub fn open(url: &RedisUrl) -> anyhow::Result<Self> {
        Self::with_result_limit(url, MAX_RESULT_BYTES)
    }

    /// The same, with another result limit (for tests of the arithmetic).
    pub fn with_result_limit(url: &RedisUrl, limit: usize) -> anyhow::Result<Self> {
        let client = redis::Client::open(url.url.as_str())
            .with_context(|| format!("invalid Redis URL for {}", url.addr))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .with_context(|| format!("cannot set up the connection to {url}"))?;
        Ok(Self {
            client,
            conn,
            addr: url.addr.clone(),
            connected: Mutex::new(false),
            limit,
        })
    }

    /// Runs `attempt` on the shared connection, at most twice (see
    /// [`Retry`]), all within [`OPERATION_TIMEOUT`].
    async fn run<T, F, Fut>(&self, what: &str, retry: Retry, mut attempt: F) -> KvResult<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempts = async {
            match attempt(self.conn.clone()).await {
                Err(e) if retry.allows(&e) => attempt(self.conn.clone()).await,
                result => result,
            }
        };
        bounded(&self.addr, what, attempts).await
    }

    /// Sends one command.
    async fn query<T: FromRedisValue>(&self, retry: Retry, cmd: &Cmd) -> KvResult<T> {
        let name = command_name(cmd);
        self.run(&name, retry, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// `PING` on the shared connection.
    async fn ping(&self) -> KvResult<()> {
        self.query(Retry::IfConnectionFailed, &redis::cmd("PING"))
            .await
    }

    /// Spin's store manager: the shared connection is made once, by the
    /// first open that succeeds in making it. Returns whether this call made
    /// it.
    async fn connect_once(&self) -> KvResult<bool> {
        let mut connected = self.connected.lock().await;
        if *connected {
            return Ok(false);
        }
        self.ping().await?;
        *connected = true;
        Ok(true)
    }

    /// A connection of its own, for one cas handle.
    async fn dedicated_connection(&self) -> KvResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        bounded(
            &self.addr,
            "connect",
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }
}

/// The command's name, for messages (never its keys or values).
fn command_name(cmd: &Cmd) -> String {
    cmd.args_iter()
        .next()
        .and_then(|arg| match arg {
            redis::Arg::Simple(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        })
        .unwrap_or("command")
        .to_owned()
}

#[async_trait]
impl KvBackend for RedisStore {
    async fn opened(&self) -> KvResult<Connected<()>> {
        let made = self.connect_once().await?;
        // Spin's `after_open`: a ping whose failure is ignored (the
        // connection manager reconnects by itself).
        let _ = self.ping().await;
        Ok(Connected {
            value: (),
            connections: u64::from(made),
        })
    }

    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let value = self
            .query(Retry::IfConnectionFailed, redis::cmd("GET").arg(key))
            .await?;
        check_value_size(value, self.limit)
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.query(Retry::IfNotSent, redis::cmd("SET").arg(key).arg(value))
            .await
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.query(Retry::IfNotSent, redis::cmd("DEL").arg(key))
            .await
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        self.query(Retry::IfConnectionFailed, redis::cmd("EXISTS").arg(key))
            .await
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        // Every key of the database, as Spin lists a Redis store: the keys
        // carry no store prefix to select by.
        let names: Vec<Value> = self
            .query(Retry::IfConnectionFailed, redis::cmd("KEYS").arg("*"))
            .await?;
        let keys = names
            .into_iter()
            .map(item_string)
            .collect::<KvResult<Vec<_>>>()?;
        check_keys_size(keys, self.limit)
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.query(Retry::IfNotSent, redis::cmd("INCRBY").arg(key).arg(delta))
            .await
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        // Spin's defect, kept: the keys go to KEYS, not MGET.
        let reply: Value = self
            .query(Retry::IfConnectionFailed, redis::cmd("KEYS").arg(&keys))
            .await?;
        check_pairs_size(pairs_like_spin(reply)?, self.limit)
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        let mut cmd = redis::cmd("MSET");
        for (key, value) in &pairs {
            cmd.arg(key).arg(value);
        }
        self.query(Retry::IfNotSent, &cmd).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        self.query(Retry::IfNotSent, redis::cmd("DEL").arg(&keys))
            .await
    }

    async fn new_cas(&self, key: &str) -> KvResult<Connected<Arc<dyn CasHandle>>> {
        let conn = self.dedicated_connection().await?;
        let handle = RedisCas {
            conn,
            key: key.to_owned(),
            addr: self.addr.clone(),
            limit: self.limit,
        };
        Ok(Connected {
            value: Arc::new(handle),
            connections: 1,
        })
    }
}

/// A compare-and-swap handle on its own Redis connection, where its `WATCH`
/// lives.
struct RedisCas {
    conn: MultiplexedConnection,
    key: String,
    addr: String,
    limit: usize,
}

impl RedisCas {
    /// Sends `cmd` on the handle's connection.
    async fn send<T: FromRedisValue>(&self, cmd: &Cmd) -> KvResult<T> {
        let name = command_name(cmd);
        let mut conn = self.conn.clone();
        bounded(&self.addr, &name, cmd.query_async(&mut conn)).await
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
        let written = bounded(&self.addr, "EXEC", transaction.query_async::<()>(&mut conn)).await;
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

    /// The bound a failing operation must respect, with room for a loaded
    /// machine.
    const PROMPT: Duration = Duration::from_millis(OPERATION_TIMEOUT.as_millis() as u64 + 1500);

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

    #[tokio::test]
    async fn the_first_open_connects_and_later_opens_only_ping() {
        let server = RedisServer::not_started(false);
        let s = store(&server);
        // Down at the first open: the open fails, with redis-rs's words.
        let err = s.opened().await.unwrap_err();
        assert!(!err.message().is_empty());
        server.restart();
        assert_eq!(s.opened().await.unwrap().connections, 1);
        assert_eq!(s.opened().await.unwrap().connections, 0);
        // Down after the first connection: opens succeed (the ping's
        // failure is ignored), operations fail.
        server.stop();
        assert_eq!(s.opened().await.unwrap().connections, 0);
        assert!(s.get("k").await.is_err());
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

    /// One backend operation, its result reduced to success or failure.
    type Op<'a> = std::pin::Pin<Box<dyn Future<Output = KvResult<()>> + Send + 'a>>;

    /// Every operation of `s` fails, each within [`PROMPT`].
    async fn every_operation_fails_promptly(s: &RedisStore) {
        let ops: Vec<(&str, Op<'_>)> = vec![
            ("get", Box::pin(async { s.get("k").await.map(drop) })),
            ("set", Box::pin(s.set("k", b"v"))),
            ("delete", Box::pin(s.delete("k"))),
            ("exists", Box::pin(async { s.exists("k").await.map(drop) })),
            ("keys", Box::pin(async { s.keys().await.map(drop) })),
            ("cas", Box::pin(async { s.new_cas("k").await.map(drop) })),
            (
                "increment",
                Box::pin(async { s.increment("n", 1).await.map(drop) }),
            ),
            (
                "get_many",
                Box::pin(async { s.get_many(vec!["k".into()]).await.map(drop) }),
            ),
            (
                "set_many",
                Box::pin(s.set_many(vec![("k".into(), b"v".to_vec())])),
            ),
            ("delete_many", Box::pin(s.delete_many(vec!["k".into()]))),
        ];
        for (name, op) in ops {
            let started = Instant::now();
            let result = op.await;
            let took = started.elapsed();
            let err = result.expect_err(name);
            assert!(!err.is_trap(), "{name}: {err}");
            assert!(took < PROMPT, "{name} took {took:?}");
        }
    }

    #[tokio::test]
    async fn redis_down_fails_promptly_and_back_works_again() {
        let server = RedisServer::start(false);
        let s = store(&server);
        s.set("kept", b"yes").await.unwrap();

        server.stop();
        every_operation_fails_promptly(&s).await;
        // Still failing a while later: no operation waits on a
        // reconnection that cannot succeed.
        every_operation_fails_promptly(&s).await;

        // Back (empty: this server keeps nothing): the same store works
        // again without being reopened, and at once for reads.
        server.restart();
        assert_eq!(s.get("kept").await.unwrap(), None);
        s.set("kept", b"again").await.unwrap();
        let h = s.new_cas("kept").await.unwrap().value;
        assert_eq!(h.current().await.unwrap().as_deref(), Some(&b"again"[..]));
        assert_eq!(s.increment("n", 5).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn an_idle_store_recovers_from_a_restart() {
        // Redis restarts while nobody uses the store: the connection the
        // store holds is dead, which the first read must get past by itself.
        let server = RedisServer::start(false);
        let s = store(&server);
        s.set("k", b"v").await.unwrap();
        server.stop();
        server.restart();
        assert_eq!(s.get("k").await.unwrap(), None);
        // Writes are never repeated blindly (one may have run), but the
        // connection is back: they work at once too.
        s.set("k", b"w").await.unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"w"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_that_never_answers_times_out() {
        // Accepts connections and reads nothing: a hung server, or a
        // network that drops packets after the handshake.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let mut open = Vec::new();
            for conn in listener.incoming().take(64) {
                open.push(conn);
            }
        });
        let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let s = RedisStore::open(&url).unwrap();
        // A read (retried once inside the bound), a write and a cas handle;
        // the other operations share the same path (see the test above).
        for attempt in 0..3 {
            let started = Instant::now();
            let result = match attempt {
                0 => s.get("k").await.map(drop),
                1 => s.set("k", b"v").await,
                _ => s.new_cas("k").await.map(drop),
            };
            assert!(result.is_err());
            assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
        }
        // The accepting thread stays blocked until the test process ends.
        drop(held);
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
