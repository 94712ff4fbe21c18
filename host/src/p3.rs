//! WASI 0.3 components (`wasi:http/handler@0.3.0`, spin-sdk 7), served as
//! Spin 4 serves them: through wasmtime-wasi-http's
//! `handler::ProxyHandler`, which keeps instances alive and hands each new
//! request to one that has room, with Spin's rules for when an instance
//! takes another request, how long it may sit idle and how long a request
//! may take (Spin's `crates/trigger-http/src/server.rs`,
//! `HttpHandlerState`, `HttpWorkerState`, `HttpWorkerExpiration`).
//!
//! Request stats under reuse: an instance's calls are counted in one
//! [`OpCounters`] for its whole life; a request is charged what that
//! counted between its start (when the instance accepted it) and its end
//! (when its body ended). That is exact while an instance serves one
//! request at a time, and an over-approximation when it serves several at
//! once: each is charged the others' calls made meanwhile too.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::kv::{OpCounters, OpCounts};
use crate::reuse::InstanceReuse;
use crate::state::{http_view, HostState, StoreFactory};

/// How a request learns which instance took it, and what that instance had
/// counted then. Filled in when an instance accepts the request.
#[derive(Default)]
pub(crate) struct RequestSlot(Mutex<Option<Accepted>>);

/// A request as its instance accepted it.
#[derive(Clone)]
pub(crate) struct Accepted {
    /// The instance's counters.
    pub(crate) counters: Arc<OpCounters>,
    /// What they held when the request was accepted.
    pub(crate) at_start: OpCounts,
    /// The instance's number.
    pub(crate) instance: u64,
    /// This request's place among those the instance accepted, from 1.
    pub(crate) ordinal: u64,
    /// Requests the instance had accepted and not answered at that moment.
    pub(crate) concurrent: u64,
}

impl RequestSlot {
    /// The acceptance, once it happened.
    pub(crate) fn accepted(&self) -> Option<Accepted> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, accepted: Accepted) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(accepted);
    }
}

/// One component's `HandlerState`: makes instances, each with its limits
/// drawn from the reuse settings (Spin's `HttpHandlerState`).
pub(crate) struct P3Handler {
    pub(crate) pre: ServicePre<HostState>,
    pub(crate) factory: Arc<StoreFactory>,
    pub(crate) reuse: InstanceReuse,
}

impl HandlerState for P3Handler {
    type StoreData = HostState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiration, Worker>> {
        let mut store = self.factory.new_store(Arc::new(OpCounters::default()));
        let service = self.pre.instantiate_async(&mut store).await?;
        let limits = self.reuse.sample();
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: http_view,
            expiration: Expiration {
                idle_timeout: limits.idle_timeout,
                request_timeout: limits.request_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
            },
            state: Worker {
                component: self.factory.component.clone(),
                request_timeout: limits.request_timeout,
                max_reuse: limits.max_reuse,
                max_concurrent: limits.max_concurrent,
            },
        })
    }
}

/// When an instance is dropped, polled from outside its event loop (Spin's
/// `HttpWorkerExpiration`): idle for `idle_timeout`, or busy (a request
/// unanswered, or the guest's work after its last answer) for
/// `request_timeout` since the latest request was accepted.
pub(crate) struct Expiration {
    idle_timeout: Duration,
    request_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        // Spin bounds the work after the last answer (`PostReturn`) by the
        // request timeout too.
        let timeout = match status {
            WorkerStatus::Idle => this.idle_timeout,
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.request_timeout,
        };
        // No deadline (`Duration::MAX`, no request timeout): never expires.
        let Some(deadline) = start.checked_add(timeout) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

/// One instance's limits (Spin's `HttpWorkerState`).
pub(crate) struct Worker {
    component: Arc<str>,
    request_timeout: Duration,
    max_reuse: usize,
    max_concurrent: usize,
}

/// Counts a request as unanswered while it lives: it is part of the
/// request's expiration future, which wasmtime drops as soon as the request
/// has its answer (or expired), before the instance may accept another.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = Arc<RequestSlot>;

    fn should_accept_request(&self, concurrent_count: usize, total_count: usize) -> ShouldAccept {
        // Spin's rule, in Spin's order: the total first.
        if total_count >= self.max_reuse {
            ShouldAccept::Never
        } else if concurrent_count >= self.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, HostState>,
        slot: Arc<RequestSlot>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        let state = store.data_mut();
        state.instance.accepted += 1;
        let concurrent = state.instance.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(state.instance.in_flight.clone());
        slot.set(Accepted {
            counters: state.counters.clone(),
            at_start: state.counters.counts(),
            instance: state.instance.number,
            ordinal: state.instance.accepted,
            concurrent: concurrent as u64,
        });
        // Spin's request timeout: the request expires if it has no answer
        // by then (tokio takes `Duration::MAX` as never).
        let sleep = tokio::time::sleep(self.request_timeout);
        Box::pin(async move {
            let _in_flight = in_flight;
            sleep.await
        })
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        // Spin logs a failed instance and drops it; so does this host.
        // wasmtime reports a worker task dropped unfinished (its runtime
        // shutting down, e.g. at the end of a test, with instances still
        // waiting out their idle timeout) as "worker panicked" too; only
        // an actual panic unwinds through here.
        if let Err(error) = result {
            let cancelled = !std::thread::panicking() && error.to_string() == "worker panicked";
            if !cancelled {
                eprintln!(
                    "spin-sessions-host: component `{}`: worker failed: {error:?}",
                    self.component
                );
            }
        }
        drop(store);
    }
}
