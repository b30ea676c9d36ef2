//! Directory watches for the file and dir sources and the inbox: inotify when the kernel gives
//! one, polling otherwise, and in both cases a wake-up only for changes that can mean new data.
//!
//! Why the filter matters: notify's inotify backend always asks for `IN_OPEN`, so scanning a
//! watched directory or reading a file in it reports an event. An owner that wakes on every
//! event and then opens the directory again wakes itself about 2,000 times a second; an idle
//! daemon burned a whole core that way.

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, PollWatcher, RecursiveMode, Watcher};
use std::path::Path;
use std::time::Duration;

/// How often a directory is scanned when inotify cannot be had.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// True for events that can mean new or changed data: a file created, written (modified or
/// closed after writing), renamed or removed, and notify's "rescan" (`Other`, after the
/// kernel's queue overflowed). False for opens, reads and metadata changes, which the owner's
/// own reading causes.
pub fn means_new_data(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => true,
        EventKind::Modify(m) => !matches!(m, ModifyKind::Metadata(_)),
        EventKind::Access(a) => matches!(a, AccessKind::Close(AccessMode::Write)),
    }
}

/// A live watch on one directory; dropping it stops the watch.
pub struct DirWatch {
    _watcher: Box<dyn Watcher + Send>,
    /// Why inotify could not be used, when the watch fell back to polling every
    /// [`POLL_INTERVAL`] (for example "inotify instances exhausted (fs.inotify.max_user_instances)").
    pub polling: Option<String>,
}

impl DirWatch {
    /// Watches `dir` (and its subdirectories with `recursive`) and calls `on_change` from the
    /// watcher's thread for each event that [`means_new_data`]. When inotify is unavailable
    /// (instances or watches used up), falls back to polling and says why in
    /// [`DirWatch::polling`].
    ///
    /// Errors: `dir` cannot be watched at all (it does not exist, permission denied).
    pub fn new(
        dir: &Path,
        recursive: bool,
        on_change: impl Fn(Event) + Send + Sync + Clone + 'static,
    ) -> Result<DirWatch, notify::Error> {
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let handler = on_change.clone();
        let inotify = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
            Ok(ev) if means_new_data(&ev.kind) => handler(ev),
            Ok(_) => {}
            // An error from the kernel's queue (overflow) may hide changes: look again.
            Err(_) => handler(Event::new(EventKind::Other)),
        });
        let reason = match inotify {
            Ok(mut w) => match w.watch(dir, mode) {
                Ok(()) => {
                    return Ok(DirWatch {
                        _watcher: Box::new(w),
                        polling: None,
                    })
                }
                Err(e) if exhausted(&e) => describe(&e),
                Err(e) => return Err(e),
            },
            Err(e) => describe(&e),
        };
        // Polling sees changes by comparing metadata, so its own reads cause no events and
        // every event it reports is a real change.
        let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
        let mut w = PollWatcher::new(
            move |res: notify::Result<Event>| match res {
                Ok(ev) => on_change(ev),
                Err(_) => on_change(Event::new(EventKind::Other)),
            },
            config,
        )?;
        w.watch(dir, mode)?;
        tracing::warn!(
            "watching {} by polling every {}s: {reason}",
            dir.display(),
            POLL_INTERVAL.as_secs()
        );
        Ok(DirWatch {
            _watcher: Box::new(w),
            polling: Some(reason),
        })
    }
}

/// Errors that mean "inotify is used up here", not "this directory cannot be watched".
fn exhausted(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENOSPC)),
        _ => false,
    }
}

fn describe(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "inotify watches used up; raise fs.inotify.max_user_watches".into()
        }
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
            "inotify instances used up; raise fs.inotify.max_user_instances".into()
        }
        _ => format!("inotify unavailable ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn only_changes_that_can_mean_data_wake_the_owner() {
        let wakes = [
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Other,
        ];
        let quiet = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ];
        for k in wakes {
            assert!(means_new_data(&k), "{k:?} should wake");
        }
        for k in quiet {
            assert!(!means_new_data(&k), "{k:?} should not wake");
        }
    }
}
