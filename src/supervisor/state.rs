//! A unit's state, as `vigil units list` shows it and the store keeps it.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Spawned; readiness not yet known.
    Starting,
    Running,
    /// Exited; waiting out the backoff before a restart.
    Backoff,
    /// Restarts ran out; escalation is under way.
    Exhausted,
    /// Disabled until released (`vigil units release NAME`).
    Quarantined,
    FailedOver,
    Stopped,
    /// Left running by a previous daemon and watched by this one; its output is not captured
    /// until its next restart.
    Adopted,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Starting => "starting",
            UnitState::Running => "running",
            UnitState::Backoff => "backoff",
            UnitState::Exhausted => "exhausted",
            UnitState::Quarantined => "quarantined",
            UnitState::FailedOver => "failed_over",
            UnitState::Stopped => "stopped",
            UnitState::Adopted => "adopted",
        }
    }

    pub fn parse(s: &str) -> Option<UnitState> {
        [
            UnitState::Starting,
            UnitState::Running,
            UnitState::Backoff,
            UnitState::Exhausted,
            UnitState::Quarantined,
            UnitState::FailedOver,
            UnitState::Stopped,
            UnitState::Adopted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Disabled until released: the host runs degraded without it.
    pub fn is_disabled(self) -> bool {
        matches!(
            self,
            UnitState::Exhausted | UnitState::Quarantined | UnitState::FailedOver
        )
    }

    /// A process of the unit is (or may be) alive.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            UnitState::Starting | UnitState::Running | UnitState::Adopted
        )
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended: an exit code or the signal that killed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Why vigil ended a live process itself (`unhealthy: ...`, `not ready within 5s`): such
    /// an end is a failure whatever the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ExitStatus {
    pub fn from_std(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Self {
            code: s.code(),
            signal: s.signal(),
            note: None,
        }
    }

    /// A status nobody could read (an adopted process's).
    pub fn unknown() -> Self {
        Self {
            code: None,
            signal: None,
            note: None,
        }
    }

    /// Neither a clean exit (0) nor known (an adopted process's status cannot be read), or
    /// ended by vigil because it was not healthy.
    pub fn failed(&self) -> bool {
        self.code != Some(0) || self.note.is_some()
    }

    pub fn describe(&self) -> String {
        if let Some(n) = &self.note {
            return n.clone();
        }
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "exit status unknown (adopted process)".into(),
        }
    }
}
