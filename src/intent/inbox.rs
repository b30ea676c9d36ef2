//! The inbox directory protocol for intents from other programs.
//!
//! A producer writes `{ts_ms}_{intent_type}_{hash8}.json` to a temporary name, fsyncs it and
//! renames it into `DATA_DIR/inbox/`. The JSON object carries `sha256`: the hex SHA-256 of the
//! canonical JSON (keys sorted, no spaces) of its other fields. The daemon picks files up
//! through inotify; a file that fails to parse or verify moves to `DATA_DIR/rejected/` with a
//! `.reason` file beside it and is never acted on.
//!
//! The daemon writes here too: an intent it proposed while the store was away waits here
//! (`defer`, with an `origin` field saying who proposed it) until the store is back. A file
//! with `created_at` is stored at most once, whatever happens between the store's commit and
//! the file's removal: its SHA-256 is a receipt the store keeps (`put_intent_once`).

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
    write_json(inbox, intent, now_ms, to_json(intent, now_ms))
}

/// Like `write`, for an intent the daemon proposed while the store was away: the file also
/// carries its `origin` (`rule:NAME`, `supervisor`, ...), which the drain keeps.
pub fn defer(inbox: &Path, intent: &NewIntent, now_ms: i64) -> Result<PathBuf, InboxError> {
    let Value::Object(mut obj) = to_json(intent, now_ms) else {
        unreachable!("to_json makes an object")
    };
    obj.remove("sha256");
    obj.insert("origin".into(), intent.origin.clone().into());
    let sum = sha256_hex(&canonical_json(&Value::Object(obj.clone())));
    obj.insert("sha256".into(), sum.into());
    write_json(inbox, intent, now_ms, Value::Object(obj))
}

fn write_json(
    inbox: &Path,
    intent: &NewIntent,
    now_ms: i64,
    json: Value,
) -> Result<PathBuf, InboxError> {
    intent.validate().map_err(InboxError::Invalid)?;
    fs::create_dir_all(inbox).map_err(io(inbox))?;
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

/// The default cap on an inbox file's size: an intent is a few hundred bytes.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// Reads and verifies one inbox file: the checksum, then each field. Only a regular file is
/// read, and at most `max_bytes` of it: a FIFO, a device or a link to one is refused rather
/// than blocking or filling memory.
pub fn read(path: &Path, max_bytes: u64) -> Result<NewIntent, InboxError> {
    read_receipt(path, max_bytes).map(|(intent, _)| intent)
}

/// `read`, and the file's receipt: its SHA-256 when it says when it was written
/// (`created_at`), which makes it one proposal; without a time, the same content written
/// twice is two proposals (and dedup's to judge).
fn read_receipt(path: &Path, max_bytes: u64) -> Result<(NewIntent, Option<String>), InboxError> {
    let text = read_regular(path, max_bytes)?;
    parse_receipt(&text)
}

/// Opens without following a link and without blocking (a FIFO would wait for a writer
/// forever), checks it is a regular file, and reads at most `max_bytes`.
fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, InboxError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(InboxError::Invalid(
                "a symbolic link; write the intent into the inbox as a regular file".into(),
            ))
        }
        Err(e) => return Err(io(path)(e)),
    };
    let meta = f.metadata().map_err(io(path))?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(InboxError::Invalid(format!(
            "{what}; only regular files are read from the inbox"
        )));
    }
    if meta.len() > max_bytes {
        return Err(too_big(meta.len(), max_bytes));
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    f.take(max_bytes + 1)
        .read_to_end(&mut text)
        .map_err(io(path))?;
    // The file may have grown since fstat.
    if text.len() as u64 > max_bytes {
        return Err(too_big(text.len() as u64, max_bytes));
    }
    Ok(text)
}

fn too_big(len: u64, max: u64) -> InboxError {
    InboxError::Invalid(format!(
        "{len} bytes, over the inbox limit of {max}; an intent is small (put bulk data elsewhere and name it in `data`), or raise [intents] max_file_size"
    ))
}

pub fn parse(bytes: &[u8]) -> Result<NewIntent, InboxError> {
    parse_receipt(bytes).map(|(intent, _)| intent)
}

fn parse_receipt(bytes: &[u8]) -> Result<(NewIntent, Option<String>), InboxError> {
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
    // Who proposed it, when the daemon kept its own intent here (`defer`).
    let origin = match obj.remove("origin") {
        None => "inbox".to_string(),
        Some(Value::String(o)) if !o.is_empty() && o.len() <= 128 => o,
        Some(_) => {
            return Err(bad(
                "`origin` must be a string of 1 to 128 characters".into()
            ))
        }
    };
    let receipt = obj.contains_key("created_at").then_some(actual);
    let intent = NewIntent::from_body(&obj, &origin).map_err(bad)?;
    Ok((intent, receipt))
}

/// True for names the daemon should read: finished `.json` files, not temp files (a leading
/// `.`). A name that is not UTF-8 is read too, to be rejected with its reason.
pub fn is_intent_file(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    !name.starts_with(b".") && name.ends_with(b".json")
}

/// Moves a bad file to `rejected/` with a `.reason` file beside it. A name already taken
/// there gets a `.N` suffix, so two rejected files never overwrite each other; a name that is
/// not UTF-8 is stored with its bad bytes replaced.
pub fn reject(rejected: &Path, path: &Path, reason: &str) -> Result<PathBuf, InboxError> {
    fs::create_dir_all(rejected).map_err(io(rejected))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut dest = rejected.join(name.as_ref());
    let mut n = 0;
    // `.reason` files are never moved here, so a free pair (file, reason) is what we look for.
    while dest.exists() || reason_path(&dest).exists() {
        n += 1;
        dest = rejected.join(format!("{name}.{n}"));
    }
    fs::rename(path, &dest).map_err(io(path))?;
    let reason_path = reason_path(&dest);
    fs::write(&reason_path, format!("{reason}\n")).map_err(io(&reason_path))?;
    Ok(dest)
}

fn reason_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".reason");
    PathBuf::from(p)
}

/// What one pass over the inbox did.
#[derive(Debug, Default, PartialEq)]
pub struct Drained {
    pub taken: usize,
    pub rejected: usize,
    /// The store could not take an intent (disk full, locked, gone): that file and the ones
    /// after it stay in the inbox for the next pass. A store error says nothing about the file.
    pub store_error: Option<String>,
}

/// Takes every finished file in the inbox: verified ones go to the store and are deleted
/// (after the store committed, so a crash in between only re-reads a file that dedup then
/// absorbs); files that fail to parse, verify or validate go to `rejected/`. Blocking.
pub fn drain(app: &crate::app::App) -> Drained {
    use super::queue::SubmitError;
    let mut out = Drained::default();
    let inbox = app.inbox_dir();
    let Ok(entries) = fs::read_dir(&inbox) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_intent_file(p))
        .collect();
    // Names start with the creation time in ms: oldest first.
    paths.sort();
    let max_bytes = app.config.intents.max_file_size;
    for path in paths {
        let result = if path.file_name().and_then(|n| n.to_str()).is_none() {
            Err(InboxError::Invalid(
                "the file name is not UTF-8; name it {ts_ms}_{intent_type}_{hash8}.json".into(),
            ))
        } else {
            read_receipt(&path, max_bytes)
        };
        let result = result.and_then(|(intent, receipt)| {
            match super::queue::deliver(app, &intent, receipt.as_deref()) {
                Ok(put) => Ok(Ok(put)),
                Err(SubmitError::Invalid(m)) => Err(InboxError::Invalid(m)),
                Err(SubmitError::Store(e) | SubmitError::Deferred { cause: e, .. }) => Ok(Err(e)),
            }
        });
        match result {
            Ok(Ok(_)) => {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!("inbox: stored {} but cannot remove it: {e}", path.display());
                }
                out.taken += 1;
                app.store_outage.delivered(1);
            }
            Ok(Err(e)) => {
                out.store_error = Some(e.to_string());
                return out;
            }
            Err(InboxError::Io { .. }) if !path.exists() => {} // taken by another reader
            // A file we could not read (permissions, I/O error) may be fine later: keep it.
            Err(e @ InboxError::Io { .. }) => {
                tracing::warn!("inbox: {e}; left in the inbox");
            }
            Err(e) => {
                let reason = e.to_string();
                app.metrics.inbox_rejected_total.inc(&[]);
                out.rejected += 1;
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
    out
}

/// How often the inbox watch asks the store whether it answers, when nothing else made it ask.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Watches the inbox (inotify, or polling when inotify is used up) and drains it on every
/// change, until `shutdown`. The inbox shows in `health` as `inbox`, like a source: up,
/// degraded when polling, down while the store refuses intents (retried with backoff from
/// 100 ms doubling to 10 s; the files wait in the inbox).
///
/// It is also what tells the store's outages (`app.store_outage`): it asks the store every
/// `PROBE_EVERY`, and whenever a file was refused, and declares the store away when it does
/// not answer; back once it answers again and the files kept meanwhile were delivered.
pub async fn watch(
    app: std::sync::Arc<crate::app::App>,
    health: std::sync::Arc<crate::sources::Health>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), InboxError> {
    use std::time::Duration;
    const NAME: &str = "inbox";
    health.register(NAME, "inbox", app.clock.now_ms());
    let inbox = app.inbox_dir();
    let watched = fs::create_dir_all(&inbox)
        .map_err(io(&inbox))
        .and_then(|()| {
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            let w = wake.clone();
            // Each notification only wakes the drainer; a burst of files coalesces into one scan.
            crate::watch::DirWatch::new(&inbox, false, move |_| w.notify_one())
                .map(|watch| (watch, wake))
                .map_err(|e| InboxError::Invalid(format!("cannot watch {}: {e}", inbox.display())))
        });
    let (watch, wake) = match watched {
        Ok(w) => w,
        Err(e) => {
            health.set(NAME, false, Some(e.to_string()), app.clock.now_ms());
            return Err(e);
        }
    };
    let note = watch
        .polling
        .as_ref()
        .map(|why| format!("polling every second: {why}"));
    let mut retry = Duration::ZERO;
    let mut probe = true;
    let drain_now = |app: &std::sync::Arc<crate::app::App>| {
        let a = app.clone();
        async move {
            tokio::task::spawn_blocking(move || drain(&a))
                .await
                .unwrap_or_default()
        }
    };
    let ask_store = |app: &std::sync::Arc<crate::app::App>| {
        let a = app.clone();
        async move {
            tokio::task::spawn_blocking(move || a.store().map_err(|e| e.to_string())?.health())
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    loop {
        // Files that arrived before the watch began (or while vigil was down) count too.
        let mut drained = drain_now(&app).await;
        // An empty inbox does not touch the store: ask it on the probe's beat, while it is
        // away, and when it refused a file (the store, or only that file?). Asked after the
        // drain, so the outage ends once what was kept meanwhile is delivered.
        let answers = if probe || drained.store_error.is_some() || app.store_outage.is_away() {
            Some(ask_store(&app).await)
        } else {
            None
        };
        let refused_or_away = drained.store_error.is_some() || app.store_outage.is_away();
        if refused_or_away && matches!(answers, Some(Ok(()))) {
            // It refused (or was away), then answered: back in between, or only a file
            // refused? Once more tells, and delivers what was kept (files written since the
            // first pass too) before the outage is declared over.
            drained = drain_now(&app).await;
        }
        probe = false;
        let now = app.clock.now_ms();
        match &answers {
            Some(Ok(())) => {
                app.store_outage.back(&app.metrics, now);
            }
            Some(Err(why)) => {
                app.store_outage.away(&app.metrics, now, why);
            }
            None => {}
        }
        match (&drained.store_error, &answers) {
            (_, Some(Err(why))) => {
                retry = (retry * 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
                // Logged once by the outage; each retry only at debug level.
                tracing::debug!("inbox: the store is away ({why}); retrying in {retry:?}");
                let reason = format!("the store is away ({why}); intents wait here, retrying");
                health.set(NAME, false, Some(reason), now);
            }
            (Some(e), _) => {
                retry = (retry * 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
                tracing::warn!("inbox: the store did not take an intent ({e}); the files stay in the inbox, retrying in {retry:?}");
                let reason = format!("the store refuses intents ({e}); files wait, retrying");
                health.set(NAME, false, Some(reason), now);
            }
            (None, _) => {
                retry = Duration::ZERO;
                health.set(NAME, true, note.clone(), now);
            }
        }
        tokio::select! {
            _ = wake.notified(), if retry.is_zero() => {}
            _ = tokio::time::sleep(PROBE_EVERY), if retry.is_zero() => probe = true,
            _ = tokio::time::sleep(retry), if !retry.is_zero() => {}
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
        let back = read(&path, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(back.intent_type, "alert_gpu_oom");
        assert_eq!(back.data["alloc_gib"], "2.5");

        let tampered = fs::read_to_string(&path)
            .unwrap()
            .replace("\"priority\": 9", "\"priority\": 10");
        let err = parse(tampered.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn a_kept_intent_keeps_its_origin_and_a_file_with_a_time_is_one_proposal() {
        let dir = tempfile::tempdir().unwrap();
        let mut rule = sample();
        rule.origin = "rule:gpu_oom".into();
        let path = defer(dir.path(), &rule, 1_700_000_000_000).unwrap();
        let (back, receipt) = read_receipt(&path, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(back.origin, "rule:gpu_oom");
        let file: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            receipt.as_deref(),
            file["sha256"].as_str(),
            "the file's checksum"
        );
        // Another program's file is from the inbox; without a time it has no receipt.
        let mut obj = json!({"intent_type": "alert_x", "priority": 1});
        obj["sha256"] = sha256_hex(&canonical_json(&obj)).into();
        let (other, receipt) = parse_receipt(obj.to_string().as_bytes()).unwrap();
        assert_eq!((other.origin.as_str(), receipt), ("inbox", None));
        let mut obj = json!({"intent_type": "alert_x", "priority": 1, "origin": 7});
        obj["sha256"] = sha256_hex(&canonical_json(&obj)).into();
        let e = parse(obj.to_string().as_bytes()).unwrap_err().to_string();
        assert!(e.contains("`origin` must be a string"), "{e}");
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
