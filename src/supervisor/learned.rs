//! Learned playbooks: a fix that worked, kept against the failure's fingerprint, so the same
//! failure is handled without a human next time. `vigil units release NAME --fixed "what was
//! done" [--step ...]` records one as `DATA_DIR/playbooks/{unit}_{fingerprint}.json`; when the
//! unit exhausts its restarts again with the same fingerprint, its steps run (ordinary playbook
//! steps: `{ run = [...] }`, `{ unit = "restart", name = "other" }`, ...) and the unit is
//! started once more instead of being quarantined. How often that worked is counted.
//!
//! The fingerprint is the unit's last error lines with what changes from one occurrence to the
//! next (numbers, paths, hex, ids) normalized away, hashed.

use crate::app::App;
use crate::intent::{Intent, IntentStatus};
use crate::orchestrator::actions::{self, Step, StepContext};
use crate::supervisor::state::ExitStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Non-empty output lines the fingerprint is made of.
pub const FINGERPRINT_LINES: usize = 3;

/// A step of a learned playbook may take this long (its own `timeout` may say otherwise).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

static NORMALIZE: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
    [
        (
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            "<id>",
        ),
        (r#"(?:[A-Za-z]:)?(?:/[^\s:'",;()\[\]{}<>]+)+/?"#, "<path>"),
        (r"\b0x[0-9a-fA-F]+\b", "<hex>"),
        (
            r"\b[0-9a-fA-F]*[0-9][0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b",
            "<hex>",
        ),
        (
            r"\b[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*[0-9][0-9a-fA-F]*\b",
            "<hex>",
        ),
        (r"[0-9]+(?:\.[0-9]+)*", "<n>"),
        (r"\s+", " "),
    ]
    .into_iter()
    .map(|(re, to)| (regex::Regex::new(re).expect("valid regex"), to))
    .collect()
});

/// One line with numbers, paths, hex and ids replaced by placeholders.
pub fn normalize(line: &str) -> String {
    let mut s = line.trim().to_string();
    for (re, to) in NORMALIZE.iter() {
        // Hex words need at least one digit and one letter: "deadbeef42", not "failed".
        if *to == "<hex>" && !re.as_str().starts_with(r"\b0x") {
            s = re
                .replace_all(&s, |c: &regex::Captures| {
                    let m = &c[0];
                    if m.len() >= 6 {
                        "<hex>".to_string()
                    } else {
                        m.to_string()
                    }
                })
                .into_owned();
        } else {
            s = re.replace_all(&s, *to).into_owned();
        }
    }
    s
}

/// A failure's fingerprint: the hash (16 hex digits) of the last error lines of the run that
/// failed and how it ended, normalized (repeated lines once), and that normalized text.
pub fn fingerprint(run_lines: &[String], exit: &ExitStatus) -> (String, String) {
    let mut last: Vec<String> = Vec::new();
    for l in run_lines.iter().rev().filter(|l| !l.trim().is_empty()) {
        let n = normalize(l);
        if last.last() != Some(&n) {
            last.push(n);
        }
        if last.len() == FINGERPRINT_LINES {
            break;
        }
    }
    last.reverse();
    last.push(normalize(&exit.describe()));
    let text = last.join("\n");
    let hash = Sha256::digest(text.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    (hex, text)
}

/// A learned playbook as kept on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    pub unit: String,
    pub fingerprint: String,
    /// The normalized error lines the fingerprint hashes.
    pub failure: String,
    /// What was done, in the operator's words.
    pub fixed: String,
    /// Playbook steps as TOML inline tables, like `{ run = ["/usr/bin/rm", "/srv/x/lock"] }`.
    pub steps: Vec<String>,
    pub recorded_at: String,
    /// Times it ran, and times the unit then stayed up.
    pub runs: u64,
    pub successes: u64,
    pub last_run_at: Option<String>,
}

/// Where a unit's learned playbook for a fingerprint lives.
pub fn path(dir: &Path, unit: &str, fingerprint: &str) -> PathBuf {
    dir.join(format!("{unit}_{fingerprint}.json"))
}

/// The learned playbook of `unit` for `fingerprint`, if one was recorded.
pub fn find(dir: &Path, unit: &str, fingerprint: &str) -> Option<Learned> {
    let bytes = std::fs::read(path(dir, unit, fingerprint)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every learned playbook of `unit`.
pub fn for_unit(dir: &Path, unit: &str) -> Vec<Learned> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Learned> = entries
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .filter(|l: &Learned| l.unit == unit)
        .collect();
    out.sort_by(|a, b| a.recorded_at.cmp(&b.recorded_at));
    out
}

/// Keeps `l` (atomically: a reader sees the old file or the new).
pub fn save(dir: &Path, l: &Learned) -> std::io::Result<()> {
    crate::private_fs::create_dir(dir)?;
    let text = serde_json::to_vec_pretty(l).expect("a learned playbook serializes");
    crate::private_fs::write_atomic(&path(dir, &l.unit, &l.fingerprint), &text)
}

/// Counts a run (`worked: None`) or its outcome.
pub fn count(dir: &Path, unit: &str, fingerprint: &str, worked: Option<bool>, now_ms: i64) {
    let Some(mut l) = find(dir, unit, fingerprint) else {
        return;
    };
    match worked {
        None => {
            l.runs += 1;
            l.last_run_at = Some(crate::clock::rfc3339_ms(now_ms));
        }
        Some(true) => l.successes += 1,
        Some(false) => {}
    }
    if let Err(e) = save(dir, &l) {
        tracing::warn!(unit, "cannot count the learned playbook's run: {e}");
    }
}

/// Parses steps given as TOML inline tables, exactly as a playbook's `steps` take them.
pub fn parse_steps(unit: &str, steps: &[String]) -> Result<Vec<Step>, String> {
    let mut out = Vec::new();
    for (i, text) in steps.iter().enumerate() {
        let doc = format!("step = {text}\n");
        let file = format!("--step {}", i + 1);
        let src = crate::config::load::Source {
            file: &file,
            text: &doc,
        };
        let mut root = toml::de::DeTable::parse(&doc)
            .map_err(|e| src.from_toml(&e, 0).to_string())?
            .into_inner();
        let value = crate::config::load::take_key(&mut root, "step")
            .ok_or_else(|| format!("{file}: not a step"))?;
        let mut errors = Vec::new();
        let header = format!("the learned playbook of {unit}");
        match actions::parse_step(&src, &header, value, &mut errors) {
            Some(step) if errors.is_empty() => {
                if let Some(u) = step.action.get::<actions::unit::UnitStep>() {
                    if u.name == unit {
                        return Err(format!("{file}: a learned playbook of {unit} runs while {unit} is down and starts it afterwards; a unit step on {unit} itself is not needed"));
                    }
                }
                out.push(step);
            }
            _ => {
                return Err(errors
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    }
    Ok(out)
}

/// Runs the playbook's steps in order; the first that fails ends it. Ok with each step's
/// details.
pub async fn run(
    app: &Arc<App>,
    l: &Learned,
    data: crate::event::Data,
) -> Result<Vec<serde_json::Value>, String> {
    let steps = parse_steps(&l.unit, &l.steps)?;
    let now = app.clock.now_ms();
    let intent = Intent {
        id: 0,
        intent_type: "unit_exhausted".into(),
        priority: 10,
        reason: format!("learned playbook for {}: {}", l.unit, l.fixed),
        data,
        created_at: now,
        updated_at: now,
        status: IntentStatus::Running,
        dedup_key: format!("{}:{}", l.unit, l.fingerprint),
        origin: "supervisor".into(),
        note: None,
        host: app.config.host(),
    };
    let http = crate::http::client(crate::http::DEFAULT_TIMEOUT);
    let name = format!("learned:{}_{}", l.unit, l.fingerprint);
    let holder = format!("supervisor:{}", std::process::id());
    let ctx = StepContext {
        app,
        http: &http,
        intent: &intent,
        playbook: &name,
        mode: "learned",
        run: now,
        holder: &holder,
    };
    let mut done = Vec::new();
    for step in &steps {
        let timeout = step.timeout.unwrap_or(STEP_TIMEOUT);
        let r = tokio::time::timeout(timeout, actions::execute(step, timeout, &ctx))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "did not end within {}",
                    crate::config::human(timeout)
                ))
            });
        match r {
            Ok(v) => done.push(v),
            Err(e) => return Err(format!("step {} ({}): {e}", done.len() + 1, step.action)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changes_between_occurrences_is_normalized_away() {
        let a = normalize(
            "fatal: lock /srv/judge/run/lock.4242 held by pid 4242 (req 9f3b2c1d0a) at 0x7ffe12",
        );
        let b = normalize("fatal: lock /var/tmp/x.lock held by pid 17 (req 00aa11bb22cc) at 0x1");
        assert_eq!(a, b);
        assert_eq!(a, "fatal: lock <path> held by pid <n> (req <hex>) at <hex>");
        assert_eq!(
            normalize("job 123e4567-e89b-12d3-a456-426614174000 failed"),
            "job <id> failed"
        );
        let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let code = |c| ExitStatus {
            code: Some(c),
            signal: None,
            note: None,
        };
        let (f1, _) = fingerprint(
            &lines(&["starting 1", "error: disk full on /a", ""]),
            &code(1),
        );
        let (f2, _) = fingerprint(
            &lines(&[
                "starting 2",
                "error: disk full on /b/c",
                "error: disk full on /d",
            ]),
            &code(1),
        );
        let (f3, _) = fingerprint(
            &lines(&["starting 2", "error: permission denied"]),
            &code(1),
        );
        assert_eq!(f1, f2, "repeats count once");
        assert_ne!(f1, f3);
        assert_eq!(f1.len(), 16);
    }
}
