//! The restart policy: how long to wait before a restart, and when restarts have run out.
//! Pure: every decision takes the time from the caller (the injected clock), so tests drive it
//! with a `ManualClock` instead of sleeping.

use super::config::{Backoff, RestartMode};
use std::collections::VecDeque;
use std::time::Duration;

/// What to do after a unit's process exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay (zero: at once).
    Restart(Duration),
    /// The restart mode says not to (a clean exit under `on-failure`, or `never`).
    Stay,
    /// This failure exceeds `max_restarts` within `restart_window`: stop restarting.
    Exhausted,
}

/// A unit's restart history and backoff state.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    mode: RestartMode,
    backoff: Backoff,
    max_restarts: u32,
    window_ms: i64,
    /// Times (ms) of the restarts inside the window, oldest first.
    restarts: VecDeque<i64>,
    /// Quick failures in a row: the backoff exponent.
    streak: u32,
}

impl RestartPolicy {
    pub fn new(mode: RestartMode, backoff: Backoff, max_restarts: u32, window_ms: i64) -> Self {
        Self {
            mode,
            backoff,
            max_restarts,
            window_ms,
            restarts: VecDeque::new(),
            streak: 0,
        }
    }

    /// Restores the restart times kept in the store (after a daemon restart).
    pub fn with_history(mut self, restarts: &[i64]) -> Self {
        self.restarts = restarts.iter().copied().collect();
        self
    }

    /// Restart times within the window as of `now_ms`, oldest first.
    pub fn history(&self, now_ms: i64) -> Vec<i64> {
        self.restarts
            .iter()
            .copied()
            .filter(|t| *t > now_ms - self.window_ms)
            .collect()
    }

    /// Restarts inside the window as of `now_ms`.
    pub fn restarts_in_window(&self, now_ms: i64) -> usize {
        self.restarts
            .iter()
            .filter(|t| **t > now_ms - self.window_ms)
            .count()
    }

    /// Decides after an exit at `now_ms` of a process that ran `ran` and `failed` (non-zero
    /// exit or a signal). A `Restart` is recorded as one restart at `now_ms`.
    pub fn on_exit(&mut self, now_ms: i64, ran: Duration, failed: bool) -> Decision {
        match (self.mode, failed) {
            (RestartMode::Never, _) | (RestartMode::OnFailure, false) => return Decision::Stay,
            _ => {}
        }
        while self
            .restarts
            .front()
            .is_some_and(|t| *t <= now_ms - self.window_ms)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.max_restarts as usize {
            return Decision::Exhausted;
        }
        self.restarts.push_back(now_ms);
        // A unit that ran long enough was healthy: a rare crash costs no wait at all.
        if ran >= self.backoff.reset.0 {
            self.streak = 0;
            return Decision::Restart(Duration::ZERO);
        }
        let delay = self.base_delay(self.streak);
        self.streak = self.streak.saturating_add(1);
        Decision::Restart(jitter(delay, self.backoff.max.0, now_ms))
    }

    /// `initial * 2^n`, capped at `max`, without jitter.
    pub fn base_delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.backoff
            .initial
            .0
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.backoff.max.0)
    }

    /// Forgets the history (`vigil units release`).
    pub fn reset(&mut self) {
        self.restarts.clear();
        self.streak = 0;
    }
}

/// Spreads `delay` by up to ±10% so units that failed together do not restart in lockstep;
/// never above `max`. The spread comes from a std hasher's random keys, mixed with the time.
fn jitter(delay: Duration, max: Duration, now_ms: i64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    if delay.is_zero() {
        return delay;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms);
    let unit = (h.finish() % 2001) as f64 / 1000.0 - 1.0; // -1.0 ..= 1.0
    delay.mul_f64(1.0 + 0.1 * unit).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Dur;

    fn policy(max_restarts: u32, window: Duration) -> RestartPolicy {
        RestartPolicy::new(
            RestartMode::OnFailure,
            Backoff {
                initial: Dur(Duration::from_secs(1)),
                max: Dur(Duration::from_secs(8)),
                reset: Dur(Duration::from_secs(30)),
            },
            max_restarts,
            window.as_millis() as i64,
        )
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::Restart(d) => d,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let clock = ManualClock::at("2026-01-01T00:00:00Z");
        let mut p = policy(100, Duration::from_secs(3600));
        let mut seen = Vec::new();
        for _ in 0..7 {
            let d = delay(p.on_exit(clock.now_ms(), Duration::from_millis(100), true));
            seen.push(d);
            clock.advance(d + Duration::from_millis(100));
        }
        let bases = [1, 2, 4, 8, 8, 8, 8];
        for (d, base) in seen.iter().zip(bases) {
            let base = Duration::from_secs(base);
            assert!(
                *d >= base.mul_f64(0.9) && *d <= base.mul_f64(1.1),
                "{seen:?}"
            );
            assert!(*d <= Duration::from_secs(8), "capped at max: {seen:?}");
        }
    }

    #[test]
    fn a_long_run_restarts_at_once_and_resets_the_backoff() {
        let clock = ManualClock::at("2026-01-01T00:00:00Z");
        let mut p = policy(100, Duration::from_secs(3600));
        p.on_exit(clock.now_ms(), Duration::from_millis(10), true);
        p.on_exit(clock.now_ms(), Duration::from_millis(10), true);
        clock.advance(Duration::from_secs(60));
        let d = p.on_exit(clock.now_ms(), Duration::from_secs(60), true);
        assert_eq!(d, Decision::Restart(Duration::ZERO));
        let d = delay(p.on_exit(clock.now_ms(), Duration::from_millis(10), true));
        assert!(
            d <= Duration::from_millis(1100),
            "starts over at initial: {d:?}"
        );
    }

    #[test]
    fn exhausts_after_max_restarts_in_the_window() {
        let clock = ManualClock::at("2026-01-01T00:00:00Z");
        let mut p = policy(3, Duration::from_secs(600));
        for _ in 0..3 {
            assert!(matches!(
                p.on_exit(clock.now_ms(), Duration::ZERO, true),
                Decision::Restart(_)
            ));
            clock.advance(Duration::from_secs(10));
        }
        assert_eq!(
            p.on_exit(clock.now_ms(), Duration::ZERO, true),
            Decision::Exhausted
        );
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_exhaust() {
        let clock = ManualClock::at("2026-01-01T00:00:00Z");
        let mut p = policy(3, Duration::from_secs(600));
        for _ in 0..50 {
            assert!(matches!(
                p.on_exit(clock.now_ms(), Duration::ZERO, true),
                Decision::Restart(_)
            ));
            // Three failures per window at most: one every 201 s.
            clock.advance(Duration::from_secs(201));
        }
        assert!(p.restarts_in_window(clock.now_ms()) <= 3);
    }

    #[test]
    fn clean_exit_under_on_failure_stays_down() {
        let mut p = policy(3, Duration::from_secs(600));
        assert_eq!(p.on_exit(0, Duration::ZERO, false), Decision::Stay);
    }
}
