//! Runs and what gates reserve for them: claims and leases on intents, the run records,
//! downtime budgets, cooldowns and rate limits (read from past runs) and locks. Every
//! check-and-reserve is one transaction, so racing threads or processes sharing the store
//! cannot overspend a budget or both hold a lock. The words a denial is shown in are the
//! gates' (`orchestrator::gates`); the store says which check refused, with the numbers.
//!
//! Fencing: a claim or take-over of an intent's lease, and every acquisition of a lock, gets an
//! epoch that only grows. A holder proves with a `Fence` (holder and epoch) that it still holds
//! what it acts under, and the store checks it in the same transaction as the write it guards
//! (`begin_run`, `run_progress`, `settle_run`, `defer_intent`): a holder that was stopped
//! (SIGSTOP, a long GC-like stall) and whose lease another took over writes nothing.
//!
//! Stamps in the future (the clock was ahead, then corrected) count as now: `begin_run`
//! rewrites a playbook's future run starts to now before its cooldown and rate limit read
//! them, so a cooldown never has more than its length left and a rate-limit window restarts.

use super::{Scope, StoreError};
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
    /// `Host`: this host's downtime against the limit; `Fleet`: every host's.
    pub scope: Scope,
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
    /// Whose runs of the playbook the cooldown counts: this host's or the fleet's.
    pub cooldown_scope: Scope,
    /// (count, within_ms)
    pub max_runs: Option<(u32, i64)>,
    pub max_runs_scope: Scope,
    pub lock: Option<String>,
    /// A host lock excludes this host's runs; a fleet lock every host's, and one whose holder
    /// stopped renewing it is not taken over (see `Refusal::Lock`).
    pub lock_scope: Scope,
    pub lease_ms: i64,
    pub budget: Option<BudgetRequest>,
    /// The intent's lease the run is started under, checked in the same transaction (a
    /// holder that lost it records nothing: `Err(Refusal::LeaseLost)`). `None` for callers
    /// that hold no lease (a dry run, tools).
    pub lease: Option<LeaseFence>,
}

/// An intent's lease as its holder knows it: the holder (`host:pid:n`) and the epoch of the
/// claim or take-over that gave it the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFence {
    pub intent: i64,
    pub holder: String,
    pub epoch: i64,
}

/// A lock as its holder knows it: the name, the holder (`host:pid:n/INTENT`) and the epoch of
/// the acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

/// What a run's holder must still hold to act: the intent's lease and, if the run took one,
/// its lock. Held means same holder, same epoch, and not expired at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: LeaseFence,
    pub lock: Option<LockFence>,
}

/// A claimed intent and the epoch of the claim (for its `LeaseFence`).
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub intent: Intent,
    pub epoch: i64,
}

impl std::ops::Deref for Claim {
    type Target = Intent;

    fn deref(&self) -> &Intent {
        &self.intent
    }
}

/// What `RunStore::settle_run` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The run, its intent and the audit entry were written.
    Ended,
    /// The run had already ended (another ending came first): nothing was written.
    AlreadyEnded,
    /// The fence no longer holds (another holder took the lease or the lock, or it expired):
    /// nothing was written.
    LeaseLost,
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
    /// The caller's lease on the intent is gone (taken over or expired): nothing recorded.
    LeaseLost,
    /// Someone else holds the lock, for `remaining_ms` more. Negative on a fleet lock whose
    /// holder stopped renewing it (its host died or stalled): it stays held, since that host
    /// may still be acting, until the host settles its run or an operator frees it.
    Lock {
        name: String,
        holder: String,
        remaining_ms: i64,
        acquired_at: i64,
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
    /// The budget's scope key: the host's name, or `*` for the fleet.
    pub budget_scope: String,
    pub reserved_ms: i64,
    pub downtime_ms: i64,
    pub lock_name: Option<String>,
    /// The epoch of the run's acquisition of `lock_name` (0 without a lock).
    pub lock_epoch: i64,
    /// Index of the step in progress (for crash recovery).
    pub step: i64,
    /// Set while production is down.
    #[serde(serialize_with = "ms_as_rfc3339::ser_opt")]
    pub downtime_since: Option<i64>,
    /// The host that ran it (the only one that may recover it).
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockRecord {
    pub name: String,
    /// The host whose lock it is, or `*` for a fleet lock.
    pub scope: String,
    pub holder: String,
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub acquired_at: i64,
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub expires_at: i64,
    /// Grows with every acquisition of any lock: a holder's proof that the lock is still the
    /// one it took.
    pub epoch: i64,
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
    /// Grows with every claim and take-over of the intent.
    pub epoch: i64,
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
    /// What the settler must still hold; `None` settles unfenced (tools and tests).
    pub fence: Option<&'a Fence>,
}

pub trait RunStore: Send + Sync {
    /// Takes the next pending intent (priority, then age) with a lease and a new epoch.
    /// An intent deferred for a lock (`defer_intent`) is skipped while that lock is held,
    /// unless it was created more than `intent_ttl_ms` ago (then it is taken, to be expired).
    fn claim_intent(
        &self,
        holder: &str,
        lease_ms: i64,
        intent_ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Claim>, StoreError>;
    /// Running intents and their leases.
    fn running_intents(&self) -> Result<Vec<Lease>, StoreError>;
    /// Moves a running intent's lease from `old_holder` to `new_holder` with a new epoch,
    /// which it returns; `None` when someone else got there first.
    fn take_over_intent(
        &self,
        id: i64,
        old_holder: Option<&str>,
        new_holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Sets a claimed intent's status and note if `lease` still holds at `now_ms`; false
    /// (nothing written) when it does not.
    fn set_intent_status_fenced(
        &self,
        lease: &LeaseFence,
        status: IntentStatus,
        note: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Whether `fence` still holds at `now_ms`.
    fn check_fence(&self, fence: &Fence, now_ms: i64) -> Result<bool, StoreError>;
    /// Puts a claimed intent back to pending to wait for `lock`, with `note`, if `lease`
    /// still holds. `None`: the lease was lost, nothing written; `Some(first)`: deferred,
    /// `first` when it had not waited for a lock before (audit it once, not per retry).
    fn defer_intent(
        &self,
        lease: &LeaseFence,
        lock: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<Option<bool>, StoreError>;
    /// Checks the lease (`req.lease`), cooldown, rate limit, lock and budget and, when all
    /// pass and `commit` is set, takes the lock, reserves the budget and records the run, in
    /// one transaction. Without `commit` nothing is written (a dry run). Run starts of the
    /// playbook stamped in the future are first set to now (kept even when refused).
    fn begin_run(
        &self,
        req: &RunRequest,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<RunRecord, Refusal>, StoreError>;
    /// Records progress, so a successor knows where a stopped run was, if `fence` still
    /// holds at `now_ms`; false (nothing written) when it does not.
    fn run_progress(
        &self,
        run_id: i64,
        step: i64,
        downtime_since: Option<i64>,
        fence: &Fence,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Ends a run and its intent in one transaction: budget settled (the reservation released,
    /// the actual downtime charged), lock released, the run's result, the intent's status and
    /// note, and `audit`. A crash leaves all of it or none, so recovery never sees a finished
    /// run under an intent still running. The first end wins: when the run had already ended
    /// nothing is written (`AlreadyEnded`); nor when `end.fence` no longer holds
    /// (`LeaseLost`).
    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<Settled, StoreError>;
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
    /// A budget's day as this host's gate sees it: its own rows and the fleet's.
    fn budget_usage(&self, budget: &str, day: &str) -> Result<BudgetUsage, StoreError>;
    /// Takes `name` (in `scope`) for `holder` unless someone else holds an unexpired lease
    /// on it (or, on a fleet lock, any lease: see `Refusal::Lock`).
    fn acquire_lock(
        &self,
        name: &str,
        scope: Scope,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError>;
    fn release_lock(&self, name: &str, holder: &str) -> Result<bool, StoreError>;
    /// Extends the unexpired leases `holder` has (intents, and locks held as `holder` or
    /// `holder/INTENT`); returns how many locks it still holds. An expired lease is lost, not
    /// renewed: another may have taken it over already.
    fn renew_leases(&self, holder: &str, lease_ms: i64, now_ms: i64) -> Result<usize, StoreError>;
    /// Every lock held, of every host and the fleet's, by name.
    fn locks(&self) -> Result<Vec<LockRecord>, StoreError>;
    /// Deletes finished runs started before `before_ms` and budget days before it with
    /// nothing reserved; returns how many rows went.
    fn prune_runs(&self, before_ms: i64) -> Result<usize, StoreError>;
}
