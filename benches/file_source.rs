//! Matched lines per second through the file source while a writer appends to the log,
//! against a baseline measured in the same run: one thread reading the same file with
//! `BufRead::read_until` and the same regex (no inotify, no channel, no events). The source
//! keeps its checkpoint in a SQLite store as in the daemon (a save at most every 200 ms).
//!
//! Run: `cargo bench --bench file_source`. Prints
//! `file_source matched_lines_per_sec median=... baseline=... ratio=...`, where `ratio` is
//! subject / baseline in cost, as in every bench: baseline lines/s / source lines/s (time per
//! line, source over baseline), so above 1 means the source is slower than the baseline.

use regex::Regex;
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use vigil::clock::SystemClock;
use vigil::metrics::Metrics;
use vigil::sources::file::{FileConfig, FileSource};
use vigil::sources::{Health, SourceContext};

const LINES: usize = 1_000_000;
const RUNS: usize = 5;
const REGEX: &str = r"CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB";

fn line(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("2026-11-23T07:00:00Z ERROR worker {i}: CUDA out of memory. Tried to allocate {}.{} GiB\n", i % 97, i % 10)
    } else {
        format!(
            "2026-11-23T07:00:00Z INFO worker {i}: served request in {} ms\n",
            i % 250
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn through_source(dir: &std::path::Path, run: usize) -> f64 {
    let log = dir.join(format!("server-{run}.log"));
    std::fs::write(&log, "").unwrap();
    let config: FileConfig = toml::from_str(&format!(
        "path = {:?}\n[[match]]\nregex = '{REGEX}'\nevent = \"gpu_oom\"\n",
        log.to_str().unwrap()
    ))
    .unwrap();
    let (tx, mut rx) = mpsc::channel(4096);
    let (stop, shutdown) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(metrics.clone()));
    let ctx = SourceContext::new(
        "bench",
        Arc::new(SystemClock),
        metrics,
        tx,
        health.clone(),
        shutdown,
    )
    .with_store(
        Arc::new(vigil::store::SqliteStore::open_dir(&dir.join(format!("data-{run}"))).unwrap()),
        None,
    );
    let task = tokio::spawn(vigil::sources::supervise(
        Box::new(FileSource::new(config)),
        ctx,
    ));
    while !health.snapshot().iter().any(|s| s.up) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut buf = String::with_capacity(1 << 20);
        for i in 0..LINES {
            buf.push_str(&line(i));
            if buf.len() > 64 * 1024 {
                f.write_all(buf.as_bytes()).unwrap();
                buf.clear();
            }
        }
        f.write_all(buf.as_bytes()).unwrap();
    });
    let mut got = 0;
    while got < LINES / 2 {
        rx.recv().await.unwrap();
        got += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    writer.join().unwrap();
    let _ = stop.send(true);
    let _ = task.await;
    got as f64 / secs
}

fn baseline(dir: &std::path::Path) -> f64 {
    let path = dir.join("baseline.log");
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..LINES {
        f.write_all(line(i).as_bytes()).unwrap();
    }
    drop(f);
    let re = Regex::new(REGEX).unwrap();
    let start = Instant::now();
    let mut r = BufReader::with_capacity(256 * 1024, std::fs::File::open(&path).unwrap());
    let mut buf = Vec::new();
    let mut matched = 0usize;
    while r.read_until(b'\n', &mut buf).unwrap() > 0 {
        let text = String::from_utf8_lossy(&buf);
        if let Some(c) = re.captures(&text) {
            std::hint::black_box(c.name("alloc_gib").map(|m| m.as_str().to_string()));
            matched += 1;
        }
        buf.clear();
    }
    assert_eq!(matched, LINES / 2);
    matched as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut source = Vec::new();
    let mut base = Vec::new();
    for run in 0..RUNS {
        source.push(rt.block_on(through_source(dir.path(), run)));
        base.push(baseline(dir.path()));
    }
    let (m, b) = (median(source), median(base));
    println!(
        "file_source matched_lines_per_sec median={m:.0} baseline={b:.0} ratio={:.2} (lines={LINES}, half matching, runs={RUNS})",
        b / m
    );
}
