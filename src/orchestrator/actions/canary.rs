//! `{ canary = "judge", candidate = { gpu_memory_utilization = "{data.util}" } }`: run the
//! canary `[canaries.judge]` with these candidate settings (templates fill in from the intent
//! in every string). In a playbook's `predictive` mode the canary starts nothing and the step
//! reports what it would do and whether the gates pass; in any other mode it runs for real.
//!
//! The step succeeds only when the candidate is promoted, so the steps after it are the
//! playbook's promote steps (they run only then) and a failure runs `on_failure`; a promoted
//! run of an escalated playbook ends `done`, which clears the escalation flag. The canary is
//! bounded by its own timeouts (health, probe, restore SLA), not the step's `timeout`: it must
//! always get to restore production.

use super::{fill_json, Action, StepContext};
use crate::canary::{Mode, Outcome, PathChoice, Request};
use crate::sources::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The `[canaries.NAME]` to run.
    #[serde(rename = "canary")]
    pub name: String,
    /// Candidate settings over the canary's defaults; templates fill in from the intent.
    #[serde(default)]
    pub candidate: serde_json::Map<String, Value>,
    /// `spare` or `quiesced` instead of the canary's configured path.
    pub path: Option<PathChoice>,
}

impl Action for Canary {
    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err(
                "a `canary` step names a [canaries.NAME], like { canary = \"judge\" }".into(),
            );
        }
        Ok(())
    }

    fn templates(&self) -> Vec<&str> {
        fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
            match v {
                Value::String(s) => out.push(s),
                Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                Value::Object(o) => o.values().for_each(|x| strings(x, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        self.candidate.values().for_each(|v| strings(v, &mut out));
        out
    }

    fn describe(&self) -> String {
        format!("canary {}", self.name)
    }

    fn execute<'a>(
        &'a self,
        _timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let candidate = match fill_json(&Value::Object(self.candidate.clone()), ctx)? {
                Value::Object(m) => m,
                _ => unreachable!("an object fills in as an object"),
            };
            let mode = if ctx.mode == "predictive" {
                Mode::Predictive
            } else {
                Mode::Canary
            };
            let req = Request {
                candidate,
                path: self.path,
                mode,
                promote: true,
            };
            let report = crate::canary::run(ctx.app.clone(), &self.name, req)
                .await
                .map_err(|e| e.to_string())?;
            let details = serde_json::to_value(&report).unwrap_or(Value::Null);
            match report.result {
                Outcome::Promoted => Ok(details),
                // A prediction informs; whether its gates pass is in the details.
                _ if mode == Mode::Predictive => Ok(details),
                other => Err(format!(
                    "canary {} {}: {}",
                    self.name,
                    other.as_str(),
                    report.reason
                )),
            }
        })
    }
}
