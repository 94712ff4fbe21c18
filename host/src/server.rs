//! The HTTP server: hyper 1 over HTTP/1.1 with keep-alive, one fresh
//! wasmtime `Store` and component instance per request, like `spin up` for
//! WASI 0.2 components.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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
use tokio::task::{JoinError, JoinHandle};
use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::hyper_request_error;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::app::LoadedApp;
use crate::clock::{ClockOffset, OffsetWallClock};
use crate::kv::{FaultSwitch, KvHost, OpCounters};
use crate::routes::RouteMatch;
use crate::state::{HostState, NoOutbound};
use crate::variables::VariablesHost;
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
}

impl Shared {
    fn record(&self, stats: RequestStats) {
        if !self.quiet {
            eprintln!(
                "{} {} {} {:.2}ms kv r={} w={} c={}",
                stats.method,
                stats.path,
                stats.status,
                stats.duration.as_secs_f64() * 1000.0,
                stats.kv_reads,
                stats.kv_writes,
                stats.kv_connections
            );
        }
        let mut buffer = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() >= STATS_CAPACITY {
            buffer.pop_front();
        }
        buffer.push_back(stats);
    }
}

/// Records one request's stats when it is finished.
struct Recorder {
    shared: Arc<Shared>,
    method: String,
    path: String,
    start: Instant,
    counters: Arc<OpCounters>,
}

impl Recorder {
    fn finish(self, status: StatusCode) {
        self.shared.record(RequestStats {
            method: self.method,
            path: self.path,
            status: status.as_u16(),
            kv_reads: self.counters.reads(),
            kv_writes: self.counters.writes(),
            kv_connections: self.counters.connections(),
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

impl Server {
    /// Serves one request. Never fails: errors become 4xx/5xx responses.
    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let recorder = Recorder {
            shared: self.shared.clone(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            start: Instant::now(),
            counters: Arc::new(OpCounters::default()),
        };

        if let Some(which) = recorder.path.strip_prefix(WELL_KNOWN_PREFIX) {
            let response = match which {
                "health" => full(StatusCode::OK, "OK"),
                _ => empty(StatusCode::NOT_FOUND),
            };
            recorder.finish(response.status());
            return response;
        }

        let Some(route) = self.app.config.router.route(&recorder.path) else {
            // Spin answers unmatched paths with an empty 404.
            recorder.finish(StatusCode::NOT_FOUND);
            return empty(StatusCode::NOT_FOUND);
        };

        match absolute_uri(&req) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(why) => {
                recorder.finish(StatusCode::BAD_REQUEST);
                return full(StatusCode::BAD_REQUEST, why);
            }
        }
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

        let component = &self.app.components[&route.component];
        let mut wasi = WasiCtx::builder();
        wasi.stdout(std::io::stderr())
            .stderr(std::io::stderr())
            .envs(&component.environment)
            .wall_clock(OffsetWallClock(self.shared.clock.clone()))
            // No outbound network, as with an empty allowed_outbound_hosts.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutbound,
            kv: KvHost::new(
                self.app.stores.clone(),
                component.allowed_stores.clone(),
                recorder.counters.clone(),
                self.shared.fault.clone(),
            ),
            variables: VariablesHost::new(self.app.config.resolver.clone(), component.id.clone()),
        };
        let mut store = Store::new(component.pre.engine(), state);

        let (sender, receiver) = oneshot::channel();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req.map(TimedBody::new))
            .and_then(|incoming| {
                let out = store.data_mut().http().new_response_outparam(sender)?;
                Ok((incoming, out))
            });
        let (incoming, out) = match prepared {
            Ok(handles) => handles,
            Err(e) => {
                eprintln!(
                    "spin-sessions-host: {} {}: cannot pass the request to component `{}`: {e:?}",
                    recorder.method, recorder.path, component.id
                );
                recorder.finish(StatusCode::INTERNAL_SERVER_ERROR);
                return full(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n");
            }
        };

        let pre = component.pre.clone();
        // The guest runs in its own task so it can keep streaming the body
        // after the response head has been handed to hyper.
        let guest: JoinHandle<wasmtime::Result<()>> = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, out)
                .await
        });
        let context = ErrorContext {
            method: recorder.method.clone(),
            path: recorder.path.clone(),
            component: component.id.to_string(),
        };

        match receiver.await {
            Ok(Ok(response)) => {
                let status = response.status();
                response.map(|body| {
                    TrackedBody {
                        inner: body,
                        held: None,
                        inner_done: false,
                        guest: Some(guest),
                        finish: Some(Finish {
                            recorder,
                            status,
                            context,
                        }),
                    }
                    .boxed_unsync()
                })
            }
            Ok(Err(code)) => {
                // The guest answered with an error code instead of a response.
                let result = guest.await;
                context.report(&result);
                eprintln!(
                    "spin-sessions-host: {} {}: component `{}` failed to produce a response: {code:?}",
                    context.method, context.path, context.component
                );
                recorder.finish(StatusCode::INTERNAL_SERVER_ERROR);
                full(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
            }
            Err(_) => {
                // The response-outparam was dropped unset: the guest trapped
                // or returned without answering.
                let result = guest.await;
                if !context.report(&result) {
                    eprintln!(
                        "spin-sessions-host: {} {}: component `{}` returned without producing a response",
                        context.method, context.path, context.component
                    );
                }
                recorder.finish(StatusCode::INTERNAL_SERVER_ERROR);
                full(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
            }
        }
    }
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

/// Finishing a streamed response: log guest errors, record the stats.
struct Finish {
    recorder: Recorder,
    status: StatusCode,
    context: ErrorContext,
}

impl Finish {
    fn complete(self, result: Result<wasmtime::Result<()>, JoinError>) {
        self.context.report(&result);
        self.recorder.finish(self.status);
    }
}

/// The guest's response body, released so that the stats of a request are
/// recorded before the client can see the end of its response.
///
/// Each frame is held back until the next one arrives; when the guest's
/// body ends, the guest task is awaited (it normally returns right after
/// finishing the body), the request's stats are recorded, and only then is
/// the last frame sent. A client (or test) that has read a whole response
/// therefore always finds its stats, with every key-value operation the
/// guest made counted. Dropping the body early (client gone) aborts the
/// guest, as Spin does.
struct TrackedBody {
    inner: HyperOutgoingBody,
    held: Option<Frame<Bytes>>,
    inner_done: bool,
    guest: Option<JoinHandle<wasmtime::Result<()>>>,
    finish: Option<Finish>,
}

impl TrackedBody {
    /// Records the request once the guest task ends, without blocking the
    /// body (used on error and drop paths).
    fn finish_in_background(&mut self) {
        let (Some(guest), Some(finish)) = (self.guest.take(), self.finish.take()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { finish.complete(guest.await) });
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.inner_done {
                if let Some(guest) = this.guest.as_mut() {
                    let result = ready!(Pin::new(guest).poll(cx));
                    this.guest = None;
                    if let Some(finish) = this.finish.take() {
                        finish.complete(result);
                    }
                }
                return Poll::Ready(this.held.take().map(Ok));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(previous) = this.held.replace(frame) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Some(Err(e)) => {
                    this.inner_done = true;
                    this.held = None;
                    this.finish_in_background();
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                None => this.inner_done = true,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner_done && self.held.is_none() && self.guest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Holding frames back delays bytes but never changes them.
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(guest) = &self.guest {
            if !self.inner_done {
                guest.abort();
            }
        }
        self.finish_in_background();
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
                    let _ = stream.set_nodelay(true);
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
