//! The load generator: concurrent clients, each on its own HTTP/1.1
//! keep-alive connection ([`crate::http`]: every request in one write),
//! measuring every request's latency as the client sees it (from handing
//! the request to the socket to the last byte of the response), and the
//! host's per-request key-value counts for the same requests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinHandle;

use crate::http::{self, Connection};
use crate::prefill::LiveSession;
use host::{RequestStats, RunningHost};
use spin_sessions_core::SigningKey;

/// What a phase's clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// `GET /2` with a live session's cookie: a page view.
    Get,
    /// `POST /2` with the session's CSRF token and a new `v1`: a form.
    Post,
    /// `GET /` on the floor component, which does nothing.
    Floor,
    /// `GET /` without a cookie: an anonymous page view, which stores
    /// nothing (a pending cookie comes back).
    Anonymous,
    /// `POST /2` with a fresh pending identifier and its token: a
    /// visitor's first form, which creates a session.
    FirstPost,
    /// `GET /` on the handover fixture asking for one key-value read and
    /// its body finished before the hand-over, as the sessions component
    /// answers: what one read costs a component that does nothing else.
    OneRead,
    /// `GET /` on the WASI 0.3 floor (`components/p3-floor`, spin-sdk 7,
    /// served with instance reuse), its response shaped as asked.
    P3Floor(Shape),
    /// `GET /` on `components/p3-one-read`: one key-value read from a
    /// reused WASI 0.3 instance, its response shaped as asked.
    P3OneRead(Shape),
    /// `GET /` of the sign-in example with a signed-in session's cookie:
    /// the home page, which counts the visit (`Session::update`).
    SigninGet,
    /// `GET /nowhere` of the sign-in example with a signed-in session's
    /// cookie: axum's 404 behind the session layer, which loads the session
    /// and writes nothing (the example has no such page; it is what a live
    /// session costs a page that only reads it).
    SigninNotFound,
    /// `POST /signin` of a signed-in visitor (a new name, a new
    /// identifier: `cycle_id`, a flash), answered `303`; each is followed
    /// by the `GET /` its redirect leads to, as a browser follows it (the
    /// new CSRF token is on that page), which is neither timed nor counted.
    SigninPost,
}

/// How the WASI 0.3 fixtures shape their response (their query options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// As spin-sdk 7 answers by default: the body written after the
    /// hand-over, no `content-length` (hyper sends it chunked).
    Sdk,
    /// With `content-length`.
    Length,
    /// An empty body, no `content-length` (p3-floor only).
    Empty,
    /// An empty body with `content-length: 0` (p3-floor only).
    EmptyLength,
}

impl Shape {
    /// The query that asks the fixture for it.
    fn target(self) -> &'static str {
        match self {
            Shape::Sdk => "/",
            Shape::Length => "/?length=1",
            Shape::Empty => "/?empty=1",
            Shape::EmptyLength => "/?empty=1&length=1",
        }
    }
}

impl Mix {
    /// The phase's name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Get => "GET",
            Mix::Post => "POST",
            Mix::Floor => "GET /",
            Mix::Anonymous => "anon GET",
            Mix::FirstPost => "1st POST",
            Mix::OneRead => "1 read",
            Mix::P3Floor(Shape::Sdk) => "p3 floor",
            Mix::P3Floor(Shape::Length) => "p3 floor, length",
            Mix::P3Floor(Shape::Empty) => "p3 floor, empty",
            Mix::P3Floor(Shape::EmptyLength) => "p3 floor, empty, length 0",
            Mix::P3OneRead(Shape::Sdk) => "p3 1 read",
            Mix::P3OneRead(Shape::Length) => "p3 1 read, length",
            Mix::P3OneRead(_) => "p3 1 read, ?",
            Mix::SigninGet => "signin GET",
            Mix::SigninNotFound => "signin 404",
            Mix::SigninPost => "signin POST",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Mix::Get
            | Mix::Floor
            | Mix::Anonymous
            | Mix::OneRead
            | Mix::P3Floor(_)
            | Mix::P3OneRead(_)
            | Mix::SigninGet
            | Mix::SigninNotFound => "GET",
            Mix::Post | Mix::FirstPost | Mix::SigninPost => "POST",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Mix::Get | Mix::Post | Mix::FirstPost => "/2",
            Mix::Floor
            | Mix::Anonymous
            | Mix::OneRead
            | Mix::P3Floor(_)
            | Mix::P3OneRead(_)
            | Mix::SigninGet => "/",
            Mix::SigninNotFound => "/nowhere",
            Mix::SigninPost => "/signin",
        }
    }

    /// The only status a correct answer has: a page, or post/redirect/get.
    fn expected_status(self) -> u16 {
        match self {
            Mix::Get
            | Mix::Floor
            | Mix::Anonymous
            | Mix::OneRead
            | Mix::P3Floor(_)
            | Mix::P3OneRead(_)
            | Mix::SigninGet => 200,
            Mix::SigninNotFound => 404,
            Mix::Post | Mix::FirstPost | Mix::SigninPost => 303,
        }
    }

    /// Whether each of its requests is followed by another one that the
    /// host records too (the GET after a sign-in's redirect).
    pub fn has_follow_up(self) -> bool {
        self == Mix::SigninPost
    }

    /// Whether a host-side record belongs to this phase's requests.
    pub fn matches(self, stats: &RequestStats) -> bool {
        stats.method == self.method() && stats.path == self.path()
    }
}

/// One load client: a connection and the sessions it alone uses, so that
/// clients never race each other's compare-and-swap.
pub struct Client {
    id: usize,
    addr: SocketAddr,
    host_header: String,
    nodelay: bool,
    /// See [`Client::set_quick_ack`].
    quick_ack: bool,
    connection: Connection,
    sessions: Vec<LiveSession>,
    next_session: usize,
    posts: u64,
    /// The store's signing key: what issues the pending identifiers of
    /// [`Mix::FirstPost`], as the component would have on a first page.
    signing_key: SigningKey,
    /// The session the last request was sent with.
    last_session: usize,
}

/// Requests one client made in a phase.
#[derive(Default)]
struct Samples {
    latencies_ns: Vec<u64>,
    /// Requests that took more than one write.
    split: u64,
    errors: u64,
    error_examples: Vec<String>,
    last_done: Option<Instant>,
}

impl Samples {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_examples.len() < 5 {
            self.error_examples.push(what);
        }
    }
}

impl Client {
    /// Opens client `id`'s connection to `addr`, with `TCP_NODELAY` if
    /// `nodelay` (see [`crate::http`] for why not by default).
    pub async fn connect(
        id: usize,
        addr: SocketAddr,
        sessions: Vec<LiveSession>,
        signing_key: SigningKey,
        nodelay: bool,
    ) -> anyhow::Result<Self> {
        Ok(Client {
            id,
            addr,
            host_header: addr.to_string(),
            nodelay,
            quick_ack: false,
            connection: Connection::open(addr, nodelay).await?,
            sessions,
            next_session: 0,
            posts: 0,
            signing_key,
            last_session: 0,
        })
    }

    /// The bytes of the next request of `mix`.
    fn request(&mut self, mix: Mix) -> Vec<u8> {
        match mix {
            Mix::Floor | Mix::Anonymous => return http::get(mix.path(), &self.host_header, None),
            Mix::OneRead => {
                let target = "/?kv=1&order=early&length=1";
                return http::get(target, &self.host_header, None);
            }
            Mix::P3Floor(shape) | Mix::P3OneRead(shape) => {
                return http::get(shape.target(), &self.host_header, None)
            }
            Mix::FirstPost => return self.first_post(),
            _ => {}
        }
        // Round robin over the client's sessions.
        self.last_session = self.next_session % self.sessions.len();
        let session = &self.sessions[self.last_session];
        self.next_session = self.next_session.wrapping_add(1);
        let cookie = Some(session.cookie.as_str());
        match mix {
            Mix::SigninPost | Mix::Post => {
                self.posts += 1;
                // A new value every time, so every POST really changes the
                // record (alphanumeric: no form escaping needed).
                let field = if mix == Mix::SigninPost { "name" } else { "v1" };
                let form = format!(
                    "csrf_token={}&{field}=c{}n{}",
                    session.csrf_token, self.id, self.posts
                );
                http::post_form(mix.path(), &self.host_header, cookie, &form)
            }
            _ => http::get(mix.path(), &self.host_header, cookie),
        }
    }

    /// A first form post under a pending identifier issued for it.
    fn first_post(&mut self) -> Vec<u8> {
        let mut rng = rand::rng();
        let pending = self.signing_key.issue(&mut rng);
        let form = format!(
            "csrf_token={}&v1=first{}",
            self.signing_key.csrf_token(&pending),
            self.id
        );
        http::post_form("/2", &self.host_header, Some(pending.as_str()), &form)
    }

    /// What is wrong with the answer to a request of `mix`, if anything.
    fn check(mix: Mix, response: &http::Response) -> Option<String> {
        let what = format!("{} {}", mix.method(), mix.path());
        if response.status != mix.expected_status() {
            return Some(format!(
                "{what}: status {}, expected {}",
                response.status,
                mix.expected_status()
            ));
        }
        // A live session's page never sets a cookie: one would mean the
        // prefilled session was not found. An anonymous page and a first
        // post always do.
        match mix {
            Mix::Get | Mix::SigninGet | Mix::SigninNotFound if response.set_cookie => {
                Some(format!("{what}: Set-Cookie (the session was not found)"))
            }
            Mix::Anonymous | Mix::FirstPost if !response.set_cookie => {
                Some(format!("{what}: no Set-Cookie"))
            }
            Mix::SigninPost if response.session_cookie.is_none() => {
                Some(format!("{what}: no new session cookie"))
            }
            _ => None,
        }
    }

    /// After a sign-in: the new identifier, and the new CSRF token from the
    /// page its redirect leads to, for the session just used.
    async fn follow_sign_in(&mut self, response: &http::Response) -> anyhow::Result<()> {
        let cookie = response
            .session_cookie
            .clone()
            .context("a sign-in without a new cookie")?;
        let request = http::get("/", &self.host_header, Some(&cookie));
        let (home, page) = self.connection.exchange_page(&request).await?;
        if home.status != 200 || home.set_cookie {
            anyhow::bail!(
                "GET / after a sign-in: status {}, Set-Cookie {}",
                home.status,
                home.set_cookie
            );
        }
        let session = &mut self.sessions[self.last_session];
        session.csrf_token = csrf_token(&page)?;
        session.cookie = cookie;
        Ok(())
    }

    /// Acknowledges every response segment at once from now on
    /// ([`Connection::set_quick_ack`]).
    pub fn set_quick_ack(&mut self) {
        self.quick_ack = true;
        self.connection.set_quick_ack(true);
    }

    /// Replaces a connection that failed or that the server closes.
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.connection = Connection::open(self.addr, self.nodelay).await?;
        self.connection.set_quick_ack(self.quick_ack);
        Ok(())
    }

    /// Sends requests back to back until `until`, recording them if
    /// `record`.
    async fn run(mut self, mix: Mix, until: Instant, record: bool) -> (Self, Samples) {
        let mut samples = Samples::default();
        while Instant::now() < until {
            let request = self.request(mix);
            let start = Instant::now();
            let outcome = self.connection.exchange(&request).await;
            let done = Instant::now();
            let problem = match &outcome {
                Ok(response) => Self::check(mix, response),
                Err(err) => Some(format!("{} {}: {err:#}", mix.method(), mix.path())),
            };
            let mut unusable = outcome.as_ref().map_or(true, |r| r.close);
            if let (Mix::SigninPost, Ok(response), None) = (mix, &outcome, &problem) {
                if !unusable {
                    if let Err(err) = self.follow_sign_in(response).await {
                        samples.error(format!("{err:#}"));
                        unusable = true;
                    }
                }
            }
            if unusable {
                if let Err(err) = self.reconnect().await {
                    samples.error(format!("reconnecting: {err:#}"));
                    break;
                }
            }
            if record {
                let split = outcome.as_ref().is_ok_and(|r| r.writes > 1);
                samples.split += u64::from(split);
                samples
                    .latencies_ns
                    .push(u64::try_from(done.duration_since(start).as_nanos()).unwrap_or(u64::MAX));
                samples.last_done = Some(done);
            }
            // Errors in the warm-up count too: they are errors.
            if let Some(what) = problem {
                samples.error(what);
            }
        }
        (self, samples)
    }
}

/// The CSRF token of a page's forms (`name="csrf_token" value="..."`).
pub fn csrf_token(page: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(page).context("a page that is not UTF-8")?;
    let marker = r#"name="csrf_token" value=""#;
    let start = text.find(marker).context("a page without a form token")? + marker.len();
    Ok(text[start..].split('"').next().unwrap_or("").to_owned())
}

/// One request of a sequence: the latency the client saw, and the time
/// the host recorded for it (from receiving it to the guest finishing its
/// body), in nanoseconds.
pub struct Timed {
    pub client_ns: u64,
    pub host_ns: Option<u64>,
}

/// `count` requests of `mix`, one after the other on the client's
/// connection to `host`, each with the host's own time for it; and the
/// errors. The sequence stops at the first error.
pub async fn run_timed(
    client: &mut Client,
    host: &RunningHost,
    mix: Mix,
    count: usize,
) -> (Vec<Timed>, Vec<String>) {
    // Whatever the host recorded before is not ours.
    tokio::time::sleep(STATS_SETTLE).await;
    host.take_request_stats();
    let (latencies, errors) = run_count(client, mix, count).await;
    tokio::time::sleep(STATS_SETTLE).await;
    // One connection, one request at a time: the host recorded them in
    // the order sent.
    let host_ns: Vec<u64> = host
        .take_request_stats()
        .iter()
        .filter(|s| mix.matches(s))
        .map(|s| u64::try_from(s.duration.as_nanos()).unwrap_or(u64::MAX))
        .collect();
    let matched = host_ns.len() == latencies.len();
    let timed = latencies
        .iter()
        .enumerate()
        .map(|(i, &client_ns)| Timed {
            client_ns,
            host_ns: if matched { Some(host_ns[i]) } else { None },
        })
        .collect();
    (timed, errors)
}

/// `count` requests of `mix`, one after the other on the client's
/// connection: the latency of each in nanoseconds, in order, and the
/// errors.
async fn run_count(client: &mut Client, mix: Mix, count: usize) -> (Vec<u64>, Vec<String>) {
    let mut latencies = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for _ in 0..count {
        let request = client.request(mix);
        let start = Instant::now();
        let outcome = client.connection.exchange(&request).await;
        latencies.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let problem = match &outcome {
            Ok(response) => Client::check(mix, response),
            Err(err) => Some(format!("{} {}: {err:#}", mix.method(), mix.path())),
        };
        if let Some(problem) = problem {
            errors.push(problem);
            break;
        }
        if let (Mix::SigninPost, Ok(response)) = (mix, &outcome) {
            if let Err(err) = client.follow_sign_in(response).await {
                errors.push(format!("{err:#}"));
                break;
            }
        }
        if outcome.as_ref().is_ok_and(|r| r.close) {
            errors.push(format!(
                "{} {}: the server closed the connection",
                mix.method(),
                mix.path()
            ));
            break;
        }
    }
    (latencies, errors)
}

/// The figures of one measured phase.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    /// What was sent.
    pub mix: Mix,
    /// Requests completed in the measured phase (including errors).
    pub requests: u64,
    /// Requests answered wrongly or not at all, warm-up included.
    pub errors: u64,
    /// Measured requests that did not leave in one write (expected: none).
    pub split_requests: u64,
    /// A few of the errors, for the report.
    pub error_examples: Vec<String>,
    /// From the start of the measured phase to the last answer.
    pub elapsed: Duration,
    /// `requests / elapsed`.
    pub requests_per_sec: f64,
    /// Client-side latency, median, in milliseconds.
    pub p50_ms: f64,
    /// Client-side latency, 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// Client-side latency, mean, in milliseconds.
    pub mean_ms: f64,
    /// Requests of this phase the host recorded.
    pub host_requests: u64,
    /// Host records of other requests during the phase (should be none).
    pub host_other_requests: u64,
    /// Mean key-value reads per request, as the host counted them.
    pub kv_reads_mean: f64,
    /// Mean key-value writes per request, as the host counted them.
    pub kv_writes_mean: f64,
    /// Mean new store connections per request, as the host counted them
    /// (Spin's Redis store opens one per compare-and-swap handle).
    pub kv_connections_mean: f64,
    /// Mean `fermyon:spin/variables` gets per request, as the host counted
    /// them.
    pub var_reads_mean: f64,
    /// Variable gets charged to requests that were not their instance's
    /// first (under WASI 0.2 every request is its instance's first). A
    /// request served beside others on one instance is charged their calls
    /// made meanwhile too, so with several clients this can hold a new
    /// instance's first reads.
    pub var_reads_later: u64,
    /// Requests that were not their instance's first, and of them those
    /// accepted with no other request in hand on their instance, and their
    /// variable gets: exact counts, with no neighbour's calls in them.
    pub later_requests: u64,
    /// See `later_requests`.
    pub later_alone_requests: u64,
    /// See `later_requests`.
    pub var_reads_later_alone: u64,
    /// Variable gets charged to requests that were their instance's first.
    pub var_reads_first: u64,
    /// Instances that served the phase's requests.
    pub instances: u64,
    /// The most reads any one request made.
    pub kv_reads_max: u64,
    /// The most writes any one request made.
    pub kv_writes_max: u64,
    /// The most new connections any one request opened.
    pub kv_connections_max: u64,
    /// The most common key-value reads, writes and new connections of one
    /// request.
    pub usual_kv: Option<(u64, u64, u64)>,
    /// Requests that made more key-value operations than the usual (the
    /// most common) count: touches, sweep steps, lost races.
    pub requests_off_usual: u64,
    /// Mean time in the host (request received to guest finished), ms.
    pub host_mean_ms: f64,
    /// CPU time of the process outside the load generator's thread (the
    /// host: its workers and its SQLite threads) per request, in µs. Less
    /// sensitive than req/s to other work on a shared machine.
    pub host_cpu_us_per_request: Option<f64>,
    /// Cores the host used on average during the phase.
    pub host_cpu_cores: Option<f64>,
    /// CPU time of the store's own server process (Redis) per request, in
    /// µs; `None` for a store inside the host (SQLite).
    pub store_cpu_us_per_request: Option<f64>,
    /// Cores the load generator's thread used on average: near 1.0 would
    /// make it the bottleneck.
    pub client_cpu_cores: Option<f64>,
}

/// How often the host's request records are collected during a phase: its
/// buffer keeps only the last [`host::server::STATS_CAPACITY`].
const STATS_POLL: Duration = Duration::from_millis(100);

/// How long a host may take to record a request after its answer without
/// a body (a 303) reached the client.
const STATS_SETTLE: Duration = Duration::from_millis(50);

/// Runs one phase: every client sends `mix` for `warmup` (not measured),
/// then all start together and send for `measure`. `store_pid` is the
/// store's server process, if it has one, whose CPU time is counted too.
///
/// Between the two the clients stop and the host's records are cleared, so
/// the records taken afterwards are exactly those of the measured requests.
pub async fn run_phase(
    clients: Vec<Client>,
    host: &RunningHost,
    mix: Mix,
    (warmup, measure): (Duration, Duration),
    store_pid: Option<u32>,
) -> (Vec<Client>, PhaseResult) {
    let (clients, warm) = run_clients(clients, mix, Instant::now() + warmup, false).await;
    // The warm-up's last answers without a body may be recorded just after
    // they arrived: let them, so they are not taken for measured ones.
    tokio::time::sleep(STATS_SETTLE).await;
    host.take_request_stats();

    let store_before = store_pid.and_then(process_cpu);
    let cpu_before = cpu_times();
    let start = Instant::now();
    let until = start + measure;
    let handles: Vec<JoinHandle<(Client, Samples)>> = clients
        .into_iter()
        .map(|client| tokio::spawn(client.run(mix, until, true)))
        .collect();
    let mut stats = Vec::new();
    while !handles.iter().all(JoinHandle::is_finished) {
        tokio::time::sleep(STATS_POLL).await;
        stats.extend(host.take_request_stats());
    }
    let (clients, samples) = join(handles).await;
    let cpu_after = cpu_times();
    let store_after = store_pid.and_then(process_cpu);
    tokio::time::sleep(STATS_SETTLE).await;
    stats.extend(host.take_request_stats());

    let mut result = summarise(mix, start, &samples, &stats);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let process = after.process.saturating_sub(before.process).as_secs_f64();
        let client = after.thread.saturating_sub(before.thread).as_secs_f64();
        let wall = start.elapsed().as_secs_f64();
        let host = (process - client).max(0.0);
        result.host_cpu_cores = Some(host / wall);
        result.client_cpu_cores = Some(client / wall);
        result.host_cpu_us_per_request = Some(host * 1e6 / result.requests.max(1) as f64);
    }
    if let (Some(before), Some(after)) = (store_before, store_after) {
        let store = after.saturating_sub(before).as_secs_f64();
        result.store_cpu_us_per_request = Some(store * 1e6 / result.requests.max(1) as f64);
    }
    for s in warm {
        result.errors += s.errors;
        for e in s.error_examples {
            if result.error_examples.len() < 5 {
                result.error_examples.push(format!("(warm-up) {e}"));
            }
        }
    }
    (clients, result)
}

async fn run_clients(
    clients: Vec<Client>,
    mix: Mix,
    until: Instant,
    record: bool,
) -> (Vec<Client>, Vec<Samples>) {
    let handles = clients
        .into_iter()
        .map(|client| tokio::spawn(client.run(mix, until, record)))
        .collect();
    join(handles).await
}

async fn join(handles: Vec<JoinHandle<(Client, Samples)>>) -> (Vec<Client>, Vec<Samples>) {
    let mut clients = Vec::with_capacity(handles.len());
    let mut samples = Vec::with_capacity(handles.len());
    for handle in handles {
        let (client, s) = handle.await.expect("a load client panicked");
        clients.push(client);
        samples.push(s);
    }
    (clients, samples)
}

fn summarise(mix: Mix, start: Instant, samples: &[Samples], stats: &[RequestStats]) -> PhaseResult {
    let mut latencies: Vec<u64> = samples
        .iter()
        .flat_map(|s| s.latencies_ns.iter().copied())
        .collect();
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let last = samples.iter().filter_map(|s| s.last_done).max();
    let elapsed = last.map_or(Duration::ZERO, |l| l.duration_since(start));
    let ms = |ns: u64| ns as f64 / 1e6;
    let mean_ms = if latencies.is_empty() {
        0.0
    } else {
        ms(latencies.iter().sum::<u64>()) / latencies.len() as f64
    };

    let ours: Vec<&RequestStats> = stats.iter().filter(|s| mix.matches(s)).collect();
    let n = ours.len().max(1) as f64;
    let reads: u64 = ours.iter().map(|s| s.kv_reads).sum();
    let writes: u64 = ours.iter().map(|s| s.kv_writes).sum();
    let connections: u64 = ours.iter().map(|s| s.kv_connections).sum();
    let var_reads: u64 = ours.iter().map(|s| s.var_reads).sum();
    let later: Vec<&&RequestStats> = ours.iter().filter(|s| s.instance_request > 1).collect();
    let later_alone: Vec<&&RequestStats> = later
        .iter()
        .copied()
        .filter(|s| s.instance_concurrent == 0)
        .collect();
    let instances: std::collections::HashSet<u64> = ours.iter().map(|s| s.instance).collect();
    let usual = most_common(
        ours.iter()
            .map(|s| (s.kv_reads, s.kv_writes, s.kv_connections)),
    );
    let host_ns: u128 = ours.iter().map(|s| s.duration.as_nanos()).sum();

    let mut errors = 0;
    let mut error_examples = Vec::new();
    for s in samples {
        errors += s.errors;
        error_examples.extend(s.error_examples.iter().cloned());
    }
    error_examples.truncate(5);
    PhaseResult {
        mix,
        requests,
        errors,
        split_requests: samples.iter().map(|s| s.split).sum(),
        error_examples,
        elapsed,
        requests_per_sec: if elapsed.is_zero() {
            0.0
        } else {
            requests as f64 / elapsed.as_secs_f64()
        },
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        mean_ms,
        host_requests: ours.len() as u64,
        host_other_requests: (stats.len() - ours.len()) as u64,
        kv_reads_mean: reads as f64 / n,
        kv_writes_mean: writes as f64 / n,
        kv_connections_mean: connections as f64 / n,
        var_reads_mean: var_reads as f64 / n,
        var_reads_later: later.iter().map(|s| s.var_reads).sum(),
        later_requests: later.len() as u64,
        later_alone_requests: later_alone.len() as u64,
        var_reads_later_alone: later_alone.iter().map(|s| s.var_reads).sum(),
        var_reads_first: ours
            .iter()
            .filter(|s| s.instance_request <= 1)
            .map(|s| s.var_reads)
            .sum(),
        instances: instances.len() as u64,
        kv_reads_max: ours.iter().map(|s| s.kv_reads).max().unwrap_or(0),
        kv_writes_max: ours.iter().map(|s| s.kv_writes).max().unwrap_or(0),
        kv_connections_max: ours.iter().map(|s| s.kv_connections).max().unwrap_or(0),
        usual_kv: usual,
        requests_off_usual: ours
            .iter()
            .filter(|s| Some((s.kv_reads, s.kv_writes, s.kv_connections)) != usual)
            .count() as u64,
        host_mean_ms: host_ns as f64 / 1e6 / n,
        host_cpu_us_per_request: None,
        host_cpu_cores: None,
        store_cpu_us_per_request: None,
        client_cpu_cores: None,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn most_common(items: impl Iterator<Item = (u64, u64, u64)>) -> Option<(u64, u64, u64)> {
    let mut counts = std::collections::HashMap::new();
    for item in items {
        *counts.entry(item).or_insert(0u64) += 1;
    }
    counts.into_iter().max_by_key(|(_, c)| *c).map(|(k, _)| k)
}

/// CPU time used so far by the whole process and by the calling thread.
struct CpuTimes {
    process: Duration,
    thread: Duration,
}

/// Reads both from `/proc` (Linux); `None` where that is not available.
///
/// The load generator runs on a current-thread runtime, so the calling
/// thread is exactly the load generator, and the rest of the process is
/// the host.
fn cpu_times() -> Option<CpuTimes> {
    Some(CpuTimes {
        process: proc_cpu("/proc/self/stat")?,
        thread: proc_cpu("/proc/thread-self/stat")?,
    })
}

/// CPU time used so far by process `pid`.
fn process_cpu(pid: u32) -> Option<Duration> {
    proc_cpu(&format!("/proc/{pid}/stat"))
}

/// `utime + stime` of a `/proc/.../stat` file.
fn proc_cpu(path: &str) -> Option<Duration> {
    // USER_HZ: 100 on every Linux architecture that matters here.
    const TICKS_PER_SEC: u64 = 100;
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn cpu_times_are_read_on_linux() {
        if cfg!(target_os = "linux") {
            let t = cpu_times().expect("/proc is readable");
            assert!(t.thread <= t.process);
        }
    }
}
