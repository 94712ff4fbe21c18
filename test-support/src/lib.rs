//! What the workspace's tests share.
//!
//! - [`redis_server`]: a real `redis-server` for one test, on a free
//!   loopback port, stopped when dropped;
//! - [`csp`]: the Content-Security-Policy hash of an inline style;
//! - [`net`]: client sockets from chosen loopback addresses;
//! - [`http`]: a raw HTTP/1.1 client, and a visitor's first page and post;
//! - [`sqlite`]: what a Spin SQLite store file holds;
//! - [`tcp_proxy`]: a TCP proxy that holds back new connections (a
//!   congested link to Redis);
//! - [`tempdir`]: a temporary directory removed when dropped.
//!
//! The crate's dependency list matters as much as its code: it carries the
//! features the tests need, so that every `--workspace` build (the host
//! that `cargo xtask up` runs, the benchmark, the tests) resolves the same
//! feature set and compiles wasmtime once.

pub mod csp;
pub mod http;
pub mod net;
pub mod redis_server;
pub mod sqlite;
pub mod tcp_proxy;
pub mod tempdir;
