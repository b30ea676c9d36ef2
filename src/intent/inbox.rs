//! The inbox directory protocol for intents from other programs.
//!
//! A producer writes `{ts_ms}_{intent_type}_{hash8}.json` to a temporary name, fsyncs it and
//! renames it into `DATA_DIR/inbox/`. The JSON object carries `sha256`: the hex SHA-256 of the
//! canonical JSON (keys sorted, no spaces) of its other fields. The daemon picks files up
//! through inotify; a file that fails to parse or verify moves to `DATA_DIR/rejected/` with a
//! `.reason` file beside it and is never acted on.

use super::{canonical_json, sha256_hex, NewIntent};
use serde_json::{Map, Value};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InboxError + '_ {
    move |source| InboxError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The JSON object written for an intent, with its checksum.
pub fn to_json(intent: &NewIntent, created_ms: i64) -> Value {
    let mut obj = Map::new();
    obj.insert("intent_type".into(), intent.intent_type.clone().into());
    obj.insert("priority".into(), intent.priority.into());
    obj.insert("reason".into(), intent.reason.clone().into());
    obj.insert("data".into(), Value::Object(intent.data.clone()));
    obj.insert(
        "created_at".into(),
        crate::clock::rfc3339_ms(created_ms).into(),
    );
    if let Some(k) = &intent.dedup_key {
        obj.insert("dedup_key".into(), k.clone().into());
    }
    let sum = sha256_hex(&canonical_json(&Value::Object(obj.clone())));
    obj.insert("sha256".into(), sum.into());
    Value::Object(obj)
}

/// Writes an intent into `inbox` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write(inbox: &Path, intent: &NewIntent, now_ms: i64) -> Result<PathBuf, InboxError> {
    intent.validate().map_err(InboxError::Invalid)?;
    fs::create_dir_all(inbox).map_err(io(inbox))?;
    let json = to_json(intent, now_ms);
    let hash8 = &json["sha256"].as_str().expect("set by to_json")[..8];
    let name = format!("{now_ms}_{}_{hash8}.json", intent.intent_type);
    let tmp = inbox.join(format!(".{name}.tmp"));
    let path = inbox.join(&name);
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(
        serde_json::to_string_pretty(&json)
            .expect("JSON")
            .as_bytes(),
    )
    .and_then(|_| f.sync_all())
    .map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fs::File::open(inbox)
        .and_then(|d| d.sync_all())
        .map_err(io(inbox))?;
    Ok(path)
}

/// Reads and verifies one inbox file: the checksum, then each field.
pub fn read(path: &Path) -> Result<NewIntent, InboxError> {
    let text = fs::read(path).map_err(io(path))?;
    parse(&text)
}

pub fn parse(bytes: &[u8]) -> Result<NewIntent, InboxError> {
    let bad = |m: String| InboxError::Invalid(m);
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("not valid JSON ({e}); write one JSON object")))?;
    let Value::Object(mut obj) = value else {
        return Err(bad(
            "not a JSON object; write {\"intent_type\": ..., \"sha256\": ...}".into(),
        ));
    };
    let claimed = match obj.remove("sha256") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad("`sha256` must be a hex string".into())),
        None => return Err(bad("no `sha256` field; add the SHA-256 of the canonical JSON of the other fields (`vigil intents submit` writes it for you)".into())),
    };
    let actual = sha256_hex(&canonical_json(&Value::Object(obj.clone())));
    if !claimed.eq_ignore_ascii_case(&actual) {
        return Err(bad(format!(
            "checksum mismatch: file says sha256 {claimed}, content hashes to {actual}; the file was changed or written incompletely"
        )));
    }
    NewIntent::from_body(&obj, "inbox").map_err(bad)
}

/// True for names the daemon should read: finished `.json` files, not temp files.
pub fn is_intent_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.ends_with(".json")
}

/// Moves a bad file to `rejected/` with a `.reason` file beside it.
pub fn reject(rejected: &Path, path: &Path, reason: &str) -> Result<PathBuf, InboxError> {
    fs::create_dir_all(rejected).map_err(io(rejected))?;
    let name = path.file_name().unwrap_or_default();
    let dest = rejected.join(name);
    fs::rename(path, &dest).map_err(io(path))?;
    let mut reason_path = dest.clone().into_os_string();
    reason_path.push(".reason");
    fs::write(&reason_path, format!("{reason}\n")).map_err(io(Path::new(&reason_path)))?;
    Ok(dest)
}

/// Takes every finished file in the inbox: verified ones go to the store and are deleted
/// (after the store committed, so a crash in between only re-reads a file that dedup then
/// absorbs); bad ones go to `rejected/`. Blocking.
pub fn drain(app: &crate::app::App) -> usize {
    let inbox = app.inbox_dir();
    let Ok(entries) = fs::read_dir(&inbox) else {
        return 0;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_intent_file(p))
        .collect();
    // Names start with the creation time in ms: oldest first.
    paths.sort();
    let mut taken = 0;
    for path in paths {
        let result = read(&path).and_then(|intent| {
            super::queue::submit(app, &intent).map_err(|e| match e {
                super::queue::SubmitError::Invalid(m) => InboxError::Invalid(m),
                other => InboxError::Invalid(other.to_string()),
            })
        });
        match result {
            Ok(_) => {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!("inbox: stored {} but cannot remove it: {e}", path.display());
                }
                taken += 1;
            }
            Err(InboxError::Io { .. }) if !path.exists() => {} // taken by another reader
            Err(e) => {
                let reason = e.to_string();
                app.metrics.inbox_rejected_total.inc(&[]);
                match reject(&app.rejected_dir(), &path, &reason) {
                    Ok(dest) => tracing::warn!("inbox: rejected {}: {reason}", dest.display()),
                    Err(e2) => tracing::error!(
                        "inbox: cannot reject {}: {e2} (reason: {reason})",
                        path.display()
                    ),
                }
            }
        }
    }
    taken
}

/// Watches the inbox with inotify and drains it on every change, until `shutdown`.
pub async fn watch(
    app: std::sync::Arc<crate::app::App>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), InboxError> {
    let inbox = app.inbox_dir();
    fs::create_dir_all(&inbox).map_err(io(&inbox))?;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let w = wake.clone();
    // Each notification only wakes the drainer; a burst of files coalesces into one scan.
    let _watch = crate::watch::DirWatch::new(&inbox, false, move |_| w.notify_one())
        .map_err(|e| InboxError::Invalid(format!("cannot watch {}: {e}", inbox.display())))?;
    loop {
        // Files that arrived before the watch began (or while vigil was down) count too.
        let a = app.clone();
        let _ = tokio::task::spawn_blocking(move || drain(&a)).await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> NewIntent {
        NewIntent {
            intent_type: "alert_gpu_oom".into(),
            priority: 9,
            reason: "GPU OOM".into(),
            data: json!({"alloc_gib": "2.5"}).as_object().unwrap().clone(),
            dedup_key: None,
            origin: "cli".into(),
        }
    }

    #[test]
    fn written_file_verifies_and_a_changed_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &sample(), 1_700_000_000_000).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("1700000000000_alert_gpu_oom_") && name.ends_with(".json"),
            "{name}"
        );
        let back = read(&path).unwrap();
        assert_eq!(back.intent_type, "alert_gpu_oom");
        assert_eq!(back.data["alloc_gib"], "2.5");

        let tampered = fs::read_to_string(&path)
            .unwrap()
            .replace("\"priority\": 9", "\"priority\": 10");
        let err = parse(tampered.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn rejects_missing_checksum_and_bad_fields() {
        let e = parse(br#"{"intent_type":"x","priority":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `sha256`"), "{e}");
        let mut obj = json!({"intent_type": "bad type!", "priority": 1});
        let sum = sha256_hex(&canonical_json(&obj));
        obj["sha256"] = sum.into();
        let e = parse(obj.to_string().as_bytes()).unwrap_err().to_string();
        assert!(e.contains("is not valid"), "{e}");
        assert!(parse(b"{not json")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        // The same parser as the API: an unknown key is refused, not dropped.
        let mut obj = json!({"intent_type": "x", "priority": 1, "pririty": 2});
        obj["sha256"] = sha256_hex(&canonical_json(&obj)).into();
        let e = parse(obj.to_string().as_bytes()).unwrap_err().to_string();
        assert!(e.contains("unknown field `pririty`"), "{e}");
    }
}
