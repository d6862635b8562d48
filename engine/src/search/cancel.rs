//! Cooperative cancellation of a search: a flag the caller may set at any time and an optional
//! deadline, both checked by the search between the sources it scans (memtable chunks,
//! segments) and between the queries of a batch. A cancelled search stops at the next check
//! and returns [`Error::Cancelled`]; it never returns partial results.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};

/// A cancellation handle; clones share the flag. The default never cancels and costs nothing.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Option<Arc<AtomicBool>>,
    deadline: Option<Instant>,
}

impl Cancel {
    /// A handle that [`cancel`](Self::cancel) can trip.
    pub fn new() -> Self {
        Cancel {
            flag: Some(Arc::new(AtomicBool::new(false))),
            deadline: None,
        }
    }

    /// The same handle, also tripped once `at` has passed.
    pub fn with_deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Asks every search holding a clone of this handle to stop.
    pub fn cancel(&self) {
        if let Some(f) = &self.flag {
            f.store(true, Ordering::Relaxed);
        }
    }

    /// True once cancelled or past the deadline.
    pub fn is_cancelled(&self) -> bool {
        self.flag
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `Err(Cancelled)` once cancelled or past the deadline.
    pub(crate) fn check(&self) -> Result<()> {
        if self
            .flag
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            return Err(Error::Cancelled {
                reason: "the caller cancelled the search",
            });
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Cancelled {
                reason: "the search ran past its deadline",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn trips_on_cancel_or_deadline_and_clones_share_the_flag() {
        assert!(Cancel::default().check().is_ok());
        let c = Cancel::new();
        let other = c.clone();
        assert!(!other.is_cancelled());
        c.cancel();
        assert!(other.is_cancelled());
        assert!(matches!(other.check(), Err(Error::Cancelled { .. })));
        let late = Cancel::new().with_deadline(Instant::now() - Duration::from_millis(1));
        assert!(
            matches!(late.check(), Err(Error::Cancelled { reason }) if reason.contains("deadline"))
        );
        let early = Cancel::new().with_deadline(Instant::now() + Duration::from_secs(60));
        assert!(early.check().is_ok());
    }
}
