//! The harness's rules, over small configs on a real SQLite file: alerts once per red episode
//! and one resolved (to a local HTTP receiver that checks the Block Kit payload), `for` that
//! survives a restart, bad invariants as config errors with file:line:col, the command
//! collector, `prev`, bounded observed state and one cycle at a time.

mod common;

use serde_json::Value;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil::clock::ManualClock;
use vigil::config::Config;
use vigil::invariants::Harness;
use vigil::metrics::Metrics;

struct Fixture {
    dir: tempfile::TempDir,
    db: std::path::PathBuf,
    clock: ManualClock,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // Characters that mean something in a SQLite URI: the path must still be read as is.
        let db = dir.path().join("app #1?x=%20.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE jobs (id TEXT, state TEXT); INSERT INTO jobs VALUES ('j1', 'ok');",
        )
        .unwrap();
        Fixture {
            dir,
            db,
            clock: ManualClock::at("2026-01-15T10:00:00Z"),
        }
    }

    fn sql(&self, q: &str) {
        rusqlite::Connection::open(&self.db)
            .unwrap()
            .execute_batch(q)
            .unwrap();
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[collectors.app]\ntype = \"sql\"\nurl = \"sqlite://{}\"\ntables = {{ jobs = \"SELECT id, state FROM jobs\" }}\n{extra}",
            self.db.display()
        )
    }

    fn harness(&self, text: &str, metrics: Arc<Metrics>) -> Harness {
        common::invariants::harness(self.dir.path(), text, Arc::new(self.clock.clone()), metrics)
    }
}

const BROKEN: &str = r#"
[invariants.J-01]
name = "No broken jobs"
tier = "A"
severity = "critical"
runbook = "https://wiki.example/J-01"
query = "SELECT id, state FROM jobs WHERE state = 'broken'"
signal = "job {id} is {state}"
key = ["id"]
"#;

/// A Slack stand-in: records every JSON body posted to it; the first `fail_first` calls get 500.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0usize));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let g = g.clone();
            let calls = calls.clone();
            async move {
                let mut n = calls.lock().unwrap();
                *n += 1;
                if *n <= fail_first {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                g.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

fn block_texts(msg: &Value) -> String {
    serde_json::to_string(&msg["blocks"]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_once_per_red_episode_and_resolved_once() {
    let f = Fixture::new();
    let (url, got) = receiver(1).await; // the first delivery fails and is retried
    let text = f.config(&format!(
        "[invariants]\nalert = {{ slack = \"{url}\", min_severity = \"major\" }}\n{BROKEN}"
    ));
    let metrics = Arc::new(Metrics::default());
    let h = f.harness(&text, metrics.clone());
    assert!(h.run_cycle(None).await.unwrap().violations.is_empty());
    f.sql("INSERT INTO jobs VALUES ('j2','broken'),('j3','broken'),('j4','broken'),('j5','broken'),('j6','broken'),('j7','broken'),('j8','broken');");
    for i in 0..3 {
        let r = h.run_cycle(None).await.unwrap();
        assert_eq!(r.violations.len(), 7);
        assert_eq!(r.transitions.len(), usize::from(i == 0), "{r:?}");
        f.clock.advance(Duration::from_secs(300));
    }
    h.flush_alerts().await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        let m = &got[0];
        assert_eq!(m["blocks"][0]["type"], "header");
        let header = m["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            header.contains("No broken jobs") && header.contains("J-01"),
            "{header}"
        );
        let all = block_texts(m);
        assert!(all.contains("7 violations"), "{all}");
        assert!(all.contains("+2 more"), "{all}");
        assert_eq!(all.matches(r#"\"state\":\"broken\""#).count(), 5, "{all}");
        assert!(all.contains("https://wiki.example/J-01"), "{all}");
        let ctx = m["blocks"].as_array().unwrap().last().unwrap();
        assert_eq!(ctx["type"], "context");
        let ctx = ctx.to_string();
        assert!(
            ctx.contains("tier A")
                && ctx.contains("severity critical")
                && ctx.contains("2026-01-15T10:00:00.000Z"),
            "{ctx}"
        );
    }
    f.sql("DELETE FROM jobs WHERE state = 'broken';");
    for _ in 0..2 {
        h.run_cycle(None).await.unwrap();
    }
    h.flush_alerts().await;
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(block_texts(&got[1]).contains("resolved"));
    assert_eq!(metrics.invariant_alerts_total.get(&["sent"]), 2.0);
    assert_eq!(metrics.invariant_state.get(&["J-01", "critical"]), 0.0);
    assert_eq!(metrics.invariant_checks_total.get(&["J-01", "red"]), 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_webhook_is_counted_and_does_not_block() {
    let f = Fixture::new();
    let text = f.config(&format!(
        "[invariants]\nalert = {{ slack = \"http://127.0.0.1:9/hook\" }}\n{BROKEN}"
    ));
    let metrics = Arc::new(Metrics::default());
    let h = f.harness(&text, metrics.clone());
    f.sql("INSERT INTO jobs VALUES ('j2','broken');");
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.violations.len(), 1);
    h.flush_alerts().await;
    assert_eq!(metrics.invariant_alerts_total.get(&["failed"]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn for_needs_elapsed_time_and_survives_a_restart() {
    let f = Fixture::new();
    let text = f.config(&BROKEN.replace("key = [\"id\"]", "key = [\"id\"]\nfor = \"60s\""));
    f.sql("INSERT INTO jobs VALUES ('j2','broken');");
    let h = f.harness(&text, Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert!(r.violations.is_empty(), "fired before `for`: {r:?}");
    drop(h);
    // A new process on the same store remembers the first sighting.
    f.clock.advance(Duration::from_secs(61));
    let h = f.harness(&text, Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.violations.len(), 1, "{r:?}");
    assert_eq!(
        r.violations[0].signal_query.as_deref(),
        Some("job j2 is broken")
    );
    assert_eq!(r.transitions[0].to, "red");
    let l = h.list().unwrap();
    assert_eq!(
        (l[0].state.as_str(), l[0].since.as_deref()),
        ("red", Some("2026-01-15T10:01:01.000Z"))
    );
    // Gone and back: the clock restarts.
    f.sql("UPDATE jobs SET state = 'ok' WHERE id = 'j2';");
    h.run_cycle(None).await.unwrap();
    f.sql("UPDATE jobs SET state = 'broken' WHERE id = 'j2';");
    let r = h.run_cycle(None).await.unwrap();
    assert!(r.violations.is_empty(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prev_command_collector_and_bounded_state() {
    let f = Fixture::new();
    let extra = r#"
[collectors.list]
type = "command"
command = ["sh", "-c", "printf '[{\"n\": 1, \"tags\": [\"a\"]}, {\"n\": 2}]'"]

[invariants.C-01]
name = "Changed rows"
severity = "minor"
query = "SELECT j.id, p.state AS before, j.state AS now FROM jobs j JOIN prev.jobs p ON p.id = j.id WHERE p.state != j.state"

[invariants.C-02]
name = "Command rows and a long list"
severity = "minor"
query = "SELECT count(*) AS rows, (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) SELECT json_group_array(x) FROM c) AS ids, json_extract(max(tags), '$[0]') AS tag FROM list"
"#;
    let h = f.harness(&f.config(extra), Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert!(
        !r.violations.iter().any(|v| v.invariant_id == "C-01"),
        "{r:?}"
    );
    let c2 = &r
        .violations
        .iter()
        .find(|v| v.invariant_id == "C-02")
        .unwrap()
        .observed_state;
    assert_eq!(c2["rows"], 2);
    assert_eq!(c2["tag"], "a");
    assert_eq!(c2["ids"].as_array().unwrap().len(), 20);
    assert_eq!(c2["ids_more"], 30);
    f.sql("UPDATE jobs SET state = 'late' WHERE id = 'j1';");
    let r = h.run_cycle(Some(&["C-01".to_string()])).await.unwrap();
    assert_eq!(r.checks_run, vec!["C-01"]);
    let c1 = &r.violations[0].observed_state;
    assert_eq!(
        (c1["before"].as_str(), c1["now"].as_str()),
        (Some("ok"), Some("late"))
    );
    // A snapshot file to explore with sqlite3.
    let out = f.dir.path().join("snap.db");
    h.write_snapshot(&out).await.unwrap();
    let c = rusqlite::Connection::open(&out).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM list", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_command_and_timeouts_are_unavailable() {
    let f = Fixture::new();
    let extra = r#"
[collectors.bad]
type = "command"
command = ["sh", "-c", "echo nope >&2; exit 3"]
[collectors.slow]
type = "command"
command = ["sleep", "5"]
timeout = "200ms"
[invariants.X-01]
name = "Bad"
severity = "minor"
query = "SELECT * FROM bad"
[invariants.X-02]
name = "Slow"
severity = "minor"
query = "SELECT * FROM slow"
"#;
    let h = f.harness(&f.config(&format!("{extra}{BROKEN}")), Arc::default());
    let started = Instant::now();
    let r = h.run_cycle(None).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(r.checks_run, vec!["J-01"]);
    assert_eq!(r.skipped.len(), 2);
    let err = |s: &str| {
        r.sources_unavailable
            .iter()
            .find(|u| u.source == s)
            .unwrap()
            .error
            .clone()
    };
    assert!(err("bad").contains("nope"), "{}", err("bad"));
    assert!(
        err("slow").contains("timed out after 200ms"),
        "{}",
        err("slow")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_sqlite_source_is_interrupted_and_lets_the_cycle_go_on() {
    let f = Fixture::new();
    // Far more work than 300 ms allows, even with an optimized SQLite.
    let extra = format!(
        r#"
[collectors.slow]
type = "sql"
url = "{}"
timeout = "300ms"
tables = {{ counted = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT max(x) AS x FROM c" }}
[invariants.C-01]
name = "Counted"
severity = "minor"
query = "SELECT x FROM counted WHERE x < 0"
"#,
        f.db.display()
    );
    let h = f.harness(&f.config(&format!("{extra}{BROKEN}")), Arc::default());
    f.sql("INSERT INTO jobs VALUES ('j2', 'broken')");
    for _ in 0..2 {
        let started = Instant::now();
        let r = h.run_cycle(None).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(r.checks_run, vec!["J-01"]);
        assert_eq!(r.violations.len(), 1, "{r:?}");
        assert_eq!(r.skipped[0].invariant_id, "C-01");
        assert_eq!(r.sources_unavailable[0].source, "slow");
        assert!(
            r.sources_unavailable[0]
                .error
                .contains("timed out after 300ms"),
            "{r:?}"
        );
    }
    // The interrupted copy left nothing behind.
    let snap = f.dir.path().join("snap.db");
    h.write_snapshot(&snap).await.unwrap();
    let c = rusqlite::Connection::open(&snap).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, vec!["jobs"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_over_its_limit_is_a_clear_error() {
    let f = Fixture::new();
    // About 3 MiB of rows against a 1 MiB snapshot.
    let big = format!(
        r#"
[invariants]
snapshot_max_mb = 1
[collectors.big]
type = "sql"
url = "{}"
tables = {{ big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000) SELECT x, printf('%0100d', x) AS pad FROM c" }}
[invariants.B-01]
name = "Big"
severity = "minor"
query = "SELECT x FROM big WHERE x < 0"
"#,
        f.db.display()
    );
    let h = f.harness(&f.config(&format!("{big}{BROKEN}")), Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.checks_run, vec!["J-01"], "{r:?}");
    let down = &r.sources_unavailable[0];
    assert_eq!(down.source, "big");
    assert!(
        down.error.contains("table big: the snapshot is full: it may hold 1 MiB; select fewer rows, or raise [invariants] snapshot_max_mb"),
        "{down:?}"
    );

    // Rows read into memory (here from a command) meet the same limit when loaded, and only
    // their source is unavailable.
    let f = Fixture::new();
    let cmd = r#"
[invariants]
snapshot_max_mb = 1
[collectors.lines]
type = "command"
command = ["python3", "-c", "import json; print(json.dumps([{'x': i, 'pad': 'p' * 100} for i in range(30000)]))"]
[invariants.C-01]
name = "Lines"
severity = "minor"
query = "SELECT x FROM lines WHERE x < 0"
"#;
    let h = f.harness(&f.config(&format!("{cmd}{BROKEN}")), Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.checks_run, vec!["J-01"], "{r:?}");
    assert_eq!(r.skipped[0].invariant_id, "C-01");
    assert_eq!(r.skipped[0].reason, "collector lines unavailable");
    let down = &r.sources_unavailable[0];
    assert_eq!(down.source, "lines");
    assert!(
        down.error
            .starts_with("table lines: the snapshot is full: it may hold 1 MiB"),
        "{down:?}"
    );
    // Left out whole: the snapshot holds no part of it.
    let snap = f.dir.path().join("snap.db");
    h.write_snapshot(&snap).await.unwrap();
    let n: i64 = rusqlite::Connection::open(&snap)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'lines'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_cycle_at_a_time() {
    let f = Fixture::new();
    let extra = "[collectors.slow]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 0.5; echo '[]'\"]\n[invariants.S]\nname = \"s\"\nseverity = \"minor\"\nquery = \"SELECT * FROM slow\"\n";
    let h = Arc::new(f.harness(&f.config(extra), Arc::default()));
    let h2 = h.clone();
    let first = tokio::spawn(async move { h2.run_cycle(None).await });
    // Wait (with a deadline) until the first cycle holds the lock.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match h.try_run_cycle(None).await {
            Err(vigil::invariants::HarnessError::Busy) => break,
            _ if Instant::now() > deadline => panic!("never saw a running cycle"),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    assert!(first.await.unwrap().is_ok());
}

fn check(text: &str) -> String {
    Config::parse("bad.toml", text).unwrap_err().to_string()
}

#[test]
fn bad_invariants_are_config_errors_with_locations() {
    let f = Fixture::new();
    let e = check(&f.config(
        "[invariants.Q]\nname = \"q\"\nseverity = \"minor\"\nquery = \"SELEC id FROM jobs\"\n",
    ));
    assert!(
        e.starts_with("bad.toml:8:9: [invariants.Q] query: near \"SELEC\""),
        "{e}"
    );
    let e = check(&f.config(
        "[invariants.Q]\nname = \"q\"\nseverity = \"minor\"\nquery = \"SELECT * FROM slots\"\n",
    ));
    assert!(
        e.contains("bad.toml:8:9") && e.contains("no such table: slots") && e.contains("jobs"),
        "{e}"
    );
    let e = check(&f.config(
        "[invariants.Q]\nname = \"q\"\nseverity = \"minor\"\nquery = \"SELECT nope FROM jobs\"\n",
    ));
    assert!(e.contains("no such column: nope"), "{e}");
    let e = check(&f.config("[invariants]\nintervl = \"5m\"\n"));
    assert!(
        e.contains("bad.toml:6:11") && e.contains("did you mean \"interval\""),
        "{e}"
    );
    let e = check(
        &f.config("[invariants.Q]\nname = \"q\"\nseverity = \"huge\"\nquery = \"SELECT 1\"\n"),
    );
    assert!(e.contains("bad.toml:7:") && e.contains("huge"), "{e}");
    let e = check(
        "[collectors.r]\ntype = \"redis\"\nurl = \"redis://x\"\nzset = \"a:{x}\"\nttl = \"b\"\n",
    );
    assert!(
        e.contains("bad.toml:1:1") && e.contains("exactly one key pattern"),
        "{e}"
    );
    let e = check(&f.config(
        "[collectors.again]\ntype = \"command\"\ncommand = [\"true\"]\ntable = \"jobs\"\n",
    ));
    assert!(
        e.contains("bad.toml:1:1") && e.contains("makes table \"jobs\", which [collectors.again]"),
        "{e}"
    );
    // Keys every collector shares are parsed once for all kinds, and hinted like its own.
    let e = check(
        "[collectors.r]\ntype = \"redis\"\nurl = \"redis://x\"\nttl = \"b\"\nnon_emtpy = true\n",
    );
    assert!(
        e.contains("bad.toml:5:1")
            && e.contains(
                "unknown key \"non_emtpy\" in [collectors.r]; did you mean \"non_empty\"?"
            ),
        "{e}"
    );
    // sql names its tables in `tables`: the shared `table` is not one of its keys.
    let e = check("[collectors.db]\ntype = \"sql\"\nurl = \"x.db\"\ntable = \"t\"\ntables = { a = \"SELECT 1 AS one\" }\n");
    assert!(
        e.contains("bad.toml:4:1")
            && e.contains("unknown key \"table\" in [collectors.db]; did you mean \"tables\"?"),
        "{e}"
    );
    // The section's old name says what it is called now, at its place.
    let e = check("[invariants]\ninterval = \"5m\"\n[snapshot.app]\ntype = \"command\"\ncommand = [\"true\"]\n");
    assert!(
        e.contains("bad.toml:3:1") && e.contains("[snapshot.app] was renamed to [collectors.app]"),
        "{e}"
    );
    let e = check("[collectors.r]\ntype = \"rediss\"\n");
    assert!(
        e.contains("bad.toml:2:8") && e.contains("did you mean \"redis\""),
        "{e}"
    );
    // Columns of command/http tables are known only at run time: names are not checked then.
    let ok = "[collectors.c]\ntype = \"command\"\ncommand = [\"true\"]\n[invariants.Q]\nname = \"q\"\nseverity = \"minor\"\nquery = \"SELECT whatever FROM c\"\n";
    let c = Config::parse("ok.toml", ok).unwrap();
    assert!(c.invariants.invariants["Q"].needs.contains("c"));
}

/// Every transition is in both halves of the audit trail: the store and the day's JSON-lines
/// file (it used to reach only the store).
#[tokio::test]
async fn transitions_are_in_the_jsonl_audit_trail_and_the_store() {
    let f = Fixture::new();
    let config = Config::parse("test.toml", &f.config(BROKEN)).unwrap_or_else(|e| panic!("{e}"));
    let data = f.dir.path().join("data");
    let app = vigil::app::App::new(config, data.clone(), Arc::new(f.clock.clone()));
    let harness = app.harness().unwrap();
    assert!(
        Arc::ptr_eq(&harness, &app.harness().unwrap()),
        "one harness per app"
    );
    harness.run_cycle(None).await.unwrap();
    f.sql("UPDATE jobs SET state = 'broken'");
    f.clock.advance(Duration::from_secs(60));
    let r = harness.run_cycle(None).await.unwrap();
    assert_eq!(r.transitions.len(), 1, "{r:?}");
    f.sql("UPDATE jobs SET state = 'ok'");
    f.clock.advance(Duration::from_secs(60));
    harness.run_cycle(None).await.unwrap();

    let file = data.join("audit").join("20260115.jsonl");
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["invariant_red", "invariant_green"], "{lines:?}");
    assert_eq!(lines[0]["details"]["invariant"], "J-01");
    assert_eq!(lines[0]["ts"], "2026-01-15T10:01:00.000Z");
    let stored: Vec<String> = vigil::audit::tail(&app, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(stored, events);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_collector_runs_like_every_command_bounded_and_in_its_own_group() {
    // Far more stdout than a 1 MiB snapshot could load is cut, and said so.
    let f = Fixture::new();
    let flood = r#"
[invariants]
snapshot_max_mb = 1
[collectors.flood]
type = "command"
command = ["sh", "-c", "head -c 6000000 /dev/zero | tr '\\0' x"]
[invariants.F-01]
name = "Flood"
severity = "minor"
query = "SELECT * FROM flood"
"#;
    let h = f.harness(&f.config(&format!("{flood}{BROKEN}")), Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.checks_run, vec!["J-01"], "{r:?}");
    let down = &r.sources_unavailable[0];
    assert_eq!(down.source, "flood");
    assert!(
        down.error.contains("printed more than 4 MiB") && down.error.contains("make it print less"),
        "{down:?}"
    );

    // A collector past its timeout takes the children of its command with it.
    let f = Fixture::new();
    let pidfile = f.dir.path().join("child.pid");
    let hang = format!(
        r#"
[collectors.hang]
type = "command"
timeout = "300ms"
command = ["sh", "-c", "sleep 60 & echo $! > '{}'; wait"]
[invariants.H-01]
name = "Hang"
severity = "minor"
query = "SELECT * FROM hang"
"#,
        pidfile.display()
    );
    let h = f.harness(&f.config(&format!("{hang}{BROKEN}")), Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.sources_unavailable[0].source, "hang", "{r:?}");
    assert!(
        r.sources_unavailable[0].error.contains("timed out"),
        "{r:?}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The kill is sent as the collection is dropped; the kernel may take a moment to finish it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::alive(pid) && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        !common::alive(pid),
        "the command's child {pid} outlived its collector"
    );
}

/// A Slack stand-in whose answer to the n-th post (0-based) is `answer(n, body)`: a status,
/// optional `Retry-After` seconds. Every body posted is recorded.
async fn scripted_receiver(
    answer: impl Fn(usize, &Value) -> (u16, Option<u64>) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g = got.clone();
    let answer = Arc::new(answer);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (g, answer) = (g.clone(), answer.clone());
            async move {
                let n = {
                    let mut g = g.lock().unwrap();
                    g.push(body.clone());
                    g.len() - 1
                };
                let (status, retry_after) = answer(n, &body);
                let mut r =
                    axum::response::Response::new(axum::body::Body::from(if status == 400 {
                        "invalid_blocks"
                    } else {
                        "ok"
                    }));
                *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                if let Some(s) = retry_after {
                    r.headers_mut()
                        .insert("retry-after", s.to_string().parse().unwrap());
                }
                r
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

fn alerting(f: &Fixture, url: &str, metrics: Arc<Metrics>) -> Harness {
    f.harness(
        &f.config(&format!(
            "[invariants]\nalert = {{ slack = \"{url}\" }}\n{BROKEN}"
        )),
        metrics,
    )
}

/// Slack answers 429 with Retry-After: 3. vigil used to retry at 0, 0.2 and 1.0 s, give up,
/// and never announce the episode; it now waits as told and delivers on a later cycle.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_alert_waits_as_told_and_is_delivered_later() {
    let f = Fixture::new();
    let (url, got) =
        scripted_receiver(|n, _| if n == 0 { (429, Some(3)) } else { (200, None) }).await;
    let metrics = Arc::new(Metrics::default());
    let h = alerting(&f, &url, metrics.clone());
    f.sql("INSERT INTO jobs VALUES ('j2','broken');");
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    assert_eq!(got.lock().unwrap().len(), 1, "one try, then it waits");
    f.clock.advance(Duration::from_secs(2));
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    assert_eq!(got.lock().unwrap().len(), 1, "not before Retry-After");
    f.clock.advance(Duration::from_secs(1));
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert!(block_texts(&got[1]).contains("violated"), "{}", got[1]);
    assert_eq!(metrics.invariant_alerts_total.get(&["sent"]), 1.0);
    assert_eq!(metrics.invariant_alerts_total.get(&["failed"]), 1.0);
}

/// An episode that ends before its message went out sends nothing stale: no "violated" for
/// what holds again, and no all-clear for an episode nobody heard of.
#[tokio::test(flavor = "multi_thread")]
async fn an_episode_that_ended_undelivered_sends_nothing_stale() {
    let f = Fixture::new();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = down.clone();
    let (url, got) = scripted_receiver(move |_, _| {
        if d.load(std::sync::atomic::Ordering::SeqCst) {
            (503, None)
        } else {
            (200, None)
        }
    })
    .await;
    let h = alerting(&f, &url, Arc::new(Metrics::default()));
    f.sql("INSERT INTO jobs VALUES ('j2','broken');");
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    let tries = got.lock().unwrap().len();
    assert_eq!(tries, 3, "three tries in the round");
    f.sql("DELETE FROM jobs WHERE state = 'broken';");
    f.clock.advance(Duration::from_secs(60));
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    f.clock.advance(Duration::from_secs(60));
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    assert_eq!(got.lock().unwrap().len(), tries, "nothing more was sent");
}

/// A "violated" message still on its way when the invariant holds again used to be cancelled
/// by the "resolved" one (it was unsent in the outbox), then arrived: the channel showed red
/// for good. Now the "resolved" one replaces it and follows it.
#[tokio::test(flavor = "multi_thread")]
async fn a_resolved_arriving_while_the_violated_is_being_sent_follows_it() {
    let f = Fixture::new();
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (h2, g2) = (hold.clone(), got.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (hold, got) = (h2.clone(), g2.clone());
            async move {
                let first = {
                    let mut g = got.lock().unwrap();
                    g.push(body);
                    g.len() == 1
                };
                if first {
                    hold.acquire().await.unwrap().forget();
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let h = alerting(&f, &url, Arc::new(Metrics::default()));

    f.sql("INSERT INTO jobs VALUES ('j2','broken');");
    h.run_cycle(None).await.unwrap();
    common::wait_until("the violated message reaches the receiver", &mut || {
        got.lock().unwrap().len() == 1
    })
    .await;
    f.sql("DELETE FROM jobs WHERE state = 'broken';");
    f.clock.advance(Duration::from_secs(60));
    h.run_cycle(None).await.unwrap();
    hold.add_permits(1);
    h.flush_alerts().await;
    f.clock.advance(Duration::from_secs(60));
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(block_texts(&got[0]).contains("violated"), "{}", got[0]);
    assert!(block_texts(&got[1]).contains("resolved"), "{}", got[1]);
}

/// 15 errors of about 340 characters made a 5,170-character section; Slack answered 400
/// invalid_blocks and the same payload was sent three times and lost. Messages now keep within
/// Block Kit's limits, and one refused as invalid falls back to plain text.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_keep_within_block_kit_and_an_invalid_one_falls_back_to_text() {
    let within_limits = |body: &Value| {
        let blocks = body["blocks"].as_array().unwrap();
        blocks.len() <= 50
            && blocks.iter().all(|b| {
                let t = b["text"]["text"].as_str().unwrap_or("");
                let max = if b["type"] == "header" { 150 } else { 3000 };
                t.chars().count() <= max
            })
    };
    let f = Fixture::new();
    let (url, got) = scripted_receiver(move |_, body| {
        if body.get("blocks").is_some() && !within_limits(body) {
            (400, None)
        } else {
            (200, None)
        }
    })
    .await;
    let h = f.harness(
        &f.config(&format!(
            "[invariants]\nalert = {{ slack = \"{url}\" }}\n{}",
            BROKEN.replace(
                "name = \"No broken jobs\"",
                &format!("name = \"{}\"", "N".repeat(200))
            )
        )),
        Arc::new(Metrics::default()),
    );
    // The observed state holds 15 errors of about 340 characters.
    let errors: Vec<String> = (0..15)
        .map(|i| format!("error {i}: {}", "e".repeat(330)))
        .collect();
    f.sql(&format!(
        "INSERT INTO jobs VALUES ('{}', 'broken');",
        serde_json::to_string(&errors).unwrap()
    ));
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "accepted at once: {got:?}");
        assert!(within_limits(&got[0]));
        assert!(block_texts(&got[0]).contains('…'), "cut with an ellipsis");
    }

    // A receiver that refuses every block: the payload changes (plain text), never resent as is.
    let f = Fixture::new();
    let (url, got) = scripted_receiver(|_, body| {
        if body.get("blocks").is_some() {
            (400, None)
        } else {
            (200, None)
        }
    })
    .await;
    let metrics = Arc::new(Metrics::default());
    let h = alerting(&f, &url, metrics.clone());
    f.sql("INSERT INTO jobs VALUES ('j2','broken');");
    h.run_cycle(None).await.unwrap();
    h.flush_alerts().await;
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].get("blocks").is_some() && got[1].get("blocks").is_none());
    assert!(got[1]["text"].as_str().unwrap().contains("No broken jobs"));
    assert_eq!(metrics.invariant_alerts_total.get(&["sent"]), 1.0);
}
