//! Helpers shared by the host's integration tests: a scratch directory, a
//! tiny HTTP client, the probe fixture's location, and the key-value cases
//! every store backend must pass. (A real `redis-server` comes from the
//! workspace's `test-support` crate.)

#![allow(dead_code)]

pub mod kv_cases;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub use test_support::tempdir::TempDir;

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request over a new HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = sender.send_request(request).await.expect("send request");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes()
        .to_vec();
    Reply { status, body }
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "GET", path, b"").await
}

/// The probe fixture's manifest.
pub fn probe_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/probe/spin.toml")
}

/// The probe manifest, after checking its Wasm has been built: a missing
/// build fails the test with the command to run instead of skipping it.
pub fn built_probe_manifest() -> PathBuf {
    let manifest = probe_manifest();
    let config = host::open_app(&host::HostOptions {
        variable_env: Some(vec![]),
        ..host::HostOptions::new(&manifest)
    })
    .expect("the probe manifest is valid");
    let source = &config.manifest.components["probe"].source;
    assert!(
        source.exists(),
        "the probe component is not built ({} is missing): run `cargo xtask build` first",
        source.display()
    );
    manifest
}
