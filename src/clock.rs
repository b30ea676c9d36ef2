//! The one clock. Windows, TTLs, cooldowns, budgets and backoff read time from a `Clock` that is
//! passed in, so tests advance a `ManualClock` instead of sleeping.

use jiff::{SignedDuration, Timestamp};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Milliseconds since the Unix epoch: the unit events and windows use on hot paths.
    fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
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
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Starts at a fixed, readable instant so test output is stable.
    pub fn at(rfc3339: &str) -> Self {
        Self::new(rfc3339.parse().expect("valid RFC 3339 timestamp"))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap();
        *t = t
            .checked_add(SignedDuration::try_from(by).expect("duration fits"))
            .expect("timestamp in range");
    }

    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
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
