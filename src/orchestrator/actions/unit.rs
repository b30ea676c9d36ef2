//! `{ unit = "restart", name = "judge" }`: start, stop, restart, release or snapshot a unit the
//! daemon supervises, through the same function as `vigil units VERB NAME` and the API, and
//! done when the step ends (a start waits until the unit runs, or is ready when it has a
//! `ready` probe). With `downtime = true` / `restore = true` such a step charges the budget
//! like a `systemd` step.

use super::{fill, Action, StepContext};
use crate::sources::BoxFuture;
use crate::supervisor::Verb;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitStep {
    /// The verb: start, stop, restart, release or snapshot.
    #[serde(rename = "unit")]
    pub verb: String,
    /// The unit (`[units.NAME]`); templates fill in.
    #[serde(default)]
    pub name: String,
}

impl Action for UnitStep {
    fn check(&self) -> Result<(), String> {
        if Verb::parse(&self.verb).is_none() {
            return Err(format!(
                "unit {:?} is not start, stop, restart, release or snapshot",
                self.verb
            ));
        }
        if self.name.is_empty() {
            return Err("a `unit` step needs `name = \"UNIT\"` (a [units.NAME] section)".into());
        }
        Ok(())
    }

    fn templates(&self) -> Vec<&str> {
        vec![&self.name]
    }

    fn describe(&self) -> String {
        format!("unit {} {}", self.verb, self.name)
    }

    fn execute<'a>(
        &'a self,
        timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let verb = Verb::parse(&self.verb).ok_or("checked at load")?;
            let name = fill(&self.name, ctx)?;
            match tokio::time::timeout(timeout, crate::supervisor::act(ctx.app, &name, verb)).await
            {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "unit {} {name} did not finish within {}",
                    self.verb,
                    crate::config::human(timeout)
                )),
            }
        })
    }
}
