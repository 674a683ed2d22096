//! TCP connections from several loopback source addresses.
//!
//! Linux gives each (source address, destination) pair its own ephemeral-port range (about
//! 28,000 ports here), so one source address cannot open more connections than that to one
//! server. Binding client sockets round-robin to 127.0.0.2, 127.0.0.3, … multiplies the limit;
//! every 127/8 address is local on Linux without configuration.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// How often one connect is retried when the kernel has no free port or address for it.
const ADDR_RETRIES: u32 = 30;
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The source addresses 127.0.0.2 … 127.0.0.(count + 1).
pub fn loopback_sources(count: usize) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| {
            let n = i as u32 + 2;
            Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8)
        })
        .collect()
}

/// Connects to `server`, from `source` when given. Exhausted ports (`EADDRNOTAVAIL`,
/// `EADDRINUSE`) are retried with backoff: they clear as sockets from earlier runs leave
/// TIME_WAIT or as other handshakes in flight fail.
pub async fn connect(source: Option<Ipv4Addr>, server: SocketAddr) -> io::Result<TcpStream> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        match connect_once(source, server).await {
            Err(e) if is_port_exhaustion(&e) && attempt < ADDR_RETRIES => {
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            result => return result,
        }
    }
}

async fn connect_once(source: Option<Ipv4Addr>, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = match server {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        defer_port_choice(&socket)?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    }
    let stream = socket.connect(server).await?;
    // Frames are small and latency is what we measure: never wait for Nagle.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`, so that binding to a source address does not reserve a
/// port at `bind` time. The port is then chosen at `connect`, per destination, where the
/// kernel may also reuse loopback ports still in TIME_WAIT from an earlier run
/// (`tcp_tw_reuse` = 2, the default). Without it every bound socket holds a port of its own
/// for the whole source address, and back-to-back runs run out of ports.
fn defer_port_choice(socket: &TcpSocket) -> io::Result<()> {
    let enable: libc::c_int = 1;
    // SAFETY: the descriptor is a live socket owned by `socket`, and the option value is a
    // c_int whose size is passed alongside it, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&enable as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_port_exhaustion(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_start_at_127_0_0_2_and_carry_over() {
        let sources = loopback_sources(300);
        assert_eq!(sources[0], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(sources[253], Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(sources[254], Ipv4Addr::new(127, 0, 1, 0));
    }

    #[tokio::test]
    async fn connects_from_another_loopback_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = listener.local_addr().expect("addr");
        let source = Ipv4Addr::new(127, 0, 0, 3);
        let (client, accepted) = tokio::join!(connect(Some(source), server), listener.accept());
        let client = client.expect("connect");
        let (_, peer) = accepted.expect("accept");
        assert_eq!(peer.ip(), IpAddr::V4(source));
        assert_eq!(client.local_addr().expect("local").ip(), IpAddr::V4(source));
    }
}
