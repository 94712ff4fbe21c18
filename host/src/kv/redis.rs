//! The `type = "redis"` key-value backend.
//!
//! Mapping, after Spin's Redis store (crates/key-value-redis):
//! - keys are used as they are, without a prefix per store label: like in
//!   Spin, two labels on the same URL share one key space, and a key written
//!   by a component is the same key `redis-cli` sees;
//! - values are Redis strings holding the exact bytes;
//! - `get`/`set`/`delete`/`exists` are `GET`/`SET`/`DEL`/`EXISTS`, `get-keys`
//!   is `KEYS *`, the batch operations are `MGET`/`MSET`/`DEL k…`;
//! - `increment` is `INCRBY`, so a counter is stored as Redis stores one:
//!   decimal text, where the SQLite backend stores 8 little-endian bytes (as
//!   Spin's two backends differ too);
//! - compare-and-swap is one Lua script (see [`RedisStore::compare_and_swap`]).
//!
//! Failures: every operation is bounded by [`OPERATION_TIMEOUT`] and fails
//! with a message (the guest sees `other(...)`) when Redis is unreachable or
//! slow; nothing here panics or waits longer. The connection is a
//! [`ConnectionManager`]: one multiplexed connection per store, shared by
//! every request, that is re-established in the background once a command
//! finds it broken, so the host recovers by itself when Redis is back.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, RedisError, RedisResult, Script};

use super::{KvBackend, KvError, KvResult};

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

/// Swaps the value under `KEYS[1]` for `ARGV[2]` only if it is still
/// `ARGV[1]` (byte for byte; an absent key reads as `false` and never
/// matches). A script runs atomically in Redis, so nothing can write the key
/// between the comparison and the `SET`.
const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
";

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

/// One `type = "redis"` store.
pub struct RedisStore {
    conn: ConnectionManager,
    addr: String,
    cas: Script,
}

impl RedisStore {
    /// A store on the server at `url`. Does not connect: like Spin, the host
    /// starts while Redis is down, and the first operation connects.
    ///
    /// Must be called inside a tokio runtime, which then drives the
    /// connection.
    pub fn open(url: &RedisUrl) -> anyhow::Result<Self> {
        let client = redis::Client::open(url.url.as_str())
            .with_context(|| format!("invalid Redis URL for {}", url.addr))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .with_context(|| format!("cannot set up the connection to {url}"))?;
        Ok(Self {
            conn,
            addr: url.addr.clone(),
            cas: Script::new(CAS_SCRIPT),
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
        match tokio::time::timeout(OPERATION_TIMEOUT, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(KvError(format!(
                "Redis at {}: {what} failed: {e}",
                self.addr
            ))),
            Err(_) => Err(KvError(format!(
                "Redis at {}: {what} got no answer within {} ms",
                self.addr,
                OPERATION_TIMEOUT.as_millis()
            ))),
        }
    }

    /// Sends one command.
    async fn query<T: FromRedisValue>(&self, retry: Retry, cmd: &Cmd) -> KvResult<T> {
        let name = command_name(cmd);
        self.run(&name, retry, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
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

/// `keys` without repeats, first occurrence first (as the SQLite backend
/// answers a `get-many` with repeated keys).
fn distinct(keys: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    keys.into_iter()
        .filter(|key| seen.insert(key.clone()))
        .collect()
}

#[async_trait]
impl KvBackend for RedisStore {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.query(Retry::IfConnectionFailed, redis::cmd("GET").arg(key))
            .await
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
        let count: i64 = self
            .query(Retry::IfConnectionFailed, redis::cmd("EXISTS").arg(key))
            .await?;
        Ok(count > 0)
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        // Every key of the database, as Spin lists a Redis store: the keys
        // carry no store prefix to select by.
        self.query(Retry::IfConnectionFailed, redis::cmd("KEYS").arg("*"))
            .await
    }

    /// Atomic by construction: absent → `SET NX` (creates the key only if
    /// it is still absent); present → [`CAS_SCRIPT`], which compares and
    /// sets inside Redis. Either is one command on the shared connection,
    /// so no connection is held per cas handle, and a swap still succeeds
    /// only if the key holds what the handle read.
    ///
    /// Spin instead `WATCH`es the key on a dedicated connection when the
    /// handle reads it and runs `MULTI`/`SET`/`EXEC` at the swap; that fails
    /// on any write in between, even one that put back the same bytes.
    /// Comparing values is the contract of this trait and of Spin's SQLite
    /// store; the sessions records carry a write counter, so a value never
    /// comes back to an earlier one.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> KvResult<bool> {
        match expected {
            None => {
                let reply: Option<String> = self
                    .query(
                        Retry::IfNotSent,
                        redis::cmd("SET").arg(key).arg(new).arg("NX"),
                    )
                    .await?;
                Ok(reply.is_some())
            }
            Some(old) => {
                let swapped: i64 = self
                    .run("compare-and-swap", Retry::IfNotSent, |mut conn| {
                        let mut invocation = self.cas.key(key);
                        invocation.arg(old).arg(new);
                        async move { invocation.invoke_async(&mut conn).await }
                    })
                    .await?;
                Ok(swapped == 1)
            }
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        // Redis refuses a value that is not a decimal i64 and an overflow,
        // leaving the value as it was.
        self.query(Retry::IfNotSent, redis::cmd("INCRBY").arg(key).arg(delta))
            .await
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let keys = distinct(keys);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One MGET: a consistent snapshot of all the keys.
        let values: Vec<Option<Vec<u8>>> = self
            .query(Retry::IfConnectionFailed, redis::cmd("MGET").arg(&keys))
            .await?;
        if values.len() != keys.len() {
            return Err(KvError(format!(
                "Redis at {}: MGET of {} keys answered {} values",
                self.addr,
                keys.len(),
                values.len()
            )));
        }
        Ok(keys
            .into_iter()
            .zip(values)
            .filter(|(_, value)| value.is_some())
            .collect())
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        // MSET writes all pairs at once: no reader sees half of them.
        let mut cmd = redis::cmd("MSET");
        for (key, value) in &pairs {
            cmd.arg(key).arg(value);
        }
        self.query(Retry::IfNotSent, &cmd).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query(Retry::IfNotSent, redis::cmd("DEL").arg(&keys))
            .await
    }
}

/// The `redis-server` the integration tests use too.
#[cfg(test)]
#[path = "../../tests/common/redis_server.rs"]
#[allow(dead_code)] // `port` is for the integration tests
mod test_server;

#[cfg(test)]
mod tests {
    use super::test_server::RedisServer;
    use super::*;
    use crate::kv::contract;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::Instant;

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

    /// The bound a failing operation must respect, with room for a loaded
    /// machine.
    const PROMPT: Duration = Duration::from_millis(OPERATION_TIMEOUT.as_millis() as u64 + 1500);

    // The backend contract (see `contract.rs`), each on a fresh server.

    #[tokio::test]
    async fn set_get_delete_exists_keys() {
        let server = RedisServer::start();
        contract::set_get_delete_exists_keys(&store(&server)).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_existing_value() {
        let server = RedisServer::start();
        contract::compare_and_swap_on_an_existing_value(&store(&server)).await;
    }

    #[tokio::test]
    async fn compare_and_swap_on_an_absent_key_never_overwrites() {
        let server = RedisServer::start();
        contract::compare_and_swap_on_an_absent_key_never_overwrites(&store(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_swaps_have_one_winner() {
        let server = RedisServer::start();
        contract::concurrent_swaps_have_one_winner(&stores(&server, 4)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cas_retry_loops_lose_no_update() {
        let server = RedisServer::start();
        contract::cas_retry_loops_lose_no_update(&stores(&server, 2)).await;
    }

    #[tokio::test]
    async fn increment_is_incrby_on_decimal_text() {
        // Redis keeps counters as decimal text (Spin's SQLite store keeps
        // 8 little-endian bytes; each backend reads back its own).
        let server = RedisServer::start();
        let err = contract::increment_counts(&store(&server), |n| n.to_string().into_bytes()).await;
        assert!(err.0.contains("INCRBY"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_hand_out_distinct_values() {
        let server = RedisServer::start();
        contract::concurrent_increments_hand_out_distinct_values(&stores(&server, 2)).await;
    }

    #[tokio::test]
    async fn batch_operations() {
        let server = RedisServer::start();
        contract::batch_operations(&store(&server)).await;
    }

    // What only the Redis backend has: one key space shared with other
    // clients, outages, reconnection, timeouts, URLs.

    #[tokio::test]
    async fn keys_are_not_prefixed_by_store() {
        // As in Spin: the raw key is the Redis key, so two stores on one
        // server share one key space, and other clients see the same keys.
        let server = RedisServer::start();
        let (a, b) = (store(&server), store(&server));
        a.set("session/x", b"v").await.unwrap();
        assert_eq!(
            b.get("session/x").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg("session/x")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(raw.as_deref(), Some(&b"v"[..]));
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
            (
                "cas",
                Box::pin(async { s.compare_and_swap("k", Some(b"a"), b"b").await.map(drop) }),
            ),
            (
                "cas absent",
                Box::pin(async { s.compare_and_swap("k", None, b"b").await.map(drop) }),
            ),
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
            assert!(err.0.contains("Redis at 127.0.0.1:"), "{name}: {err}");
            assert!(took < PROMPT, "{name} took {took:?}");
        }
    }

    #[tokio::test]
    async fn redis_down_fails_promptly_and_back_works_again() {
        let mut server = RedisServer::start();
        let s = store(&server);
        s.set("kept", b"yes").await.unwrap();

        server.stop();
        every_operation_fails_promptly(&s).await;
        // Still failing a while later: no operation waits on a
        // reconnection that cannot succeed.
        every_operation_fails_promptly(&s).await;

        // Back (empty: this server keeps nothing): the same store works
        // again without being reopened, and at once for reads.
        server.spawn();
        assert_eq!(s.get("kept").await.unwrap(), None);
        s.set("kept", b"again").await.unwrap();
        assert!(s
            .compare_and_swap("kept", Some(b"again"), b"swapped")
            .await
            .unwrap());
        assert_eq!(s.increment("n", 5).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn an_idle_store_recovers_from_a_restart() {
        // Redis restarts while nobody uses the store: the connection the
        // store holds is dead, which the first read must get past by itself.
        let mut server = RedisServer::start();
        let s = store(&server);
        s.set("k", b"v").await.unwrap();
        server.stop();
        server.spawn();
        assert_eq!(s.get("k").await.unwrap(), None);
        // Writes are never repeated blindly (one may have run), but the
        // connection is back: they work at once too.
        s.set("k", b"w").await.unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"w"[..]));
    }

    #[tokio::test]
    async fn a_store_opened_while_redis_is_down_connects_later() {
        let mut server = RedisServer::not_started();
        // Opening never connects: the host starts even though Redis is down.
        let s = store(&server);
        every_operation_fails_promptly(&s).await;
        server.spawn();
        assert_eq!(s.get("k").await.unwrap(), None);
        s.set("k", b"v").await.unwrap();
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
        // A read (retried once inside the bound), a write and a swap; the
        // other operations share the same path (see the test above).
        for attempt in 0..3 {
            let started = Instant::now();
            let result = match attempt {
                0 => s.get("k").await.map(drop),
                1 => s.set("k", b"v").await,
                _ => s.compare_and_swap("k", Some(b"v"), b"w").await.map(drop),
            };
            let err = result.unwrap_err();
            assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
            assert!(err.0.contains("Redis at"), "{err}");
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
