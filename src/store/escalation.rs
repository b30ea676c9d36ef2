//! Symptoms and escalation flags as stored; the policy and the types are `crate::escalation`'s.

use super::{Scope, StoreError};
use crate::escalation::{Flag, Symptom, SymptomPolicy, SymptomRecorded};
use crate::event::Data;

pub trait EscalationStore: Send + Sync {
    /// Records a symptom and, in the same transaction, arms its flag when `policy` says so.
    fn record_symptom(
        &self,
        kind: &str,
        meta: &Data,
        now_ms: i64,
        policy: SymptomPolicy,
    ) -> Result<SymptomRecorded, StoreError>;
    /// Symptoms (of `kind`, or all) after `since_ms`, newest first, at most `limit`.
    fn symptoms(
        &self,
        kind: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Symptom>, StoreError>;
    /// Symptom counts by kind after `since_ms`.
    fn symptom_counts(&self, since_ms: i64) -> Result<Vec<(String, u32)>, StoreError>;
    /// Every flag row this host sees (its own, the fleet's), armed or not, by kind.
    fn flags(&self) -> Result<Vec<Flag>, StoreError>;
    /// Clears `kind`'s flags this host sees and keeps a cleared row in `scope`; returns the
    /// armed one, if any (so the caller can audit the change). Symptoms before the clear stop
    /// counting towards a new flag.
    fn clear_flag(&self, kind: &str, scope: Scope, now_ms: i64)
        -> Result<Option<Flag>, StoreError>;
    /// Deletes symptoms older than `before_ms`; returns how many.
    fn prune_symptoms(&self, before_ms: i64) -> Result<usize, StoreError>;
}
