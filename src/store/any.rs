//! `AnyStore`: the store the app opened, SQLite or PostgreSQL, behind one concrete type, so
//! callers name the concern traits they use exactly as they did with one backend.

use super::*;
use crate::audit::AuditEntry;
use crate::escalation::{Flag, Symptom, SymptomPolicy, SymptomRecorded};
use crate::event::Data;
use crate::intent::{Intent, IntentStatus, NewIntent};
use crate::sources::SourceState;
use std::collections::BTreeMap;

/// One of the store backends.
pub struct AnyStore(Box<dyn Store>);

impl AnyStore {
    pub fn new(store: impl Store + 'static) -> Self {
        Self(Box::new(store))
    }

    /// The backend itself.
    pub fn inner(&self) -> &dyn Store {
        &*self.0
    }

    /// `Ok` when the store can keep what it is given, else what is wrong, in words.
    pub fn health(&self) -> Result<(), String> {
        self.0.health()
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.0.backend()
    }
}

impl Store for AnyStore {
    fn health(&self) -> Result<(), String> {
        self.0.health()
    }

    fn backend(&self) -> &'static str {
        self.0.backend()
    }
}

/// `impl TRAIT for AnyStore`, every method passed to the backend.
macro_rules! delegate {
    ($trait:ident { $(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)* }) => {
        impl $trait for AnyStore {
            $(fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.0.$name($($arg),*)
            })*
        }
    };
}

delegate!(IntentStore {
    fn put_intent(&self, intent: &NewIntent, now_ms: i64, dedup_window_ms: i64) -> Result<Put, StoreError>;
    fn intents(&self, query: &IntentQuery) -> Result<Vec<Intent>, StoreError>;
    fn intent(&self, id: i64) -> Result<Option<Intent>, StoreError>;
    fn set_intent_status(&self, id: i64, status: IntentStatus, note: Option<&str>, now_ms: i64) -> Result<(), StoreError>;
    fn prune_intents(&self, before_ms: i64) -> Result<usize, StoreError>;
    fn intent_counts(&self) -> Result<Vec<(IntentStatus, u64)>, StoreError>;
    fn put_intent_once(&self, intent: &NewIntent, receipt: &str, now_ms: i64, dedup_window_ms: i64) -> Result<Put, StoreError>;
});

delegate!(EscalationStore {
    fn record_symptom(&self, kind: &str, meta: &Data, now_ms: i64, policy: SymptomPolicy) -> Result<SymptomRecorded, StoreError>;
    fn symptoms(&self, kind: Option<&str>, since_ms: i64, limit: usize) -> Result<Vec<Symptom>, StoreError>;
    fn symptom_counts(&self, since_ms: i64) -> Result<Vec<(String, u32)>, StoreError>;
    fn flags(&self) -> Result<Vec<Flag>, StoreError>;
    fn clear_flag(&self, kind: &str, scope: Scope, now_ms: i64) -> Result<Option<Flag>, StoreError>;
    fn prune_symptoms(&self, before_ms: i64) -> Result<usize, StoreError>;
});

delegate!(RunStore {
    fn claim_intent(&self, holder: &str, lease_ms: i64, intent_ttl_ms: i64, now_ms: i64) -> Result<Option<Claim>, StoreError>;
    fn running_intents(&self) -> Result<Vec<Lease>, StoreError>;
    fn take_over_intent(&self, id: i64, old_holder: Option<&str>, new_holder: &str, lease_ms: i64, now_ms: i64) -> Result<Option<i64>, StoreError>;
    fn set_intent_status_fenced(&self, lease: &LeaseFence, status: IntentStatus, note: &str, now_ms: i64) -> Result<bool, StoreError>;
    fn check_fence(&self, fence: &Fence, now_ms: i64) -> Result<bool, StoreError>;
    fn defer_intent(&self, lease: &LeaseFence, lock: &str, note: &str, now_ms: i64) -> Result<Option<bool>, StoreError>;
    fn begin_run(&self, req: &RunRequest, now_ms: i64, commit: bool) -> Result<Result<RunRecord, Refusal>, StoreError>;
    fn run_progress(&self, run_id: i64, step: i64, downtime_since: Option<i64>, fence: &Fence, now_ms: i64) -> Result<bool, StoreError>;
    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<Settled, StoreError>;
    fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError>;
    fn runs(&self, playbook: Option<&str>, since_ms: i64, open_only: bool) -> Result<Vec<RunRecord>, StoreError>;
    fn budget_usage(&self, budget: &str, day: &str) -> Result<BudgetUsage, StoreError>;
    fn acquire_lock(&self, name: &str, scope: Scope, holder: &str, lease_ms: i64, now_ms: i64) -> Result<Result<(), LockRecord>, StoreError>;
    fn release_lock(&self, name: &str, holder: &str) -> Result<bool, StoreError>;
    fn renew_leases(&self, holder: &str, lease_ms: i64, now_ms: i64) -> Result<usize, StoreError>;
    fn locks(&self) -> Result<Vec<LockRecord>, StoreError>;
    fn prune_runs(&self, before_ms: i64) -> Result<usize, StoreError>;
});

delegate!(AuditStore {
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError>;
    fn audit_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
    fn prune_audit(&self, before_ms: i64) -> Result<usize, StoreError>;
});

delegate!(InvariantStore {
    fn invariant_states(&self) -> Result<BTreeMap<String, InvariantState>, StoreError>;
    fn save_invariant_state(&self, id: &str, state: &InvariantState, now_ms: i64) -> Result<(), StoreError>;
    fn invariant_sightings(&self, id: &str, keys: &[String], now_ms: i64) -> Result<Vec<i64>, StoreError>;
    fn queue_alert(&self, alert: &PendingAlert) -> Result<bool, StoreError>;
    fn due_alerts(&self, now_ms: i64) -> Result<Vec<PendingAlert>, StoreError>;
    fn alert_done(&self, invariant: &str, created_ms: i64) -> Result<(), StoreError>;
    fn alert_later(&self, invariant: &str, created_ms: i64, payload: &str, next_attempt_ms: i64) -> Result<(), StoreError>;
});

delegate!(SourceStore {
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError>;
    fn source_states(&self) -> Result<Vec<SourceState>, StoreError>;
    fn checkpoint(&self, source: &str, path: &str) -> Result<Option<Checkpoint>, StoreError>;
    fn save_checkpoint(&self, source: &str, path: &str, c: &Checkpoint) -> Result<(), StoreError>;
});

delegate!(CanaryStore {
    fn begin_canary(&self, run: &NewCanaryRun, now_ms: i64, commit: bool) -> Result<Result<i64, Refusal>, StoreError>;
    fn canary_restore_pending(&self, id: i64, down_since: i64) -> Result<(), StoreError>;
    fn end_canary(&self, id: i64, end: &CanaryEnd) -> Result<bool, StoreError>;
    fn canary_run(&self, id: i64) -> Result<Option<CanaryRunRecord>, StoreError>;
    fn canary_runs(&self, canary: Option<&str>, limit: usize) -> Result<Vec<CanaryRunRecord>, StoreError>;
    fn last_quiesced(&self, canary: &str) -> Result<Option<i64>, StoreError>;
    fn pending_restores(&self) -> Result<Vec<CanaryRunRecord>, StoreError>;
});

delegate!(UnitStore {
    fn put_unit(&self, rec: &UnitRecord) -> Result<(), StoreError>;
    fn unit(&self, name: &str) -> Result<Option<UnitRecord>, StoreError>;
    fn units(&self) -> Result<Vec<UnitRecord>, StoreError>;
});

delegate!(FleetStore {
    fn host(&self) -> &str;
    fn fleet(&self) -> Result<Vec<HostStatus>, StoreError>;
});
