//! The server's resident memory, from `/proc/PID/status`: of one process, or of a process and all its
//! descendants (nginx: the master and its workers), found through `/proc/PID/task/TID/children`.
//!
//! Adding up `VmRSS` counts a page shared by several processes once per process (the code, and for nginx
//! the shared-memory zone that nchan keeps its channels and messages in, wherever more than one worker has
//! touched it), so a tree's figure is an upper bound of what the processes hold together.

use std::io;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("reading VmRSS of process {pid}: {source}")]
pub struct RssError {
    pid: u32,
    #[source]
    source: io::Error,
}

/// Where to read the server's memory.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssProbe {
    pub pid: u32,
    /// Add the `VmRSS` of every descendant of `pid`.
    pub children: bool,
}

impl RssProbe {
    pub fn new(pid: u32, children: bool) -> Self {
        Self { pid, children }
    }

    /// The `VmRSS` of the process, or of it and its descendants, in KiB. A descendant that exits while
    /// being read is left out; the process itself must be there.
    pub fn read_kb(&self) -> Result<u64, RssError> {
        let mut total = vm_rss_kb(self.pid)?;
        if self.children {
            let mut pending = children(self.pid);
            // A process tree has no cycles, but a pid reused between two reads could make one: cap the walk.
            let mut seen = 0usize;
            while let Some(pid) = pending.pop() {
                seen += 1;
                if seen > 100_000 {
                    break;
                }
                if let Ok(kb) = vm_rss_kb(pid) {
                    total += kb;
                    pending.extend(children(pid));
                }
            }
        }
        Ok(total)
    }
}

/// `VmRSS` of process `pid`, in KiB (the kernel's "kB").
pub fn vm_rss_kb(pid: u32) -> Result<u64, RssError> {
    let error = |source| RssError { pid, source };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(error)?;
    parse_vm_rss(&status).ok_or_else(|| {
        error(io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line (a kernel thread, or a zombie?)"))
    })
}

/// The direct children of every thread of `pid`; none when it has exited.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(parse_children(&text));
        }
    }
    found
}

fn parse_children(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.split_whitespace().filter_map(|pid| pid.parse().ok())
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
    fn parses_children() {
        assert_eq!(parse_children("123 456 \n").collect::<Vec<_>>(), vec![123, 456]);
        assert_eq!(parse_children("").count(), 0);
    }

    #[test]
    fn reads_own_process() {
        assert!(vm_rss_kb(std::process::id()).expect("own status") > 0);
    }

    #[test]
    fn adds_up_children() {
        let mut child = std::process::Command::new("sleep").arg("10").spawn().expect("spawn sleep");
        let own = RssProbe::new(std::process::id(), false);
        let tree = RssProbe::new(std::process::id(), true);
        // Other tests of this binary may start and end processes meanwhile; the sleep is there throughout.
        let child_kb = vm_rss_kb(child.id()).expect("child status");
        let (alone, with_children) = (own.read_kb().expect("own"), tree.read_kb().expect("tree"));
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_kb > 0);
        assert!(
            with_children >= alone.saturating_sub(alone / 10) + child_kb,
            "{with_children} vs {alone} + {child_kb}"
        );
        assert!(RssProbe::new(u32::MAX, true).read_kb().is_err());
    }
}
