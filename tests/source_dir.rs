//! The dir source on a real directory with inotify.

mod common;

use common::RunningSource;
use vigil::sources::dir::{DirConfig, DirSource};

fn start(path: &std::path::Path, recursive: bool) -> RunningSource {
    let cfg = DirConfig {
        path: path.to_path_buf(),
        event: "promotion_new".into(),
        recursive,
    };
    RunningSource::start("promotions", Box::new(DirSource::new(cfg)))
}

#[tokio::test]
async fn created_and_modified_files_become_events_hidden_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), false);
    s.wait_state("up", |st| st.up).await;
    std::fs::write(dir.path().join(".tmp-promo"), "partial").unwrap();
    std::fs::rename(
        dir.path().join(".tmp-promo"),
        dir.path().join("promo-1.json"),
    )
    .unwrap();
    let ev = s.next().await;
    assert_eq!(ev.kind, "promotion_new");
    assert_eq!(ev.data["file"], "promo-1.json");
    assert_eq!(
        ev.data["action"], "created",
        "renamed into place counts as created"
    );
    assert_eq!(
        ev.data["path"],
        dir.path().join("promo-1.json").to_str().unwrap()
    );

    std::fs::write(dir.path().join("promo-2.json"), "x").unwrap();
    let ev = s.next().await;
    assert_eq!(
        (ev.data["file"].as_str(), ev.data["action"].as_str()),
        (Some("promo-2.json"), Some("created"))
    );
    // Writing the content right after creating shows up as a modification too.
    let ev = s.next().await;
    assert_eq!(
        (ev.data["file"].as_str(), ev.data["action"].as_str()),
        (Some("promo-2.json"), Some("modified"))
    );
    s.quiet().await;

    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/deep.json"), "x").unwrap();
    s.quiet().await; // not recursive
    s.stop().await;
}

#[tokio::test]
async fn recursive_watches_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut s = start(dir.path(), true);
    s.wait_state("up", |st| st.up).await;
    std::fs::rename(
        {
            let p = dir.path().join(".t");
            std::fs::write(&p, "x").unwrap();
            p
        },
        dir.path().join("sub/deep.json"),
    )
    .unwrap();
    let ev = s.next().await;
    assert_eq!(ev.data["file"], "deep.json");
    s.stop().await;
}

#[tokio::test]
async fn a_missing_directory_is_reported_with_what_to_do() {
    let s = start(std::path::Path::new("/nonexistent/promotions"), false);
    s.wait_state("down", |st| {
        !st.up
            && st.reason.as_deref()
                == Some("directory /nonexistent/promotions does not exist; create it or fix `path`")
    })
    .await;
    s.stop().await;
}
