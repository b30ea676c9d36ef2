//! The dashboard: `GET /api/stream` read with a plain HTTP client (SSE framing, a change
//! arrives as it happens, the stream ends when vigil stops), the token rules for the page and
//! its data off loopback, and the page itself in a real headless Chromium: it loads with no
//! console errors, shows a seeded daemon's state, shows an intent submitted through the API
//! without a reload, shows a `<script>` reason as text, and is screenshotted at desktop and
//! phone widths into `target/dashboard-*.png`.

mod common;

use common::browser::Browser;
use common::TestDaemon;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads the SSE stream until an event named `kind` arrives; returns its data as JSON.
/// Checks the framing of every block on the way: `event:` and `data:` lines (or a `:`
/// comment), each block ended by a blank line.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_string());
                } else if !line.is_empty() {
                    assert!(line.starts_with(':'), "unexpected SSE line {line:?}");
                }
            }
            if name.as_deref() == Some(kind) {
                let data = data.unwrap_or_else(|| panic!("event {kind} without data"));
                return serde_json::from_str(&data).expect("data is JSON");
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {kind} event on the stream");
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event on the stream"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before a {kind} event"));
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_changes_as_server_sent_events_and_ends_when_vigil_stops() {
    let d = TestDaemon::start("").await;
    let mut resp = reqwest::get(d.api("/api/stream")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut buf = String::new();
    let hello = next_event(&mut resp, &mut buf, "hello").await;
    assert!(hello["now_ms"].as_i64().unwrap() > 0);

    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": "alert_disk_full", "priority": 8, "reason": "disk 95% full"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].clone();
    let stored = next_event(&mut resp, &mut buf, "intent_stored").await;
    assert_eq!(stored["id"], id);
    assert_eq!(stored["intent_type"], "alert_disk_full");

    // Audit entries are published as they are written, whole: the symptoms recorded, then
    // the flag they armed.
    for _ in 0..3 {
        let r = d.post("/api/symptoms", &json!({"kind": "vllm_oom"})).await;
        assert_eq!(r.status(), 200);
    }
    let mut seen = Vec::new();
    while seen.last().map(|e: &Value| e["event"].clone()) != Some(json!("escalation_armed")) {
        seen.push(next_event(&mut resp, &mut buf, "audit").await);
    }
    let events: Vec<_> = seen.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "symptom_recorded",
            "symptom_recorded",
            "symptom_recorded",
            "escalation_armed"
        ]
    );
    let armed = seen.last().unwrap();
    assert_eq!(armed["details"]["kind"], "vllm_oom", "{armed}");
    assert_eq!(armed["details"]["symptom_count"], 3, "{armed}");

    // Stopping vigil ends the stream (EventSource reconnects by itself).
    let stopping = tokio::spawn(d.stop());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(c) = resp.chunk().await.unwrap() {
            buf.push_str(std::str::from_utf8(&c).unwrap());
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end when vigil stopped");
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_state_changes_reach_the_stream() {
    let d = TestDaemon::start(
        r#"
[sources.app_log]
type = "file"
path = "{dir}/app.log"
"#,
    )
    .await;
    let mut resp = reqwest::get(d.api("/api/stream")).await.unwrap();
    let mut buf = String::new();
    next_event(&mut resp, &mut buf, "hello").await;
    d.wait_until("the source is down, waiting for its file", || {
        !vigil::store::SourceStore::source_states(&*d.app.store().unwrap())
            .unwrap()
            .is_empty()
    })
    .await;
    std::fs::write(d.path("app.log"), "").unwrap();
    loop {
        let states = next_event(&mut resp, &mut buf, "sources").await;
        let s = &states.as_array().unwrap()[0];
        assert_eq!(s["source"], "app_log");
        if s["up"] == true {
            break;
        }
    }
    d.stop().await;
}

/// Off loopback reads need the token: the page's own files do not (they hold no data), its
/// data takes the token from the `access_token` query parameter (EventSource cannot send
/// headers), and state-changing calls still need the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_page_is_open_and_its_data_takes_the_token_in_the_query() {
    let (base, _app, _dir, stop) = serve_off_loopback("s3cret").await;
    let get = |path: &str| reqwest::get(format!("{base}{path}"));
    for page in ["/", "/app.js", "/app.css"] {
        let r = get(page).await.unwrap();
        assert_eq!(r.status(), 200, "{page} is served without a token");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
    }
    assert_eq!(get("/api/dashboard").await.unwrap().status(), 401);
    assert_eq!(
        get("/api/dashboard?access_token=wrong")
            .await
            .unwrap()
            .status(),
        401
    );
    let r = get("/api/dashboard?access_token=s3cret").await.unwrap();
    assert_eq!(r.status(), 200);
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["intents"], json!({}));
    assert_eq!(get("/api/stream").await.unwrap().status(), 401);
    let mut resp = get("/api/stream?access_token=s3cret").await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    next_event(&mut resp, &mut buf, "hello").await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/intents?access_token=s3cret"))
        .json(&json!({"intent_type": "alert_x", "priority": 1, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a state change needs the header");
    stop().await.unwrap();
}

/// The API as it is served off loopback (`listen` not on loopback, a token), on a loopback
/// port: the router decides by `listen`. Returns the base URL and what stops it.
async fn serve_off_loopback(
    token: &str,
) -> (
    String,
    Arc<vigil::app::App>,
    tempfile::TempDir,
    impl FnOnce() -> tokio::task::JoinHandle<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = vigil::config::Config::parse(
        "test.toml",
        &format!("[api]\nlisten = \"0.0.0.0:9108\"\ntoken = \"{token}\"\n"),
    )
    .unwrap();
    let app = Arc::new(vigil::app::App::new(
        config,
        dir.path().join("data"),
        Arc::new(vigil::clock::SystemClock),
    ));
    let health = Arc::new(vigil::sources::Health::new(app.metrics.clone()));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(vigil::api::serve(
        listener,
        vigil::api::router(app.clone(), health, tx),
        app.config.api.clone(),
        stopping,
    ));
    let a = app.clone();
    let stop = move || {
        drop(rx);
        a.changes.close();
        let _ = stop.send(true);
        server
    };
    (base, app, dir, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_page_takes_the_token_from_its_address_or_its_form() {
    let (base, _app, _dir, stop) = serve_off_loopback("s3cret").await;
    let b = Browser::start(1280, 800).await;
    b.client
        .goto(&format!("{base}/#access_token=s3cret"))
        .await
        .unwrap();
    b.wait_for(
        "the page loaded and live with the token from its address",
        10,
        "return document.body.dataset.loaded !== undefined && document.getElementById('conn').textContent === 'live'",
    )
    .await;
    assert_eq!(
        b.eval("return location.hash").await,
        "",
        "the token is taken out of the address bar"
    );
    assert_eq!(
        b.eval("return document.getElementById('token-form').hidden")
            .await,
        true
    );
    let log = b.log().await;
    assert!(errors(&log).is_empty(), "console errors: {log:#?}");

    // Without it, the page asks for it, and works once given.
    b.eval("sessionStorage.clear(); return null").await;
    b.client.goto(&format!("{base}/")).await.unwrap();
    b.wait_for(
        "the token form",
        10,
        "return document.getElementById('token-form').hidden === false",
    )
    .await;
    assert_eq!(
        b.eval("return document.querySelector('#p-intents .body').textContent")
            .await,
        "",
        "no data without the token"
    );
    b.eval("document.getElementById('token-input').value = 's3cret'; document.querySelector('#token-form button').click(); return null").await;
    b.wait_for(
        "the page live with the pasted token",
        10,
        "return document.body.dataset.loaded !== undefined && document.getElementById('conn').textContent === 'live'",
    )
    .await;
    b.close().await;
    stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_holds_what_the_page_draws() {
    let d = TestDaemon::start_with(
        SEEDED,
        Arc::new(vigil::clock::ManualClock::at(NOW)),
        Default::default(),
    )
    .await;
    seed(&d).await;
    let s = d.get_json("/api/dashboard").await;
    let w = &s["windows"][0];
    assert_eq!(w["name"], "maintenance");
    assert_eq!(w["timezone"], "America/New_York");
    assert_eq!(w["open"], false);
    assert_eq!(w["opens_at"], "2026-12-01 03:00 EST");
    assert_eq!(w["opens_in_s"], 20.0 * 3600.0);
    let note = s["playbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "note")
        .unwrap();
    assert_eq!(note["runs_24h"], 1);
    assert_eq!(note["cooldown_remaining_s"], 3600.0);
    assert_eq!(s["flags"][0]["armed"], true);
    assert_eq!(s["budgets"][0]["limit_s"], 60.0);
    assert_eq!(s["invariants"][0]["state"], "red");
    assert_eq!(s["invariants"][0]["signals"][0], "job j1 is broken");
    assert_eq!(s["sources"][0]["up"], false);
    assert_eq!(s["chart"]["hours"].as_array().unwrap().len(), 24);
    assert_eq!(
        s["chart"]["events"][23], 3,
        "the two events posted and the invariant's invariant_red"
    );
    assert_eq!(s["chart"]["intents"][23], 2);
    assert_eq!(s["chart"]["intents"].as_array().unwrap().len(), 24);
    assert_eq!(s["latest_intents"].as_array().unwrap().len(), 2);
    assert!(s["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["event"] == "gate_denied"));
    d.stop().await;
}

/// 12:00 UTC is 07:00 in New York: the 03:00-07:00 window has just closed.
const NOW: &str = "2026-11-30T12:00:00Z";

const SEEDED: &str = r#"
[sources.app_log]
type = "file"
path = "{dir}/missing/app.log"

[windows.maintenance]
at = "03:00-07:00"
timezone = "America/New_York"

[budgets.gpu_downtime]
seconds = 60

[playbooks.vllm_oom]
on = "alert_gpu_oom"
mode = { default = "predictive", escalate_on = "vllm_oom" }
window = "maintenance"
budget = "gpu_downtime"
cooldown = "6h"
steps = [{ run = ["true"] }]

[playbooks.note]
on = "trigger_note"
cooldown = "1h"
steps = [{ run = ["true"] }]

[collectors.jobs]
type = "command"
command = ["echo", '[{"id": "j1", "state": "broken"}]']

[invariants.J-01]
name = "No broken jobs"
tier = "A"
severity = "critical"
runbook = "https://wiki.example/runbooks/J-01"
query = "SELECT id, state FROM jobs WHERE state = 'broken'"
signal = "job {id} is {state}"
key = ["id"]
"#;

/// Seeds the daemon through its API: an armed flag, an intent denied by the window, a
/// playbook run, a red invariant, three events (two posted, the invariant's `invariant_red`).
async fn seed(d: &TestDaemon) {
    for _ in 0..3 {
        let r = d.post("/api/symptoms", &json!({"kind": "vllm_oom"})).await;
        assert_eq!(r.status(), 200);
    }
    let submit = |t: &'static str, reason: &'static str| async move {
        let r = d
            .post(
                "/api/intents",
                &json!({"intent_type": t, "priority": 9, "reason": reason}),
            )
            .await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    };
    let denied = submit("alert_gpu_oom", "GPU OOM: tried to allocate 2.50 GiB").await;
    let ran = submit("trigger_note", "note it").await;
    d.wait_until("both intents decided", || {
        let s = |id| {
            d.intents()
                .into_iter()
                .find(|i| i.id == id)
                .map(|i| i.status.as_str())
        };
        s(denied) == Some("denied") && s(ran) == Some("done")
    })
    .await;
    // The background loop may be in its first cycle: 409 until it is done.
    loop {
        let r = d
            .post("/api/invariants/run-cycle", &json!({"only": ["J-01"]}))
            .await;
        match r.status().as_u16() {
            200 => break,
            409 => tokio::time::sleep(Duration::from_millis(20)).await,
            s => panic!("run-cycle answered {s}: {}", r.text().await.unwrap()),
        }
    }
    d.post_event("gpu_probe", json!({"n": 1})).await;
    d.post_event("gpu_probe", json!({"n": 2})).await;
    d.wait_until("three events through the pipeline", || {
        d.app.changes.events_per_hour(d.app.clock.now_ms())[23] == 3
    })
    .await;
}

/// The browser's log entries that are errors. The units and canaries panels ask their own
/// endpoints, which answer 404 where that subsystem has no API (the panel then says so):
/// Chromium logs such a 404 as a failed load, which is not an error of the page.
fn errors(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|e| e["level"] == "SEVERE")
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            !(e["source"] == "network"
                && (m.contains("/api/units ") || m.contains("/api/canaries "))
                && m.contains("404"))
        })
        .collect()
}

/// Where screenshots go: the build's `target/` directory.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join(format!("dashboard-{name}.png"))
}

const HOSTILE: &str = r#"<script>document.body.dataset.pwned = "script"</script><img src=x onerror="document.body.dataset.pwned = 'img'"><b>bold</b>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_state_live_and_data_as_text_in_a_real_browser() {
    let d = TestDaemon::start_with(
        SEEDED,
        Arc::new(vigil::clock::ManualClock::at(NOW)),
        Default::default(),
    )
    .await;
    seed(&d).await;
    let b = Browser::start(1280, 800).await;
    b.client.goto(&d.api("/")).await.unwrap();
    b.wait_for(
        "the summary drawn",
        10,
        "return document.body.dataset.loaded !== undefined",
    )
    .await;
    b.wait_for(
        "the stream connected",
        10,
        "return document.getElementById('conn').textContent === 'live'",
    )
    .await;

    // The seeded state, panel by panel.
    let text = |sel: &str| {
        let sel = sel.to_string();
        let b = &b;
        async move {
            let v = b
                .eval(&format!(
                    "const e = document.querySelector({}); return e ? e.textContent : null",
                    serde_json::to_string(&sel).unwrap()
                ))
                .await;
            v.as_str()
                .unwrap_or_else(|| panic!("nothing matches {sel}"))
                .to_string()
        }
    };
    let pb = text("[data-playbook=vllm_oom]").await;
    assert!(pb.contains("canary"), "escalated mode shown: {pb}");
    let note = text("[data-playbook=note]").await;
    assert!(note.contains("1h 0m") || note.contains("59m"), "{note}");
    let flag = text("[data-flag=vllm_oom]").await;
    assert!(
        flag.contains("armed") && flag.contains("3 symptoms"),
        "{flag}"
    );
    assert!(
        flag.contains("expires in 4h") || flag.contains("expires in 3h"),
        "{flag}"
    );
    let budget = text("[data-budget=gpu_downtime]").await;
    assert!(budget.contains("remaining 60.0 s of 60 s"), "{budget}");
    let window = text("[data-window=maintenance]").await;
    assert!(
        window.contains("closed") && window.contains("opens 2026-12-01 03:00 EST"),
        "{window}"
    );
    let source = text("[data-source=app_log]").await;
    assert!(
        source.contains("down") && source.contains("cannot watch"),
        "{source}"
    );
    let inv = text("[data-invariant=J-01]").await;
    assert!(
        inv.contains("red") && inv.contains("job j1 is broken"),
        "{inv}"
    );
    let runbook = b
        .eval("return document.querySelector('[data-invariant=J-01] a').href")
        .await;
    assert_eq!(runbook, "https://wiki.example/runbooks/J-01");
    let intents = text("#p-intents").await;
    assert!(
        intents.contains("denied 1") && intents.contains("done 1"),
        "{intents}"
    );
    let audit = text("#p-audit").await;
    assert!(
        audit.contains("gate_denied") && audit.contains("escalation_armed"),
        "{audit}"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('#p-chart rect.events').length")
            .await,
        24
    );
    assert_eq!(text("#p-units .body").await, "no units configured");
    assert_eq!(text("#p-canaries .body").await, "no canaries configured");
    let log = b.log().await;
    assert!(errors(&log).is_empty(), "console errors: {log:#?}");

    // An intent submitted through the API appears without a reload, through the stream (the
    // page's own periodic reload is 30 s away), its hostile reason as plain text.
    b.eval("window.beforeSubmit = true; return null").await;
    let submitted = Instant::now();
    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": "alert_injected", "priority": 5, "reason": HOSTILE}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    b.wait_for(
        "the new intent on the page",
        5,
        &format!("return document.querySelector('[data-intent=\"{id}\"]') !== null"),
    )
    .await;
    eprintln!(
        "intent {id} shown {:?} after it was submitted",
        submitted.elapsed()
    );
    assert_eq!(
        b.eval("return window.beforeSubmit === true").await,
        true,
        "the page was not reloaded"
    );
    let reason = text(&format!("[data-intent=\"{id}\"] .reason")).await;
    assert_eq!(reason, HOSTILE, "the reason shows as text");
    assert_eq!(
        b.eval("return document.body.dataset.pwned === undefined && document.querySelector('#p-intents img, #p-intents b, #p-intents script') === null").await,
        true,
        "no markup from the reason made it into the page"
    );
    // One host's intents: no host column. An intent for another host (a fleet's store)
    // brings the column, live.
    let headers = "return [...document.querySelectorAll('#p-intents th')].map((h) => h.textContent).join(' ')";
    assert_eq!(b.eval(headers).await, "id created type pri status reason");
    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": "alert_elsewhere", "priority": 5, "reason": "on gpu2", "data": {"host": "gpu2"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let other = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    b.wait_for(
        "the other host's intent on the page",
        5,
        &format!("return document.querySelector('[data-intent=\"{other}\"]') !== null"),
    )
    .await;
    assert_eq!(
        b.eval(headers).await,
        "id created host type pri status reason"
    );
    assert_eq!(
        text(&format!("[data-intent=\"{other}\"] .host")).await,
        "gpu2"
    );
    assert_eq!(
        text(&format!("[data-intent=\"{id}\"] .host")).await,
        vigil::store::hostname()
    );
    let log = b.log().await;
    assert!(errors(&log).is_empty(), "console errors: {log:#?}");

    // Desktop and phone screenshots; on a phone the page fits its width.
    b.set_viewport(1280, 800, false).await;
    std::fs::write(
        screenshot_path("desktop"),
        b.client.screenshot().await.unwrap(),
    )
    .unwrap();
    b.set_viewport(390, 844, true).await;
    b.wait_for(
        "the phone layout",
        10,
        "return window.innerWidth <= 390 && getComputedStyle(document.querySelector('main')).gridTemplateColumns.split(' ').length === 1",
    )
    .await;
    assert_eq!(
        b.eval("return document.documentElement.scrollWidth <= window.innerWidth")
            .await,
        true,
        "nothing wider than a phone's screen"
    );
    std::fs::write(
        screenshot_path("phone"),
        b.client.screenshot().await.unwrap(),
    )
    .unwrap();
    // And the whole page at desktop width, every panel in view, for a reviewer.
    b.set_viewport(1280, 1800, false).await;
    std::fs::write(
        screenshot_path("desktop-full"),
        b.client.screenshot().await.unwrap(),
    )
    .unwrap();
    let log = b.log().await;
    assert!(errors(&log).is_empty(), "console errors: {log:#?}");
    b.close().await;
    d.stop().await;
}
