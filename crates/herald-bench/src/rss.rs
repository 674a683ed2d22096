//! The server's resident memory, from `/proc/PID/status`.

use std::io;

#[derive(Debug, thiserror::Error)]
#[error("reading VmRSS of process {pid}: {source}")]
pub struct RssError {
    pid: u32,
    #[source]
    source: io::Error,
}

/// `VmRSS` of process `pid`, in KiB (the kernel's "kB").
pub fn vm_rss_kb(pid: u32) -> Result<u64, RssError> {
    let error = |source| RssError { pid, source };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(error)?;
    parse_vm_rss(&status).ok_or_else(|| {
        error(io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line (a kernel thread, or a zombie?)"))
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let status = "Name:\therald\nVmPeak:\t  9000 kB\nVmRSS:\t   4242 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(4242));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(vm_rss_kb(std::process::id()).expect("own status") > 0);
    }
}
