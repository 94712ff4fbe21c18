//! End-to-end: the sessions component in the host, over real HTTP, on
//! each real store (the SQLite file, a redis-server). One test per
//! behaviour of the sessions issue, run on both backends.

mod common;

use common::{
    backend_tests, cookie, expect_ops, first_visit, ops, session_json, start_session, App, Backend,
    Response,
};

backend_tests! {
    the_whole_flow_carries_and_prefills_values =>
        the_whole_flow_carries_and_prefills_values_on_sqlite,
        the_whole_flow_carries_and_prefills_values_on_redis;
    cookie_attributes_by_default =>
        cookie_attributes_by_default_on_sqlite,
        cookie_attributes_by_default_on_redis;
    cookie_attributes_follow_the_variables =>
        cookie_attributes_follow_the_variables_on_sqlite,
        cookie_attributes_follow_the_variables_on_redis;
    unknown_forged_and_malformed_cookies_are_replaced =>
        unknown_forged_and_malformed_cookies_are_replaced_on_sqlite,
        unknown_forged_and_malformed_cookies_are_replaced_on_redis;
    idle_sessions_expire_and_are_replaced =>
        idle_sessions_expire_and_are_replaced_on_sqlite,
        idle_sessions_expire_and_are_replaced_on_redis;
    sessions_end_at_the_absolute_timeout_however_busy =>
        sessions_end_at_the_absolute_timeout_however_busy_on_sqlite,
        sessions_end_at_the_absolute_timeout_however_busy_on_redis;
    logout_deletes_the_record_and_expires_the_cookie =>
        logout_deletes_the_record_and_expires_the_cookie_on_sqlite,
        logout_deletes_the_record_and_expires_the_cookie_on_redis;
    forms_without_the_right_token_are_refused =>
        forms_without_the_right_token_are_refused_on_sqlite,
        forms_without_the_right_token_are_refused_on_redis;
    bad_input_gets_a_clear_status_and_changes_nothing =>
        bad_input_gets_a_clear_status_and_changes_nothing_on_sqlite,
        bad_input_gets_a_clear_status_and_changes_nothing_on_redis;
    the_field_limit_is_inclusive =>
        the_field_limit_is_inclusive_on_sqlite,
        the_field_limit_is_inclusive_on_redis;
    no_record_is_created_by_404_405_or_the_api =>
        no_record_is_created_by_404_405_or_the_api_on_sqlite,
        no_record_is_created_by_404_405_or_the_api_on_redis;
    head_answers_like_get_without_a_body =>
        head_answers_like_get_without_a_body_on_sqlite,
        head_answers_like_get_without_a_body_on_redis;
    stored_values_are_escaped_in_every_page =>
        stored_values_are_escaped_in_every_page_on_sqlite,
        stored_values_are_escaped_in_every_page_on_redis;
    a_store_failure_gives_503_and_no_trap =>
        a_store_failure_gives_503_and_no_trap_on_sqlite,
        a_store_failure_gives_503_and_no_trap_on_redis;
    an_invalid_variable_answers_500_naming_it =>
        an_invalid_variable_answers_500_naming_it_on_sqlite,
        an_invalid_variable_answers_500_naming_it_on_redis;
    the_raw_cookie_never_reaches_the_store =>
        the_raw_cookie_never_reaches_the_store_on_sqlite,
        the_raw_cookie_never_reaches_the_store_on_redis;
    requests_of_a_live_session_cost_few_operations =>
        requests_of_a_live_session_cost_few_operations_on_sqlite,
        requests_of_a_live_session_cost_few_operations_on_redis;
    a_cookieless_flood_leaves_the_store_unchanged =>
        a_cookieless_flood_leaves_the_store_unchanged_on_sqlite,
        a_cookieless_flood_leaves_the_store_unchanged_on_redis;
    the_first_post_creates_the_session_in_one_round_trip =>
        the_first_post_creates_the_session_in_one_round_trip_on_sqlite,
        the_first_post_creates_the_session_in_one_round_trip_on_redis;
    multipart_forms_work_like_urlencoded_ones =>
        multipart_forms_work_like_urlencoded_ones_on_sqlite,
        multipart_forms_work_like_urlencoded_ones_on_redis;
}

fn assert_is_new_id(response: &Response, old: &str) -> String {
    let id = response
        .session_cookie()
        .expect("a fresh identifier is issued");
    assert_ne!(id, old, "a client-sent identifier is never adopted");
    assert_eq!(id.len(), 64);
    id
}

fn the_whole_flow_carries_and_prefills_values(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    let c = cookie(&id);

    let posted = app.post_form(
        "/2",
        Some(&c),
        &format!("csrf_token={token}&v1=Ada+Lovelace"),
    );
    assert_eq!(posted.status, 303);
    assert_eq!(posted.header("location"), Some("/2"));
    assert!(
        posted.header("set-cookie").is_none(),
        "no cookie unless one is issued"
    );

    let page2 = app.get("/2", Some(&c));
    assert_eq!(page2.status, 200);
    assert!(page2.text().contains("<title>Tell me more</title>"));
    assert!(page2
        .text()
        .contains("Hello, <span id=\"name\">Ada Lovelace</span>"));
    assert!(page2.header("set-cookie").is_none());

    let posted = app.post_form("/S", Some(&c), &format!("csrf_token={token}&v2=Engineer"));
    assert_eq!(
        (posted.status, posted.header("location")),
        (303, Some("/S"))
    );
    let summary = app.get("/S", Some(&c)).text();
    assert!(summary.contains("<title>Ready to submit?</title>"));
    assert!(summary.contains("Ada Lovelace") && summary.contains("Engineer"));
    assert!(summary.contains(r#"name="DONE" value="yes""#));

    // "previous" pages show what was stored.
    assert!(app
        .get("/", Some(&c))
        .text()
        .contains(r#"name="v1" value="Ada Lovelace""#));
    assert!(app
        .get("/2", Some(&c))
        .text()
        .contains(r#"name="v2" value="Engineer""#));

    let (_, before) = session_json(&app, &id);
    assert!(before["submitted_at"].is_null());
    let done = app.post_form("/F", Some(&c), &format!("csrf_token={token}&DONE=yes"));
    assert_eq!((done.status, done.header("location")), (303, Some("/F")));
    let thanks = app.get("/F", Some(&c)).text();
    assert!(thanks.contains("<title>Thank you</title>") && thanks.contains("submitted at"));

    let (status, json) = session_json(&app, &id);
    assert_eq!(status, 200);
    assert_eq!(json["v1"], "Ada Lovelace");
    assert_eq!(json["v2"], "Engineer");
    for field in ["submitted_at", "created_at", "last_seen_at", "expires_at"] {
        let text = json[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is a string"));
        assert!(
            text.len() == 20 && text.ends_with('Z') && &text[10..11] == "T",
            "{field}: {text}"
        );
    }
    // Exactly one session record exists, and the stored values are there.
    let records = app.session_records();
    assert_eq!(records.len(), 1);
    assert!(String::from_utf8_lossy(&records[0].1).contains("Ada Lovelace"));
}

fn cookie_attributes_by_default(backend: Backend) {
    let app = backend.start(&[]);
    let page = app.get("/", None);
    let set_cookie = page.header("set-cookie").unwrap();
    let id = page.session_cookie().unwrap();
    assert_eq!(
        set_cookie,
        format!("session={id}; Path=/; HttpOnly; SameSite=Lax")
    );
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
}

fn cookie_attributes_follow_the_variables(backend: Backend) {
    let app = backend.start(&[
        ("cookie_secure", "always"),
        ("cookie_max_age_secs", "600"),
        ("idle_timeout_secs", "120"),
    ]);
    // The pending identifier of a first visit lasts the browser session:
    // nothing is stored for it to outlive.
    let page = app.get("/", None);
    let pending = page.session_cookie().unwrap();
    assert_eq!(
        page.header("set-cookie").unwrap(),
        format!("session={pending}; Path=/; HttpOnly; SameSite=Lax; Secure")
    );
    // A stored session's cookie is persistent.
    let posted = app.post_form(
        "/2",
        Some(&cookie(&pending)),
        &format!("csrf_token={}&v1=Ada", page.csrf_token()),
    );
    let id = posted.session_cookie().unwrap();
    assert_eq!(
        posted.header("set-cookie").unwrap(),
        format!("session={id}; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure")
    );
    // It is refreshed when the session's last-seen time is (touch
    // granularity: 120 / 60 = 2 s), and not on every request.
    assert!(app
        .get("/", Some(&cookie(&id)))
        .header("set-cookie")
        .is_none());
    if app.instrumented("the cookie refreshed with the touch 5 s later, which advances the clock") {
        app.advance_clock(5);
        let refreshed = app.get("/", Some(&cookie(&id)));
        assert_eq!(refreshed.session_cookie().as_deref(), Some(id.as_str()));
        assert!(refreshed
            .header("set-cookie")
            .unwrap()
            .contains("Max-Age=600"));
    }

    let never = backend.start(&[("cookie_secure", "never")]);
    assert!(!never
        .get("/", None)
        .header("set-cookie")
        .unwrap()
        .contains("Secure"));
    // `auto` over plain http: no Secure (https is covered by the app's unit tests).
    let auto = backend.start(&[("cookie_secure", "auto")]);
    assert!(!auto
        .get("/", None)
        .header("set-cookie")
        .unwrap()
        .contains("Secure"));
}

fn unknown_forged_and_malformed_cookies_are_replaced(backend: Backend) {
    let app = backend.start(&[]);
    let (stored, _) = start_session(&app);
    let keys_before = app.records().len();
    // Forged values of both shapes: a stored session's (lower case first)
    // and a pending one's (upper case first, but not signed by this store).
    let forged_stored = "f".repeat(64);
    let forged_pending = "F".repeat(63) + "x";
    let mut issued = Vec::new();
    for forged in [&forged_stored, &forged_pending] {
        let page = app.get("/", Some(&cookie(forged)));
        assert_eq!(page.status, 200);
        issued.push(assert_is_new_id(&page, forged));
    }
    for bad in ["session=short", "session=", "garbage;;=;", "session=%00%01"] {
        let page = app.get("/", Some(bad));
        assert_eq!(page.status, 200, "{bad:?}");
        issued.push(assert_is_new_id(&page, &stored));
    }
    // Each got a fresh pending identifier, and nothing was stored for any.
    issued.sort();
    issued.dedup();
    assert_eq!(issued.len(), 6);
    assert_eq!(session_json(&app, &forged_stored).0, 404);
    assert_eq!(app.session_records().len(), 1, "only the started session");
    assert_eq!(app.records().len(), keys_before);
    // A forged pending identifier cannot post either, even with a token
    // made for it by someone without the store's key.
    let refused = app.post_form(
        "/2",
        Some(&cookie(&forged_pending)),
        &format!("csrf_token={}&v1=Mallory", "A".repeat(32)),
    );
    assert_eq!(refused.status, 403);
    assert!(refused.header("set-cookie").is_none());
    assert_eq!(app.records().len(), keys_before);
}

fn idle_sessions_expire_and_are_replaced(backend: Backend) {
    if !common::instrumented("the whole test, which advances the clock") {
        return;
    }
    let app = backend.start(&[("idle_timeout_secs", "120")]);
    let (id, _) = start_session(&app);
    // Activity within the idle timeout keeps the session alive.
    app.advance_clock(100);
    assert!(app
        .get("/", Some(&cookie(&id)))
        .header("set-cookie")
        .is_none());
    app.advance_clock(100);
    assert_eq!(session_json(&app, &id).0, 200);
    app.advance_clock(121);
    // The expired session is not live any more: the visitor starts afresh
    // with a pending identifier, and nothing new is stored (a read never
    // writes: the expired record is left to the sweep).
    let records_before = app.session_records();
    let page = app.get("/", Some(&cookie(&id)));
    assert_is_new_id(&page, &id);
    assert_eq!(session_json(&app, &id).0, 404);
    assert_eq!(app.session_records(), records_before, "nothing stored");
}

fn sessions_end_at_the_absolute_timeout_however_busy(backend: Backend) {
    if !common::instrumented("the whole test, which advances the clock") {
        return;
    }
    let app = backend.start(&[
        ("idle_timeout_secs", "3600"),
        ("absolute_timeout_secs", "300"),
    ]);
    let (id, _) = start_session(&app);
    for _ in 0..2 {
        app.advance_clock(100);
        assert_eq!(session_json(&app, &id).0, 200);
    }
    let (_, json) = session_json(&app, &id);
    assert!(json["expires_at"].is_string());
    app.advance_clock(100); // 300 s after creation
    assert_eq!(session_json(&app, &id).0, 404);
    assert_is_new_id(&app.get("/", Some(&cookie(&id))), &id);
}

fn logout_deletes_the_record_and_expires_the_cookie(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    // Without the form token, logout is refused and nothing changes.
    let refused = app.post_form("/logout", Some(&cookie(&id)), "");
    assert_eq!(refused.status, 403);
    assert_eq!(app.session_records().len(), 1);

    let out = app.post_form(
        "/logout",
        Some(&cookie(&id)),
        &format!("csrf_token={token}"),
    );
    assert_eq!((out.status, out.header("location")), (303, Some("/")));
    let set_cookie = out.header("set-cookie").unwrap();
    assert!(
        set_cookie.starts_with("session=;") && set_cookie.contains("Max-Age=0"),
        "{set_cookie}"
    );
    assert!(app.session_records().is_empty());
    assert_eq!(session_json(&app, &id).0, 404);
}

fn forms_without_the_right_token_are_refused(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    let c = cookie(&id);
    let before = app.records();
    for body in [
        "v1=Mallory".to_owned(),
        "csrf_token=wrong&v1=Mallory".to_owned(),
        format!("csrf_token={}x&v1=M", token),
    ] {
        let response = app.post_form("/2", Some(&c), &body);
        assert_eq!(response.status, 403, "{body}");
    }
    // A POST without any session is refused too, and creates none.
    let anonymous = app.post_form("/2", None, &format!("csrf_token={token}&v1=Mallory"));
    assert_eq!(anonymous.status, 403);
    assert!(anonymous.header("set-cookie").is_none());
    assert_eq!(app.records(), before);
}

fn bad_input_gets_a_clear_status_and_changes_nothing(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    let c = cookie(&id);
    assert_eq!(
        app.post_form("/2", Some(&c), &format!("csrf_token={token}&v1=Kept"))
            .status,
        303
    );
    let before = app.records();

    let big = format!("csrf_token={token}&v1={}", "a".repeat(17 * 1024));
    let long_field = format!("csrf_token={token}&v1={}", "a".repeat(1025));
    let cases: Vec<(u16, Response)> = vec![
        (413, app.post_form("/2", Some(&c), &big)),
        (
            415,
            app.request(
                "POST",
                "/2",
                Some(&c),
                Some("text/plain"),
                format!("csrf_token={token}&v1=x").as_bytes(),
            ),
        ),
        (
            400,
            app.request(
                "POST",
                "/2",
                Some(&c),
                Some("multipart/form-data; boundary=x"),
                b"--x\r\nContent-Disposition: form-data; name=v1\r\n\r\nno closing boundary",
            ),
        ),
        (
            422,
            app.request(
                "POST",
                "/2",
                Some(&c),
                Some("multipart/form-data; boundary=x"),
                b"--x\r\nContent-Disposition: form-data; name=v1; filename=a.txt\r\n\r\nx\r\n--x--",
            ),
        ),
        (
            415,
            app.request(
                "POST",
                "/2",
                Some(&c),
                None,
                format!("csrf_token={token}&v1=x").as_bytes(),
            ),
        ),
        (422, app.post_form("/2", Some(&c), &long_field)),
        (
            422,
            app.post_form("/2", Some(&c), &format!("csrf_token={token}&v1=%FF%FE")),
        ),
        (
            400,
            app.post_form("/2", Some(&c), &format!("csrf_token={token}&v1=100%")),
        ),
        (
            422,
            app.post_form("/2", Some(&c), &format!("csrf_token={token}&v1=a%00b")),
        ),
        (
            422,
            app.post_form("/2", Some(&c), &format!("csrf_token={token}&v1=a&v1=b")),
        ),
        (
            422,
            app.post_form("/F", Some(&c), &format!("csrf_token={token}&DONE=no")),
        ),
    ];
    for (expected, response) in cases {
        assert_eq!(response.status, expected, "{}", response.text());
        assert!(
            !response.text().trim().is_empty(),
            "a short message explains {expected}"
        );
        assert!(response.text().len() < 200);
    }
    // Invalid UTF-8 sent raw, not percent-encoded.
    let mut raw = format!("csrf_token={token}&v1=").into_bytes();
    raw.extend_from_slice(b"\xff\xfe");
    let response = app.request(
        "POST",
        "/2",
        Some(&c),
        Some("application/x-www-form-urlencoded"),
        &raw,
    );
    assert_eq!(response.status, 422);
    assert_eq!(
        app.records(),
        before,
        "no bad input changed the stored record"
    );
    let (_, json) = session_json(&app, &id);
    assert_eq!(json["v1"], "Kept");
}

fn the_field_limit_is_inclusive(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    let exact = format!("csrf_token={token}&v1={}", "b".repeat(1024));
    assert_eq!(app.post_form("/2", Some(&cookie(&id)), &exact).status, 303);
    assert_eq!(
        session_json(&app, &id).1["v1"].as_str().unwrap().len(),
        1024
    );
}

fn no_record_is_created_by_404_405_or_the_api(backend: Backend) {
    let app = backend.start(&[]);
    let forged = "Z".repeat(64);
    let not_found = app.get("/nope", None);
    assert_eq!(not_found.status, 404);
    let wrong_method = app.request("DELETE", "/", None, None, b"");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD, POST"));
    let put = app.request("PUT", "/api/session", None, None, b"");
    assert_eq!((put.status, put.header("allow")), (405, Some("GET, HEAD")));
    let api = app.get("/api/session", Some(&cookie(&forged)));
    assert_eq!(api.status, 404);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&api.body).unwrap()["error"],
        "no session"
    );
    for response in [&not_found, &wrong_method, &put, &api] {
        assert!(response.header("set-cookie").is_none());
    }
    // No session record; at most the expiry index's cursor, which the first
    // session request of a store creates.
    let keys: Vec<String> = app.records().into_iter().map(|(key, _)| key).collect();
    assert!(keys.iter().all(|k| k == ops::CURSOR_KEY), "{keys:?}");
}

fn head_answers_like_get_without_a_body(backend: Backend) {
    let app = backend.start(&[]);
    let head = app.request("HEAD", "/2", None, None, b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(head.session_cookie().is_some());
}

fn stored_values_are_escaped_in_every_page(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    let c = cookie(&id);
    let script = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    assert_eq!(
        app.post_form("/2", Some(&c), &format!("csrf_token={token}&v1={script}"))
            .status,
        303
    );
    assert_eq!(
        app.post_form(
            "/S",
            Some(&c),
            &format!("csrf_token={token}&v2=%22%3E%3Cimg+src%3Dx%3E")
        )
        .status,
        303
    );
    for page in ["/", "/2", "/S"] {
        let html = app.get(page, Some(&c)).text();
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{page}"
        );
    }
    assert!(app
        .get("/2", Some(&c))
        .text()
        .contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

fn a_store_failure_gives_503_and_no_trap(backend: Backend) {
    if !common::instrumented("the whole test, which makes the key-value store fail") {
        return;
    }
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    let before = app.records();
    app.set_kv_fault(Some("disk on fire"));
    assert_eq!(app.get("/", None).status, 503);
    assert_eq!(app.get("/", Some(&cookie(&id))).status, 503);
    let post = app.post_form(
        "/2",
        Some(&cookie(&id)),
        &format!("csrf_token={token}&v1=x"),
    );
    assert_eq!(post.status, 503);
    assert!(post.text().contains("unavailable"));
    assert_eq!(app.get("/api/session", Some(&cookie(&id))).status, 503);
    app.set_kv_fault(None);
    assert_eq!(app.records(), before);
    assert_eq!(app.get("/", Some(&cookie(&id))).status, 200);
}

fn an_invalid_variable_answers_500_naming_it(backend: Backend) {
    let app = backend.start(&[("idle_timeout_secs", "soon")]);
    let page = app.get("/", None);
    assert_eq!(page.status, 500);
    let text = page.text();
    assert!(
        text.contains("idle_timeout_secs") && text.contains("soon"),
        "{text}"
    );
    assert!(page.header("set-cookie").is_none());
    assert!(app.records().is_empty());
    let app = backend.start(&[("cookie_secure", "sometimes")]);
    assert!(app
        .get("/api/session", None)
        .text()
        .contains("cookie_secure"));
    assert!(app.records().is_empty());
}

/// A copy of the store yields no usable cookie: the value is searched for
/// in everything the store holds (SQLite: the database and WAL files;
/// Redis: every key and value, and the server's files).
fn the_raw_cookie_never_reaches_the_store(backend: Backend) {
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    assert_eq!(
        app.post_form(
            "/2",
            Some(&cookie(&id)),
            &format!("csrf_token={token}&v1=x")
        )
        .status,
        303
    );
    let storage = app.stop();
    let (places, holding) = storage.search(id.as_bytes());
    assert!(
        holding.is_empty(),
        "the cookie value is in the store: {holding:?}"
    );
    assert!(places >= 1);
    // ...and the session is still there after a restart on the same store.
    let app = common::App::start_on(storage, &[]);
    assert_eq!(session_json(&app, &id).1["v1"], "x");
}

fn requests_of_a_live_session_cost_few_operations(backend: Backend) {
    if !common::instrumented("the whole test: the key-value operations of a live GET and POST") {
        return;
    }
    let app = backend.start(&[]);
    let (id, token) = start_session(&app);
    app.take_stats();
    app.get("/2", Some(&cookie(&id)));
    app.post_form(
        "/2",
        Some(&cookie(&id)),
        &format!("csrf_token={token}&v1=y"),
    );
    let stats = app.take_stats_of(2);
    assert_eq!(stats.len(), 2);
    expect_ops(&stats[0], ops::LIVE_GET, "GET of a live session");
    expect_ops(&stats[1], ops::live_post(backend), "POST to a live session");
}

/// 2 000 page views without a cookie (a crawler, a health check, a flood)
/// store nothing, write nothing, and leave an established session as it
/// was.
fn a_cookieless_flood_leaves_the_store_unchanged(backend: Backend) {
    let app = backend.start(&[("max_sessions", "1000")]);
    let (id, token) = start_session(&app);
    assert_eq!(
        app.post_form(
            "/2",
            Some(&cookie(&id)),
            &format!("csrf_token={token}&v1=Ada")
        )
        .status,
        303
    );
    let before = app.records();
    let counted = app.instrumented("the key-value operations of each cookie-less page view");
    if counted {
        app.take_stats();
    }
    let mut pending = std::collections::HashSet::new();
    for _ in 0..2000 {
        let page = app.get("/", None);
        assert_eq!(page.status, 200);
        pending.insert(page.session_cookie().expect("a pending cookie"));
    }
    assert_eq!(pending.len(), 2000, "every visitor gets its own identifier");
    assert_eq!(app.records(), before, "the store is unchanged");
    if counted {
        for stats in app.take_stats_of(2000) {
            expect_ops(&stats, ops::ANONYMOUS_GET, "a cookie-less page view");
        }
    }
    let (status, json) = session_json(&app, &id);
    assert_eq!((status, json["v1"].as_str()), (200, Some("Ada")));
}

fn the_first_post_creates_the_session_in_one_round_trip(backend: Backend) {
    let app = backend.start(&[]);
    // The store's very first session also writes the sweep cursor.
    start_session(&app);
    let (pending, token) = first_visit(&app);
    // A second tab, opened before the first post, carries the same token.
    let (second_tab_pending, _) = (pending.clone(), token.clone());
    let counted = app.instrumented("the key-value operations of the first post");
    if counted {
        app.take_stats();
    }
    let posted = app.post_form(
        "/2",
        Some(&cookie(&pending)),
        &format!("csrf_token={token}&v1=Grace"),
    );
    assert_eq!(
        (posted.status, posted.header("location")),
        (303, Some("/2"))
    );
    let id = posted.session_cookie().expect("the session's cookie");
    assert_ne!(id, pending);
    // The client's first creation of its minute also indexes its quota
    // counter: the earlier session was created in the same minute, or not.
    let quota_entries = |app: &App| {
        app.records()
            .iter()
            .filter(|(key, _)| key.starts_with("index/quota/") && !key.ends_with("tail"))
            .count()
    };
    if counted {
        let first_of_its_minute = quota_entries(&app) == 2;
        expect_ops(
            &app.take_stats_of(1)[0],
            ops::first_post(backend, first_of_its_minute),
            "the first post",
        );
    }
    assert_eq!(session_json(&app, &id).1["v1"], "Grace");
    assert_eq!(session_json(&app, &pending).0, 404);
    // The pending identifier's token is now the session's: the other
    // tab's form, posted with the new cookie, works too.
    let other_tab = app.post_form(
        "/S",
        Some(&cookie(&id)),
        &format!("csrf_token={token}&v2=Admiral"),
    );
    assert_eq!(other_tab.status, 303);
    assert_eq!(session_json(&app, &id).1["v2"], "Admiral");
    // Posting again with the stale pending cookie creates a second
    // session (the browser would have replaced it): never the same one.
    let again = app.post_form(
        "/2",
        Some(&cookie(&second_tab_pending)),
        &format!("csrf_token={token}&v1=Grace"),
    );
    assert_eq!(again.status, 303);
    assert_ne!(again.session_cookie().unwrap(), id);
    assert_eq!(app.session_records().len(), 3);
}

fn multipart_forms_work_like_urlencoded_ones(backend: Backend) {
    let app = backend.start(&[]);
    let (pending, token) = first_visit(&app);
    let form = |fields: &[(&str, &str)]| {
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--B0undary\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str("--B0undary--\r\n");
        body.into_bytes()
    };
    let content_type = Some("multipart/form-data; boundary=B0undary");
    let posted = app.request(
        "POST",
        "/2",
        Some(&cookie(&pending)),
        content_type,
        &form(&[("csrf_token", &token), ("v1", "Ada <3")]),
    );
    assert_eq!(posted.status, 303, "{}", posted.text());
    let id = posted.session_cookie().unwrap();
    let done = app.request(
        "POST",
        "/F",
        Some(&cookie(&id)),
        content_type,
        &form(&[("csrf_token", &token), ("v2", "Poet"), ("DONE", "yes")]),
    );
    assert_eq!(done.status, 303);
    let (_, json) = session_json(&app, &id);
    assert_eq!(
        (json["v1"].as_str(), json["v2"].as_str()),
        (Some("Ada <3"), Some("Poet"))
    );
    assert!(json["submitted_at"].is_string());
    // Without the token, nothing is saved.
    let refused = app.request(
        "POST",
        "/2",
        Some(&cookie(&id)),
        content_type,
        &form(&[("v1", "Mallory")]),
    );
    assert_eq!(refused.status, 403);
    assert_eq!(session_json(&app, &id).1["v1"], "Ada <3");
}
