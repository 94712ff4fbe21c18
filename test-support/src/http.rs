//! A small HTTP/1.1 client over plain TCP sockets, so that tests control
//! every byte they send (and may send from any loopback address), and the
//! first steps of a visitor of the session apps: a first page and the
//! first form post.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Starts a stored session as a browser does, at the tutorial listening at
/// `addr`: `GET /` hands out a pending identifier and the form's token
/// (nothing is stored), and the first form post creates the session (with
/// `v1` empty) under a fresh identifier. Returns the stored session's
/// cookie value and its form token.
pub fn start_session_at(addr: SocketAddr) -> (String, String) {
    let (pending, token) = first_visit_at(addr);
    let body = format!("csrf_token={token}&v1=");
    let raw = request_bytes(
        addr,
        "POST",
        "/2",
        Some(&cookie(&pending)),
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    );
    let posted = send(addr, &raw);
    assert_eq!(posted.status, 303, "{}", posted.text());
    let id = posted
        .session_cookie()
        .expect("the first post creates the session and hands over its cookie");
    assert_ne!(id, pending, "the pending identifier is never adopted");
    (id, token)
}

/// A first visit to the app at `addr`: `GET /` without a cookie. Returns
/// the pending identifier the cookie hands over and the page's form token;
/// nothing is stored.
pub fn first_visit_at(addr: SocketAddr) -> (String, String) {
    let page = send(addr, &request_bytes(addr, "GET", "/", None, None, b""));
    assert_eq!(page.status, 200, "{}", page.text());
    (
        page.session_cookie()
            .expect("a first visit gets a (pending) cookie"),
        page.csrf_token(),
    )
}

/// The bytes of one HTTP/1.1 request (`Connection: close`), with an optional
/// `Cookie` and `Content-Type`, and `Content-Length` for a body or a POST.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if method == "POST" || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers with lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The session cookie's value from `Set-Cookie`, if one was set.
    pub fn session_cookie(&self) -> Option<String> {
        let set_cookie = self.header("set-cookie")?;
        let value = set_cookie.strip_prefix("session=")?.split(';').next()?;
        Some(value.to_owned())
    }

    /// The CSRF token of the page's forms.
    pub fn csrf_token(&self) -> String {
        let text = self.text();
        let marker = r#"name="csrf_token" value=""#;
        let start = text.find(marker).expect("the page has a form token") + marker.len();
        text[start..].split('"').next().unwrap().to_owned()
    }
}

/// `session=<id>`, as a browser would send it.
pub fn cookie(id: &str) -> String {
    format!("session={id}")
}

/// Sends `raw` to `addr` and reads the response until the server closes.
/// Panics when there is no whole response.
pub fn send(addr: SocketAddr, raw: &[u8]) -> Response {
    try_send(addr, raw).unwrap_or_else(|err| panic!("{err}"))
}

/// Like [`send`], but says why there is no whole response (no server, a
/// connection cut before the end of the response, a read timeout).
pub fn try_send(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    try_send_from(None, addr, raw)
}

/// [`send`] from the loopback address `local` (127.x.y.z), so that the
/// host sees a client of that address.
pub fn send_from(local: std::net::IpAddr, addr: SocketAddr, raw: &[u8]) -> Response {
    try_send_from(Some(local), addr, raw).unwrap_or_else(|err| panic!("{err}"))
}

fn try_send_from(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
    raw: &[u8],
) -> std::io::Result<Response> {
    let mut stream = match local {
        Some(local) => crate::net::connect_from(local, addr)?,
        None => TcpStream::connect(addr)?,
    };
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    // The server may answer before reading all of a body it refuses, and
    // then close: a failed write is not a failed exchange.
    let _ = stream.write_all(raw);
    let mut bytes = Vec::new();
    let read = stream.read_to_end(&mut bytes);
    parse(&bytes).ok_or_else(|| {
        let why = read.err().map(|e| e.to_string()).unwrap_or_default();
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "not a whole HTTP response ({why}): {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        )
    })
}

/// Parses a whole response; `None` if it is cut short (a chunked body
/// without its last chunk included).
pub fn parse(bytes: &[u8]) -> Option<Response> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &bytes[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
