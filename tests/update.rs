//! End-to-end: read-modify-write under concurrency, in the sign-in example
//! (`examples/signin`: a WASI 0.3 component whose instances the host
//! reuses, as Spin 4 does). Two hosts share one store (two Spin processes
//! behind a load balancer, or SpinKube replicas), and one signed-in
//! visitor's requests go to both at once:
//! - the page counts visits with `Session::update`: N concurrent page
//!   views add exactly N;
//! - the "Signed in as …" flash is taken with `Session::take_flash`: of
//!   the requests that race for it, exactly one shows it;
//! - visitors whose requests interleave on one reused instance each see
//!   only their own session.

mod common;

use std::net::SocketAddr;
use std::sync::Barrier;

use common::{
    backend_tests, cookie, quickstart_manifest, request_bytes, send, signin_manifest, App, Backend,
    Response,
};

backend_tests! {
    concurrent_page_views_all_count => concurrent_page_views_all_count_on_sqlite,
        concurrent_page_views_all_count_on_redis;
    a_flash_is_shown_once_to_requests_at_once =>
        a_flash_is_shown_once_to_requests_at_once_on_sqlite,
        a_flash_is_shown_once_to_requests_at_once_on_redis;
    visitors_interleaved_on_one_instance_see_only_their_own =>
        visitors_interleaved_on_one_instance_see_only_their_own_on_sqlite,
        visitors_interleaved_on_one_instance_see_only_their_own_on_redis;
    the_quick_start_counts_every_visit => the_quick_start_counts_every_visit_on_sqlite,
        the_quick_start_counts_every_visit_on_redis;
}

/// Page views in the counter scenario, and how many at a time.
const PAGE_VIEWS: usize = 200;
const AT_A_TIME: usize = 8;

/// The example serving one fresh store of `backend` through two
/// instances at least: on Redis, two hosts (two Spin processes behind a
/// load balancer, or SpinKube replicas); on SQLite, whose file belongs to
/// one Spin process, the instances that one host runs side by side when
/// requests come at once (the second address is the same host's).
fn two_instances(backend: Backend) -> (App, Option<App>) {
    let a = App::start_manifest(signin_manifest(), backend.storage(), &[]);
    let b = match backend {
        Backend::Redis => Some(App::start_manifest(
            signin_manifest(),
            a.storage.beside(),
            &[],
        )),
        Backend::Sqlite => None,
    };
    (a, b)
}

/// The addresses requests alternate between.
fn addresses(a: &App, b: &Option<App>) -> [SocketAddr; 2] {
    [a.addr, b.as_ref().map_or(a.addr, |b| b.addr)]
}

/// Signs `name` in through `app`: the signed-in session's cookie value.
fn signed_in(app: &App, name: &str) -> String {
    let page = app.get("/", None);
    assert_eq!(page.status, 200);
    let (pending, token) = (page.session_cookie().unwrap(), page.csrf_token());
    let posted = app.post_form(
        "/signin",
        Some(&cookie(&pending)),
        &format!("csrf_token={token}&name={name}"),
    );
    assert_eq!(posted.status, 303, "{}", posted.text());
    posted.session_cookie().expect("signing in sets a cookie")
}

/// `GET /` with the session `id`, at `addr`.
fn page_view(addr: SocketAddr, id: &str) -> Response {
    send(
        addr,
        &request_bytes(addr, "GET", "/", Some(&cookie(id)), None, b""),
    )
}

/// The text between `<tag id="id">` and the next `<`.
fn element(page: &Response, id: &str) -> Option<String> {
    let text = page.text();
    let start = text.find(&format!("id=\"{id}\">"))? + id.len() + 6;
    Some(text[start..].split('<').next()?.to_owned())
}

/// The visit count a page shows.
fn visits(page: &Response) -> u64 {
    element(page, "visits")
        .expect("a signed-in page shows its visits")
        .parse()
        .unwrap()
}

/// The issue's scenario: one signed-in visitor, 200 page views 8 at a
/// time, half through each host. `get`, `+ 1`, `insert` lost three views
/// of four here; `update` loses none, and counts none twice.
fn concurrent_page_views_all_count(backend: Backend) {
    let (a, b) = two_instances(backend);
    let id = signed_in(&a, "Ada");
    let before = visits(&page_view(a.addr, &id));
    let hosts = addresses(&a, &b);
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..AT_A_TIME)
            .map(|worker| {
                let (id, addr) = (&id, hosts[worker % 2]);
                scope.spawn(move || {
                    (0..PAGE_VIEWS / AT_A_TIME)
                        .map(|_| page_view(addr, id))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let failed: Vec<_> = answers
        .iter()
        .filter(|page| page.status != 200)
        .map(|page| (page.status, page.text()))
        .collect();
    assert!(failed.is_empty(), "answers that were not 200: {failed:?}");
    let after = visits(&page_view(hosts[1], &id));
    eprintln!(
        "{backend:?}: {PAGE_VIEWS} page views, {AT_A_TIME} at a time (two hosts on Redis, \
         one on SQLite): the counter went from {before} to {after}"
    );
    assert_eq!(after, before + PAGE_VIEWS as u64 + 1);
    // A page shows the count as its request saw it: concurrent views may
    // show the same number, never one the store did not reach.
    assert!(answers.iter().all(|page| visits(page) <= after));
}

/// Signing in leaves a flash; eight page views race for it, four through
/// each host; exactly one shows it. Five rounds, each with a fresh flash.
fn a_flash_is_shown_once_to_requests_at_once(backend: Backend) {
    let (a, b) = two_instances(backend);
    let hosts = addresses(&a, &b);
    for round in 0..5 {
        let id = signed_in(&a, &format!("Ada{round}"));
        let barrier = Barrier::new(AT_A_TIME);
        let pages: Vec<Response> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..AT_A_TIME)
                .map(|racer| {
                    let (id, barrier, addr) = (&id, &barrier, hosts[racer % 2]);
                    scope.spawn(move || {
                        barrier.wait();
                        page_view(addr, id)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(
            pages.iter().all(|page| page.status == 200),
            "{:?}",
            pages.iter().map(|p| p.status).collect::<Vec<_>>()
        );
        let shown = pages
            .iter()
            .filter(|page| element(page, "notice").is_some())
            .count();
        assert_eq!(shown, 1, "round {round}: the flash was shown {shown} times");
        assert_eq!(element(&page_view(hosts[1], &id), "notice"), None);
    }
}

/// Four visitors, their page views interleaved and concurrent on one host,
/// whose reused instance serves them all: each page shows its own
/// visitor's name, and each visitor's count moves by their own views only.
fn visitors_interleaved_on_one_instance_see_only_their_own(backend: Backend) {
    let app = App::start_manifest(signin_manifest(), backend.storage(), &[]);
    let names = ["Ada", "Bob", "Cy", "Di"];
    let ids: Vec<String> = names.iter().map(|name| signed_in(&app, name)).collect();
    let starts: Vec<u64> = ids
        .iter()
        .map(|id| visits(&page_view(app.addr, id)))
        .collect();
    let counted = app.instrumented("the instances that served them, from the request stats");
    if counted {
        app.take_stats();
    }
    const ROUNDS: usize = 15;
    let pages: Vec<Vec<Response>> = std::thread::scope(|scope| {
        let visitors: Vec<_> = ids
            .iter()
            .map(|id| {
                let addr = app.addr;
                scope.spawn(move || (0..ROUNDS).map(|_| page_view(addr, id)).collect())
            })
            .collect();
        visitors.into_iter().map(|v| v.join().unwrap()).collect()
    });
    for (visitor, pages) in pages.iter().enumerate() {
        for page in pages {
            assert_eq!(page.status, 200);
            assert_eq!(element(page, "name").as_deref(), Some(names[visitor]));
            assert!(page.header("set-cookie").is_none());
        }
        let shown: Vec<u64> = pages.iter().map(visits).collect();
        let mut sorted = shown.clone();
        sorted.sort_unstable();
        let own: Vec<u64> = (1..=ROUNDS as u64).map(|n| starts[visitor] + n).collect();
        assert_eq!(sorted, own, "{}'s counts", names[visitor]);
    }
    // The host served them on reused instances, several requests at once.
    if !counted {
        return;
    }
    let stats = app.take_stats_of(ROUNDS * names.len());
    let instances: std::collections::BTreeSet<u64> = stats.iter().map(|s| s.instance).collect();
    let most_at_once = stats.iter().map(|s| s.instance_concurrent).max().unwrap();
    let reused = stats.iter().any(|s| s.instance_request > 1);
    eprintln!(
        "{backend:?}: {} requests on {} instance(s), at most {most_at_once} at once on one",
        stats.len(),
        instances.len()
    );
    assert!(reused, "the instance was reused");
    assert!(
        instances.len() < stats.len(),
        "instances served several requests"
    );
}

/// The README's quick start, as built: visits counted for the visitor with
/// the cookie, none stored for one without, 40 concurrent ones all counted.
fn the_quick_start_counts_every_visit(backend: Backend) {
    let app = App::start_manifest(quickstart_manifest(), backend.storage(), &[]);
    let first = app.get("/", None);
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "Visit number 1\n")
    );
    let id = first
        .session_cookie()
        .expect("the first visit stores a session");
    let again = app.get("/", Some(&cookie(&id)));
    assert_eq!(again.text(), "Visit number 2\n");
    let addr = app.addr;
    std::thread::scope(|scope| {
        for _ in 0..AT_A_TIME {
            let id = &id;
            scope.spawn(move || {
                for _ in 0..5 {
                    assert_eq!(page_view(addr, id).status, 200);
                }
            });
        }
    });
    let last = app.get("/", Some(&cookie(&id)));
    assert_eq!(last.text(), format!("Visit number {}\n", 3 + 5 * AT_A_TIME));
}

/// The quick start in the library's README is `examples/quickstart`'s code,
/// which the test above runs: the README shows what is tested.
#[test]
fn the_readme_quick_start_is_the_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("sessions/README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/quickstart/src/lib.rs")).unwrap();
    let code = &example[example.find("use axum").expect("the example's code")..];
    let shown = readme
        .split("```rust,ignore\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("the README's quick start");
    assert_eq!(
        shown, code,
        "sessions/README.md's quick start and examples/quickstart differ"
    );
}
