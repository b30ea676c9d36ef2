//! Golden snapshots of a unit's `state_dir`: `DATA_DIR/snapshots/NAME/{stamp}/` holds the copy,
//! `{stamp}.json` beside it what is known about it (taken when, golden since when). A copy is
//! made under a temporary name, every file and directory fsynced, then renamed into place, so
//! a snapshot that exists is whole. A tier-1 unit without a replica restores the last golden
//! one when its restarts run out, and tries once more from that clean state.
//!
//! Blocking file work: call from `spawn_blocking`.

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// What is known about one snapshot (`{stamp}.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub unit: String,
    /// The directory name under `DATA_DIR/snapshots/NAME/`.
    pub stamp: String,
    /// The copy.
    pub path: PathBuf,
    /// What was copied.
    pub state_dir: PathBuf,
    /// When it was taken (ms).
    pub taken_ms: i64,
    /// When it became golden (ms): the unit had been healthy for `snapshot.golden_after`.
    pub golden_ms: Option<i64>,
}

impl SnapshotInfo {
    pub fn golden(&self) -> bool {
        self.golden_ms.is_some()
    }

    fn meta_path(&self) -> PathBuf {
        self.path.with_file_name(format!("{}.json", self.stamp))
    }
}

/// Copies `state_dir` into `dir/NAME/{stamp}/` atomically (copy, fsync, rename) and records it.
pub fn take(dir: &Path, unit: &str, state_dir: &Path, now_ms: i64) -> io::Result<SnapshotInfo> {
    if !state_dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("state_dir {} is not a directory", state_dir.display()),
        ));
    }
    let base = dir.join(unit);
    fs::create_dir_all(&base)?;
    let mut stamp = crate::supervisor::quarantine::stamp(now_ms);
    let mut n = 1;
    while base.join(&stamp).exists() {
        n += 1;
        stamp = format!("{}_{n}", crate::supervisor::quarantine::stamp(now_ms));
    }
    let tmp = base.join(format!(".{stamp}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    let copied = copy_tree(state_dir, &tmp).and_then(|()| {
        fs::rename(&tmp, base.join(&stamp))?;
        sync_dir(&base)
    });
    if let Err(e) = copied {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let info = SnapshotInfo {
        unit: unit.into(),
        path: base.join(&stamp),
        stamp,
        state_dir: state_dir.to_path_buf(),
        taken_ms: now_ms,
        golden_ms: None,
    };
    save(&info)?;
    Ok(info)
}

fn save(info: &SnapshotInfo) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(info).expect("a snapshot's record serializes");
    crate::private_fs::write_atomic(&info.meta_path(), &text)
}

/// Marks a snapshot golden at `now_ms` (kept in its record).
pub fn mark_golden(info: &mut SnapshotInfo, now_ms: i64) -> io::Result<()> {
    if info.golden_ms.is_none() {
        info.golden_ms = Some(now_ms);
        save(info)?;
    }
    Ok(())
}

/// The unit's snapshots, oldest first.
pub fn list(dir: &Path, unit: &str) -> Vec<SnapshotInfo> {
    let Ok(entries) = fs::read_dir(dir.join(unit)) else {
        return Vec::new();
    };
    let mut out: Vec<SnapshotInfo> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
        .filter(|i: &SnapshotInfo| i.path.is_dir())
        .collect();
    out.sort_by_key(|i| (i.taken_ms, i.stamp.clone()));
    out
}

/// The newest golden snapshot of the unit.
pub fn last_golden(dir: &Path, unit: &str) -> Option<SnapshotInfo> {
    list(dir, unit).into_iter().rev().find(SnapshotInfo::golden)
}

/// Puts the snapshot back as `state_dir`: copied beside it under a temporary name and fsynced,
/// then the two swapped by renames, so `state_dir` is always either the old state or the whole
/// snapshot. The old state is removed afterwards.
pub fn restore(info: &SnapshotInfo, state_dir: &Path) -> io::Result<()> {
    let name = state_dir
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "state_dir has no name"))?
        .to_string_lossy()
        .into_owned();
    let parent = state_dir.parent().unwrap_or(Path::new("/"));
    let fresh = parent.join(format!(".{name}.vigil-restore"));
    let old = parent.join(format!(".{name}.vigil-old"));
    let _ = fs::remove_dir_all(&fresh);
    let _ = fs::remove_dir_all(&old);
    copy_tree(&info.path, &fresh)?;
    if state_dir.exists() {
        fs::rename(state_dir, &old)?;
    }
    fs::rename(&fresh, state_dir)?;
    sync_dir(parent)?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// Copies the tree at `from` to `to` (which must not exist): regular files, directories and
/// symlinks (as links), each file and directory fsynced.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &dest)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &dest)?;
            File::open(&dest)?.sync_all()?;
        }
        // Sockets, FIFOs and devices are a running service's, not its state: skipped.
    }
    sync_dir(to)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_a_whole_copy_and_restores_over_a_broken_state() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        fs::create_dir_all(state.join("sub")).unwrap();
        fs::write(state.join("db"), "good").unwrap();
        fs::write(state.join("sub/x"), "1").unwrap();
        let snaps = tmp.path().join("snapshots");
        let mut info = take(&snaps, "judge", &state, 1_000).unwrap();
        assert_eq!(fs::read_to_string(info.path.join("db")).unwrap(), "good");
        assert!(last_golden(&snaps, "judge").is_none());
        mark_golden(&mut info, 2_000).unwrap();
        let golden = last_golden(&snaps, "judge").unwrap();
        assert_eq!(golden.golden_ms, Some(2_000));
        // A later snapshot that is not golden does not replace it.
        take(&snaps, "judge", &state, 3_000).unwrap();
        assert_eq!(list(&snaps, "judge").len(), 2);
        assert_eq!(last_golden(&snaps, "judge").unwrap().stamp, info.stamp);

        fs::write(state.join("db"), "corrupt").unwrap();
        fs::remove_dir_all(state.join("sub")).unwrap();
        restore(&golden, &state).unwrap();
        assert_eq!(fs::read_to_string(state.join("db")).unwrap(), "good");
        assert_eq!(fs::read_to_string(state.join("sub/x")).unwrap(), "1");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "nothing left beside state: {names:?}");
    }
}
