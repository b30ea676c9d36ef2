//! The dry run's plan: what would happen to each pending intent. It only reads the store:
//! no claim, no reservation, no status, no audit entry.

use super::gates::{self, Decision};
use super::{blocking, Orchestrator};
use crate::app::App;
use crate::intent::{Intent, IntentStatus};
use crate::store::{IntentQuery, IntentStore, StoreError};
use std::collections::HashSet;

/// What a dry run says about one intent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub intent: i64,
    pub intent_type: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// The steps that would run, in order.
    pub steps: Vec<String>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "intent {} ({}): ", self.intent, self.intent_type)?;
        match &self.decision {
            Decision::Expired { reason } => write!(f, "would expire: {reason}"),
            Decision::Unmatched => write!(f, "unmatched: no playbook"),
            Decision::Denied {
                playbook,
                mode,
                denial,
            } => write!(
                f,
                "playbook {playbook} (mode {mode}) would be denied by the {} gate: {}",
                denial.gate.as_str(),
                denial.reason
            ),
            Decision::Run { playbook, mode, .. } => {
                write!(
                    f,
                    "playbook {playbook} (mode {mode}) would run: {}",
                    self.steps.join("; ")
                )
            }
        }
    }
}

/// Evaluates the gates for one intent without acting (blocking).
pub fn plan(app: &App, intent: &Intent, holder: &str) -> Result<Plan, StoreError> {
    let decision = gates::evaluate(app, intent, holder, false)?;
    let steps = match &decision {
        Decision::Run { playbook, mode, .. } => {
            let pb = &app.config.orchestrator.playbooks[playbook];
            pb.steps_for(&pb.steps, mode)
                .map(|s| s.action.to_string())
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(Plan {
        intent: intent.id,
        intent_type: intent.intent_type.clone(),
        decision,
        steps,
    })
}

impl Orchestrator {
    /// Dry run: what would happen to each pending intent not in `seen` (which it extends).
    pub async fn plan_pending(&self, seen: &mut HashSet<i64>) -> Result<Vec<Plan>, StoreError> {
        let app = self.app.clone();
        let holder = self.holder.clone();
        let fresh: Vec<i64> = seen.iter().copied().collect();
        let plans = blocking(move || -> Result<Vec<Plan>, StoreError> {
            let pending = app.store()?.intents(&IntentQuery {
                status: Some(IntentStatus::Pending),
                ..Default::default()
            })?;
            let mut out = Vec::new();
            for i in pending.into_iter().rev() {
                if fresh.contains(&i.id) {
                    continue;
                }
                out.push(plan(&app, &i, &holder)?);
            }
            Ok(out)
        })
        .await?;
        seen.extend(plans.iter().map(|p| p.intent));
        Ok(plans)
    }
}
