//! The HTTP server: hyper 1 over HTTP/1.1 with keep-alive; like `spin up`,
//! one fresh wasmtime `Store` and component instance per request for WASI
//! 0.2 components, and reused instances for WASI 0.3 ones (`crate::p3`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinError, JoinHandle};
use wasmtime::Store;
use wasmtime_wasi_http::handler::ProxyHandler;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::hyper_request_error;
use wasmtime_wasi_http::WasiHttpView;

use crate::app::{Handler, LoadedApp};
use crate::clock::ClockOffset;
use crate::kv::{FaultSwitch, OpCounters, OpCounts};
use crate::p3::{P3Handler, RequestSlot};
use crate::routes::RouteMatch;
use crate::state::HostState;
use crate::RequestStats;

/// Errors a response body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the server sends.
pub(crate) type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// How many finished requests the stats buffer keeps; older ones are
/// dropped so a long-running host does not grow without bound.
pub const STATS_CAPACITY: usize = 10_000;

/// Spin's prefix for the paths it answers itself.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// How long the host waits for the next bytes of a request body the guest
/// is reading, before the guest sees a read timeout.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request body may take to arrive.
pub const BODY_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A request body with read timeouts: a client that announces a body and
/// then stalls (or trickles it) must not hold a connection and an instance
/// for ever. The guest sees `connection-read-timeout`, as from any
/// broken body, and answers as it sees fit.
struct TimedBody {
    inner: Incoming,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    total: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming) -> Self {
        TimedBody {
            inner,
            idle: None,
            total: Box::pin(tokio::time::sleep(BODY_TOTAL_TIMEOUT)),
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        let this = self.get_mut();
        if this.total.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle = None;
                Poll::Ready(frame.map(|f| f.map_err(hyper_request_error)))
            }
            Poll::Pending => {
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(BODY_IDLE_TIMEOUT)));
                ready!(idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// State shared between the server and the `RunningHost` handle.
pub(crate) struct Shared {
    pub(crate) stats: Mutex<VecDeque<RequestStats>>,
    pub(crate) clock: ClockOffset,
    pub(crate) fault: Arc<FaultSwitch>,
    pub(crate) quiet: bool,
    /// Component instances created so far.
    pub(crate) instances: AtomicU64,
}

impl Shared {
    /// State for a host that has served nothing yet.
    pub(crate) fn new(quiet: bool) -> Self {
        Shared {
            stats: Mutex::new(VecDeque::new()),
            clock: ClockOffset::default(),
            fault: Arc::new(FaultSwitch::default()),
            quiet,
            instances: AtomicU64::new(0),
        }
    }

    /// Numbers a new instance (from 1).
    pub(crate) fn next_instance(&self) -> u64 {
        self.instances.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn record(&self, stats: RequestStats) {
        if !self.quiet {
            eprintln!(
                "{} {} {} {:.2}ms kv r={} w={} c={} var={} instance={}#{}",
                stats.method,
                stats.path,
                stats.status,
                stats.duration.as_secs_f64() * 1000.0,
                stats.kv_reads,
                stats.kv_writes,
                stats.kv_connections,
                stats.var_reads,
                stats.instance,
                stats.instance_request,
            );
        }
        let mut buffer = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() >= STATS_CAPACITY {
            buffer.pop_front();
        }
        buffer.push_back(stats);
    }
}

/// Where a request's counts come from.
enum Counted {
    /// Nothing ran for it (the host answered, or no instance took it).
    Nothing,
    /// A fresh instance of its own (WASI 0.2): everything it counted.
    Own {
        counters: Arc<OpCounters>,
        instance: u64,
    },
    /// A reused instance (WASI 0.3): what it counted from the request's
    /// acceptance to its end (see `crate::p3`).
    Shared(Arc<RequestSlot>),
}

/// Records one request's stats when it is finished.
struct Recorder {
    shared: Arc<Shared>,
    method: String,
    path: String,
    start: Instant,
    counted: Counted,
}

impl Recorder {
    /// Starts timing `req`.
    fn start(shared: &Arc<Shared>, req: &Request<Incoming>) -> Self {
        Recorder {
            shared: shared.clone(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            start: Instant::now(),
            counted: Counted::Nothing,
        }
    }

    fn finish(self, status: StatusCode) {
        let (counts, instance, instance_request, concurrent) = match &self.counted {
            Counted::Nothing => (OpCounts::default(), 0, 0, 0),
            Counted::Own { counters, instance } => (counters.counts(), *instance, 1, 0),
            Counted::Shared(slot) => match slot.accepted() {
                Some(a) => (
                    a.counters.counts().since(a.at_start),
                    a.instance,
                    a.ordinal,
                    a.concurrent,
                ),
                None => (OpCounts::default(), 0, 0, 0),
            },
        };
        self.shared.record(RequestStats {
            method: self.method,
            path: self.path,
            status: status.as_u16(),
            kv_reads: counts.reads,
            kv_writes: counts.writes,
            kv_connections: counts.connections,
            var_reads: counts.var_reads,
            instance,
            instance_request,
            instance_concurrent: concurrent,
            duration: self.start.elapsed(),
        });
    }
}

/// Everything the request handler needs.
pub(crate) struct Server {
    pub(crate) app: LoadedApp,
    pub(crate) shared: Arc<Shared>,
}

fn full(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from_static(body.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// Makes the request URI absolute (`http://host/path?query`), as Spin does
/// before handing the request to the component. The authority comes from
/// the `Host` header, or the URI if the client sent an absolute one; if both
/// are present they must agree.
fn absolute_uri(req: &Request<Incoming>) -> Result<Uri, &'static str> {
    let header = match req.headers().get(HOST) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|s| s.parse::<http::uri::Authority>().ok())
                .ok_or("the Host header is not a valid authority")?,
        ),
        None => None,
    };
    let mut parts = req.uri().clone().into_parts();
    let authority = match (header, parts.authority.take()) {
        (None, None) => return Err("the request has no Host header"),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) if a == b => a,
        (Some(_), Some(_)) => return Err("the Host header does not match the request URI"),
    };
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).map_err(|_| "the request URI is invalid")
}

/// The `spin-*` headers Spin adds (crates/trigger-http, headers.rs).
fn spin_headers(uri: &Uri, route: &RouteMatch, client: SocketAddr) -> Vec<(HeaderName, String)> {
    let full_url = format!(
        "http://{}{}",
        uri.authority().map(|a| a.as_str()).unwrap_or("localhost"),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut headers = vec![
        (
            HeaderName::from_static("spin-path-info"),
            route.path_info.clone(),
        ),
        (HeaderName::from_static("spin-full-url"), full_url),
        (
            HeaderName::from_static("spin-matched-route"),
            route.matched_route.clone(),
        ),
        // This host has no application base path, like current Spin.
        (HeaderName::from_static("spin-base-path"), "/".to_string()),
        (
            HeaderName::from_static("spin-raw-component-route"),
            route.raw_component_route.clone(),
        ),
        (
            HeaderName::from_static("spin-component-route"),
            route.component_route.clone(),
        ),
        (
            HeaderName::from_static("spin-client-addr"),
            client.to_string(),
        ),
    ];
    for (name, value) in &route.params {
        if let Ok(header) =
            HeaderName::try_from(format!("spin-path-match-{}", name.to_ascii_lowercase()))
        {
            headers.push((header, value.clone()));
        }
    }
    headers
}

/// A request the host has checked and routed, ready for its component.
struct Routed {
    req: Request<Incoming>,
    route: RouteMatch,
}

/// A request the host answers without a component.
enum HostAnswer {
    /// Spin's `/.well-known/spin/health`.
    Health,
    /// Another well-known path, or no route: Spin's empty 404.
    NotFound,
    /// The `Host` header or URI cannot give an absolute URI.
    BadRequest(&'static str),
}

impl HostAnswer {
    fn response(self) -> Response<ResponseBody> {
        match self {
            HostAnswer::Health => full(StatusCode::OK, "OK"),
            HostAnswer::NotFound => empty(StatusCode::NOT_FOUND),
            HostAnswer::BadRequest(why) => full(StatusCode::BAD_REQUEST, why),
        }
    }
}

impl Server {
    /// Serves one request. Never fails: errors become 4xx/5xx responses.
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let mut recorder = Recorder::start(&self.shared, &req);
        let routed = match self.route(req, &recorder.path, client) {
            Ok(routed) => routed,
            Err(answer) => {
                let response = answer.response();
                recorder.finish(response.status());
                return response;
            }
        };
        let component = &self.app.components[&routed.route.component];
        let context = ErrorContext {
            method: recorder.method.clone(),
            path: recorder.path.clone(),
            component: component.id.to_string(),
        };
        let pre = match &component.handler {
            Handler::P2(pre) => pre,
            Handler::P3(handler) => return serve_p3(handler, routed.req, recorder, context).await,
        };
        let counters = Arc::new(OpCounters::default());
        let store = component.factory.new_store(counters.clone());
        recorder.counted = Counted::Own {
            counters,
            instance: store.data().instance.number,
        };
        let (guest, receiver) = match start_guest(store, pre, routed.req) {
            Ok(started) => started,
            Err(e) => {
                eprintln!(
                    "spin-sessions-host: {} {}: cannot pass the request to component `{}`: {e:?}",
                    context.method, context.path, context.component
                );
                recorder.finish(StatusCode::INTERNAL_SERVER_ERROR);
                return internal_error();
            }
        };
        answer(receiver.await, guest, recorder, context).await
    }

    /// Routes the request and adds Spin's `spin-*` headers, or says what
    /// the host answers itself.
    fn route(
        &self,
        mut req: Request<Incoming>,
        path: &str,
        client: SocketAddr,
    ) -> Result<Routed, HostAnswer> {
        if let Some(which) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return Err(match which {
                "health" => HostAnswer::Health,
                _ => HostAnswer::NotFound,
            });
        }
        let route = self
            .app
            .config
            .router
            .route(path)
            .ok_or(HostAnswer::NotFound)?;
        *req.uri_mut() = absolute_uri(&req).map_err(HostAnswer::BadRequest)?;
        for (name, value) in spin_headers(req.uri(), &route, client) {
            // Replace, never append: a client cannot forge these.
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    req.headers_mut().insert(name, value);
                }
                Err(_) => {
                    req.headers_mut().remove(name);
                }
            }
        }
        Ok(Routed { req, route })
    }
}

/// The guest's task, and where its response arrives.
type Started = (
    JoinHandle<wasmtime::Result<()>>,
    oneshot::Receiver<Result<Response<HyperOutgoingBody>, ErrorCode>>,
);

/// Hands `req` to a new instance of `component`, running in its own task so
/// that it can go on writing the body after handing over the response.
fn start_guest(
    mut store: Store<HostState>,
    pre: &ProxyPre<HostState>,
    req: Request<Incoming>,
) -> wasmtime::Result<Started> {
    let (sender, receiver) = oneshot::channel();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req.map(TimedBody::new))?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let pre = pre.clone();
    let guest = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, out)
            .await
    });
    Ok((guest, receiver))
}

/// What arrives through the response-outparam: the guest's response, the
/// error code it answered with, or nothing (dropped unset).
type Delivered = Result<Result<Response<HyperOutgoingBody>, ErrorCode>, oneshot::error::RecvError>;

/// Turns what the guest delivered into the response hyper sends.
async fn answer(
    delivered: Delivered,
    guest: JoinHandle<wasmtime::Result<()>>,
    recorder: Recorder,
    context: ErrorContext,
) -> Response<ResponseBody> {
    match delivered {
        Ok(Ok(response)) => return hand_over(response, guest, recorder, context),
        Ok(Err(code)) => {
            // The guest answered with an error code instead of a response.
            context.report(&guest.await);
            eprintln!(
                "spin-sessions-host: {} {}: component `{}` failed to produce a response: {code:?}",
                context.method, context.path, context.component
            );
        }
        Err(_) => {
            // The response-outparam was dropped unset: the guest trapped
            // or returned without answering.
            if !context.report(&guest.await) {
                eprintln!(
                    "spin-sessions-host: {} {}: component `{}` returned without producing a response",
                    context.method, context.path, context.component
                );
            }
        }
    }
    recorder.finish(StatusCode::INTERNAL_SERVER_ERROR);
    internal_error()
}

/// Gives hyper the guest's response at once, as Spin does, while the guest
/// may still be writing the body: its frames pass through as they come, so
/// hyper writes the head and the body to the socket when it would under
/// Spin. The guest's failures after this point are logged from a task of
/// their own (Spin's "component error after response started").
fn hand_over(
    response: Response<HyperOutgoingBody>,
    guest: JoinHandle<wasmtime::Result<()>>,
    recorder: Recorder,
    context: ErrorContext,
) -> Response<ResponseBody> {
    let status = response.status();
    let abort = guest.abort_handle();
    tokio::spawn(async move {
        context.report(&guest.await);
    });
    response.map(|body| {
        GuestBody {
            inner: body,
            abort: Some(abort),
            finish: Some((recorder, status)),
        }
        .boxed_unsync()
    })
}

/// Serves a request to a WASI 0.3 component, as Spin's `Wasip3HttpExecutor`
/// does: the instance-reuse handler finds or makes an instance, and gives
/// back the response as soon as the guest's `handle` returns it, while the
/// instance goes on writing the body. Any failure before that (the guest's
/// error code, a trap, an instantiation failure, the request timeout) is
/// logged and answered with Spin's empty 500.
async fn serve_p3(
    handler: &ProxyHandler<P3Handler>,
    req: Request<Incoming>,
    mut recorder: Recorder,
    context: ErrorContext,
) -> Response<ResponseBody> {
    let slot = Arc::new(RequestSlot::default());
    recorder.counted = Counted::Shared(slot.clone());
    // Spin hands over the body it would give a WASI 0.2 guest, its errors
    // converted to wasi:http's.
    let req = req.map(|body| {
        TimedBody::new(body)
            .map_err(wasmtime_wasi_http::Error::from)
            .boxed_unsync()
    });
    match handler.handle(slot, req).await {
        Ok(response) => {
            let status = response.status();
            response.map(|body| {
                GuestBody {
                    inner: body,
                    // The instance is not this request's alone: a body the
                    // client stops reading ends this stream only.
                    abort: None,
                    finish: Some((recorder, status)),
                }
                .boxed_unsync()
            })
        }
        Err(e) => {
            eprintln!(
                "spin-sessions-host: {} {}: component `{}` failed: {e:?}",
                context.method, context.path, context.component
            );
            recorder.finish(StatusCode::INTERNAL_SERVER_ERROR);
            internal_error()
        }
    }
}

/// Spin's answer when a component fails: an empty 500.
fn internal_error() -> Response<ResponseBody> {
    empty(StatusCode::INTERNAL_SERVER_ERROR)
}

/// What an error log line about a request names.
struct ErrorContext {
    method: String,
    path: String,
    component: String,
}

impl ErrorContext {
    /// Logs a failed guest task; returns whether there was a failure.
    fn report(&self, result: &Result<wasmtime::Result<()>, JoinError>) -> bool {
        match result {
            Ok(Ok(())) => false,
            Ok(Err(e)) => {
                eprintln!(
                    "spin-sessions-host: {} {}: component `{}` failed: {e:?}",
                    self.method, self.path, self.component
                );
                true
            }
            // Aborted because the client went away: not an error.
            Err(e) if e.is_cancelled() => false,
            Err(e) => {
                eprintln!(
                    "spin-sessions-host: {} {}: component `{}` task panicked: {e}",
                    self.method, self.path, self.component
                );
                true
            }
        }
    }
}

/// The guest's response body as hyper sends it: every frame passes
/// through as it comes, unheld (like Spin's `AbortOnDropBody`).
///
/// The request's stats are recorded when the body ends (the guest finished
/// it, or it failed) or is dropped, whichever comes first. hyper polls the
/// end of a body, or drops one whose `content-length` is complete, before
/// it writes the last bytes to the socket; so a client (or test) that has
/// read a whole response finds its stats, with every key-value operation
/// the guest made before it finished the body. Dropping the body (sent, or
/// the client went away) aborts a WASI 0.2 guest, as Spin does; a WASI 0.3
/// instance may be serving other requests, and is left running.
struct GuestBody<B> {
    inner: B,
    abort: Option<AbortHandle>,
    finish: Option<(Recorder, StatusCode)>,
}

impl<B> GuestBody<B> {
    /// Records the request's stats, once.
    fn record(&mut self) {
        if let Some((recorder, status)) = self.finish.take() {
            recorder.finish(status);
        }
    }
}

impl<B> Body for GuestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(e)) => {
                this.record();
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                this.record();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for GuestBody<B> {
    fn drop(&mut self) {
        self.record();
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }
}

/// Accepts connections until `shutdown` fires, then lets in-flight requests
/// finish (closing idle keep-alive connections) for up to `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    // No TCP_NODELAY: Spin's HTTP trigger leaves Nagle's
                    // algorithm on, so the responses that wait for the
                    // client's delayed ACK under `spin up` wait here too.
                    let server = server.clone();
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req, client).await) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        // Client-side failures (resets, garbage) concern only
                        // that connection.
                        let _ = connection.await;
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off briefly
                    // instead of spinning.
                    eprintln!("spin-sessions-host: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "spin-sessions-host: requests still running after {}s; stopping anyway",
            grace.as_secs()
        );
    }
}
