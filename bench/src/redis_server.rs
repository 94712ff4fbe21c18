//! A real `redis-server` for the Redis phases, and the few bytes of its
//! protocol (RESP) the benchmark needs to fill it and to look at it.
//!
//! The server runs on a free 127.0.0.1 port in a directory of its own,
//! with nothing written to disk (`--save "" --appendonly no`), and is
//! stopped when dropped.

use std::io::{BufReader, BufWriter, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Debian's `redis-server` package puts the server here.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long a new server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `redis-server` process of ours.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts a server whose working directory is `dir` and waits until it
    /// answers. The port is picked free first; another process may take it
    /// before ours binds it, so the server answering must be ours (its
    /// `process_id`), else another port is tried.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        if !Path::new(REDIS_SERVER).exists() {
            bail!(
                "{REDIS_SERVER} is missing: install Debian's package with \
                 `apt-get install redis-server`, or run with `--redis-sizes none`"
            );
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let port = free_port()?;
            let child = spawn(dir, port)?;
            let mut server = RedisServer {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            if server.wait_until_serving(deadline)? {
                return Ok(server);
            }
        }
    }

    /// Its process id, for its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The runtime config that puts the `default` store on this server.
    pub fn runtime_config(&self) -> String {
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://{}\"\n",
            self.addr
        )
    }

    /// A connection of our own.
    pub fn connect(&self) -> anyhow::Result<Resp> {
        Resp::connect(self.addr)
    }

    /// Whether our process answers on the port (true), or another one does
    /// or ours exited (false, after stopping ours), before `deadline`.
    fn wait_until_serving(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        let pid = self.pid();
        loop {
            if Instant::now() >= deadline {
                bail!("redis-server did not answer within {START_TIMEOUT:?}");
            }
            if self.child.try_wait()?.is_some() {
                // It could not bind the port.
                return Ok(false);
            }
            match server_pid(self.addr) {
                Some(p) if p == pid => return Ok(true),
                Some(_) => {
                    // Another server holds the port; ours will exit.
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Ok(false);
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Nothing is persisted: killing it loses nothing worth keeping.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, port: u16) -> anyhow::Result<Child> {
    Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {REDIS_SERVER}"))
}

/// A port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `process_id` of the server answering at `addr`, once it serves.
fn server_pid(addr: SocketAddr) -> Option<u32> {
    let mut conn = Resp::connect(addr).ok()?;
    let info = conn.command(&[b"INFO", b"server"]).ok()?.into_text().ok()?;
    info_field(&info, "process_id")?.parse().ok()
}

/// A field of an `INFO` answer (`name:value` lines).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A reply, as RESP 2 sends it.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:5`.
    Integer(i64),
    /// `$3 abc`, or `None` for a nil.
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`, or `None` for a nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (a simple or bulk string), or the error it is.
    pub fn into_text(self) -> anyhow::Result<String> {
        match self {
            Reply::Simple(text) => Ok(text),
            Reply::Bulk(Some(bytes)) => Ok(String::from_utf8(bytes)?),
            other => bail!("expected text from Redis, got {other:?}"),
        }
    }

    /// The reply as a number, or the error it is.
    pub fn into_integer(self) -> anyhow::Result<i64> {
        match self {
            Reply::Integer(n) => Ok(n),
            other => bail!("expected a number from Redis, got {other:?}"),
        }
    }

    /// `Ok` for `+OK`, else the error it is.
    pub fn ok(self) -> anyhow::Result<()> {
        match self {
            Reply::Simple(text) if text == "OK" => Ok(()),
            other => bail!("expected OK from Redis, got {other:?}"),
        }
    }
}

/// A plain, blocking RESP connection. Commands may be pipelined: queue
/// them with [`Resp::send`], then [`Resp::flush`] and read each
/// [`Resp::reply`] in order.
pub struct Resp {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Resp {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .with_context(|| format!("connecting to Redis at {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Resp {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::with_capacity(1 << 16, stream),
        })
    }

    /// Queues one command.
    pub fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        write!(self.writer, "*{}\r\n", args.len())?;
        for arg in args {
            write!(self.writer, "${}\r\n", arg.len())?;
            self.writer.write_all(arg)?;
            self.writer.write_all(b"\r\n")?;
        }
        Ok(())
    }

    /// Sends what is queued.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    /// Reads the next reply.
    pub fn reply(&mut self) -> anyhow::Result<Reply> {
        read_reply(&mut self.reader)
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.send(args)?;
        self.flush()?;
        self.reply()
    }
}

fn read_reply(reader: &mut impl std::io::BufRead) -> anyhow::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .context("an empty line from Redis")?;
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(rest.parse()?),
        "$" => match rest.parse::<i64>()? {
            -1 => Reply::Bulk(None),
            len => {
                let mut bytes = vec![0; usize::try_from(len)? + 2];
                reader.read_exact(&mut bytes)?;
                bytes.truncate(bytes.len() - 2);
                Reply::Bulk(Some(bytes))
            }
        },
        "*" => match rest.parse::<i64>()? {
            -1 => Reply::Array(None),
            len => Reply::Array(Some(
                (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<anyhow::Result<_>>()?,
            )),
        },
        _ => bail!("not a RESP reply: {line:?}"),
    })
}

fn read_line(reader: &mut impl std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("Redis closed the connection");
    }
    let line = line
        .strip_suffix("\r\n")
        .context("a RESP line without CRLF")?;
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        let mut input: &[u8] =
            b"+OK\r\n-ERR no\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n:1\r\n$0\r\n\r\n";
        let mut next = || read_reply(&mut input).unwrap();
        assert_eq!(next(), Reply::Simple("OK".into()));
        assert_eq!(next(), Reply::Error("ERR no".into()));
        assert_eq!(next(), Reply::Integer(42));
        assert_eq!(next(), Reply::Bulk(Some(b"a\r\n".to_vec())));
        assert_eq!(next(), Reply::Bulk(None));
        assert_eq!(
            next(),
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Bulk(Some(vec![]))]))
        );
    }

    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:123\r\n";
        assert_eq!(info_field(info, "process_id"), Some("123"));
        assert_eq!(info_field(info, "process"), None);
    }
}
