//! A TCP proxy between a client and a server on loopback that holds back
//! chosen connections: for tests that need a congested link to Redis (a
//! host's new connections slow to carry their first bytes, as over a
//! congested or lossy network).
//!
//! Every connection the proxy accepts is counted (from 1); the delay set
//! with [`TcpProxy::delay_new_connections`] holds each new connection's
//! bytes, both ways, for that long after it opened. Bytes on connections
//! already flowing pass at once. Stopped when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The proxy: listens on a free 127.0.0.1 port, forwards to `target`.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    /// The hold of new connections, in microseconds.
    delay_micros: AtomicU64,
    accepted: AtomicU64,
    stop: AtomicBool,
}

impl TcpProxy {
    /// Starts a proxy to `target`.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            delay_micros: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        TcpProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `redis://` URL through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds every connection opened from now on for `delay` before any of
    /// its bytes pass.
    pub fn delay_new_connections(&self, delay: Duration) {
        self.shared
            .delay_micros
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor up.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let delay = Duration::from_micros(shared.delay_micros.load(Ordering::SeqCst));
        let shared = shared.clone();
        std::thread::spawn(move || relay(client, &shared, delay));
    }
}

/// Connects to the target and copies bytes both ways, after `delay`.
fn relay(client: TcpStream, shared: &Shared, delay: Duration) {
    let opened = Instant::now();
    let Ok(server) = TcpStream::connect(shared.target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pump(client_read, server, opened + delay));
    pump(server_read, client, opened + delay);
    let _ = up.join();
}

/// Copies `from` to `to` until either closes, holding the first bytes
/// until `from_time`.
fn pump(mut from: TcpStream, mut to: TcpStream, from_time: Instant) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        if now < from_time {
            std::thread::sleep(from_time - now);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pass_both_ways_and_new_connections_are_held() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(target);
        let round_trip = || {
            let started = Instant::now();
            let mut stream = TcpStream::connect(proxy.addr()).unwrap();
            stream.write_all(b"ping").unwrap();
            let mut answer = [0u8; 4];
            stream.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"ping");
            started.elapsed()
        };
        assert!(round_trip() < Duration::from_millis(200));
        proxy.delay_new_connections(Duration::from_millis(300));
        assert!(round_trip() >= Duration::from_millis(300));
        assert_eq!(proxy.connections(), 2);
    }
}
