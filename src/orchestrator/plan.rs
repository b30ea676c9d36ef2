//! The dry run: what would happen to each pending intent, and what the rules' proposals and
//! symptoms would do. It only reads the store: no claim, reservation, status, symptom, flag
//! or audit entry. (Intents submitted through the inbox or the API are still taken in: they
//! are requests from outside, and the plan shows what would become of them.)

use super::gates::{self, Decision};
use super::{blocking, Orchestrator};
use crate::app::App;
use crate::intent::{Intent, IntentStatus};
use crate::rules::Output;
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

impl Plan {
    /// What would happen, in words, e.g. "playbook canary (mode default) would run: ...".
    pub fn outcome(&self) -> String {
        match &self.decision {
            Decision::Expired { reason } => format!("would expire: {reason}"),
            Decision::Unmatched => "unmatched: no playbook".to_string(),
            Decision::Denied {
                playbook,
                mode,
                denial,
            } => format!(
                "playbook {playbook} (mode {mode}) would be denied by the {} gate: {}",
                denial.gate.as_str(),
                denial.reason
            ),
            Decision::Deferred {
                playbook,
                mode,
                reason,
                ..
            } => format!("playbook {playbook} (mode {mode}) would wait: {reason}"),
            Decision::LeaseLost => "claimed by another vigil".to_string(),
            Decision::Run { playbook, mode, .. } => format!(
                "playbook {playbook} (mode {mode}) would run: {}",
                self.steps.join("; ")
            ),
        }
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "intent {} ({}): {}",
            self.intent,
            self.intent_type,
            self.outcome()
        )
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

/// What the rule engine's output would do, in words, without storing it (blocking): for each
/// proposal the plan of the intent it would make, for each symptom the count it would reach
/// and the flag it would arm. A dry run logs these instead of storing intents and symptoms.
pub fn rule_output(app: &App, out: &Output) -> Result<Vec<String>, StoreError> {
    let now = app.clock.now_ms();
    let mut lines = Vec::new();
    for p in &out.proposals {
        let intent = Intent {
            id: 0,
            intent_type: p.intent_type.clone(),
            priority: p.priority,
            reason: p.reason.clone(),
            data: p.data.clone(),
            created_at: now,
            updated_at: now,
            status: IntentStatus::Pending,
            dedup_key: String::new(),
            origin: format!("rule:{}", p.rule),
            note: None,
            host: crate::store::intent_host(&p.data, &app.config.host()),
        };
        let plan = plan(app, &intent, "dry-run")?;
        lines.push(format!(
            "rule {} would propose {} (priority {}): {}",
            p.rule,
            p.intent_type,
            p.priority,
            plan.outcome()
        ));
    }
    for s in &out.symptoms {
        let (count, arms) = crate::escalation::preview(app, &s.kind)?;
        lines.push(match arms {
            Some(flag) => format!(
                "rule {} would record symptom {} and arm its flag: {}",
                s.rule, s.kind, flag.reason
            ),
            None => format!(
                "rule {} would record symptom {} ({count} in the window)",
                s.rule, s.kind
            ),
        });
    }
    Ok(lines)
}
