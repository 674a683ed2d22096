//! The `herald` child process: how it is started and configured, how its output is kept, and where it
//! says it listens.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Output, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

/// The publisher key every test server accepts unless a test configures otherwise.
pub const API_KEY: &str = "test-publisher-key-4f1d9c2a7b";
/// The HS256 secret every test server verifies user tokens with unless a test configures otherwise.
pub const JWT_SECRET: &str = "test-jwt-secret-0b8e5d3f6a1c9e7d2f4a";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// How to start a test server: environment variables on top of the test defaults, and extra arguments
/// after `serve --listen 127.0.0.1:0 --data-dir <tempdir>`.
#[derive(Clone, Debug)]
pub struct Settings {
    env: Vec<(String, Option<String>)>,
    args: Vec<String>,
    /// The test is about SQLite itself (its files, its locks): it keeps SQLite whatever backend the suite runs.
    pub sqlite_only: bool,
    /// The server's open-files limit (soft and hard), when the test is about running out of descriptors.
    pub open_files: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            env: vec![
                ("HERALD_JWT_SECRET".into(), Some(JWT_SECRET.into())),
                ("HERALD_API_KEYS".into(), Some(API_KEY.into())),
            ],
            args: Vec::new(),
            sqlite_only: false,
            open_files: None,
        }
    }
}

impl Settings {
    /// Sets an environment variable for the server.
    pub fn env(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Makes sure the server does not see this environment variable (not even a test default).
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.env.push((key.into(), None));
        self
    }

    /// Keeps the inbox in SQLite under the data dir even when the suite runs against PostgreSQL.
    pub fn sqlite_only(&mut self) -> &mut Self {
        self.sqlite_only = true;
        self
    }

    /// Adds a command-line argument after the defaults.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    fn apply(&self, command: &mut Command) {
        // The server refuses unknown HERALD_* variables, and the developer's own settings must not leak
        // into a test: start from none of them.
        for (key, _) in std::env::vars() {
            if key.starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(limit) = self.open_files {
            // SAFETY: between fork and exec the child only calls setrlimit, which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
    }

    pub fn value_of(&self, key: &str) -> Option<String> {
        self.env.iter().rev().find(|(k, _)| k == key).and_then(|(_, v)| v.clone())
    }
}

/// Runs `herald` with `args` and `settings`' environment to completion (20 s at most).
pub async fn run_herald(args: &[&str], settings: &Settings) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    settings.apply(&mut command);
    tokio::time::timeout(STARTUP_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`herald {}` did not finish within {STARTUP_TIMEOUT:?}", args.join(" ")))
        .expect("run herald")
}

type Lines = Arc<Mutex<Vec<String>>>;

/// One running `herald serve` process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stdout: Lines,
    stderr: Lines,
}

impl Server {
    pub async fn start(data_dir: &Path, settings: &Settings) -> Result<Server, String> {
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(&settings.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        settings.apply(&mut command);
        let mut child = command.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;

        let (stdout, stderr) = (Lines::default(), Lines::default());
        let (addr_tx, addr_rx) = oneshot::channel();
        drain(child.stdout.take().expect("piped stdout"), stdout.clone(), Some(addr_tx));
        drain(child.stderr.take().expect("piped stderr"), stderr.clone(), None);

        let addr = match tokio::time::timeout(STARTUP_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            outcome => {
                let why = match outcome {
                    Err(_) => format!("no `listening on` line within {STARTUP_TIMEOUT:?}"),
                    _ => format!("stdout closed before a `listening on` line; exit: {:?}", child.try_wait()),
                };
                let _ = child.start_kill();
                let server = Server { child, addr: ([0, 0, 0, 0], 0).into(), stdout, stderr };
                return Err(format!("herald serve did not start: {why}\n{}", server.logs()));
            }
        };
        Ok(Server { child, addr, stdout, stderr })
    }

    pub fn logs(&self) -> String {
        format!(
            "--- herald stdout ---\n{}\n--- herald stderr ---\n{}\n",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }
}

/// Reads `pipe` line by line into `lines` until it closes, so the child never blocks on a full pipe; sends
/// the address of the first `listening on http://ADDR` line to `addr_tx`.
fn drain(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    lines: Lines,
    mut addr_tx: Option<oneshot::Sender<SocketAddr>>,
) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(addr) = listening_addr(&line) {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr);
                }
            }
            lines.lock().unwrap().push(line);
        }
    });
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next()?;
    addr.parse().ok()
}

#[test]
fn finds_the_address_in_the_listening_line() {
    assert_eq!(
        listening_addr("herald 0.1.0 listening on http://127.0.0.1:40123"),
        Some("127.0.0.1:40123".parse().unwrap())
    );
    assert_eq!(
        listening_addr("listening on http://127.0.0.1:8004/ (data: ./data)"),
        Some("127.0.0.1:8004".parse().unwrap())
    );
    assert_eq!(listening_addr("starting"), None);
}
