//! Per-invariant state and `for` first sightings, kept in the store so they survive restarts
//! and several vigil processes agree.

use super::StoreError;
use std::collections::BTreeMap;

/// An invariant's last known state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantState {
    /// `green` or `red`.
    pub state: String,
    /// Since when (ms since the epoch) it has been in this state.
    pub since_ms: i64,
    /// The kept violations, as a JSON array.
    pub violations: String,
}

pub trait InvariantStore: Send + Sync {
    /// Every invariant's stored state, by id.
    fn invariant_states(&self) -> Result<BTreeMap<String, InvariantState>, StoreError>;
    fn save_invariant_state(
        &self,
        id: &str,
        state: &InvariantState,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Records the violation keys of invariant `id` seen now and returns, for each, when it
    /// was first seen; keys not seen now are forgotten (the violation went away, its clock
    /// restarts). A first sighting stamped after `now_ms` (the clock was ahead) is set to
    /// `now_ms`, and logged once.
    fn invariant_sightings(
        &self,
        id: &str,
        keys: &[String],
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError>;
}
