//! The WASI 0.3 part: the sign-in example (`examples/signin`, spin-sdk 7
//! and axum) beside the two spin-sdk 7 fixtures, `components/p3-floor` (a
//! handler that does nothing) and `components/p3-one-read` (one key-value
//! read), all served as Spin 4 serves WASI 0.3 components: instances
//! reused with Spin's defaults (128 requests per instance, 16 at once, 1 s
//! idle). Per backend (SQLite, then Redis), on a store holding only the
//! signed-in sessions the clients use: long phases of each (the sign-in
//! example's home page and a live session's 404), the four in alternating
//! one-second rounds with delayed ACKs and with quick ACKs (the goal takes
//! the median of the pairs' ratios), signing in again, one client alone,
//! and one keep-alive connection per component ([`keep_alive_of`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{ensure, Context as _};
use host::RunningHost;
use spin_sessions_core::SigningKey;
use test_support::tempdir::TempDir;

use crate::http::{self, Connection};
use crate::load::{self, csrf_token, Client, Mix, PhaseResult, Shape};
use crate::prefill::LiveSession;
use crate::report::{list, Backend, Config, KeepAlive, P3Pairs, P3Result, SetupVariables};
use crate::{connect, phase, progress, start_host_with, start_redis, write_runtime_config};
use crate::{Runtimes, FLOOR_PAIRS, PAIR_TIMES};

/// Signed-in sessions per load client.
const SESSIONS_PER_CLIENT: usize = 2;

/// The WASI 0.3 floor, served for the whole run (it uses no store).
pub struct P3Floor {
    host: RunningHost,
    _dir: TempDir,
}

impl P3Floor {
    pub fn start(rts: &Runtimes, workspace: &Path) -> anyhow::Result<Self> {
        let dir = TempDir::new("bench-p3-floor");
        let manifest = workspace.join("components/p3-floor/spin.toml");
        let (host, started) = start_host_with(&rts.host, &manifest, dir.path(), None, Vec::new())?;
        progress(
            "p3 floor",
            format!(
                "host serving on {} (started in {:.1} s)",
                host.addr(),
                started.as_secs_f64()
            ),
        );
        Ok(P3Floor { host, _dir: dir })
    }

    pub fn shutdown(self, rts: &Runtimes) {
        rts.host.block_on(self.host.shutdown());
    }
}

/// The sign-in example and the one-read fixture on `backend`, beside the
/// floor.
pub fn run_backend(
    rts: &Runtimes,
    workspace: &Path,
    backend: Backend,
    floor: &P3Floor,
    config: &Config,
) -> anyhow::Result<P3Result> {
    let label = format!("{} p3", backend.name());
    let dir = TempDir::new(&format!("bench-p3-{}", backend.name()));
    let redis = match backend {
        Backend::Sqlite => None,
        Backend::Redis => Some(start_redis()?),
    };
    let runtime_config = match &redis {
        None => None,
        Some(server) => Some(write_runtime_config(dir.path(), server)?),
    };
    // Each host its own state directory: on SQLite, its own store.
    let signin_dir = dir.path().join("signin");
    let one_read_dir = dir.path().join("one-read");
    for d in [&signin_dir, &one_read_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let (signin, signin_start) = start_host_with(
        &rts.host,
        &workspace.join("examples/signin/spin.toml"),
        &signin_dir,
        runtime_config.clone(),
        Vec::new(),
    )?;
    let (one_read, _) = start_host_with(
        &rts.host,
        &workspace.join("components/p3-one-read/spin.toml"),
        &one_read_dir,
        runtime_config,
        Vec::new(),
    )?;
    progress(
        &label,
        format!(
            "sign-in example on {} (started in {:.1} s), p3-one-read on {}",
            signin.addr(),
            signin_start.as_secs_f64(),
            one_read.addr()
        ),
    );
    let store_pid = redis.as_ref().map(|r| r.pid());
    let result = rts.clients.block_on(async {
        let count = config.clients * SESSIONS_PER_CLIENT;
        let sessions = sign_in_many(signin.addr(), count).await?;
        // The host's first requests: the first instance's first request
        // reads the settings.
        let setup = signin.take_request_stats();
        let first_instance = setup
            .iter()
            .filter(|s| s.instance_request == 1)
            .map(|s| s.var_reads)
            .collect::<Vec<u64>>();
        let later_setup: u64 = setup
            .iter()
            .filter(|s| s.instance_request > 1)
            .map(|s| s.var_reads)
            .sum();
        progress(
            &label,
            format!(
                "{count} visitors signed in ({} requests; variable gets of the {} instances' \
                 first requests: {first_instance:?}, of the others: {later_setup})",
                setup.len(),
                first_instance.len()
            ),
        );
        let setup_variables = SetupVariables {
            requests: setup.len() as u64,
            first_requests: first_instance,
            later: later_setup,
        };
        let key = SigningKey::generate(&mut rand::rng());
        let clients = connect(signin.addr(), config, &sessions, &key).await?;
        let none = [LiveSession {
            cookie: String::new(),
            csrf_token: String::new(),
        }];
        let floor_clients = connect(floor.host.addr(), config, &none, &key).await?;
        let one_read_clients = connect(one_read.addr(), config, &none, &key).await?;

        let (clients, signin_get) =
            phase(&label, clients, &signin, Mix::SigninGet, config, store_pid).await;
        let (clients, signin_not_found) = phase(
            &label,
            clients,
            &signin,
            Mix::SigninNotFound,
            config,
            store_pid,
        )
        .await;
        let (floor_clients, floor_phase) = phase(
            &label,
            floor_clients,
            &floor.host,
            Mix::P3Floor(Shape::Sdk),
            config,
            None,
        )
        .await;
        let (one_read_clients, one_read_phase) = phase(
            &label,
            one_read_clients,
            &one_read,
            Mix::P3OneRead(Shape::Sdk),
            config,
            store_pid,
        )
        .await;
        let hosts = [&signin, &signin, &floor.host, &one_read];
        let not_found_clients = connect(signin.addr(), config, &sessions, &key).await?;
        let (clients, pairs) = alternate(
            &label,
            "",
            [clients, not_found_clients, floor_clients, one_read_clients],
            hosts,
            store_pid,
        )
        .await;
        // The same pairs with clients that acknowledge at once: no response
        // waits for a delayed ACK, what remains is each request's cost.
        let mut quick = [
            connect(signin.addr(), config, &sessions, &key).await?,
            connect(signin.addr(), config, &sessions, &key).await?,
            connect(floor.host.addr(), config, &none, &key).await?,
            connect(one_read.addr(), config, &none, &key).await?,
        ];
        quick.iter_mut().flatten().for_each(Client::set_quick_ack);
        let (_, pairs_quick_ack) = alternate(
            &label,
            ", clients acknowledging at once",
            quick,
            hosts,
            store_pid,
        )
        .await;
        // New connections for the clients that sat idle through those pairs:
        // the host (hyper) closes a connection that sends no request head
        // for 30 s.
        let [mut clients, _, _, mut one_read_clients] = clients;
        for client in clients.iter_mut().chain(one_read_clients.iter_mut()) {
            client.reconnect().await?;
        }
        let (mut clients, signin_post) =
            phase(&label, clients, &signin, Mix::SigninPost, config, store_pid).await;

        let alone_label = format!("{label}, one client");
        let alone: Vec<Client> = clients.drain(..1).collect();
        drop(clients);
        let (alone, signin_get_alone) = phase(
            &alone_label,
            alone,
            &signin,
            Mix::SigninGet,
            config,
            store_pid,
        )
        .await;
        let (_, signin_post_alone) = phase(
            &alone_label,
            alone,
            &signin,
            Mix::SigninPost,
            config,
            store_pid,
        )
        .await;
        let one_read_alone: Vec<Client> = one_read_clients.drain(..1).collect();
        drop(one_read_clients);
        let (_, one_read_alone) = phase(
            &alone_label,
            one_read_alone,
            &one_read,
            Mix::P3OneRead(Shape::Sdk),
            config,
            store_pid,
        )
        .await;

        // One keep-alive connection each, Nagle on.
        let mut keep_alive = Vec::new();
        for shape in [Shape::Sdk, Shape::Length, Shape::Empty, Shape::EmptyLength] {
            let ka = keep_alive_of(&label, &floor.host, &none, Mix::P3Floor(shape), config).await?;
            keep_alive.push(ka);
        }
        for shape in [Shape::Sdk, Shape::Length] {
            let ka = keep_alive_of(&label, &one_read, &none, Mix::P3OneRead(shape), config).await?;
            keep_alive.push(ka);
        }
        // Visitors of their own: the phases above moved the clients'
        // sessions on.
        let fresh = sign_in_many(signin.addr(), 2).await?;
        for (mix, session) in [(Mix::SigninGet, &fresh[0]), (Mix::SigninPost, &fresh[1])] {
            let ka =
                keep_alive_of(&label, &signin, std::slice::from_ref(session), mix, config).await?;
            keep_alive.push(ka);
        }
        anyhow::Ok(P3Result {
            backend,
            sessions: count,
            setup_variables,
            signin_get,
            signin_not_found,
            signin_post,
            floor: floor_phase,
            one_read: one_read_phase,
            signin_get_alone,
            signin_post_alone,
            one_read_alone,
            pairs,
            pairs_quick_ack,
            keep_alive,
        })
    });
    rts.host.block_on(signin.shutdown());
    rts.host.block_on(one_read.shutdown());
    drop(redis);
    result
}

/// The sign-in GET and 404 and the two fixtures in alternating one-second
/// phases; `how` says how the clients differ from the long phases' (in the
/// progress lines).
async fn alternate(
    label: &str,
    how: &str,
    clients: [Vec<Client>; 4],
    hosts: [&RunningHost; 4],
    store_pid: Option<u32>,
) -> ([Vec<Client>; 4], P3Pairs) {
    progress(
        label,
        format!(
            "sign-in GET and 404, p3 floor and p3 one read alternating, {FLOOR_PAIRS} rounds of \
             1 s phases{how}"
        ),
    );
    let mixes = [
        Mix::SigninGet,
        Mix::SigninNotFound,
        Mix::P3Floor(Shape::Sdk),
        Mix::P3OneRead(Shape::Sdk),
    ];
    let pids = [store_pid, store_pid, None, store_pid];
    let mut pairs = P3Pairs::default();
    let mut clients = clients.map(Some);
    for _ in 0..FLOOR_PAIRS {
        let mut rates = [0.0; 4];
        for i in 0..4 {
            let mine = clients[i].take().unwrap_or_default();
            let (back, result) =
                load::run_phase(mine, hosts[i], mixes[i], PAIR_TIMES, pids[i]).await;
            clients[i] = Some(back);
            rates[i] = result.requests_per_sec;
        }
        pairs.requests_per_sec.push(rates);
        let [signin, not_found, floor, one_read] = rates;
        pairs.signin_vs_one_read.push(signin / one_read);
        pairs.not_found_vs_one_read.push(not_found / one_read);
        pairs.signin_vs_floor.push(signin / floor);
        pairs.one_read_vs_floor.push(one_read / floor);
    }
    progress(
        label,
        format!(
            "over p3 one read{how}: sign-in GET {}, sign-in 404 {}; sign-in GET over the p3 \
             floor: {}; one read over the floor: {}",
            list(&pairs.signin_vs_one_read),
            list(&pairs.not_found_vs_one_read),
            list(&pairs.signin_vs_floor),
            list(&pairs.one_read_vs_floor)
        ),
    );
    (clients.map(Option::unwrap_or_default), pairs)
}

/// Signs `count` visitors in, each from a loopback address of its own (the
/// example keeps Spin's default quota of 30 new sessions per minute per
/// client address): a first page, `POST /signin`, and the page it leads
/// to, whose form token the session's later posts need.
pub async fn sign_in_many(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<LiveSession>> {
    let mut sessions = Vec::with_capacity(count);
    for i in 0..count {
        // 127.1.0.1, 127.1.0.2, ...: Linux answers all of 127/8 on `lo`.
        let n = u32::try_from(i).unwrap_or(u32::MAX);
        let source = Ipv4Addr::from(0x7f01_0001_u32.saturating_add(n));
        let session = sign_in(addr, IpAddr::V4(source), &format!("bench{i}"))
            .await
            .with_context(|| format!("signing visitor {i} in from {source}"))?;
        sessions.push(session);
    }
    Ok(sessions)
}

async fn sign_in(addr: SocketAddr, source: IpAddr, name: &str) -> anyhow::Result<LiveSession> {
    let host = addr.to_string();
    let mut conn = Connection::open_from(addr, source, false).await?;
    let (first, page) = conn.exchange_page(&http::get("/", &host, None)).await?;
    ensure!(first.status == 200, "GET /: status {}", first.status);
    let pending = first.session_cookie.context("GET /: no cookie")?;
    let form = format!("csrf_token={}&name={name}", csrf_token(&page)?);
    let signin = http::post_form("/signin", &host, Some(&pending), &form);
    let (posted, _) = conn.exchange_page(&signin).await?;
    ensure!(
        posted.status == 303,
        "POST /signin: status {}",
        posted.status
    );
    let cookie = posted.session_cookie.context("POST /signin: no cookie")?;
    let (home, page) = conn
        .exchange_page(&http::get("/", &host, Some(&cookie)))
        .await?;
    ensure!(
        home.status == 200 && std::str::from_utf8(&page).is_ok_and(|p| p.contains("Hello, ")),
        "GET / after signing in: status {}, not signed in",
        home.status
    );
    Ok(LiveSession {
        cookie,
        csrf_token: csrf_token(&page)?,
    })
}

/// `config.keep_alive` requests of `mix`, one after the other on one new
/// keep-alive connection to `host` without `TCP_NODELAY`, as one browser
/// sends them.
pub async fn keep_alive_of(
    label: &str,
    host: &RunningHost,
    sessions: &[LiveSession],
    mix: Mix,
    config: &Config,
) -> anyhow::Result<KeepAlive> {
    let key = SigningKey::generate(&mut rand::rng());
    let mut client = Client::connect(0, host.addr(), sessions.to_vec(), key, false).await?;
    let (timed, errors) = load::run_timed(&mut client, host, mix, config.keep_alive).await;
    let figures = KeepAlive::new(mix, &timed, errors);
    progress(
        label,
        format!(
            "{}, one keep-alive connection: {} requests, median {:.2} ms (host {}), {} stalled \
             over {} ms{}",
            mix.name(),
            figures.requests,
            figures.median_ms,
            figures
                .host_median_ms
                .map_or("-".into(), |m| format!("{m:.2} ms")),
            figures.stalled,
            crate::report::STALL_MS,
            figures
                .errors
                .first()
                .map_or(String::new(), |e| format!(", error: {e}"))
        ),
    );
    Ok(figures)
}

/// The figures of a phase, for the WASI 0.3 table.
pub fn phases(r: &P3Result) -> Vec<(&'static str, &PhaseResult)> {
    vec![
        ("signin GET", &r.signin_get),
        ("signin 404", &r.signin_not_found),
        ("signin POST", &r.signin_post),
        ("p3 floor", &r.floor),
        ("p3 1 read", &r.one_read),
        ("signin GET, 1 client", &r.signin_get_alone),
        ("signin POST, 1 client", &r.signin_post_alone),
        ("p3 1 read, 1 client", &r.one_read_alone),
    ]
}
