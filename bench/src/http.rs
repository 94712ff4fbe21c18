//! HTTP/1.1 on a keep-alive connection, by hand, so that the benchmark
//! controls what goes on the wire: each request is built whole and handed
//! to the socket in one write, as a browser sends a small request (the
//! writes are counted, so a split request would show); the
//! response is read and framed here (`Content-Length`, chunked, or until
//! the connection closes).
//!
//! The client socket keeps Nagle's algorithm on (no `TCP_NODELAY`) unless
//! asked otherwise. Browsers do set `TCP_NODELAY` (Chromium's
//! `SetDefaultOptionsForClient`, Firefox's `nsSocketTransport`), but for a
//! request written in one piece it makes no difference: Nagle holds back a
//! segment only while earlier data is unacknowledged, and the previous
//! request was acknowledged by its response. Left on, it is a check of the
//! one-write rule: a request that went out in two writes would wait for the
//! server's delayed ACK (about 40 ms on Linux) and show in p99.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A `GET` of `path` with the `session` cookie, if any.
pub fn get(path: &str, host: &str, cookie: Option<&str>) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    push_cookie(&mut request, cookie);
    request.push_str("\r\n");
    request.into_bytes()
}

/// A `POST` of the urlencoded `form` to `path` with the `session` cookie.
pub fn post_form(path: &str, host: &str, cookie: Option<&str>, form: &str) -> Vec<u8> {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
    push_cookie(&mut request, cookie);
    request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    request.push_str(&format!("Content-Length: {}\r\n\r\n", form.len()));
    request.push_str(form);
    request.into_bytes()
}

fn push_cookie(request: &mut String, cookie: Option<&str>) {
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: session={cookie}\r\n"));
    }
}

/// What the benchmark needs of a response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Whether a `Set-Cookie` header came.
    pub set_cookie: bool,
    /// The value of the `session` cookie it set, if it set one.
    pub session_cookie: Option<String>,
    /// The server will close the connection after this response.
    pub close: bool,
    /// Bytes of body on the wire (chunked framing included).
    pub body_bytes: usize,
    /// The writes the request took (one, unless the socket's buffer was
    /// full).
    pub writes: u32,
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs until the server closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    len: usize,
    status: u16,
    set_cookie: bool,
    session_cookie: Option<String>,
    close: bool,
    framing: Framing,
}

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet used.
    buffer: Vec<u8>,
    /// Whether to acknowledge at once what arrives (see
    /// [`Connection::set_quick_ack`]).
    quick_ack: bool,
}

impl Connection {
    /// Connects to `addr`; `nodelay` sets `TCP_NODELAY` (see the module
    /// docs for why it is off by default).
    pub async fn open(addr: SocketAddr, nodelay: bool) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Self::ready(stream, nodelay)
    }

    /// Connects to `addr` from the loopback address `source` (any port),
    /// so that the server counts it as another client address.
    pub async fn open_from(
        addr: SocketAddr,
        source: IpAddr,
        nodelay: bool,
    ) -> anyhow::Result<Self> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding to {source}"))?;
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} from {source}"))?;
        Self::ready(stream, nodelay)
    }

    fn ready(stream: TcpStream, nodelay: bool) -> anyhow::Result<Self> {
        stream.set_nodelay(nodelay)?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(16 * 1024),
            quick_ack: false,
        })
    }

    /// With `on`, the client acknowledges every segment at once instead of
    /// delaying its ACK (Linux's `TCP_QUICKACK`, set again around every
    /// read: the kernel drops back to delayed ACKs on its own). A server
    /// that leaves Nagle's algorithm on then never waits for the client's
    /// delayed ACK: what remains is the cost of the request itself.
    pub fn set_quick_ack(&mut self, on: bool) {
        self.quick_ack = on;
    }

    /// Sends `request` in one write and reads the whole response.
    pub async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        let writes = self.send(request).await?;
        let mut response = self.read_response().await?;
        response.writes = writes;
        Ok(response)
    }

    /// As [`Connection::exchange`], and also returns the body, de-chunked.
    pub async fn exchange_page(&mut self, request: &[u8]) -> anyhow::Result<(Response, Vec<u8>)> {
        self.send(request).await?;
        let head = self.read_head().await?;
        let framing = head.framing;
        let response = self.take_response(head).await?;
        let body = self
            .buffer
            .drain(..response.body_bytes)
            .collect::<Vec<u8>>();
        let body = match framing {
            Framing::Chunked => dechunk(&body)?,
            _ => body,
        };
        Ok((response, body))
    }

    /// Writes `request`; returns how many writes it took. A request is far
    /// smaller than an idle socket's send buffer, so that is one, and the
    /// count shows it.
    async fn send(&mut self, mut request: &[u8]) -> anyhow::Result<u32> {
        let mut writes = 0;
        while !request.is_empty() {
            let written = self.stream.write(request).await?;
            if written == 0 {
                bail!("the connection accepts no more bytes");
            }
            request = &request[written..];
            writes += 1;
        }
        Ok(writes)
    }

    async fn read_response(&mut self) -> anyhow::Result<Response> {
        let head = self.read_head().await?;
        let response = self.take_response(head).await?;
        self.buffer.drain(..response.body_bytes);
        Ok(response)
    }

    /// Drops `head` from the buffer and reads its body into it (left at
    /// the start of the buffer, `body_bytes` long).
    async fn take_response(&mut self, head: Head) -> anyhow::Result<Response> {
        self.buffer.drain(..head.len);
        let body_bytes = self.read_body(head.framing).await?;
        Ok(Response {
            status: head.status,
            set_cookie: head.set_cookie,
            session_cookie: head.session_cookie,
            close: head.close || head.framing == Framing::UntilClose,
            body_bytes,
            writes: 0,
        })
    }

    async fn read_head(&mut self) -> anyhow::Result<Head> {
        loop {
            if let Some(head) = parse_head(&self.buffer)? {
                return Ok(head);
            }
            if self.fill().await? == 0 {
                bail!("the connection closed before a response head");
            }
        }
    }

    /// Reads until the body is in the buffer; returns its length there.
    async fn read_body(&mut self, framing: Framing) -> anyhow::Result<usize> {
        loop {
            if let Some(len) = body_len(framing, &self.buffer)? {
                return Ok(len);
            }
            if self.fill().await? == 0 {
                if framing == Framing::UntilClose {
                    return Ok(self.buffer.len());
                }
                bail!("the connection closed in the middle of a response body");
            }
        }
    }

    /// Reads what has arrived; 0 at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.quick_ack {
            quick_ack(&self.stream)?;
        }
        let read = self.stream.read_buf(&mut self.buffer).await;
        if self.quick_ack {
            quick_ack(&self.stream)?;
        }
        read
    }
}

/// Switches `stream` to quick-ACK mode (Linux; elsewhere nothing).
#[cfg(target_os = "linux")]
fn quick_ack(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    use std::os::raw::{c_int, c_void};
    // From <netinet/in.h> and <netinet/tcp.h>; std has no wrapper.
    const IPPROTO_TCP: c_int = 6;
    const TCP_QUICKACK: c_int = 12;
    extern "C" {
        fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
    }
    let on: c_int = 1;
    // SAFETY: a valid socket, and a pointer to a c_int of the length given.
    let result = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            IPPROTO_TCP,
            TCP_QUICKACK,
            (&on as *const c_int).cast(),
            std::mem::size_of::<c_int>() as u32,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn quick_ack(_stream: &TcpStream) -> std::io::Result<()> {
    Ok(())
}

/// The head at the start of `buffer`, once it is all there.
fn parse_head(buffer: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = find(buffer, b"\r\n\r\n") else {
        if buffer.len() > MAX_HEAD {
            bail!("a response head longer than {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buffer[..end]).context("a response head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not a status line: {status_line:?}"))?;
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 response: {status_line:?}");
    }
    let mut head = Head {
        len: end + 4,
        status,
        set_cookie: false,
        session_cookie: None,
        close: version == "HTTP/1.0",
        framing: Framing::UntilClose,
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("not a header line: {line:?}"))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse().context("a bad Content-Length")?),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().ends_with("chunked"),
            "set-cookie" => {
                head.set_cookie = true;
                if let Some(cookie) = value.strip_prefix("session=") {
                    let id = cookie.split(';').next().unwrap_or("");
                    head.session_cookie = Some(id.to_owned());
                }
            }
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    head.framing = match (status, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, true, _) => Framing::Chunked,
        (_, false, Some(n)) => Framing::Length(n),
        (_, false, None) => Framing::UntilClose,
    };
    Ok(Some(head))
}

/// The length of the body at the start of `buffer`, once it is all there
/// (`None` until then, and always for a body that runs until the close).
fn body_len(framing: Framing, buffer: &[u8]) -> anyhow::Result<Option<usize>> {
    Ok(match framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => (buffer.len() >= n).then_some(n),
        Framing::Chunked => chunked_len(buffer)?,
        Framing::UntilClose => None,
    })
}

/// The length of a complete chunked body (chunks, the last chunk and the
/// trailers) at the start of `buffer`.
fn chunked_len(buffer: &[u8]) -> anyhow::Result<Option<usize>> {
    let mut at = 0;
    loop {
        let Some(line_end) = find(&buffer[at..], b"\r\n").map(|i| at + i) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buffer[at..line_end]).context("a bad chunk size line")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("a bad chunk size: {line:?}"))?;
        at = line_end + 2;
        if size == 0 {
            return Ok(trailers_end(buffer, at));
        }
        let Some(data_end) = at.checked_add(size) else {
            bail!("a chunk size that overflows: {line:?}");
        };
        if buffer.len() < data_end + 2 {
            return Ok(None);
        }
        if &buffer[data_end..data_end + 2] != b"\r\n" {
            bail!("a chunk not followed by CRLF");
        }
        at = data_end + 2;
    }
}

/// The data of a complete chunked body.
fn dechunk(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(body.len());
    let mut at = 0;
    loop {
        let line_end = find(&body[at..], b"\r\n")
            .map(|i| at + i)
            .context("a chunk size line without its end")?;
        let line = std::str::from_utf8(&body[at..line_end]).context("a bad chunk size line")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("a bad chunk size: {line:?}"))?;
        at = line_end + 2;
        if size == 0 {
            return Ok(data);
        }
        let chunk = body
            .get(at..at + size)
            .context("a chunk longer than the body")?;
        data.extend_from_slice(chunk);
        at += size + 2;
    }
}

/// The end of the trailer section that starts at `at` (an empty line ends
/// it).
fn trailers_end(buffer: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let line_end = at + find(&buffer[at..], b"\r\n")?;
        if line_end == at {
            return Some(at + 2);
        }
        at = line_end + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_whole() {
        let post = post_form("/2", "h:1", Some("abc"), "a=1&b=2");
        assert_eq!(
            String::from_utf8(post).unwrap(),
            "POST /2 HTTP/1.1\r\nHost: h:1\r\nCookie: session=abc\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2"
        );
        assert_eq!(
            get("/", "h:1", None),
            b"GET / HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
    }

    #[test]
    fn heads_are_framed() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nSet-Cookie: a=b\r\n\r\nhello");
        assert_eq!(
            (h.status, h.set_cookie, h.close, h.framing, h.len),
            (200, true, false, Framing::Length(5), 55)
        );
        assert_eq!(h.session_cookie, None);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Chunked, true));
        let h = head("HTTP/1.1 303 See Other\r\nset-cookie: session=abc.1; Path=/\r\n\r\n");
        assert_eq!(h.session_cookie.as_deref(), Some("abc.1"));
        let h = head("HTTP/1.1 303 See Other\r\nlocation: /S\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(head("HTTP/1.0 200 OK\r\n\r\n").framing, Framing::UntilClose);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_end_at_the_last_chunk_and_trailers() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\nNEXT";
        assert_eq!(chunked_len(body).unwrap(), Some(body.len() - 4));
        let trailers = b"0\r\nX-T: 1\r\n\r\n";
        assert_eq!(chunked_len(trailers).unwrap(), Some(trailers.len()));
        for partial in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r\n",
            b"0\r\n",
            b"0\r\nX: 1\r\n",
        ] {
            assert_eq!(chunked_len(partial).unwrap(), None, "{partial:?}");
        }
        assert_eq!(dechunk(body).unwrap(), b"hello!");
        assert_eq!(dechunk(trailers).unwrap(), b"");
        assert!(chunked_len(b"zz\r\n").is_err());
        assert!(chunked_len(b"1\r\nab\r\n").is_err());
    }

    #[tokio::test]
    async fn a_response_is_read_whole_and_the_next_one_after_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let n = socket.read(&mut request).await.unwrap();
            request.truncate(n);
            // Two responses, the first split across writes.
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
                .await
                .unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            socket
                .write_all(b"c\r\n0\r\n\r\nHTTP/1.1 303 See Other\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            request
        });
        let mut conn = Connection::open(addr, false).await.unwrap();
        let first = conn.exchange(&get("/", "x", None)).await.unwrap();
        assert_eq!((first.status, first.body_bytes, first.writes), (200, 13, 1));
        let second = conn.read_response().await.unwrap();
        assert_eq!(second.status, 303);
        assert_eq!(server.await.unwrap(), get("/", "x", None));
    }

    #[tokio::test]
    async fn a_page_is_read_de_chunked_from_another_loopback_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, client) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
                .await
                .unwrap();
            client.ip()
        });
        let source: IpAddr = "127.0.1.7".parse().unwrap();
        let mut conn = Connection::open_from(addr, source, false).await.unwrap();
        let (response, page) = conn.exchange_page(&get("/", "x", None)).await.unwrap();
        assert_eq!((response.status, page.as_slice()), (200, &b"abc"[..]));
        assert_eq!(server.await.unwrap(), source);
    }
}
