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

/// An alert message waiting to be delivered: at most one per invariant, the newest truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAlert {
    pub invariant: String,
    /// A "resolved" message (else a "violated" one).
    pub resolved: bool,
    /// The message as JSON.
    pub payload: String,
    /// When the transition happened (ms); also tells this message from a newer one.
    pub created_ms: i64,
    /// Not before this (ms): a receiver's `Retry-After`, or backoff after a failure.
    pub next_attempt_ms: i64,
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

    /// Queues `alert` for delivery. A "resolved" alert for an invariant whose "violated" one was
    /// never sent cancels that one instead and is not queued (nothing stale is sent, and an
    /// episode nobody heard of needs no all-clear); returns whether it was queued. A "violated"
    /// one that is being sent (taken by `due_alerts` and not yet put back by `alert_later`)
    /// may arrive: the "resolved" one replaces it in the outbox and goes out after it.
    fn queue_alert(&self, alert: &PendingAlert) -> Result<bool, StoreError>;
    /// Takes the alerts due at `now_ms` for a delivery round, oldest first: they count as being
    /// sent until `alert_done` or `alert_later` (also across a crash: a round that never
    /// reported may have delivered).
    fn due_alerts(&self, now_ms: i64) -> Result<Vec<PendingAlert>, StoreError>;
    /// The alert of `invariant` created at `created_ms` was delivered or given up: forget it
    /// (a newer one queued meanwhile stays).
    fn alert_done(&self, invariant: &str, created_ms: i64) -> Result<(), StoreError>;
    /// Tries the alert again at `next_attempt_ms`, with `payload` (a changed payload after the
    /// receiver refused the old one as invalid); it was not delivered, so it is no longer being
    /// sent.
    fn alert_later(
        &self,
        invariant: &str,
        created_ms: i64,
        payload: &str,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError>;
}
