//! `{ clear_escalation = "KIND" }`: disarm the escalation flag of a symptom kind.

use super::{fill, Action, StepContext};
use crate::sources::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearEscalation {
    /// The symptom kind whose flag is cleared; templates fill in.
    #[serde(rename = "clear_escalation")]
    pub kind: String,
}

impl Action for ClearEscalation {
    fn templates(&self) -> Vec<&str> {
        vec![&self.kind]
    }

    fn describe(&self) -> String {
        format!("clear escalation {}", self.kind)
    }

    fn execute<'a>(
        &'a self,
        _timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let kind = fill(&self.kind, ctx)?;
            let app = ctx.app.clone();
            let why = format!(
                "step of playbook {} (intent {})",
                ctx.playbook, ctx.intent.id
            );
            let k = kind.clone();
            let was = tokio::task::spawn_blocking(move || crate::escalation::clear(&app, &k, &why))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(json!({"kind": kind, "was_armed": was.is_some()}))
        })
    }
}
