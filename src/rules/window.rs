//! Per-group state of a rule: the last `count` match times (a sliding window that never holds
//! more than `count` entries) and the cooldown. Groups are capped; past the cap the least
//! recently seen tenth is evicted at once, so a flood of distinct group values costs O(1)
//! amortized per event and never grows memory.

use super::dedup::KeyHasher;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

#[derive(Debug, Default)]
pub(super) struct GroupState {
    times: VecDeque<i64>,
    pub(super) cooldown_until: i64,
    touched: u64,
}

impl GroupState {
    /// Records a match at `ts`; true when `count` matches lie within `within_ms` of each other
    /// (both ends included).
    pub(super) fn record(&mut self, ts: i64, count: usize, within_ms: i64) -> bool {
        if count <= 1 {
            return true;
        }
        // Sorted insert: sources may deliver slightly out of order.
        let at = self.times.partition_point(|&t| t <= ts);
        self.times.insert(at, ts);
        if self.times.len() > count {
            self.times.pop_front();
        }
        match (self.times.front(), self.times.back()) {
            (Some(first), Some(last)) if self.times.len() == count => {
                last.saturating_sub(*first) <= within_ms
            }
            _ => false,
        }
    }

    /// Starts counting afresh after the condition was met.
    pub(super) fn reset(&mut self) {
        self.times.clear();
    }
}

#[derive(Debug)]
pub(super) struct Groups {
    /// Keyed by a randomly seeded 64-bit hash of the group values: no string per group, and
    /// values an attacker picks cannot be made to collide.
    map: HashMap<u64, GroupState, BuildHasherDefault<KeyHasher>>,
    seed: RandomState,
    cap: usize,
    clock: u64,
    pub(super) evicted: u64,
}

impl Groups {
    pub(super) fn new(cap: usize) -> Self {
        Groups {
            map: HashMap::default(),
            seed: RandomState::new(),
            cap: cap.max(1),
            clock: 0,
            evicted: 0,
        }
    }

    /// The key of a group made of these values (a missing value is "").
    pub(super) fn key<'a>(&self, values: impl Iterator<Item = &'a str>) -> u64 {
        let mut h = self.seed.build_hasher();
        for v in values {
            v.hash(&mut h);
        }
        h.finish()
    }

    pub(super) fn touch(&mut self, key: u64) -> &mut GroupState {
        self.clock += 1;
        let full = self.map.len() >= self.cap && !self.map.contains_key(&key);
        if full {
            self.evict();
        }
        let g = self.map.entry(key).or_default();
        g.touched = self.clock;
        g
    }

    fn evict(&mut self) {
        let n = (self.cap / 10).max(1);
        let mut ages: Vec<u64> = self.map.values().map(|g| g.touched).collect();
        let (_, &mut cut, _) = ages.select_nth_unstable(n - 1);
        // `touched` values are unique, so exactly `n` groups go.
        self.map.retain(|_, g| g.touched > cut);
        self.evicted += n as u64;
        if self.map.capacity() > 2 * self.cap {
            self.map.shrink_to(self.cap);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_holds_at_most_count_and_slides() {
        let mut g = GroupState::default();
        assert!(!g.record(0, 3, 600));
        assert!(!g.record(100, 3, 600));
        assert!(!g.record(700, 3, 600), "0..700 is wider than 600");
        assert!(g.record(650, 3, 600), "100, 650, 700 fit");
        assert_eq!(g.times.len(), 3);
    }

    #[test]
    fn eviction_keeps_the_recent_groups() {
        let mut gs = Groups::new(100);
        let key = |gs: &Groups, s: &str| gs.key([s].into_iter());
        let hot = key(&gs, "hot");
        for i in 0..1000 {
            gs.touch(key(&gs, &format!("g{i}")));
            gs.touch(hot);
        }
        assert!(gs.len() <= 100);
        assert!(gs.map.contains_key(&hot));
        assert!(gs.map.contains_key(&key(&gs, "g999")));
        assert_ne!(key(&gs, "a"), key(&gs, "b"));
    }
}
