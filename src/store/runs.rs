//! Runs and what gates reserve for them: claims and leases on intents, the run records,
//! downtime budgets, cooldowns and rate limits (read from past runs) and locks. Every
//! check-and-reserve is one transaction, so racing threads or processes sharing the store
//! cannot overspend a budget or both hold a lock. The words a denial is shown in are the
//! gates' (`orchestrator::gates`); the store says which check refused, with the numbers.

use super::StoreError;
use crate::audit::AuditEntry;
use crate::clock::ms_as_rfc3339;
use crate::intent::{Intent, IntentStatus};
use serde::Serialize;

/// The downtime a run wants charged to a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRequest {
    pub name: String,
    /// The window day the downtime is charged to, e.g. "2026-11-23".
    pub day: String,
    pub limit_ms: i64,
    pub want_ms: i64,
}

/// What a run needs from the store's gates, checked and reserved at once.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub intent_id: i64,
    pub playbook: String,
    pub mode: String,
    /// Who holds the lock: the orchestrator's holder and the intent, `HOST:PID:N/INTENT`.
    pub holder: String,
    pub cooldown_ms: Option<i64>,
    /// (count, within_ms)
    pub max_runs: Option<(u32, i64)>,
    pub lock: Option<String>,
    pub lease_ms: i64,
    pub budget: Option<BudgetRequest>,
}

/// Which of the store's checks refused a run, and the numbers it refused on.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The playbook ran less than its cooldown ago.
    Cooldown { remaining_ms: i64 },
    /// `runs` started within `within_ms` already, `max` allowed; the next may start in
    /// `next_in_ms`.
    RateLimit {
        runs: u32,
        max: u32,
        within_ms: i64,
        next_in_ms: i64,
    },
    /// Someone else holds the lock, for `remaining_ms` more.
    Lock {
        name: String,
        holder: String,
        remaining_ms: i64,
    },
    /// The budget's day cannot cover `want_ms` more.
    Budget {
        request: BudgetRequest,
        usage: BudgetUsage,
    },
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub intent_id: i64,
    pub playbook: String,
    pub mode: String,
    pub holder: String,
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub started_at: i64,
    #[serde(serialize_with = "ms_as_rfc3339::ser_opt")]
    pub ended_at: Option<i64>,
    pub result: Option<String>,
    pub budget: Option<String>,
    pub budget_day: Option<String>,
    pub reserved_ms: i64,
    pub downtime_ms: i64,
    pub lock_name: Option<String>,
    /// Index of the step in progress (for crash recovery).
    pub step: i64,
    /// Set while production is down.
    #[serde(serialize_with = "ms_as_rfc3339::ser_opt")]
    pub downtime_since: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockRecord {
    pub name: String,
    pub holder: String,
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub acquired_at: i64,
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub expires_at: i64,
}

/// A budget's day: downtime charged and reserved, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct BudgetUsage {
    pub used_ms: i64,
    pub reserved_ms: i64,
}

/// A running intent's claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub intent: i64,
    pub holder: Option<String>,
    pub expires_at: Option<i64>,
}

/// The end of a run and of its intent, written together by `RunStore::settle_run`.
#[derive(Debug, Clone)]
pub struct RunEnd<'a> {
    pub run_id: i64,
    pub downtime_ms: i64,
    pub intent_id: i64,
    /// The run's result is the intent's final status.
    pub status: IntentStatus,
    pub note: &'a str,
    pub now_ms: i64,
}

pub trait RunStore: Send + Sync {
    /// Takes the next pending intent (priority, then age) with a lease.
    fn claim_intent(
        &self,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Intent>, StoreError>;
    /// Running intents and their leases.
    fn running_intents(&self) -> Result<Vec<Lease>, StoreError>;
    /// Moves a running intent's lease from `old_holder` to `new_holder`; false when someone
    /// else got there first.
    fn take_over_intent(
        &self,
        id: i64,
        old_holder: Option<&str>,
        new_holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Checks cooldown, rate limit, lock and budget and, when all pass and `commit` is set,
    /// takes the lock, reserves the budget and records the run, in one transaction. Without
    /// `commit` nothing is written (a dry run).
    fn begin_run(
        &self,
        req: &RunRequest,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<RunRecord, Refusal>, StoreError>;
    /// Records progress, so a successor knows where a stopped run was.
    fn run_progress(
        &self,
        run_id: i64,
        step: i64,
        downtime_since: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Ends a run and its intent in one transaction: budget settled (the reservation released,
    /// the actual downtime charged), lock released, the run's result, the intent's status and
    /// note, and `audit`. A crash leaves all of it or none, so recovery never sees a finished
    /// run under an intent still running. The first end wins: when the run had already ended
    /// nothing is written and the result is false.
    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// One run by id.
    fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError>;
    /// Runs started after `since_ms` (of `playbook`, or all), newest first; `open_only` keeps
    /// the ones not ended.
    fn runs(
        &self,
        playbook: Option<&str>,
        since_ms: i64,
        open_only: bool,
    ) -> Result<Vec<RunRecord>, StoreError>;
    fn budget_usage(&self, budget: &str, day: &str) -> Result<BudgetUsage, StoreError>;
    /// Takes `name` for `holder` unless someone else holds an unexpired lease on it.
    fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError>;
    fn release_lock(&self, name: &str, holder: &str) -> Result<bool, StoreError>;
    /// Extends the leases `holder` has (intents, and locks held as `holder` or
    /// `holder/INTENT`); returns how many locks it still holds.
    fn renew_leases(&self, holder: &str, lease_ms: i64, now_ms: i64) -> Result<usize, StoreError>;
    fn locks(&self) -> Result<Vec<LockRecord>, StoreError>;
    /// Deletes finished runs started before `before_ms` and budget days before it with
    /// nothing reserved; returns how many rows went.
    fn prune_runs(&self, before_ms: i64) -> Result<usize, StoreError>;
}
