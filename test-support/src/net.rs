//! Client sockets from any loopback address: every 127.x.y.z is this
//! machine, so a test can look like several hosts to a server that reports
//! its peer's address (Spin's `spin-client-addr`).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

/// A TCP connection to `server` whose local address is `local` (port
/// chosen by the system).
pub fn connect_from(local: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(server);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.connect(&server.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_server_sees_the_chosen_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let local: IpAddr = "127.0.0.9".parse().unwrap();
        let _client = connect_from(local, server).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), local);
    }
}
