//! `{ webhook = "https://...", body = { ... } }`: POST JSON to a URL; a 2xx answer is success.
//! Without `body` the intent itself is sent; templates fill in the URL and the body's strings.

use super::{fill, fill_json, Action, StepContext};
use crate::sources::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// An http:// or https:// URL.
    #[serde(rename = "webhook")]
    pub url: String,
    /// The JSON to send, as a TOML table.
    pub body: Option<Value>,
}

impl Action for Webhook {
    fn check(&self) -> Result<(), String> {
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err(format!(
                "webhook {:?} is not an http:// or https:// URL",
                self.url
            ));
        }
        Ok(())
    }

    fn templates(&self) -> Vec<&str> {
        let mut t = vec![self.url.as_str()];
        if let Some(body) = &self.body {
            super::json_strings(body, &mut t);
        }
        t
    }

    fn describe(&self) -> String {
        format!("webhook POST {}", self.url)
    }

    fn execute<'a>(
        &'a self,
        timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let url = fill(&self.url, ctx)?;
            let body = match &self.body {
                Some(b) => fill_json(b, ctx)?,
                None => json!({
                    "intent": ctx.intent.id, "intent_type": ctx.intent.intent_type,
                    "playbook": ctx.playbook, "mode": ctx.mode, "reason": ctx.intent.reason,
                    "data": ctx.intent.data,
                }),
            };
            let resp = ctx
                .http
                .post(&url)
                .json(&body)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| format!("webhook {url}: {e}"))?;
            let status = resp.status();
            if status.is_success() {
                Ok(json!({"url": url, "status": status.as_u16()}))
            } else {
                Err(format!("webhook {url} answered {status}; expected 2xx"))
            }
        })
    }
}
