//! End-to-end: hostile input. One suite of malformed, oversized, lying and
//! injecting requests, run against the real host on both key-value
//! backends (SQLite, and Redis through a runtime config). Every case gets
//! its clear status (exact where the component decides it), the host stays
//! up (a normal GET still answers 200), and the stored sessions are
//! unchanged (read from the backend itself, before and after).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{backend_tests, cookie, App, Backend, Records, Response};

/// How long a request whose body stalls may stay unanswered. The host must
/// end it (an answer or a closed connection) within this bound: a client
/// that announces a body and never sends it must not hold a connection and
/// an instance forever.
const STALLED_BODY_BOUND: Duration = Duration::from_secs(20);

/// How long any other exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

backend_tests! {
    hostile_input => hostile_input_on_sqlite, hostile_input_on_redis;
}

fn hostile_input(backend: Backend) {
    // If the host does not support the backend, this fails here with the
    // host's own message.
    let app = backend.start(&[]);
    hostile_suite(&app);
}

// ---------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------

/// A session of the suite: its cookie value and form token.
struct Client {
    id: String,
    token: String,
}

impl Client {
    fn cookie(&self) -> String {
        cookie(&self.id)
    }
}

/// What the suite checks between cases.
struct Checker<'a> {
    app: &'a App,
    /// The session records as they must still be.
    baseline: Records,
    /// The session every "still up" probe uses.
    probe: String,
}

impl Checker<'_> {
    /// The host answers a normal GET with 200 for the live session (no new
    /// cookie: the session is still known), and the session records are
    /// exactly the baseline.
    fn unchanged(&self, case: &str) {
        let page = self.app.get("/", Some(&cookie(&self.probe)));
        assert_eq!(page.status, 200, "after {case}: the host still serves");
        assert!(
            page.header("set-cookie").is_none(),
            "after {case}: the session is still known"
        );
        let now = session_records(&self.app.records());
        assert!(
            now == self.baseline,
            "after {case}: the stored sessions changed\nbefore: {}\nafter:  {}",
            show(&self.baseline),
            show(&now)
        );
    }

    /// A page view whose cookie led to no session: it handed out `fresh`,
    /// a new pending identifier (never one of the `forged` ones sent), and
    /// stored nothing at all.
    fn unchanged_with_pending(&self, case: &str, fresh: &str, forged: &[String]) {
        assert!(
            fresh.as_bytes()[0].is_ascii_uppercase(),
            "after {case}: {fresh} is a pending identifier"
        );
        assert!(
            !forged.iter().any(|id| id == fresh),
            "after {case}: a forged identifier was adopted"
        );
        self.unchanged(case);
    }
}

/// The hostile-input suite, on a freshly started app; the records are read
/// from its backend itself.
fn hostile_suite(app: &App) {
    let a = start_session(app);
    let b = start_session(app);
    for (client, name) in [(&a, "Ada"), (&b, "Bob")] {
        let posted = app.post_form(
            "/2",
            Some(&client.cookie()),
            &format!("csrf_token={}&v1={name}&v2=Engineer", client.token),
        );
        assert_eq!(posted.status, 303);
    }

    // A request whose body stalls, kept open while everything else runs.
    let stalled_part = format!("csrf_token={}&v1=", a.token);
    let stalled = {
        let addr = app.addr;
        let mut bytes = form_head("/2", Some(&a.cookie()), 100, true).into_bytes();
        bytes.extend_from_slice(stalled_part.as_bytes());
        std::thread::spawn(move || exchange(addr, &bytes, After::Stall, STALLED_BODY_BOUND))
    };

    let check = Checker {
        app,
        baseline: session_records(&app.records()),
        probe: a.id.clone(),
    };
    assert_eq!(check.baseline.len(), 2, "{}", show(&check.baseline));
    check.unchanged("the set-up");

    oversized_bodies(app, &a, &check);
    lying_lengths(app, &a, &check);
    get_bodies(app, &a, &check);
    big_and_many_cookies(app, &a, &check);
    duplicate_session_cookies(app, &a, &b, &check);
    undecodable_cookies(app, &a, &check);
    bad_form_encodings(app, &a, &check);
    nul_bytes(app, &a, &check);
    header_injection(app, &a, &check);
    long_paths(app, &check);
    other_refusals(app, &a, &b, &check);

    match stalled.join().unwrap() {
        Outcome::Answered(response) => assert!(
            matches!(response.status, 400 | 408 | 413),
            "a stalled body: {} {}",
            response.status,
            response.text()
        ),
        Outcome::Closed(_) => {}
        // Spin has no request-body timeout (host README, difference 7): a
        // real `spin up` leaves the request open; what counts for the
        // library is that nothing was stored and everything else ran.
        Outcome::TimedOut
            if !app.instrumented("the stalled body ended by the host's request-body timeout") => {}
        Outcome::TimedOut => panic!(
            "a POST announcing Content-Length: 100 whose body stalled after {} bytes was \
             neither answered nor closed within {STALLED_BODY_BOUND:?}: the host has no \
             timeout on reading request bodies, so a client can hold a connection and an \
             instance open indefinitely",
            stalled_part.len()
        ),
    }
    check.unchanged("a stalled body");

    // No request the host passed to the component ended in a 5xx.
    if app.instrumented("no request the component saw ended in a 5xx, from the request stats") {
        let stats = app.take_stats();
        let failed: Vec<_> = stats.iter().filter(|s| s.status >= 500).collect();
        assert!(failed.is_empty(), "{failed:?}");
    }
}

/// 413: a body over 16 KiB, announced or chunked; never read to the end.
fn oversized_bodies(app: &App, a: &Client, check: &Checker) {
    let mib = 1024 * 1024;
    let mut body = format!("csrf_token={}&v1=", a.token).into_bytes();
    body.resize(mib, b'a');

    let announced = form_post(Some(&a.cookie()), &body);
    let response = exchange(app.addr, &announced, After::Wait, EXCHANGE_TIMEOUT).answered("1 MiB");
    assert_eq!(response.status, 413, "1 MiB body: {}", response.text());
    assert!(response.text().contains("larger than 16384 bytes"));
    check.unchanged("a 1 MiB body");

    let mut chunked = format!(
        "POST /2 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.addr,
        a.cookie()
    )
    .into_bytes();
    for piece in body.chunks(4096) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response =
        exchange(app.addr, &chunked, After::Wait, EXCHANGE_TIMEOUT).answered("chunked 1 MiB");
    assert_eq!(response.status, 413, "chunked 1 MiB: {}", response.text());
    check.unchanged("a chunked 1 MiB body");

    // One byte over the limit, every field otherwise valid.
    let mut just_over = format!("csrf_token={}&v1=", a.token).into_bytes();
    just_over.resize(16 * 1024 + 1, b'a');
    let response = app.request(
        "POST",
        "/2",
        Some(&a.cookie()),
        Some("application/x-www-form-urlencoded"),
        &just_over,
    );
    assert_eq!(response.status, 413);
    check.unchanged("a body of 16 KiB + 1");
}

/// A `Content-Length` that lies, both ways.
fn lying_lengths(app: &App, a: &Client, check: &Checker) {
    // Longer than what is sent, then the client half-closes: the body
    // breaks off.
    let partial = format!("csrf_token={}&v1=Mallory", a.token);
    let mut bytes = form_head("/2", Some(&a.cookie()), partial.len() + 100, false).into_bytes();
    bytes.extend_from_slice(partial.as_bytes());
    match exchange(app.addr, &bytes, After::HalfClose, EXCHANGE_TIMEOUT) {
        Outcome::Answered(response) => assert!(
            matches!(response.status, 400 | 413),
            "a body shorter than its Content-Length: {} {}",
            response.status,
            response.text()
        ),
        Outcome::Closed(_) => {}
        // Spin has no request-body timeout (host README, difference 7): a
        // real `spin up` leaves the request open; what counts for the
        // library is that nothing was stored and everything else ran.
        Outcome::TimedOut
            if !app.instrumented("the stalled body ended by the host's request-body timeout") => {}
        Outcome::TimedOut => panic!("a body shorter than its Content-Length hung"),
    }
    check.unchanged("a body shorter than its Content-Length");

    // Shorter than the body: the declared bytes are a form whose token lost
    // its last character (403), and what follows is a complete request that
    // would store a value. The connection closes after the first answer:
    // the rest is never run.
    let body = format!("v1=Mallory&csrf_token={}", a.token);
    let mut bytes = form_head("/2", Some(&a.cookie()), body.len() - 1, false).into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    let smuggled = format!("csrf_token={}&v1=Smuggled", a.token);
    bytes.extend_from_slice(&form_post(Some(&a.cookie()), smuggled.as_bytes()));
    let response = exchange(app.addr, &bytes, After::Wait, EXCHANGE_TIMEOUT)
        .answered("a body longer than its Content-Length");
    assert_eq!(response.status, 403, "{}", response.text());
    assert_one_answer(&response);
    check.unchanged("a body longer than its Content-Length");
    assert_eq!(api_session(app, &a.cookie()).1["v1"], "Ada");
}

/// Page views and bodies: two page views pipelined on one connection are
/// both answered; a GET whose body is a whole form post (with a length, or
/// chunked) answers the page once and runs nothing of the body.
fn get_bodies(app: &App, a: &Client, check: &Checker) {
    let page_view = |close: bool| {
        format!(
            "GET /2 HTTP/1.1\r\nHost: localhost\r\nCookie: {}\r\n{}\r\n",
            a.cookie(),
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    let pipelined = format!("{}{}", page_view(false), page_view(true));
    let response = exchange(
        app.addr,
        pipelined.as_bytes(),
        After::Wait,
        EXCHANGE_TIMEOUT,
    )
    .answered("two pipelined page views");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        count(&response.body, b"HTTP/1.1 200 "),
        1,
        "the second page view answered too: {}",
        response.text()
    );

    let smuggled = format!("csrf_token={}&v1=Smuggled", a.token);
    let form = form_post(Some(&a.cookie()), smuggled.as_bytes());
    let mut bytes = format!(
        "GET /2 HTTP/1.1\r\nHost: localhost\r\nCookie: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        a.cookie(),
        form.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&form);
    let response = exchange(app.addr, &bytes, After::Wait, EXCHANGE_TIMEOUT)
        .answered("a GET whose body is a form post");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_one_answer(&response);
    check.unchanged("a GET whose body is a form post");

    // The same body in chunks: no length declared, so only the transfer
    // coding says that there is a body at all.
    let mut bytes = format!(
        "GET /2 HTTP/1.1\r\nHost: localhost\r\nCookie: {}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{:x}\r\n",
        a.cookie(),
        form.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&form);
    bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = exchange(app.addr, &bytes, After::Wait, EXCHANGE_TIMEOUT)
        .answered("a chunked GET whose body is a form post");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_one_answer(&response);
    check.unchanged("a chunked GET whose body is a form post");
    assert_eq!(api_session(app, &a.cookie()).1["v1"], "Ada");
}

/// An 8 KiB `Cookie` header, and 500 cookies in one header.
fn big_and_many_cookies(app: &App, a: &Client, check: &Checker) {
    let mut padding = String::new();
    let mut n = 0;
    while padding.len() < 8 * 1024 {
        padding.push_str(&format!("pad{n}={}; ", "x".repeat(100)));
        n += 1;
    }
    let big = format!("{padding}session={}", a.id);
    assert!(big.len() > 8 * 1024);
    let (status, json) = api_session(app, &big);
    assert_eq!(
        (status, json["v1"].as_str()),
        (200, Some("Ada")),
        "8 KiB Cookie"
    );
    let page = app.get("/", Some(&big));
    assert_eq!(page.status, 200);
    assert!(page.header("set-cookie").is_none(), "the session is found");
    check.unchanged("an 8 KiB Cookie header");

    // 8 KiB of garbage, no session: no session found, none created by the API.
    let garbage = "=;;x=\"; session; ,=,\\".repeat(8 * 1024 / 20);
    assert_eq!(api_session(app, &garbage).0, 404);
    check.unchanged("an 8 KiB Cookie header of garbage");

    // 500 other cookies, then the session.
    let many: Vec<String> = (0..500).map(|i| format!("c{i}=v{i}")).collect();
    let header = format!("{}; session={}", many.join("; "), a.id);
    let (status, json) = api_session(app, &header);
    assert_eq!(
        (status, json["v1"].as_str()),
        (200, Some("Ada")),
        "500 cookies"
    );
    check.unchanged("500 cookies in one header");

    // 500 well-formed forged session cookies before the real one: at most a
    // few candidates are looked at, the first well-formed one is taken, is
    // unknown, and is never adopted.
    let forged: Vec<String> = (0..500).map(forged_id).collect();
    let header = forged
        .iter()
        .map(|id| format!("session={id}"))
        .chain([format!("session={}", a.id)])
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(api_session(app, &header).0, 404);
    let refused = app.post_form(
        "/2",
        Some(&header),
        &format!("csrf_token={}&v1=Mallory", a.token),
    );
    assert_eq!(refused.status, 403, "500 forged session cookies on a form");
    check.unchanged("500 forged session cookies");
    let page = app.get("/", Some(&header));
    assert_eq!(page.status, 200);
    let fresh = page.session_cookie().expect("a fresh identifier");
    assert!(!forged.contains(&fresh) && fresh != a.id);
    check.unchanged_with_pending("500 forged session cookies on a page", &fresh, &forged);
}

/// Several `session` cookies: the first well-formed one wins, a forged one
/// is never adopted.
fn duplicate_session_cookies(app: &App, a: &Client, b: &Client, check: &Checker) {
    let first_wins = [
        (format!("session={}; session={}", a.id, b.id), "Ada"),
        (format!("session={}; session={}", b.id, a.id), "Bob"),
        (format!("session=short; session={}", a.id), "Ada"),
        (format!("session=; session=\"{}\"", b.id), "Bob"),
        (format!("session={}x; session={}", a.id, b.id), "Bob"),
    ];
    for (header, name) in &first_wins {
        let (status, json) = api_session(app, header);
        assert_eq!(
            (status, json["v1"].as_str()),
            (200, Some(*name)),
            "{header}"
        );
    }
    // Over two Cookie headers, in order.
    let two_headers = format!(
        "GET /api/session HTTP/1.1\r\nHost: {}\r\nCookie: session={}\r\nCookie: session={}\r\n\
         Connection: close\r\n\r\n",
        app.addr, b.id, a.id
    );
    let response = app.raw(two_headers.as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(json_of(&response)["v1"], "Bob");
    check.unchanged("duplicate session cookies");

    // A forged identifier before the real one is the one looked up: unknown.
    let forged = forged_id(1000);
    let header = format!("session={forged}; session={}", a.id);
    assert_eq!(api_session(app, &header).0, 404);
    let refused = app.post_form(
        "/2",
        Some(&header),
        &format!("csrf_token={}&v1=Mallory", a.token),
    );
    assert_eq!(refused.status, 403);
    assert!(refused.header("set-cookie").is_none());
    check.unchanged("a forged session cookie before the real one, on a form");
    let page = app.get("/", Some(&header));
    assert_eq!(page.status, 200);
    let fresh = page.session_cookie().expect("a fresh identifier");
    assert!(fresh != forged && fresh != a.id);
    check.unchanged_with_pending(
        "a forged session cookie before the real one, on a page",
        &fresh,
        &[forged],
    );
}

/// Cookies that are not UTF-8, or percent-encoded: no session.
fn undecodable_cookies(app: &App, a: &Client, check: &Checker) {
    let encoded: String = a.id.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut not_utf8_elsewhere = format!("session={}; x=", a.id).into_bytes();
    not_utf8_elsewhere.extend_from_slice(b"\xff\xfe");
    let mut not_utf8_in_value = format!("session={}", &a.id[..63]).into_bytes();
    not_utf8_in_value.push(0xe9);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // A header that is not UTF-8 is no cookie at all.
        ("not UTF-8 beside the session", not_utf8_elsewhere),
        ("not UTF-8 in the session", not_utf8_in_value),
        (
            "percent-encoded identifier",
            format!("session={encoded}").into_bytes(),
        ),
        (
            "bad percent-encoding",
            format!("session=%zz{}", &a.id[3..]).into_bytes(),
        ),
        (
            "lone percent",
            format!("session={}%", &a.id[1..]).into_bytes(),
        ),
    ];
    for (case, header) in cases {
        let mut raw = format!(
            "GET /api/session HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: ",
            app.addr
        )
        .into_bytes();
        raw.extend_from_slice(&header);
        raw.extend_from_slice(b"\r\n\r\n");
        let response = app.raw(&raw);
        assert_eq!(response.status, 404, "{case}: {}", response.text());

        let body = format!("csrf_token={}&v1=Mallory", a.token);
        let mut raw = form_head("/2", None, body.len(), false).into_bytes();
        raw.truncate(raw.len() - 2);
        raw.extend_from_slice(b"Cookie: ");
        raw.extend_from_slice(&header);
        raw.extend_from_slice(b"\r\n\r\n");
        raw.extend_from_slice(body.as_bytes());
        let response = app.raw(&raw);
        assert_eq!(
            response.status,
            403,
            "{case} on a form: {}",
            response.text()
        );
        check.unchanged(case);
    }
}

/// Forms with bad encodings: 400 for percent-encoding, 422 for the rest;
/// each with the right cookie and token, so only the encoding decides.
fn bad_form_encodings(app: &App, a: &Client, check: &Checker) {
    let t = &a.token;
    let cases: Vec<(u16, Vec<u8>)> = vec![
        (
            422,
            [format!("csrf_token={t}&v1=").as_bytes(), b"\xff\xfe"].concat(),
        ),
        (
            422,
            [format!("csrf_token={t}&v1=caf").as_bytes(), b"\xe9"].concat(),
        ),
        (422, format!("csrf_token={t}&v1=%FF%FE").into_bytes()),
        (422, format!("csrf_token={t}&v1=%C0%AF").into_bytes()),
        (422, format!("csrf_token={t}&v1=%ED%A0%80").into_bytes()),
        (422, format!("csrf_token={t}&%C3=x").into_bytes()),
        (400, format!("csrf_token={t}&v1=%zz").into_bytes()),
        (400, format!("csrf_token={t}&v1=100%").into_bytes()),
        (400, format!("csrf_token={t}&v1=%4").into_bytes()),
        (400, format!("csrf_token={t}&%g1=x").into_bytes()),
        (400, format!("csrf_token={t}%&v1=x").into_bytes()),
    ];
    for (expected, body) in cases {
        let response = post_bytes(app, "/2", &a.cookie(), &body);
        assert_eq!(
            response.status,
            expected,
            "{:?}: {}",
            String::from_utf8_lossy(&body),
            response.text()
        );
        check.unchanged(&format!("form {:?}", String::from_utf8_lossy(&body)));
    }
}

/// NUL bytes: in form values (422), and raw in headers (refused by hyper).
fn nul_bytes(app: &App, a: &Client, check: &Checker) {
    let t = &a.token;
    for body in [
        format!("csrf_token={t}&v1=a%00b").into_bytes(),
        [format!("csrf_token={t}&v1=a").as_bytes(), b"\0b"].concat(),
        [format!("csrf_token={t}&v2=").as_bytes(), b"\0"].concat(),
    ] {
        let response = post_bytes(app, "/2", &a.cookie(), &body);
        assert_eq!(
            response.status,
            422,
            "{:?}: {}",
            String::from_utf8_lossy(&body),
            response.text()
        );
        check.unchanged("a NUL in a form value");
    }

    for (case, header) in [
        ("a NUL in a header", "X-Evil: a\0b".to_owned()),
        (
            "a NUL in the Cookie header",
            format!("Cookie: session={}\0", a.id),
        ),
    ] {
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\n{header}\r\nConnection: close\r\n\r\n",
            app.addr
        );
        match exchange(app.addr, raw.as_bytes(), After::Wait, EXCHANGE_TIMEOUT) {
            Outcome::Answered(response) => assert_eq!(response.status, 400, "{case}"),
            Outcome::Closed(_) => {}
            Outcome::TimedOut => panic!("{case}: hung"),
        }
        check.unchanged(case);
    }
}

/// CR LF through form values and paths: refused, no header injected.
fn header_injection(app: &App, a: &Client, check: &Checker) {
    let t = &a.token;
    for body in [
        format!("csrf_token={t}&v1=a%0D%0ASet-Cookie:+evil=1"),
        format!("csrf_token={t}&v1=a%0ASet-Cookie:+evil=1"),
        format!("csrf_token={t}&v1=a%0D%0A%0D%0A<script>x</script>"),
        format!("csrf_token={t}&v2=x\r\nSet-Cookie: evil=1"),
    ] {
        let response = post_bytes(app, "/2", &a.cookie(), body.as_bytes());
        assert_eq!(response.status, 422, "{body:?}: {}", response.text());
        assert_no_injection(&response, &body);
        check.unchanged(&format!("form {body:?}"));
    }
    let response = app.get("/%0D%0ASet-Cookie:%20evil=1", Some(&a.cookie()));
    assert_eq!(response.status, 404);
    assert_no_injection(&response, "a path with CR LF");
    check.unchanged("a path with CR LF");
}

fn assert_no_injection(response: &Response, case: &str) {
    assert!(
        response.header("set-cookie").is_none(),
        "{case}: {:?}",
        response.headers
    );
    assert!(
        response
            .headers
            .iter()
            .all(|(n, v)| !n.contains("evil") && !v.contains("evil")),
        "{case}: {:?}",
        response.headers
    );
}

/// Very long paths: the component's 404 while the URI fits, hyper's 414 or
/// 431 beyond; always a 4xx.
fn long_paths(app: &App, check: &Checker) {
    for (len, component_decides) in [
        (8 * 1024, true),
        (60 * 1024, true),
        (64 * 1024, false),
        (512 * 1024, false),
    ] {
        let raw = format!(
            "GET /{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(len),
            app.addr
        );
        let outcome = exchange(app.addr, raw.as_bytes(), After::Wait, EXCHANGE_TIMEOUT);
        let response = outcome.answered("a long path");
        if component_decides {
            assert_eq!(response.status, 404, "a {len}-byte path");
        } else {
            assert!(
                (400..500).contains(&response.status),
                "a {len}-byte path: {}",
                response.status
            );
        }
        check.unchanged(&format!("a {len}-byte path"));
    }
}

/// The rest of the component's refusals, on the same session.
fn other_refusals(app: &App, a: &Client, b: &Client, check: &Checker) {
    let c = a.cookie();
    let t = &a.token;
    let form = "application/x-www-form-urlencoded";
    let ok_body = format!("csrf_token={t}&v1=Mallory");
    let cases: Vec<(u16, Response)> = vec![
        (
            415,
            app.request(
                "POST",
                "/2",
                Some(&c),
                Some("text/plain"),
                ok_body.as_bytes(),
            ),
        ),
        (
            415,
            app.request("POST", "/2", Some(&c), None, ok_body.as_bytes()),
        ),
        // An empty multipart form: well-formed, but without the token.
        (
            403,
            app.request(
                "POST",
                "/2",
                Some(&c),
                Some("multipart/form-data; boundary=x"),
                b"--x--",
            ),
        ),
        (
            400,
            app.request(
                "POST",
                "/2",
                Some(&c),
                Some("multipart/form-data"),
                ok_body.as_bytes(),
            ),
        ),
        (
            415,
            app.request(
                "POST",
                "/2",
                Some(&c),
                Some("application/x-www-form-urlencodedx"),
                ok_body.as_bytes(),
            ),
        ),
        (
            422,
            app.post_form(
                "/2",
                Some(&c),
                &format!("csrf_token={t}&v1={}", "a".repeat(1025)),
            ),
        ),
        (
            422,
            app.post_form("/2", Some(&c), &format!("csrf_token={t}&v1=a&v1=b")),
        ),
        (
            422,
            app.post_form(
                "/2",
                Some(&c),
                &format!("csrf_token={t}&csrf_token={t}&v1=a"),
            ),
        ),
        (
            422,
            app.post_form("/F", Some(&c), &format!("csrf_token={t}&DONE=no")),
        ),
        (
            422,
            app.post_form("/F", Some(&c), &format!("csrf_token={t}&DONE=yes%09")),
        ),
        (403, app.post_form("/2", Some(&c), "v1=Mallory")),
        (403, app.post_form("/2", Some(&c), "csrf_token=&v1=Mallory")),
        (
            403,
            app.post_form(
                "/2",
                Some(&c),
                &format!("csrf_token={}&v1=Mallory", b.token),
            ),
        ),
        (
            403,
            app.post_form(
                "/2",
                Some(&c),
                &format!("csrf_token={}&v1=Mallory", &t[1..]),
            ),
        ),
        (403, app.post_form("/2", None, &ok_body)),
        (403, app.post_form("/logout", Some(&c), "")),
        (404, app.post_form("/nope", Some(&c), &ok_body)),
        (404, app.get("/..%2F..%2Fetc%2Fpasswd", Some(&c))),
        (
            405,
            app.request("PUT", "/2", Some(&c), Some(form), ok_body.as_bytes()),
        ),
        (
            405,
            app.request("DELETE", "/api/session", Some(&c), None, b""),
        ),
        (405, app.get("/logout", Some(&c))),
    ];
    for (i, (expected, response)) in cases.into_iter().enumerate() {
        assert_eq!(response.status, expected, "case {i}: {}", response.text());
        assert!(response.header("set-cookie").is_none(), "case {i}");
    }
    check.unchanged("the component's refusals");
}

// ---------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------

fn start_session(app: &App) -> Client {
    let (id, token) = common::start_session(app);
    Client { id, token }
}

/// `GET /api/session` with this `Cookie` header (never creates a session).
fn api_session(app: &App, cookie_header: &str) -> (u16, serde_json::Value) {
    let response = app.get("/api/session", Some(cookie_header));
    let json = json_of(&response);
    (response.status, json)
}

fn json_of(response: &Response) -> serde_json::Value {
    serde_json::from_slice(&response.body).expect("the API answers JSON")
}

fn post_bytes(app: &App, path: &str, cookie: &str, body: &[u8]) -> Response {
    app.request(
        "POST",
        path,
        Some(cookie),
        Some("application/x-www-form-urlencoded"),
        body,
    )
}

/// A whole form POST of `body` to `/2`, closing the connection after it.
fn form_post(cookie: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut bytes = form_head("/2", cookie, body.len(), false).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Nothing followed the response on its connection: no second request
/// hidden in the first one's bytes was run.
fn assert_one_answer(response: &Response) {
    assert_eq!(
        count(&response.body, b"HTTP/1."),
        0,
        "one answer only: {}",
        response.text()
    );
}

/// The head of a form POST announcing `length` body bytes.
fn form_head(path: &str, cookie: Option<&str>, length: usize, keep_alive: bool) -> String {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n"
    );
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A well-formed identifier nobody was issued (distinct for each `n`).
fn forged_id(n: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..64)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(alphabet[(state % 62) as usize])
        })
        .collect()
}

/// Session record keys are `session/` + 64 hex digits; a backend may put a
/// prefix before them.
fn bare_key(key: &str) -> String {
    key.get(key.len().saturating_sub(72)..)
        .unwrap_or(key)
        .to_owned()
}

fn is_session_key(key: &str) -> bool {
    let bare = bare_key(key);
    bare.len() == 72
        && bare.starts_with("session/")
        && bare[8..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Only the session records, under their bare keys, sorted. The expiry
/// index (its cursor moves with wall-clock time) is left out.
fn session_records(records: &Records) -> Records {
    let mut sessions: Records = records
        .iter()
        .filter(|(key, _)| is_session_key(key))
        .map(|(key, value)| (bare_key(key), value.clone()))
        .collect();
    sessions.sort();
    sessions
}

fn show(records: &Records) -> String {
    records
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join("\n        ")
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

// ---------------------------------------------------------------------
// A client that survives what the server does to hostile requests.
// ---------------------------------------------------------------------

/// What the client does once it has written its bytes.
#[derive(Clone, Copy)]
enum After {
    /// Keep the connection open and wait for the answer.
    Wait,
    /// Half-close (no more bytes will come), then wait.
    HalfClose,
    /// Keep the connection open, never finishing the announced body.
    Stall,
}

enum Outcome {
    /// An HTTP response came (possibly followed by a reset).
    Answered(Response),
    /// The server closed (or reset) without a complete response head;
    /// holds what was received.
    Closed(Vec<u8>),
    /// Nothing conclusive within the timeout.
    TimedOut,
}

impl Outcome {
    fn answered(self, case: &str) -> Response {
        match self {
            Outcome::Answered(response) => response,
            Outcome::Closed(bytes) => panic!(
                "{case}: closed without an answer: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Outcome::TimedOut => panic!("{case}: no answer in time"),
        }
    }
}

/// Sends `bytes` (from another thread, so a server that answers before
/// reading everything is heard) and reads until the server closes, resets
/// or `timeout` passes. An answered outcome's `body` holds every byte after
/// the head, undecoded, so that a second response would show.
fn exchange(addr: SocketAddr, bytes: &[u8], after: After, timeout: Duration) -> Outcome {
    let mut stream = TcpStream::connect(addr).unwrap();
    let deadline = Instant::now() + timeout;
    let mut writer = stream.try_clone().unwrap();
    let bytes = bytes.to_vec();
    let write = std::thread::spawn(move || {
        // A server that refuses a request may close before reading it all.
        let _ = writer.write_all(&bytes);
        if let After::HalfClose = after {
            let _ = writer.shutdown(Shutdown::Write);
        }
        writer
    });
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let timed_out = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break true;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break true
            }
            Err(_) => break false,
        }
    };
    // Unblock a writer stuck on a server that stopped reading.
    let _ = stream.shutdown(Shutdown::Both);
    drop(write.join());
    match parse_head(&received) {
        // (A keep-alive answer that never closed is still an answer.)
        Some(response) => Outcome::Answered(response),
        None if timed_out => Outcome::TimedOut,
        None => Outcome::Closed(received),
    }
}

/// The status and headers of the first response in `bytes`; `body` is the
/// rest, raw.
fn parse_head(bytes: &[u8]) -> Option<Response> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Response {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    })
}
