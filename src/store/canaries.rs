//! Canary runs as stored: one row per run (spare, quiesced, predictive or denied), with the
//! downtime it spent and its judgement, and, while production is stopped for a quiesced run,
//! the pending restore the next daemon start finishes if this one dies. The quiesced path's
//! cooldown and budget are checked and reserved in one transaction, in the same budget ledger
//! playbook runs charge (`budget_ledger`).

use super::{BudgetRequest, Refusal, StoreError};
use serde::Serialize;

/// A canary run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryRunRecord {
    pub id: i64,
    pub canary: String,
    /// `canary` (it starts things) or `predictive` (it starts nothing).
    pub mode: String,
    /// `spare` or `quiesced`, once chosen.
    pub path: Option<String>,
    pub port: Option<u16>,
    #[serde(serialize_with = "crate::clock::ms_as_rfc3339::ser")]
    pub started_at: i64,
    #[serde(serialize_with = "crate::clock::ms_as_rfc3339::ser_opt")]
    pub ended_at: Option<i64>,
    /// `promoted`, `rolled_back`, `denied`, `failed`, `restore_failed` or `predicted`; `None`
    /// while it runs.
    pub result: Option<String>,
    pub reason: Option<String>,
    pub duration_ms: i64,
    pub downtime_ms: i64,
    pub budget: Option<String>,
    pub budget_day: Option<String>,
    pub reserved_ms: i64,
    /// Set from just before production is stopped until it is restored.
    pub restore_pending: bool,
    /// When production was stopped (ms, vigil's clock), while it is.
    pub down_since: Option<i64>,
    /// The judgement and the rest of the report, as JSON.
    pub report: Option<serde_json::Value>,
}

/// A run to record. With `budget` or `cooldown_ms` (the quiesced path) those are checked and
/// the budget reserved in the same transaction as the insert.
#[derive(Debug, Clone)]
pub struct NewCanaryRun {
    pub canary: String,
    pub mode: String,
    pub path: Option<String>,
    pub port: Option<u16>,
    pub budget: Option<BudgetRequest>,
    /// Quiesced runs of this canary that started less than this long ago refuse the run.
    pub cooldown_ms: Option<i64>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct CanaryEnd {
    pub result: String,
    pub reason: String,
    pub duration_ms: i64,
    /// Charged to the run's budget (its reservation is released).
    pub downtime_ms: i64,
    pub report: serde_json::Value,
    pub now_ms: i64,
}

pub trait CanaryStore: Send + Sync {
    /// Checks the cooldown and budget (when asked) and, if they pass and `commit` is set,
    /// reserves the budget and records the run; returns its id (0 without `commit`).
    fn begin_canary(
        &self,
        run: &NewCanaryRun,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<i64, Refusal>, StoreError>;
    /// Records that production is about to be stopped (`down_since`): from here until
    /// `end_canary` the run is a pending restore.
    fn canary_restore_pending(&self, id: i64, down_since: i64) -> Result<(), StoreError>;
    /// Ends a run and settles its budget (reservation released, downtime charged) in one
    /// transaction; false when it had already ended (the first end wins).
    fn end_canary(&self, id: i64, end: &CanaryEnd) -> Result<bool, StoreError>;
    fn canary_run(&self, id: i64) -> Result<Option<CanaryRunRecord>, StoreError>;
    /// Runs of `canary` (or all), newest first, at most `limit`.
    fn canary_runs(
        &self,
        canary: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CanaryRunRecord>, StoreError>;
    /// The start of the last quiesced run of `canary` that was not denied: what the cooldown
    /// counts from.
    fn last_quiesced(&self, canary: &str) -> Result<Option<i64>, StoreError>;
    /// Runs that stopped production and never ended: a daemon died under them.
    fn pending_restores(&self) -> Result<Vec<CanaryRunRecord>, StoreError>;
}
