//! How many connections this process may hold, and the permits that count them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Descriptors kept back from the connection budget for the database, the listener, HTTP requests and logs.
pub const RESERVED_DESCRIPTORS: u64 = 400;

pub struct Capacity {
    max: usize,
    used: AtomicUsize,
}

impl Capacity {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, used: AtomicUsize::new(0) })
    }

    /// Raises the soft open-files limit to the hard limit and returns the connection budget it allows.
    pub fn from_descriptor_limit() -> (usize, u64) {
        let soft = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(e) => {
                tracing::warn!(error = %e, "could not raise the open-files limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
            }
        };
        let budget = soft.saturating_sub(RESERVED_DESCRIPTORS).max(1);
        (usize::try_from(budget).unwrap_or(usize::MAX), soft)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit for one more connection, or `None` at capacity.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < self.max).then_some(used + 1))
            .ok()
            .map(|_| Permit(self.clone()))
    }
}

/// Holds one connection's place; released on drop.
pub struct Permit(Arc<Capacity>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_maximum_and_frees_on_drop() {
        let cap = Capacity::new(1);
        let first = cap.try_acquire();
        assert!(first.is_some());
        assert!(cap.try_acquire().is_none());
        drop(first);
        assert!(cap.try_acquire().is_some());
    }
}
