//! How far the pipeline has got with each source's events, so a source that keeps a position
//! (the file source's checkpoint) saves only what is safe: an event sent into the queue is not
//! yet acted on, and a crash loses the queue. A position is saved once the pipeline has
//! finished every event sent before it (rules evaluated, their intents and symptoms stored),
//! so after a crash the source reads again what was queued instead of losing it.
//!
//! Counting is by source name, in queue order: the sender counts what it sent
//! ([`super::SourceContext::sent`]), the pipeline what it finished. Events posted to the API
//! under a source's name count too; the count then runs ahead, which can only make a crash
//! right after such a post lose what was queued, never break anything else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Finished events per source, shared by the daemon's pipeline and its sources.
#[derive(Default)]
pub struct Deliveries {
    sources: Mutex<HashMap<String, Arc<Delivery>>>,
}

/// One source's count of finished events.
#[derive(Default)]
pub struct Delivery {
    done: AtomicU64,
    progressed: Notify,
}

impl Deliveries {
    /// The counter of `source`, made on first call; a source holds it to follow its events.
    pub fn track(&self, source: &str) -> Arc<Delivery> {
        self.sources
            .lock()
            .unwrap()
            .entry(source.to_string())
            .or_default()
            .clone()
    }

    /// The pipeline has finished `n` more events of `source` (a name nobody tracks is ignored).
    pub fn done(&self, source: &str, n: u64) {
        let d = self.sources.lock().unwrap().get(source).cloned();
        if let Some(d) = d {
            d.done.fetch_add(n, Ordering::Release);
            // One waiter per source (its own task): a stored permit covers a notification
            // that arrives between its check and its wait.
            d.progressed.notify_one();
        }
    }
}

impl Delivery {
    /// Events of this source the pipeline has finished since the daemon started.
    pub fn count(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves when the count may have moved on.
    pub async fn progressed(&self) {
        self.progressed.notified().await
    }
}

/// The pipeline's side: counts a run of events of one source and reports it in one call when
/// the run ends, every [`Tally::BATCH`] events, and when the queue is empty ([`Tally::flush`]),
/// so the per-event cost is a string comparison, not a lock.
#[derive(Default)]
pub struct Tally {
    source: String,
    n: u64,
}

impl Tally {
    /// Longest run counted before it is reported anyway.
    pub const BATCH: u64 = 256;

    /// One more event of `source` finished.
    pub fn add(&mut self, deliveries: &Deliveries, source: &str) {
        if self.source != source {
            self.flush(deliveries);
            self.source.clear();
            self.source.push_str(source);
        }
        self.n += 1;
        if self.n >= Self::BATCH {
            self.flush(deliveries);
        }
    }

    /// Reports what is counted.
    pub fn flush(&mut self, deliveries: &Deliveries) {
        if self.n > 0 {
            deliveries.done(&self.source, self.n);
            self.n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_reported_when_they_end_or_are_flushed() {
        let d = Deliveries::default();
        let (a, b) = (d.track("a"), d.track("b"));
        let mut t = Tally::default();
        t.add(&d, "a");
        t.add(&d, "a");
        assert_eq!(a.count(), 0, "a run is reported when it ends");
        t.add(&d, "b");
        assert_eq!((a.count(), b.count()), (2, 0));
        t.add(&d, "api");
        t.flush(&d);
        assert_eq!((a.count(), b.count()), (2, 1));
        for _ in 0..Tally::BATCH {
            t.add(&d, "a");
        }
        assert_eq!(
            a.count(),
            2 + Tally::BATCH,
            "a long run is reported as it goes"
        );
    }
}
