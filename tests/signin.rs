//! End-to-end: the sign-in example (`examples/signin`) in the host, over
//! real HTTP, on each real store. It is built only on the library's public
//! API, so these tests are the library's as a user meets it: lazy
//! creation, `cycle_id`, flash values, a typed counter, `destroy`,
//! "remember me" and the key prefix.

mod common;

use common::{backend_tests, cookie, signin_manifest, App, Backend, Response};

backend_tests! {
    looking_stores_nothing => looking_stores_nothing_on_sqlite, looking_stores_nothing_on_redis;
    signing_in_rotates_the_id_and_flashes_once =>
        signing_in_rotates_the_id_and_flashes_once_on_sqlite,
        signing_in_rotates_the_id_and_flashes_once_on_redis;
    signing_in_again_kills_the_old_identifier =>
        signing_in_again_kills_the_old_identifier_on_sqlite,
        signing_in_again_kills_the_old_identifier_on_redis;
    signing_out_destroys_the_session =>
        signing_out_destroys_the_session_on_sqlite,
        signing_out_destroys_the_session_on_redis;
    bad_posts_are_refused_and_store_nothing =>
        bad_posts_are_refused_and_store_nothing_on_sqlite,
        bad_posts_are_refused_and_store_nothing_on_redis;
    remember_me_makes_the_cookie_persistent =>
        remember_me_makes_the_cookie_persistent_on_sqlite,
        remember_me_makes_the_cookie_persistent_on_redis;
}

/// The example on fresh storage of `backend`.
fn start(backend: Backend) -> App {
    App::start_manifest(signin_manifest(), backend.storage(), &[])
}

/// The sign-in page of a first visit: its pending cookie and form token.
fn visit(app: &App) -> (String, String) {
    let page = app.get("/", None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<h1>Sign in</h1>"));
    (page.session_cookie().unwrap(), page.csrf_token())
}

/// Signs in as `name` with the cookie `id`: the 303 and the new cookie.
fn sign_in(app: &App, id: &str, token: &str, form: &str) -> (Response, String) {
    let posted = app.post_form(
        "/signin",
        Some(&cookie(id)),
        &format!("csrf_token={token}&{form}"),
    );
    assert_eq!(
        (posted.status, posted.header("location")),
        (303, Some("/")),
        "{}",
        posted.text()
    );
    let new_id = posted.session_cookie().expect("signing in sets a cookie");
    assert_ne!(new_id, id, "signing in hands out a new identifier");
    (posted, new_id)
}

/// The text between `<tag id="id">` and the next `<`.
fn element(page: &Response, id: &str) -> Option<String> {
    let text = page.text();
    let start = text.find(&format!("id=\"{id}\">"))? + id.len() + 6;
    Some(text[start..].split('<').next()?.to_owned())
}

fn looking_stores_nothing(backend: Backend) {
    let app = start(backend);
    visit(&app); // the store's signing key, made once
    let before = app.records();
    for _ in 0..20 {
        let page = app.get("/", None);
        assert_eq!(page.status, 200);
        assert!(page
            .header("content-security-policy")
            .unwrap()
            .contains("style-src 'sha256-"));
        assert!(page.text().contains("<style>"));
    }
    assert_eq!(app.records(), before);
    // Everything the library keeps is under the example's key prefix.
    assert!(before.iter().all(|(key, _)| key.starts_with("signin/")));
}

fn signing_in_rotates_the_id_and_flashes_once(backend: Backend) {
    let app = start(backend);
    let (pending, token) = visit(&app);
    let (_, id) = sign_in(&app, &pending, &token, "name=Ada+%3Cb%3E");
    let first = app.get("/", Some(&cookie(&id)));
    assert_eq!(element(&first, "name").as_deref(), Some("Ada &lt;b&gt;"));
    assert_eq!(
        element(&first, "notice").as_deref(),
        Some("Signed in as Ada &lt;b&gt;")
    );
    assert_eq!(element(&first, "visits").as_deref(), Some("1"));
    let second = app.get("/", Some(&cookie(&id)));
    assert_eq!(element(&second, "notice"), None, "a flash shows once");
    assert_eq!(element(&second, "visits").as_deref(), Some("2"));
    assert!(second.header("set-cookie").is_none());
    // One session, stored under the prefix.
    let records = app.records();
    let sessions: Vec<_> = records
        .iter()
        .filter(|(key, _)| key.starts_with("signin/session/"))
        .collect();
    assert_eq!(sessions.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&sessions[0].1).unwrap();
    assert_eq!(record["data"]["visits"], 2);
    assert_eq!(record["data"]["name"], "Ada <b>");
}

fn signing_in_again_kills_the_old_identifier(backend: Backend) {
    let app = start(backend);
    let (pending, token) = visit(&app);
    let (_, ada) = sign_in(&app, &pending, &token, "name=Ada");
    let token = app.get("/", Some(&cookie(&ada))).csrf_token();
    let (_, bob) = sign_in(&app, &ada, &token, "name=Bob");
    let page = app.get("/", Some(&cookie(&bob)));
    assert_eq!(element(&page, "name").as_deref(), Some("Bob"));
    // The old identifier is dead at once: it signs no one in.
    let old = app.get("/", Some(&cookie(&ada)));
    assert!(old.text().contains("<h1>Sign in</h1>"));
    assert_eq!(element(&old, "name"), None);
}

fn signing_out_destroys_the_session(backend: Backend) {
    let app = start(backend);
    let (pending, token) = visit(&app);
    let (_, id) = sign_in(&app, &pending, &token, "name=Ada");
    let token = app.get("/", Some(&cookie(&id))).csrf_token();
    let out = app.post_form(
        "/signout",
        Some(&cookie(&id)),
        &format!("csrf_token={token}"),
    );
    assert_eq!(out.status, 303);
    let expired = out.header("set-cookie").unwrap();
    assert!(
        expired.starts_with("session=;") && expired.contains("Max-Age=0"),
        "{expired}"
    );
    assert!(app
        .get("/", Some(&cookie(&id)))
        .text()
        .contains("<h1>Sign in</h1>"));
    let key = spin_sessions_core::SessionId::parse(&id)
        .unwrap()
        .record_key();
    assert!(
        app.records()
            .iter()
            .all(|(k, _)| *k != format!("signin/{key}")),
        "the record is deleted"
    );
}

fn bad_posts_are_refused_and_store_nothing(backend: Backend) {
    let app = start(backend);
    let (pending, token) = visit(&app);
    let before = app.records();
    let c = cookie(&pending);
    for (expected, response) in [
        (403, app.post_form("/signin", Some(&c), "name=Mallory")),
        (
            403,
            app.post_form("/signin", None, &format!("csrf_token={token}&name=M")),
        ),
        (
            422,
            app.post_form("/signin", Some(&c), &format!("csrf_token={token}&name=+")),
        ),
        (
            422,
            app.post_form(
                "/signin",
                Some(&c),
                &format!("csrf_token={token}&name={}", "x".repeat(65)),
            ),
        ),
        (405, app.request("PUT", "/signin", Some(&c), None, b"")),
        (404, app.get("/elsewhere", Some(&c))),
    ] {
        assert_eq!(response.status, expected, "{}", response.text());
        assert!(response.header("set-cookie").is_none());
    }
    assert_eq!(app.records(), before);
}

fn remember_me_makes_the_cookie_persistent(backend: Backend) {
    let app = start(backend);
    let (pending, token) = visit(&app);
    let (posted, id) = sign_in(&app, &pending, &token, "name=Ada&remember=yes");
    assert!(
        posted
            .header("set-cookie")
            .unwrap()
            .contains("Max-Age=2592000"),
        "{:?}",
        posted.header("set-cookie")
    );
    // The example's idle timeout is half an hour; a remembered session
    // outlives it.
    if app.instrumented("the session outliving the idle timeout, which advances the clock") {
        app.advance_clock(2 * 3600);
        let page = app.get("/", Some(&cookie(&id)));
        assert_eq!(element(&page, "name").as_deref(), Some("Ada"));
    }
}

/// The example builds its router once per instance; its layer still looks
/// up the instance's sessions at each request, so the settings are read at
/// an instance's first request, not again for `SHARED_FOR` (10 s), and then
/// again: a changed variable takes effect within that time on an instance
/// that never goes idle.
#[test]
fn a_reused_instance_reads_its_settings_once_then_again_after_ten_seconds() {
    let app = start(Backend::Sqlite);
    if !app.instrumented("the variable reads of each request, from the request stats") {
        return;
    }
    // Requests every 250 ms for 11 s: the instance is never idle for the
    // 1 s after which Spin (and the host) drops it.
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < std::time::Duration::from_secs(11) {
        assert_eq!(app.get("/", None).status, 200);
        sent += 1;
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let stats = app.take_stats_of(sent);
    let first_instance = stats[0].instance;
    let on_it: Vec<_> = stats
        .iter()
        .filter(|s| s.instance == first_instance)
        .collect();
    assert!(
        on_it.len() > 40,
        "one instance served them: {}",
        on_it.len()
    );
    let reading: Vec<u64> = on_it
        .iter()
        .filter(|s| s.var_reads > 0)
        .map(|s| s.instance_request)
        .collect();
    // Its first request read them, and one about 40 requests (10 s) later.
    assert_eq!(
        reading.len(),
        2,
        "the requests that read variables: {reading:?}"
    );
    assert_eq!(reading[0], 1);
    assert!(
        (20..=44).contains(&reading[1]),
        "read again at request {}",
        reading[1]
    );
}
