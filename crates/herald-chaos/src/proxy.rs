//! A TCP fault proxy: Herald connects to it instead of a dependency, and on command it adds latency, stalls
//! (holds every byte of every connection until healed; new connections still connect), blackholes (the
//! same, and new connections are accepted but never reach the upstream: a partition, every link
//! half-open, nothing answering), resets every connection (RST both ways), or heals. As with TCP over a
//! real network, nothing is ever dropped from the middle of a stream: held bytes flow on heal, unless a
//! peer gave up first. `tc netem` is not available on these machines; this does the same at the socket level.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Pass,
    Latency(Duration),
    Stall,
    Blackhole,
}

/// One proxied connection, cancelled to reset it.
struct Link {
    reset: CancellationToken,
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    links: Arc<Mutex<Vec<Link>>>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let stop = CancellationToken::new();
        let (mode_tx, accepted_links, stopping) = (mode.clone(), links.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                    () = stopping.cancelled() => return,
                };
                let mode = mode_tx.subscribe();
                let links = accepted_links.clone();
                tokio::spawn(async move {
                    // Blackholed: the connection is accepted and then nothing happens, until healed.
                    let mut waiting = mode.clone();
                    while *waiting.borrow_and_update() == Mode::Blackhole {
                        if waiting.changed().await.is_err() {
                            return;
                        }
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let reset = CancellationToken::new();
                    {
                        let mut links = links.lock().unwrap();
                        links.retain(|l| !l.reset.is_cancelled());
                        links.push(Link { reset: reset.clone() });
                    }
                    link(client, server, mode, reset).await;
                });
            }
        });
        Ok(Proxy { addr, mode, links, stop })
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn heal(&self) {
        self.set(Mode::Pass);
    }

    /// Resets every connection open now (new ones go through).
    pub fn reset_all(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap());
        let count = links.iter().filter(|l| !l.reset.is_cancelled()).count();
        for link in links {
            link.reset.cancel();
        }
        count
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.reset_all();
    }
}

async fn link(client: TcpStream, server: TcpStream, mode: watch::Receiver<Mode>, reset: CancellationToken) {
    // Linger 0: dropping the sockets sends RST instead of FIN.
    #[allow(deprecated)]
    let _ = (client.set_linger(Some(Duration::ZERO)), server.set_linger(Some(Duration::ZERO)));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone());
    let down = pump(server_read, client_write, mode);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = reset.cancelled() => {}
    }
    reset.cancel();
}

/// Copies one direction, holding, delaying or dropping each chunk as the mode says.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Pass => break,
                Mode::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Mode::Stall | Mode::Blackhole => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(socket: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        socket.write_all(b"ping").await.ok()?;
        let mut reply = [0u8; 4];
        match tokio::time::timeout(within, socket.read_exact(&mut reply)).await {
            Ok(Ok(_)) => Some(reply.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_stalls_blackholes_resets_and_heals() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut socket, Duration::from_secs(5)).await.as_deref(), Some(&b"ping"[..]));

        // Stalled: held, then delivered on heal.
        proxy.set(Mode::Stall);
        assert_eq!(round_trip(&mut socket, Duration::from_millis(200)).await, None);
        proxy.heal();
        let mut reply = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut reply)).await.unwrap().unwrap();
        assert_eq!(&reply, b"ping");

        // Blackholed: nothing answers, not even a new connection; all of it flows on heal.
        proxy.set(Mode::Blackhole);
        assert_eq!(round_trip(&mut socket, Duration::from_millis(200)).await, None);
        let mut late = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut late, Duration::from_millis(200)).await, None);
        proxy.heal();
        for socket in [&mut socket, &mut late] {
            tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut reply)).await.unwrap().unwrap();
            assert_eq!(&reply, b"ping");
        }
        drop(late);

        // Latency: late, but there.
        proxy.set(Mode::Latency(Duration::from_millis(150)));
        let started = std::time::Instant::now();
        assert!(round_trip(&mut socket, Duration::from_secs(5)).await.is_some());
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        proxy.heal();

        // Reset: the connection dies with an error; a new one works.
        assert!(proxy.reset_all() >= 1);
        let mut buffer = [0u8; 4];
        let outcome = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer)).await.unwrap();
        assert!(matches!(outcome, Err(_) | Ok(0)), "{outcome:?}");
        let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(round_trip(&mut fresh, Duration::from_secs(5)).await.is_some());
    }
}
