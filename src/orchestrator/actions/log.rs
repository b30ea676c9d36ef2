//! `{ log = "TEXT" }`: write a line to vigil's log (and the step's audit entry).

use super::{fill, Action, StepContext};
use crate::sources::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// The text; templates fill in.
    #[serde(rename = "log")]
    pub text: String,
}

impl Action for Log {
    fn templates(&self) -> Vec<&str> {
        vec![&self.text]
    }

    fn describe(&self) -> String {
        format!("log {:?}", self.text)
    }

    fn execute<'a>(
        &'a self,
        _timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let text = fill(&self.text, ctx)?;
            tracing::info!(playbook = ctx.playbook, intent = ctx.intent.id, "{text}");
            Ok(json!({"text": text}))
        })
    }
}
