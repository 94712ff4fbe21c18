//! The data of one wasmtime `Store`, which holds one component instance:
//! one per request for WASI 0.2 components, as Spin instantiates them
//! afresh for every request; one per reused instance for WASI 0.3 ones.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::{fermyon, wasi as wasi_kv};
use crate::clock::OffsetWallClock;
use crate::kv::{KvHost, OpCounters, StoreRegistry};
use crate::server::Shared;
use crate::variables::{Resolver, VariablesHost};

/// Everything an instance can reach.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: NoOutbound,
    pub(crate) kv: KvHost,
    pub(crate) variables: VariablesHost,
    /// What the instance's key-value and variable calls counted, over its
    /// whole life (every request it served).
    pub(crate) counters: Arc<OpCounters>,
    /// Which instance this is, for the request stats.
    pub(crate) instance: InstanceInfo,
}

/// An instance's identity and use, as the request stats report them.
pub(crate) struct InstanceInfo {
    /// Its number in this host, from 1, in order of creation.
    pub(crate) number: u64,
    /// Requests it has accepted so far.
    pub(crate) accepted: u64,
    /// Requests it has accepted and not answered yet (WASI 0.3).
    pub(crate) in_flight: Arc<AtomicUsize>,
}

/// What every store of one component is made from.
pub(crate) struct StoreFactory {
    pub(crate) engine: Engine,
    pub(crate) component: Arc<str>,
    pub(crate) environment: Vec<(String, String)>,
    pub(crate) allowed_stores: Arc<HashSet<String>>,
    pub(crate) stores: Arc<StoreRegistry>,
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) shared: Arc<Shared>,
}

impl StoreFactory {
    /// A fresh `Store` for one instance of the component, whose calls are
    /// counted in `counters`; it takes the host's next instance number.
    pub(crate) fn new_store(&self, counters: Arc<OpCounters>) -> Store<HostState> {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(std::io::stderr())
            .stderr(std::io::stderr())
            .envs(&self.environment)
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
                self.stores.clone(),
                self.allowed_stores.clone(),
                counters.clone(),
                self.shared.fault.clone(),
            ),
            variables: VariablesHost::new(
                self.resolver.clone(),
                self.component.clone(),
                counters.clone(),
            ),
            counters,
            instance: InstanceInfo {
                number: self.shared.next_instance(),
                accepted: 0,
                in_flight: Arc::new(AtomicUsize::new(0)),
            },
        };
        Store::new(&self.engine, state)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// wasi:http hooks denying every outgoing request: the manifest's
/// `allowed_outbound_hosts` must be empty, and with an empty list Spin
/// refuses all outbound HTTP with `HTTP-request-denied`.
pub struct NoOutbound;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// `HostState`'s wasi:http view, as the p3 handler takes it.
pub(crate) fn http_view(state: &mut HostState) -> WasiHttpCtxView<'_> {
    state.http()
}

/// A linker with everything a Spin HTTP component may import from this
/// host: WASI 0.2 and 0.3 (a WASI 0.3 component's std still imports WASI
/// 0.2's cli, io and random), wasi:http 0.2 and 0.3, and the Spin
/// interfaces.
///
/// The Spin interfaces are linked as Spin links them, through bindgen's
/// `async` imports, i.e. `func_wrap_async`: such a host function holds the
/// whole store until it returns, so a WASI 0.3 instance serving several
/// requests runs none of the others meanwhile (wasmtime #11870), exactly
/// as under Spin.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    let wasm_err = |e: wasmtime::Error| anyhow::anyhow!("{e:?}");
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wasm_err)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(wasm_err)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(wasm_err)?;
    fermyon::spin::key_value::add_to_linker::<HostState, HasSelf<KvHost>>(&mut linker, |s| {
        &mut s.kv
    })
    .map_err(wasm_err)?;
    fermyon::spin::variables::add_to_linker::<HostState, HasSelf<VariablesHost>>(
        &mut linker,
        |s| &mut s.variables,
    )
    .map_err(wasm_err)?;
    wasi_kv::keyvalue::store::add_to_linker::<HostState, HasSelf<KvHost>>(&mut linker, |s| {
        &mut s.kv
    })
    .map_err(wasm_err)?;
    wasi_kv::keyvalue::atomics::add_to_linker::<HostState, HasSelf<KvHost>>(&mut linker, |s| {
        &mut s.kv
    })
    .map_err(wasm_err)?;
    wasi_kv::keyvalue::batch::add_to_linker::<HostState, HasSelf<KvHost>>(&mut linker, |s| {
        &mut s.kv
    })
    .map_err(wasm_err)?;
    Ok(linker)
}
