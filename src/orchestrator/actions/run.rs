//! `{ run = ["prog", "arg", ...] }`: run a command (argv, never a shell string) through
//! `crate::exec`; templates fill in within an element, never splitting it.

use super::{command, fill_argv, Action, StepContext, StepEnv};
use crate::sources::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// The argv; `{data.KEY}`, `{mode}`, `{reason}`, `{intent}`, `{playbook}` fill in.
    pub run: Vec<String>,
    /// Variables for the command, on top of a minimal base (`PATH`, `HOME`, `LANG`, ...).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Pass the daemon's whole environment on instead of the minimal base.
    #[serde(default)]
    pub inherit_env: bool,
}

impl Action for Run {
    fn check(&self) -> Result<(), String> {
        if self.run.is_empty() {
            return Err("`run` needs a program, like run = [\"/usr/bin/true\"]".into());
        }
        Ok(())
    }

    fn templates(&self) -> Vec<&str> {
        self.run.iter().map(String::as_str).collect()
    }

    fn describe(&self) -> String {
        format!("run {:?}", self.run)
    }

    fn execute<'a>(
        &'a self,
        timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let argv = fill_argv(&self.run, ctx)?;
            let env = StepEnv {
                vars: self.env.clone(),
                inherit: self.inherit_env,
            };
            command(&argv, timeout, &env, ctx).await
        })
    }
}
