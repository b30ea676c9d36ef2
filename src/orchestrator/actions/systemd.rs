//! `{ systemd = "restart", unit = "NAME.service" }`: start, stop, restart or reload a unit
//! with the command `[orchestrator] systemctl` names.

use super::{command, fill_argv, Action, StepContext, StepEnv};
use crate::sources::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

const VERBS: [&str; 4] = ["start", "stop", "restart", "reload"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Systemd {
    /// The verb: start, stop, restart or reload.
    #[serde(rename = "systemd")]
    pub verb: String,
    /// The unit; templates fill in.
    #[serde(default)]
    pub unit: String,
}

impl Action for Systemd {
    fn check(&self) -> Result<(), String> {
        if !VERBS.contains(&self.verb.as_str()) {
            return Err(format!(
                "systemd {:?} is not start, stop, restart or reload",
                self.verb
            ));
        }
        if self.unit.is_empty() {
            return Err("a `systemd` step needs `unit = \"NAME.service\"`".into());
        }
        Ok(())
    }

    fn templates(&self) -> Vec<&str> {
        vec![&self.unit]
    }

    fn describe(&self) -> String {
        format!("systemd {} {}", self.verb, self.unit)
    }

    fn execute<'a>(
        &'a self,
        timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let mut argv = ctx.app.config.orchestrator.settings.systemctl.clone();
            argv.push(self.verb.clone());
            argv.extend(fill_argv(std::slice::from_ref(&self.unit), ctx)?);
            command(&argv, timeout, &StepEnv::default(), ctx).await
        })
    }
}
