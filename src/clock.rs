//! The one clock. Windows, TTLs, cooldowns, budgets and backoff read time from a `Clock` that is
//! passed in, so tests advance a `ManualClock` instead of sleeping.

use jiff::{SignedDuration, Timestamp};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A wait on the clock, as `Clock::sleep_until` returns it.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Milliseconds since the Unix epoch: the unit events and windows use on hot paths.
    fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }

    /// Resolves once the clock reads `at_ms` (milliseconds since the epoch) or later, for
    /// timers that must follow this clock (housekeeping). By default it sleeps on the runtime's
    /// timer for the time left, then looks again (the wall clock may have been set back);
    /// `ManualClock` wakes when a test moves it. Neither polls: an idle daemon stays idle.
    fn sleep_until(&self, at_ms: i64) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let left = at_ms.saturating_sub(self.now_ms());
                if left <= 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(left as u64)).await;
            }
        })
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
    /// Wakes `sleep_until` waiters whenever the time is moved.
    moved: Arc<Notify>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            moved: Arc::new(Notify::new()),
        }
    }

    /// Starts at a fixed, readable instant so test output is stable.
    pub fn at(rfc3339: &str) -> Self {
        Self::new(rfc3339.parse().expect("valid RFC 3339 timestamp"))
    }

    pub fn advance(&self, by: Duration) {
        {
            let mut t = self.now.lock().unwrap();
            *t = t
                .checked_add(SignedDuration::try_from(by).expect("duration fits"))
                .expect("timestamp in range");
        }
        self.moved.notify_waiters();
    }

    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap() = to;
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap()
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                // Registered before the time is read, so a move in between is not missed.
                let moved = self.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.now_ms() >= at_ms {
                    return;
                }
                moved.await;
            }
        })
    }
}

/// RFC 3339 text for a millisecond timestamp, as every JSON output writes times: always three
/// fractional digits, so columns line up and text sorts as time does.
pub fn rfc3339_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| ms.to_string())
}

/// Serde helpers: millisecond timestamps as RFC 3339 text (`rfc3339_ms`) in JSON.
pub mod ms_as_rfc3339 {
    /// Serializes a millisecond timestamp as RFC 3339 text.
    pub fn ser<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_ms(*ms))
    }

    /// Serializes an optional millisecond timestamp as RFC 3339 text or null.
    pub fn ser_opt<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::rfc3339_ms(*ms)),
            None => s.serialize_none(),
        }
    }

    /// Reads RFC 3339 text back into milliseconds.
    pub fn de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleep_until_wakes_when_a_manual_clock_passes_the_deadline() {
        let c = ManualClock::at("2026-01-01T00:00:00Z");
        let deadline = c.now_ms() + 60_000;
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.sleep_until(deadline).await })
        };
        c.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a second early");
        c.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken at the deadline")
            .unwrap();
        // Already past: resolves at once.
        c.sleep_until(deadline).await;
    }

    #[test]
    fn manual_clock_advances_shared_time() {
        let c = ManualClock::at("2026-01-01T00:00:00Z");
        let c2 = c.clone();
        c.advance(Duration::from_secs(24 * 3600));
        assert_eq!(c2.now().to_string(), "2026-01-02T00:00:00Z");
        assert_eq!(c2.now_ms(), 1_767_312_000_000);
        assert_eq!(rfc3339_ms(1_767_312_000_310), "2026-01-02T00:00:00.310Z");
    }
}
