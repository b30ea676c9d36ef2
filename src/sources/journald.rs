//! `type = "journald"`: follow the system journal (optionally some units), or read journal
//! files (`file`) or a directory of them (`directory`), through `journalctl -o json`.

use super::lines::{decode_line, Matches, DEFAULT_MAX_LINE};
use super::{BoxFuture, Source, SourceContext, SourceError, SourceKind};
use crate::event::Data;
use crate::exec::ExecError;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldConfig {
    /// Units to follow; empty follows the whole journal.
    #[serde(default)]
    pub units: Vec<String>,
    /// Read this journal file instead of the system journal.
    pub file: Option<PathBuf>,
    /// Read the journal files in this directory instead of the system journal.
    pub directory: Option<PathBuf>,
    #[serde(rename = "match", default)]
    pub matches: Matches,
    /// Read entries already in the journal at start; by default only new entries count.
    #[serde(default)]
    pub from_start: bool,
    /// The journalctl program (argv), for hosts where it lives elsewhere.
    #[serde(default = "default_command")]
    pub command: Vec<String>,
    #[serde(default = "default_max_line")]
    pub max_line: usize,
}

impl SourceKind for JournaldConfig {
    fn check(&self) -> Result<(), String> {
        if self.command.is_empty() {
            return Err("`command` is empty; leave it out for [\"journalctl\"] or give the program, like [\"/usr/bin/journalctl\"]".into());
        }
        Ok(())
    }

    fn event_types(&self) -> Vec<String> {
        self.matches.event_types()
    }

    fn event_fields(&self, event: &str) -> Option<Vec<String>> {
        let mut fields = self.matches.event_fields(event);
        fields.extend(["unit".to_string(), "priority".to_string()]);
        Some(fields)
    }

    fn build(&self) -> Box<dyn Source> {
        Box::new(JournaldSource::new(self.clone()))
    }
}

fn default_command() -> Vec<String> {
    vec!["journalctl".into()]
}

fn default_max_line() -> usize {
    DEFAULT_MAX_LINE
}

/// Bytes of journalctl's stderr kept for the error message.
const STDERR_TAIL: usize = 4096;

/// Runs `journalctl -o json --follow` and turns each entry's MESSAGE into a line event, with
/// `unit` and `priority` added. Remembers the cursor of the last entry read, so a restart after
/// journalctl died resumes exactly there instead of re-reading or skipping entries.
pub struct JournaldSource {
    config: JournaldConfig,
    cursor: Option<String>,
}

impl JournaldSource {
    pub fn new(config: JournaldConfig) -> Self {
        Self {
            config,
            cursor: None,
        }
    }

    /// The journalctl command line for the next start.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = self.config.command.clone();
        argv.extend(
            [
                "--output=json",
                "--all",
                "--follow",
                "--quiet",
                "--no-pager",
            ]
            .map(String::from),
        );
        for unit in &self.config.units {
            argv.push(format!("--unit={unit}"));
        }
        // journalctl cannot follow a relative --file (it fails to watch it and exits 0).
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        if let Some(f) = &self.config.file {
            argv.push(format!("--file={}", abs(f).display()));
        }
        if let Some(d) = &self.config.directory {
            argv.push(format!("--directory={}", abs(d).display()));
        }
        match &self.cursor {
            Some(c) => {
                argv.push(format!("--after-cursor={c}"));
                argv.push("--no-tail".into());
            }
            // --follow alone would replay the last 10 entries.
            None if self.config.from_start => argv.push("--no-tail".into()),
            None => argv.push("--lines=0".into()),
        }
        argv
    }

    /// One journal entry (a JSON object) to an event, if its message matches.
    fn classify(&self, ctx: &SourceContext, entry: &Data) -> Option<(String, Data)> {
        let bytes = entry.get("MESSAGE").and_then(message_bytes)?;
        let (text, cut) = decode_line(&bytes, self.config.max_line);
        if cut {
            ctx.metrics.lines_truncated_total.inc(&[&ctx.name]);
        }
        let (kind, mut data) = self.config.matches.classify(&text)?;
        let unit = unit_of(entry, &self.config.units);
        // Named groups from the user's regex win over the journal's fields.
        if let Some(u) = unit {
            data.entry("unit")
                .or_insert_with(|| Value::String(u.to_string()));
        }
        if let Some(p) = entry.get("PRIORITY").and_then(Value::as_str) {
            let v = p
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(p.to_string()));
            data.entry("priority").or_insert(v);
        }
        Some((kind.to_string(), data))
    }
}

/// The unit an entry is about, as `journalctl -u` sees it: systemd (PID 1) writes about a
/// unit with `UNIT=` from `init.scope`, systemd-coredump with `COREDUMP_UNIT=`, other root
/// daemons with `OBJECT_SYSTEMD_UNIT=`; only then the unit that logged it (`_SYSTEMD_UNIT`).
/// The fields a process sets itself count only from those writers, as journalctl trusts them.
/// With `units` configured, the one of them the entry is about wins, so "nginx.service: Main
/// process exited" is nginx's entry, not init.scope's.
pub fn unit_of<'e>(entry: &'e Data, units: &[String]) -> Option<&'e str> {
    let field = |k: &str| entry.get(k).and_then(Value::as_str);
    let root = field("_UID") == Some("0");
    let candidates = [
        field("COREDUMP_UNIT").filter(|_| root),
        field("UNIT").filter(|_| field("_PID") == Some("1")),
        field("OBJECT_SYSTEMD_UNIT").filter(|_| root),
        field("_SYSTEMD_UNIT"),
        field("USER_UNIT"),
        field("_SYSTEMD_USER_UNIT"),
    ];
    let mut candidates = candidates.into_iter().flatten();
    if !units.is_empty() {
        if let Some(u) = candidates
            .clone()
            .find(|c| units.iter().any(|w| unit_matches(w, c)))
        {
            return Some(u);
        }
    }
    candidates.next()
}

/// Whether `unit` is what `--unit=wanted` selects: journalctl adds `.service` to a name
/// without a type and takes shell globs.
fn unit_matches(wanted: &str, unit: &str) -> bool {
    const TYPES: [&str; 11] = [
        "service",
        "socket",
        "target",
        "device",
        "mount",
        "automount",
        "swap",
        "timer",
        "path",
        "slice",
        "scope",
    ];
    let has_type = wanted
        .rsplit_once('.')
        .is_some_and(|(_, t)| TYPES.contains(&t));
    if !has_type && !wanted.contains(['*', '?', '[']) {
        return unit == format!("{wanted}.service");
    }
    glob(wanted.as_bytes(), unit.as_bytes())
}

/// `*` and `?` globbing (what unit patterns use), without character classes: `[` is literal.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// MESSAGE as journalctl's JSON writes it: a string, an array of bytes when it is not valid
/// text, or an array of those when the field occurs more than once (the first one counts).
fn message_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(items) if items.iter().all(Value::is_u64) => Some(
            items
                .iter()
                .filter_map(Value::as_u64)
                .map(|b| b as u8)
                .collect(),
        ),
        Value::Array(items) => items.first().and_then(message_bytes),
        _ => None,
    }
}

/// Where journald keeps the system journal (volatile, persistent).
pub const SYSTEM_JOURNALS: [&str; 2] = ["/run/log/journal", "/var/log/journal"];

/// Whether any `*.journal` file lies in `roots` or one level below (journald's per-machine
/// directories). A root vigil cannot read counts as having files: journalctl may know better.
pub fn has_journal_files(roots: &[PathBuf]) -> bool {
    let is_journal = |p: &Path| p.extension().is_some_and(|e| e == "journal");
    for root in roots {
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return true,
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if is_journal(&path) {
                return true;
            }
            if path.is_dir() {
                match std::fs::read_dir(&path) {
                    Ok(inner) => {
                        if inner.flatten().any(|f| is_journal(&f.path())) {
                            return true;
                        }
                    }
                    Err(_) => return true,
                }
            }
        }
    }
    false
}

/// Largest JSON entry parsed; journalctl `--all` prints fields in full, however big.
const MAX_ENTRY: usize = 16 << 20;

enum Line {
    Read,
    TooLong,
    End,
}

/// Reads one line into `buf` (cleared first), or skips it whole when it exceeds `cap` bytes.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                Line::End
            } else if too_long {
                Line::TooLong
            } else {
                Line::Read
            });
        }
        let (take, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !too_long {
            if buf.len() + take > cap {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

async fn stderr_tail(pipe: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&kept).trim().to_string()
}

impl Source for JournaldSource {
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let argv = self.argv();
            let program = argv.first().cloned().unwrap_or_default();
            let mut child = tokio::process::Command::new(&program)
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    SourceError::new(format!(
                        "{}; the journald source reads the journal through journalctl (set `command` if it lives elsewhere)",
                        ExecError::spawn(&program, e)
                    ))
                })?;
            // journalctl follows an absent journal silently forever; say so instead of
            // looking up while nothing can ever arrive. Checked after the spawn so a missing
            // journalctl is reported first; returning drops (kills) the child.
            let local = Path::new(&program).file_name() == Some("journalctl".as_ref());
            if local && self.config.file.is_none() && self.config.directory.is_none() {
                let roots = SYSTEM_JOURNALS.map(PathBuf::from);
                if tokio::task::spawn_blocking(move || has_journal_files(&roots))
                    .await
                    .ok()
                    == Some(false)
                {
                    return Err(SourceError::new(format!(
                        "no journal on this host: {} hold no journal files; start systemd-journald, or read journal files with `file`/`directory`",
                        SYSTEM_JOURNALS.join(" and ")
                    )));
                }
            }
            let stderr = tokio::spawn(stderr_tail(child.stderr.take()));
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
            // journalctl prints nothing while the journal is quiet: still running after a
            // moment means it opened the journal.
            let settle = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(settle);
            let mut is_up = false;
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = tokio::select! {
                    r = read_line_capped(&mut stdout, &mut line, MAX_ENTRY) => r.map_err(|e| {
                        SourceError::new(format!("reading journalctl's output failed: {e}"))
                    })?,
                    _ = &mut settle, if !is_up => {
                        is_up = true;
                        ctx.up();
                        continue;
                    }
                    _ = ctx.stopping() => return Ok(()),
                };
                match n {
                    Line::End => break,
                    Line::TooLong => {
                        ctx.metrics.lines_truncated_total.inc(&[&ctx.name]);
                        tracing::warn!(source = %ctx.name, "skipped a journal entry larger than {} MiB", MAX_ENTRY >> 20);
                        continue;
                    }
                    Line::Read => {}
                }
                let entry: Data = match serde_json::from_slice(&line) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(source = %ctx.name, "skipped a journal entry journalctl wrote as invalid JSON: {e}");
                        continue;
                    }
                };
                if !is_up {
                    is_up = true;
                    ctx.up();
                }
                if let Some(c) = entry.get("__CURSOR").and_then(Value::as_str) {
                    self.cursor = Some(c.to_string());
                }
                if let Some((kind, data)) = self.classify(ctx, &entry) {
                    if !ctx.emit(&kind, data).await {
                        return Ok(());
                    }
                }
            }
            let status = child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| format!("unknown status ({e})"));
            let err = tokio::time::timeout(Duration::from_secs(2), stderr)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let err = if err.is_empty() {
                "no error output".to_string()
            } else {
                err
            };
            Err(SourceError::new(format!(
                "journalctl ({}) stopped with {status}: {err}; check that the journal (or `file`/`directory`) exists and that vigil may read it (root or the systemd-journal group)",
                argv.join(" ")
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(from_start: bool) -> JournaldSource {
        JournaldSource::new(JournaldConfig {
            units: vec!["a.service".into(), "b.service".into()],
            file: Some("/var/log/x.journal".into()),
            directory: None,
            matches: Matches::default(),
            from_start,
            command: vec!["/bin/journalctl".into()],
            max_line: DEFAULT_MAX_LINE,
        })
    }

    #[test]
    fn finds_journal_files_one_level_down() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let roots = vec![a.path().join("absent"), a.path().into(), b.path().into()];
        assert!(!has_journal_files(&roots));
        std::fs::create_dir(b.path().join("0123abcd")).unwrap();
        std::fs::write(b.path().join("0123abcd/user-1000.txt"), "").unwrap();
        assert!(!has_journal_files(&roots));
        std::fs::write(b.path().join("0123abcd/system.journal"), "").unwrap();
        assert!(has_journal_files(&roots));
    }

    #[test]
    fn argv_starts_where_it_should() {
        let a = source(false).argv();
        assert_eq!(a[0], "/bin/journalctl");
        assert!(a.contains(&"--unit=a.service".into()) && a.contains(&"--unit=b.service".into()));
        assert!(a.contains(&"--file=/var/log/x.journal".into()));
        assert_eq!(a.last().unwrap(), "--lines=0");
        assert_eq!(source(true).argv().last().unwrap(), "--no-tail");
        let mut s = source(false);
        s.cursor = Some("s=1;i=2".into());
        let a = s.argv();
        assert!(a.contains(&"--after-cursor=s=1;i=2".into()));
        assert!(!a.contains(&"--lines=0".into()));
    }

    #[test]
    fn units_match_as_journalctl_selects_them() {
        assert!(unit_matches("nginx.service", "nginx.service"));
        assert!(unit_matches("nginx", "nginx.service"));
        assert!(!unit_matches("nginx", "nginx.socket"));
        assert!(unit_matches("vllm@*.service", "vllm@0.service"));
        assert!(unit_matches("judge?.service", "judge2.service"));
        assert!(!unit_matches("judge.service", "other.service"));
        assert!(unit_matches("backup.timer", "backup.timer"));
    }

    #[test]
    fn an_entry_is_labelled_with_the_unit_it_is_about() {
        let entry = |pairs: &[(&str, &str)]| -> Data {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect()
        };
        let pid1 = entry(&[
            ("_PID", "1"),
            ("_UID", "0"),
            ("_SYSTEMD_UNIT", "init.scope"),
            ("UNIT", "nginx.service"),
        ]);
        assert_eq!(unit_of(&pid1, &[]), Some("nginx.service"));
        assert_eq!(
            unit_of(&pid1, &["nginx.service".into()]),
            Some("nginx.service")
        );
        // A process cannot claim to be about another unit.
        let forged = entry(&[
            ("_PID", "4242"),
            ("_UID", "1000"),
            ("_SYSTEMD_UNIT", "app.service"),
            ("UNIT", "nginx.service"),
            ("COREDUMP_UNIT", "db.service"),
        ]);
        assert_eq!(unit_of(&forged, &[]), Some("app.service"));
        let core = entry(&[
            ("_UID", "0"),
            ("_SYSTEMD_UNIT", "systemd-coredump@0.service"),
            ("COREDUMP_UNIT", "vllm.service"),
        ]);
        assert_eq!(unit_of(&core, &["vllm".into()]), Some("vllm.service"));
        let own = entry(&[("_SYSTEMD_UNIT", "judge.service")]);
        assert_eq!(
            unit_of(&own, &["judge.service".into()]),
            Some("judge.service")
        );
        assert_eq!(unit_of(&entry(&[]), &[]), None);
    }

    #[tokio::test]
    async fn overlong_lines_are_skipped_whole() {
        let text = b"short\n0123456789abcdef\nnext\nlast".to_vec();
        let mut r = BufReader::with_capacity(4, &text[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_capped(&mut r, &mut buf, 8).await.unwrap() {
                Line::End => break,
                Line::TooLong => got.push("<long>".to_string()),
                Line::Read => got.push(String::from_utf8_lossy(&buf).into_owned()),
            }
        }
        assert_eq!(got, ["short\n", "<long>", "next\n", "last"]);
    }
}
