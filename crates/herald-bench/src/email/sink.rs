//! The email mode's SMTP sink: the receiving end of Herald's email channel during a run. It speaks just
//! enough SMTP for a submitting client (RFC 5321: greeting, EHLO/HELO, MAIL, RCPT, DATA with dot-stuffing,
//! RSET, NOOP, QUIT), keeps nothing of a message but its recipient, and records each arrival: which
//! numbered email it was (from the recipient `hb-RUN-SEQ-MICROS@bench.test`), and how long after its
//! request was sent it arrived. It counts the TCP connections it accepts, which shows whether the sender
//! pools its connections. No TLS: the bench runs on loopback.
//!
//! A server this thin is the point: it answers as fast as loopback allows (or after `--sink-delay-ms`, to
//! stand in for a real relay), so that the figure is Herald's, not the receiving server's. A test's SMTP
//! server (aiosmtpd, which writes every message to disk) would measure itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::clock;
use crate::histogram::new_histogram;

/// The longest command line taken (RFC 5321 allows 512 octets; extensions add a little).
const MAX_LINE: usize = 2048;
/// The largest message taken.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// What arrived, shared by every connection.
pub struct Arrivals {
    run: String,
    total: u64,
    seen: Mutex<Vec<u8>>,
    latency: Mutex<Histogram<u64>>,
    pub arrived: AtomicU64,
    pub duplicates: AtomicU64,
    /// Messages whose recipient is not one of this run's.
    pub foreign: AtomicU64,
    pub connections: AtomicU64,
    pub first_us: AtomicU64,
    pub last_us: AtomicU64,
}

impl Arrivals {
    pub fn new(run: String, total: u64) -> Self {
        Self {
            run,
            total,
            seen: Mutex::new(vec![0; usize::try_from(total).unwrap_or(usize::MAX)]),
            latency: Mutex::new(new_histogram()),
            arrived: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
        }
    }

    /// The recipient of one of this run's emails: `hb-RUN-SEQ-MICROS@bench.test`.
    pub fn recipient(run: &str, seq: u64, sent_us: u64) -> String {
        format!("hb-{run}-{seq}-{sent_us}@bench.test")
    }

    fn record(&self, recipient: &str) {
        let now = clock::unix_micros();
        let parsed = recipient
            .strip_prefix("hb-")
            .and_then(|r| r.strip_prefix(self.run.as_str()))
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix("@bench.test"))
            .and_then(|r| r.split_once('-'))
            .and_then(|(seq, sent)| Some((seq.parse::<u64>().ok()?, sent.parse::<u64>().ok()?)));
        let Some((seq, sent_us)) = parsed.filter(|(seq, _)| *seq < self.total) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let first = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut seen[seq as usize];
            *slot = slot.saturating_add(1);
            *slot == 1
        };
        if !first {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.arrived.fetch_add(1, Ordering::Relaxed);
        self.first_us.fetch_min(now, Ordering::Relaxed);
        self.last_us.fetch_max(now, Ordering::Relaxed);
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let _ = latency.record(now.saturating_sub(sent_us).max(1));
    }

    pub fn latency(&self) -> Histogram<u64> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The numbers in `0..total` that never arrived.
    pub fn missing(&self) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().filter(|&&n| n == 0).count() as u64
    }
}

/// How the sink answers.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions {
    /// Waits this long before accepting each message.
    pub delay: Duration,
    /// Acknowledges a message's body at once (TCP_QUICKACK) instead of after Linux's delayed-ACK timer. A
    /// client that writes the body and its final `.` line separately with Nagle on (lettre 0.11 does) waits
    /// for that ACK before the `.` goes out: 40 ms a message. Quick ACKs take that stall out of the figure.
    pub quickack: bool,
}

/// Accepts connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, arrivals: Arc<Arrivals>, options: SinkOptions) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        arrivals.connections.fetch_add(1, Ordering::Relaxed);
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            // A client that breaks the protocol or hangs up loses its connection, nothing else.
            let _ = session(stream, &arrivals, options).await;
        });
    }
}

/// Asks the kernel to acknowledge what arrives next at once. It clears the flag again by itself, so this is
/// called before every read that matters.
fn quickack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, a pointer to a c_int that outlives the call, and its size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn session(stream: TcpStream, arrivals: &Arrivals, options: SinkOptions) -> std::io::Result<()> {
    let delay = options.delay;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 herald-bench sink ESMTP\r\n").await?;
    let mut line = Vec::with_capacity(256);
    let mut recipients: Vec<String> = Vec::new();
    let mut mail = false;
    loop {
        line.clear();
        if read_line(&mut read, &mut line, MAX_LINE).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end();
        let verb = command.split(' ').next().unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-herald-bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 4194304\r\n",
            "HELO" => b"250 herald-bench\r\n",
            "MAIL" => {
                mail = true;
                recipients.clear();
                b"250 2.1.0 OK\r\n"
            }
            "RCPT" if mail => {
                let address = command
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map_or_else(String::new, |(address, _)| address.to_owned());
                recipients.push(address);
                b"250 2.1.5 OK\r\n"
            }
            "DATA" if mail && !recipients.is_empty() => {
                if options.quickack {
                    quickack(read.get_ref().as_ref());
                }
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                read_message(&mut read, options.quickack).await?;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                for recipient in recipients.drain(..) {
                    arrivals.record(&recipient);
                }
                mail = false;
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                mail = false;
                recipients.clear();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "RCPT" | "DATA" => b"503 5.5.1 bad sequence of commands\r\n",
            _ => b"502 5.5.2 command not recognised\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// Reads one line (up to and including `\n`), refusing one longer than `max`.
async fn read_line(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    let n = (&mut *read).take(max as u64).read_until(b'\n', line).await?;
    if n > 0 && !line.ends_with(b"\n") && n >= max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(n)
}

/// Reads a message up to its lone `.` line, bounded.
async fn read_message(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, quick: bool) -> std::io::Result<()> {
    let mut total = 0;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if quick && read.buffer().is_empty() {
            quickack(read.get_ref().as_ref());
        }
        let n = read_line(read, &mut line, MAX_LINE * 8).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the message ended early"));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(());
        }
        total += n;
        if total > MAX_MESSAGE {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too large"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_counted_once_and_strangers_apart() {
        let arrivals = Arrivals::new("r1".into(), 3);
        arrivals.record(&Arrivals::recipient("r1", 0, 1));
        arrivals.record(&Arrivals::recipient("r1", 0, 1));
        arrivals.record(&Arrivals::recipient("r1", 2, 1));
        arrivals.record(&Arrivals::recipient("r2", 1, 1));
        arrivals.record(&Arrivals::recipient("r1", 9, 1));
        arrivals.record("someone@example.org");
        assert_eq!(arrivals.arrived.load(Ordering::Relaxed), 2);
        assert_eq!(arrivals.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(arrivals.foreign.load(Ordering::Relaxed), 3);
        assert_eq!(arrivals.missing(), 1);
    }
}
