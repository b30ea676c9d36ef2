//! Identical events (same `Event::dedup_key`) within the window are one fact seen twice. The
//! table is bounded: entries expire as time moves on, and past `cap` the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are already SipHash outputs: hashing them again would only cost time.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) struct Dedup {
    /// Key → time it was last let through.
    seen: HashMap<u64, i64, BuildHasherDefault<KeyHasher>>,
    /// Let-through order, for expiry and eviction; may hold stale entries of keys let through
    /// again later (they are skipped when popped).
    order: VecDeque<(u64, i64)>,
    window_ms: i64,
    cap: usize,
    now: i64,
}

impl Dedup {
    pub(super) fn new(window_ms: i64, cap: usize) -> Self {
        Dedup {
            seen: HashMap::default(),
            order: VecDeque::new(),
            window_ms,
            cap: cap.max(1),
            now: i64::MIN,
        }
    }

    /// True when the event is new; false when it repeats one let through less
    /// than the window ago. A dropped repeat does not extend the window, so something that
    /// repeats every 30 s still gets through once a minute.
    pub(super) fn admit(&mut self, key: u64, ts: i64) -> bool {
        self.advance(ts);
        if let Some(&t0) = self.seen.get(&key) {
            if ts - t0 < self.window_ms {
                return false;
            }
        }
        self.seen.insert(key, ts);
        self.order.push_back((key, ts));
        while self.seen.len() > self.cap || self.order.len() > 2 * self.cap {
            self.pop_oldest();
        }
        true
    }

    /// Forgets entries older than the window.
    pub(super) fn advance(&mut self, now: i64) {
        self.now = self.now.max(now);
        while let Some(&(_, t)) = self.order.front() {
            if t.saturating_add(self.window_ms) > self.now {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((k, t)) = self.order.pop_front() {
            if self.seen.get(&k) == Some(&t) {
                self.seen.remove(&k);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}
