//! Bindings for what the library imports from Spin beyond WASI itself:
//! `wasi:keyvalue` (store, atomics, batch) and `fermyon:spin/variables`,
//! generated from the WIT in `wit/`. WASI's own interfaces, `wasi:http`
//! among them, come from the `wasip2` crate.

wit_bindgen::generate!({
    path: "wit",
    world: "spin-sessions:platform/component-imports",
    generate_all,
});
