//! A real SMTP server for the email tests: `tests/support/smtp_server.py` (aiosmtpd, from Debian's
//! `python3-aiosmtpd`, which `scripts/ensure-services` installs), on a loopback port of its own, writing
//! what it accepts to a temp dir of its own. Recipients steer it (`reject550…@` → 550, `tempfail…@` → 451).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{wait_until, WAIT};

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");

/// A test CA and a server certificate for 127.0.0.1 signed by it, made with the openssl command.
pub struct TestCert {
    _dir: TempDir,
    /// The CA's certificate: what a client trusts.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCert {
    pub async fn generate() -> TestCert {
        let dir = tempfile::tempdir().expect("a temp dir for the certificates");
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            path("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions");
        let (ca, ca_key, cert, key, csr) =
            (path("ca.pem"), path("ca.key"), path("cert.pem"), path("key.pem"), path("leaf.csr"));
        let ext = path("leaf.ext");
        let steps: [Vec<&str>; 3] = [
            vec!["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Herald test CA"]
                .into_iter()
                .chain(["-keyout", &ca_key, "-out", &ca])
                .collect(),
            vec!["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr],
            vec!["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-days", "2"]
                .into_iter()
                .chain(["-extfile", &ext, "-out", &cert])
                .collect(),
        ];
        for args in steps {
            let output = Command::new("openssl").args(&args).output().await.expect("run openssl");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        TestCert { ca: ca.into(), cert: cert.into(), key: key.into(), _dir: dir }
    }
}

pub struct SmtpServer {
    /// Killed when the server is dropped.
    _child: Child,
    pub port: u16,
    dir: TempDir,
}

impl SmtpServer {
    /// Plain SMTP on a free port.
    pub async fn start() -> SmtpServer {
        Self::start_with(0, "none", None).await
    }

    /// `tls`: none, starttls or tls; `port` 0 for any free one.
    pub async fn start_with(port: u16, tls: &str, cert: Option<&TestCert>) -> SmtpServer {
        let dir = tempfile::tempdir().expect("a temp dir for received mail");
        Self::start_in(dir, port, tls, cert).await
    }

    async fn start_in(dir: TempDir, port: u16, tls: &str, cert: Option<&TestCert>) -> SmtpServer {
        let mut command = Command::new(PYTHON);
        command.arg(SCRIPT).arg("--dir").arg(dir.path()).args(["--port", &port.to_string(), "--tls", tls]);
        if let Some(cert) = cert {
            command.arg("--cert").arg(&cert.cert).arg("--key").arg(&cert.key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the test SMTP server ({PYTHON} {SCRIPT}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the test SMTP server to print its port")
            .expect("read the test SMTP server's port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the test SMTP server did not start: {line:?}"));
        SmtpServer { _child: child, port, dir }
    }

    pub fn messages(&self) -> Vec<Value> {
        messages_in(self.dir.path())
    }

    /// Waits until exactly `count` messages have arrived, and returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        wait_until(&format!("{count} email(s) at the test SMTP server"), WAIT, || async {
            let got = self.messages();
            assert!(got.len() <= count, "more emails than expected: {got:#?}");
            (got.len() == count).then_some(got)
        })
        .await
    }
}

pub fn messages_in(dir: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the mail dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read a message")).expect("a message's JSON"))
        .collect()
}

/// A loopback port nothing listens on (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
