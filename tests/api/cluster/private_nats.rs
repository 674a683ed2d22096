//! A `nats-server` of a test's own, on a free port with a user and password, to kill and start again.

use std::net::TcpListener;
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::helpers::{wait_until, WAIT};

pub(crate) struct PrivateNats {
    port: u16,
    pub(crate) password: &'static str,
    child: Option<Child>,
}

impl PrivateNats {
    /// Picks a free port; `None` (outside CI) when there is no `nats-server` to run.
    pub(crate) fn reserve() -> Option<PrivateNats> {
        if let Err(e) = std::process::Command::new("nats-server").arg("--version").output() {
            let why = format!("cannot run nats-server ({e}); scripts/ensure-services installs it");
            assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
            eprintln!("skipping: {why}");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("pick a free port").port();
        Some(PrivateNats { port, password: "cluster-test-pw-51ae", child: None })
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://herald:{}@127.0.0.1:{}", self.password, self.port)
    }

    pub(crate) async fn start(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "--user", "herald", "--pass", self.password])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until("the private nats-server to listen", WAIT, || async {
            tokio::net::TcpStream::connect(&addr).await.ok()
        })
        .await;
    }

    /// Kills the server (as a crash would) and waits for it to be gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}
