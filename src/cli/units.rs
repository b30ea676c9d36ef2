//! `vigil units list|show|logs|start|stop|restart|release|snapshot`. Reads come from the store
//! (with or without a daemon running). Changes go through the running daemon's API when one
//! runs on the data dir (it owns the units) and wait until they are done; without a daemon,
//! `release` and `snapshot` act on the store and files, and the others say a daemon is needed.

use super::daemon_api;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vigil::app::App;
use vigil::supervisor::{learned, view, Supervisor, Verb};

#[derive(Debug, clap::Subcommand)]
pub enum UnitsCommand {
    /// Configured units: name, state, pid, tier, restarts in window, since.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One unit: last exit, last error, quarantine bundle, replica, fingerprint, learned
    /// playbooks, snapshots.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The last lines of a unit's output (`DATA_DIR/units/NAME/unit.log`).
    Logs {
        name: String,
        /// Lines to print.
        #[arg(short = 'n', long = "lines", default_value_t = 50)]
        n: usize,
        /// Keep printing new lines as they come (across rotation), until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Start a stopped unit (needs the daemon); waits until it runs.
    Start { name: String },
    /// Stop every process of a unit (needs the daemon); waits until none is left.
    Stop { name: String },
    /// Stop and start a unit (needs the daemon); waits until it runs again.
    Restart { name: String },
    /// Lift a unit's quarantine and forget its restart history; a running daemon starts it
    /// again (and this waits until it runs), else the next daemon does.
    Release {
        name: String,
        /// Record what fixed the failure, as a learned playbook for its fingerprint: when the
        /// same failure exhausts the unit again, the playbook's steps run and the unit is
        /// started once more before quarantine.
        #[arg(long)]
        fixed: Option<String>,
        /// A step of that playbook, as in a playbook's `steps` (TOML inline table), e.g.
        /// `--step '{ run = ["/usr/bin/rm", "-f", "/srv/judge/lock"] }'`. Repeatable.
        #[arg(long = "step", requires = "fixed")]
        steps: Vec<String>,
    },
    /// Copy the unit's `state_dir` into `DATA_DIR/snapshots/NAME/` (atomically); it becomes
    /// golden once the unit has been healthy for `snapshot.golden_after`.
    Snapshot { name: String },
}

fn print_value(v: &Value) {
    if let Value::Object(m) = v {
        for (k, val) in m {
            let text = match val {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("{k:<20} {text}");
        }
    }
}

pub fn run(app: &Arc<App>, cmd: UnitsCommand) -> anyhow::Result<u8> {
    match cmd {
        UnitsCommand::List { json } => {
            let rows = view::rows(app)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no units configured");
            } else {
                println!(
                    "{:<20} {:<12} {:>8} {:>4} {:>8}  SINCE",
                    "NAME", "STATE", "PID", "TIER", "RESTARTS"
                );
                for r in &rows {
                    println!(
                        "{:<20} {:<12} {:>8} {:>4} {:>8}  {}",
                        r["name"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        r["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
                        r["tier"],
                        r["restarts_in_window"],
                        r["since"].as_str().unwrap_or("-"),
                    );
                }
            }
            Ok(0)
        }
        UnitsCommand::Show { name, json } => {
            let v = view::show(app, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_value(&v);
            }
            Ok(0)
        }
        UnitsCommand::Logs { name, n, follow } => {
            view::record(app, &name)?;
            logs(
                &app.dir("units").join(&name).join("unit.log"),
                &name,
                n,
                follow,
            )
        }
        UnitsCommand::Start { name } => verb(app, &name, Verb::Start),
        UnitsCommand::Stop { name } => verb(app, &name, Verb::Stop),
        UnitsCommand::Restart { name } => verb(app, &name, Verb::Restart),
        UnitsCommand::Snapshot { name } => verb(app, &name, Verb::Snapshot),
        UnitsCommand::Release { name, fixed, steps } => {
            if let Some(fixed) = fixed {
                let l = learn(app, &name, fixed, steps)?;
                println!(
                    "recorded a learned playbook for {name}'s failure {} ({}): it runs when that failure exhausts {name} again",
                    l.fingerprint,
                    learned::path(&app.dir("playbooks"), &name, &l.fingerprint).display()
                );
            }
            verb(app, &name, Verb::Release)
        }
    }
}

/// Records the fix of the unit's last quarantined failure as a learned playbook.
fn learn(
    app: &App,
    name: &str,
    fixed: String,
    steps: Vec<String>,
) -> anyhow::Result<learned::Learned> {
    let rec = view::record(app, name)?;
    let Some(bundle) = rec.bundle.as_deref() else {
        bail!("{name} has no quarantine bundle, so there is no failure to record a fix for");
    };
    let Some((fingerprint, failure)) = view::bundle_fingerprint(bundle) else {
        bail!("the bundle {bundle} of {name} has no fingerprint (written by an older vigil, or removed); nothing to record the fix against");
    };
    if fixed.trim().is_empty() {
        bail!("--fixed is empty; say what was done, like --fixed \"removed the stale lock\"");
    }
    learned::parse_steps(name, &steps).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = app.dir("playbooks");
    let previous = learned::find(&dir, name, &fingerprint);
    let l = learned::Learned {
        unit: name.into(),
        fingerprint,
        failure,
        fixed,
        steps,
        recorded_at: vigil::clock::rfc3339_ms(app.clock.now_ms()),
        runs: previous.as_ref().map_or(0, |p| p.runs),
        successes: previous.as_ref().map_or(0, |p| p.successes),
        last_run_at: previous.and_then(|p| p.last_run_at),
    };
    learned::save(&dir, &l).with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(l)
}

/// Does `verb` to the unit: through the running daemon's API when one runs (waiting until it
/// is done), else here on the store and files.
fn verb(app: &Arc<App>, name: &str, verb: Verb) -> anyhow::Result<u8> {
    view::record(app, name)?;
    let answer = match daemon_api::running(app)? {
        Some(api) => {
            let within = app
                .config
                .units
                .get(name)
                .map_or(Duration::from_secs(60), Supervisor::start_timeout)
                + Duration::from_secs(10);
            api.post(
                &format!("/api/units/{name}/{}", verb.as_str()),
                &json!({}),
                within,
            )?
        }
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(vigil::supervisor::act(app, name, verb)) {
                Ok(v) => v,
                Err(vigil::supervisor::ActError::NeedsDaemon(e)) => {
                    eprintln!("{e}");
                    return Ok(1);
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    match verb {
        Verb::Snapshot => {
            let path = answer["snapshot"]["path"].as_str().unwrap_or("?");
            if answer["golden"].as_bool() == Some(true) {
                println!("{name}: snapshot {path} (golden)");
            } else {
                println!("{name}: snapshot {path} (golden once {name} has been healthy for its snapshot.golden_after)");
            }
        }
        _ => match answer["note"].as_str() {
            Some(note) => println!("{note}"),
            None => println!(
                "{name}: {} (pid {})",
                answer["state"].as_str().unwrap_or("?"),
                answer["pid"].as_i64().map_or("-".into(), |p| p.to_string())
            ),
        },
    }
    Ok(0)
}

fn logs(path: &Path, name: &str, n: usize, follow: bool) -> anyhow::Result<u8> {
    // One open file for both: the follow goes on exactly where the tail ended.
    let mut file = match std::fs::File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !follow {
                eprintln!(
                    "{name} has written no output yet ({} does not exist)",
                    path.display()
                );
                return Ok(0);
            }
            None
        }
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    let mut rest = Vec::new();
    if let Some(f) = file.as_mut() {
        // The whole file is read: unit logs rotate at `log.max_size`.
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        rest = bytes.split_off(whole);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(n)..] {
            println!("{l}");
        }
    }
    if follow {
        follow_file(path, file, rest)?;
    }
    Ok(0)
}

/// Prints what is appended to `path` from its end on, until killed. Woken by inotify on the
/// directory (polling when inotify is used up, and once a second anyway); a rotation
/// (`unit.log` renamed to `unit.log.1` and made anew) is followed: the rest of the old file
/// first, then the new one from its start, so no line is lost or printed twice.
fn follow_file(
    path: &Path,
    mut file: Option<std::fs::File>,
    mut pending: Vec<u8>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().context("the log has a directory")?;
    std::fs::create_dir_all(dir)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let _watch = vigil::watch::DirWatch::new(dir, false, move |_| {
        let _ = tx.try_send(());
    })
    .with_context(|| format!("cannot watch {}", dir.display()))?;
    let open = || std::fs::File::open(path).ok();
    let mut out = std::io::stdout();
    loop {
        let mut buf = Vec::new();
        if let Some(f) = file.as_mut() {
            f.read_to_end(&mut buf)?;
        }
        pending.extend_from_slice(&buf);
        if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
            out.write_all(&pending[..=end])?;
            out.flush()?;
            pending.drain(..=end);
        }
        // Rotated (or made for the first time): read what is left of the old file above,
        // then switch to the new one from its start.
        let current = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let held = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current != held {
            if let Some(f) = file.as_mut() {
                let mut rest = Vec::new();
                f.read_to_end(&mut rest)?;
                pending.extend_from_slice(&rest);
                if !pending.is_empty() {
                    if !pending.ends_with(b"\n") {
                        pending.push(b'\n');
                    }
                    out.write_all(&pending)?;
                    out.flush()?;
                    pending.clear();
                }
            }
            file = open();
            continue;
        }
        let _ = rx.recv_timeout(Duration::from_secs(1));
    }
}
