//! The few bytes of Redis's protocol (RESP) the benchmark needs to fill a
//! server with sessions and to look at it. The server itself is
//! `test_support::redis_server::RedisServer`, the workspace's one spawner.

use std::io::{BufReader, BufWriter, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};
use test_support::redis_server::RedisServer;

/// A connection of our own to `server`.
pub fn connect(server: &RedisServer) -> anyhow::Result<Resp> {
    Resp::connect(SocketAddr::from(([127, 0, 0, 1], server.port())))
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
