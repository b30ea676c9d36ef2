//! `{ symptom = "KIND" }`: record a symptom of this kind in the ledger, with the intent's data;
//! it may arm an escalation flag.

use super::{fill, Action, StepContext};
use crate::sources::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symptom {
    /// The symptom kind; templates fill in.
    #[serde(rename = "symptom")]
    pub kind: String,
}

impl Action for Symptom {
    fn templates(&self) -> Vec<&str> {
        vec![&self.kind]
    }

    fn describe(&self) -> String {
        format!("record symptom {}", self.kind)
    }

    fn execute<'a>(
        &'a self,
        _timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let kind = fill(&self.kind, ctx)?;
            let app = ctx.app.clone();
            let mut meta = ctx.intent.data.clone();
            meta.insert("intent".into(), ctx.intent.id.into());
            let k = kind.clone();
            let rec =
                tokio::task::spawn_blocking(move || crate::escalation::record(&app, &k, meta))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            Ok(json!({"kind": kind, "count": rec.count, "armed": rec.armed.is_some()}))
        })
    }
}
