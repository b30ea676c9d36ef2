//! What each kind of step does. Templates (`{data.KEY}`, `{mode}`, `{reason}`, `{intent}`,
//! `{intent_type}`, `{playbook}`) fill in inside one argv element or JSON string; nothing is
//! ever passed through a shell.

use super::config::{Action, Step};
use crate::app::App;
use crate::intent::Intent;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub struct StepContext<'a> {
    pub app: &'a Arc<App>,
    pub http: &'a reqwest::Client,
    pub intent: &'a Intent,
    pub playbook: &'a str,
    pub mode: &'a str,
    pub run: i64,
    /// The orchestrator running the step, for the mark on its processes.
    pub holder: &'a str,
}

/// Fills the templates of one string.
pub fn fill(text: &str, ctx: &StepContext) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let name = &rest[i + 1..i + end];
        let value = match name {
            "mode" => Some(ctx.mode.to_string()),
            "reason" => Some(ctx.intent.reason.clone()),
            "intent" => Some(ctx.intent.id.to_string()),
            "intent_type" => Some(ctx.intent.intent_type.clone()),
            "playbook" => Some(ctx.playbook.to_string()),
            _ => match name.strip_prefix("data.") {
                Some(key) => match ctx.intent.data.get(key) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(v) => Some(v.to_string()),
                    None => {
                        return Err(format!(
                            "template {{data.{key}}}: intent {} has no data field {key:?}",
                            ctx.intent.id
                        ))
                    }
                },
                // Not a template (JSON in an argument, say): keep it as written.
                None => None,
            },
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..=i + end]),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn fill_json(v: &Value, ctx: &StepContext) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(fill(s, ctx)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| fill_json(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), fill_json(x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Runs one step; Ok with details for the audit trail, or Err with what went wrong.
pub async fn execute(
    step: &Step,
    timeout: Duration,
    ctx: &StepContext<'_>,
) -> Result<Value, String> {
    match &step.action {
        Action::Run(argv) => {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| fill(a, ctx))
                .collect::<Result<_, _>>()?;
            command(&argv, timeout, ctx).await
        }
        Action::Systemd { verb, unit } => {
            let mut argv = ctx.app.config.orchestrator.settings.systemctl.clone();
            argv.push(verb.clone());
            argv.push(fill(unit, ctx)?);
            command(&argv, timeout, ctx).await
        }
        Action::Webhook { url, body } => {
            let url = fill(url, ctx)?;
            let body = match body {
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
        }
        Action::Symptom(kind) => {
            let kind = fill(kind, ctx)?;
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
        }
        Action::ClearEscalation(kind) => {
            let kind = fill(kind, ctx)?;
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
        }
        Action::Log(text) => {
            let text = fill(text, ctx)?;
            tracing::info!(playbook = ctx.playbook, intent = ctx.intent.id, "{text}");
            Ok(json!({"text": text}))
        }
    }
}

/// Output kept in the audit trail per stream: the end, where errors usually are.
const AUDIT_TAIL: usize = 2048;

fn last(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

async fn command(
    argv: &[String],
    timeout: Duration,
    ctx: &StepContext<'_>,
) -> Result<Value, String> {
    let out = crate::exec::Cmd::new(argv.to_vec(), timeout)
        .env("VIGIL_INTENT", ctx.intent.id.to_string())
        .env("VIGIL_INTENT_TYPE", ctx.intent.intent_type.clone())
        .env("VIGIL_PLAYBOOK", ctx.playbook)
        .env("VIGIL_MODE", ctx.mode)
        // Marks the step's processes, so recovery can find them if this vigil dies.
        .env(
            super::orphans::MARK,
            super::orphans::token(ctx.holder, ctx.run),
        )
        .run()
        .await
        .map_err(|e| e.to_string())?;
    let (stdout, stderr) = (last(&out.stdout, AUDIT_TAIL), last(&out.stderr, AUDIT_TAIL));
    let details = json!({
        "argv": argv, "result": out.describe(), "elapsed_s": out.duration.as_secs_f64(),
        "stdout_tail": stdout, "stderr_tail": stderr,
    });
    if out.success() {
        Ok(details)
    } else {
        let said = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        Err(format!(
            "{} {}; output: {}",
            argv[0],
            out.describe(),
            last(said.trim_end(), 300)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn templates_fill_inside_one_element_and_leave_other_braces() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::parse("t.toml", "").unwrap();
        let app = Arc::new(App::new(
            config,
            dir.path().to_path_buf(),
            Arc::new(ManualClock::at("2026-01-01T00:00:00Z")),
        ));
        let intent = Intent {
            id: 7,
            intent_type: "alert_gpu_oom".into(),
            priority: 9,
            reason: "OOM $(reboot)".into(),
            data: json!({"alloc_gib": 2.5, "name": "a b"})
                .as_object()
                .unwrap()
                .clone(),
            created_at: 0,
            updated_at: 0,
            status: crate::intent::IntentStatus::Running,
            dedup_key: "k".into(),
            origin: "test".into(),
            note: None,
        };
        let http = reqwest::Client::new();
        let ctx = StepContext {
            app: &app,
            http: &http,
            intent: &intent,
            playbook: "pb",
            mode: "canary",
            run: 1,
            holder: "h:1:0",
        };
        assert_eq!(
            fill("--alloc={data.alloc_gib}", &ctx).unwrap(),
            "--alloc=2.5"
        );
        assert_eq!(fill("{data.name}", &ctx).unwrap(), "a b");
        assert_eq!(fill("{reason}", &ctx).unwrap(), "OOM $(reboot)");
        assert_eq!(
            fill("{mode}/{playbook}/{intent}/{intent_type}", &ctx).unwrap(),
            "canary/pb/7/alert_gpu_oom"
        );
        assert_eq!(
            fill("{\"json\": 1} {unknown", &ctx).unwrap(),
            "{\"json\": 1} {unknown"
        );
        let e = fill("{data.missing}", &ctx).unwrap_err();
        assert!(e.contains("no data field \"missing\""), "{e}");
    }
}
