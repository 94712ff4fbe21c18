//! The data of one wasmtime `Store`: one per request, as Spin instantiates
//! WASI 0.2 components afresh for every request.

use std::future::Future;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::{fermyon, wasi as wasi_kv};
use crate::kv::KvHost;
use crate::variables::VariablesHost;

/// Everything an instance can reach.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: NoOutbound,
    pub(crate) kv: KvHost,
    pub(crate) variables: VariablesHost,
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

/// A linker with everything a Spin HTTP component may import from this
/// host: WASI 0.2, wasi:http, and the Spin interfaces.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    let wasm_err = |e: wasmtime::Error| anyhow::anyhow!("{e:?}");
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wasm_err)?;
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
