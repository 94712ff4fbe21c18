//! Host bindings for the Spin interfaces, generated from the project's WIT
//! (`sessions/wit/world.wit`, world `spin-host-imports`).

wasmtime::component::bindgen!({
    path: "../sessions/wit",
    world: "spin-sessions:platform/spin-host-imports",
    // Every import may do I/O (SQLite on the blocking pool), and a host bug
    // may need to trap rather than hand the guest a made-up error.
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/key-value.store": crate::kv::fermyon::SpinStore,
        "wasi:keyvalue/store.bucket": crate::kv::wasi_keyvalue::Bucket,
        "wasi:keyvalue/atomics.cas": crate::kv::wasi_keyvalue::Cas,
    },
});
