//! Supervised units as stored: state, pid and start time (to adopt a unit after a daemon
//! restart), restart history (so a crash loop is not forgotten by restarting vigil) and
//! quarantine (which lasts until released).

use super::StoreError;
use serde::Serialize;

/// One unit's durable state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitRecord {
    pub name: String,
    /// `UnitState` as text: `running`, `quarantined`, ...
    pub state: String,
    pub tier: u8,
    /// The unit's leader process, while one runs.
    pub pid: Option<i32>,
    /// The leader's start time in clock ticks after boot (`/proc/PID/stat` field 22): a pid
    /// with another start time is another process.
    pub start_ticks: Option<u64>,
    /// The environment marker its processes carry (`VIGIL_UNIT_ID`), to find them all again.
    pub marker: Option<String>,
    /// Times (ms) of the restarts inside the unit's window.
    pub restarts: Vec<i64>,
    /// Restarts since the unit was configured (or last released).
    pub total_restarts: u64,
    /// The last exit, in words (`exit code 3`, `signal 9`).
    pub last_exit: Option<String>,
    /// The last output line before the last exit.
    pub last_error: Option<String>,
    /// The diagnostics bundle of the last quarantine.
    pub bundle: Option<String>,
    /// When the unit entered its state (ms).
    #[serde(serialize_with = "crate::clock::ms_as_rfc3339::ser")]
    pub since_ms: i64,
}

pub trait UnitStore: Send + Sync {
    /// Inserts or replaces the record of `rec.name`.
    fn put_unit(&self, rec: &UnitRecord) -> Result<(), StoreError>;
    fn unit(&self, name: &str) -> Result<Option<UnitRecord>, StoreError>;
    /// Every stored unit, by name.
    fn units(&self) -> Result<Vec<UnitRecord>, StoreError>;
}
