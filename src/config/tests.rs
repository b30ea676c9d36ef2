use super::*;
use crate::sources::dir::DirConfig;
use crate::sources::file::FileConfig;

fn errors(text: &str) -> String {
    Config::parse("vigil.toml", text).unwrap_err().to_string()
}

const ISSUE_EXAMPLE: &str = r#"
data_dir = ".vigil"
timezone = "America/New_York"

[api]
listen = "127.0.0.1:9108"

[sources.vllm_log]
type = "file"                      # tail appended lines (inotify, survives rotation/truncation)
path = "/var/log/vllm/server.log"
[[sources.vllm_log.match]]         # a line that matches becomes an event; named groups become fields
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom"

[sources.promotions]
type = "dir"                       # files created or modified under path become events
path = "/srv/out/promotions"
event = "promotion_new"

[sources.judge]
type = "journald"                  # follows units; `file`/`directory` read journal files instead
units = ["judge.service"]

[sources.gpu]
type = "metrics"                   # scrape Prometheus text format; thresholds become events
url = "http://127.0.0.1:9400/metrics"
interval = "30s"
[[sources.gpu.threshold]]
metric = "lock_contention_total"
above = 10
event = "lock_contention_high"

[sources.api_health]
type = "probe"                     # http / tcp / command; emits probe_failed / probe_ok
http = "http://127.0.0.1:8000/health"
interval = "10s"
timeout = "2s"

[rules.gpu_oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
cooldown = "1h"
reason = "GPU OOM: tried to allocate {alloc_gib} GiB"

[rules.promotion_cluster]
on = "promotion_new"
count = 3
within = "10m"
intent = "trigger_phase_promotion_cluster"
priority = 7
cooldown = "1h"

[rules.heartbeat_stall]
absent = "dream_heartbeat"         # fires when no such event arrives for `for`
for = "5m"
intent = "alert_heartbeat_stall"
priority = 8

[rules.phase_too_long]
on = "phase_complete"
where = { duration_s = { above = 7200 } }   # also: equality, `below`, `matches` (regex)
intent = "suggest_phase_optimization"
priority = 6
"#;

#[test]
fn the_issue_example_parses_as_written() {
    let c = Config::parse("vigil.toml", ISSUE_EXAMPLE).unwrap();
    assert_eq!(c.sources.len(), 5);
    assert_eq!(c.sources["vllm_log"].kind(), "file");
    assert!(c.sources["vllm_log"].get::<FileConfig>().is_some());
    assert_eq!(c.sources["api_health"].kind(), "probe");
    assert!(c.sources["api_health"].get::<FileConfig>().is_none());
    assert_eq!(c.rules["promotion_cluster"].count, Some(3));
    assert_eq!(
        c.rules["phase_too_long"].where_["duration_s"].above,
        Some(7200.0)
    );
    assert_eq!(c.timezone.0.iana_name(), Some("America/New_York"));
    assert_eq!(c.api.listen.port(), 9108);
    // Two rules wait for events no source here emits; that is a warning, not an error.
    let w = c.warnings("2026-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].to_string().contains("\"dream_heartbeat\""), "{}", w[0]);
}

#[test]
fn unknown_key_names_the_place_and_the_fix() {
    let e = errors("[rules.gpu_oom]\non = \"gpu_oom\"\nintent = \"alert_gpu_oom\"\npririty = 9\n");
    assert_eq!(
        e,
        "vigil.toml:4:1: unknown key \"pririty\" in [rules.gpu_oom]; did you mean \"priority\"?"
    );
}

#[test]
fn wrong_type_names_the_place_and_the_choices() {
    let e = errors("[sources.log]\ntype = \"fle\"\npath = \"/x\"\n");
    assert_eq!(
        e,
        "vigil.toml:2:8: unknown type \"fle\" in [sources.log]; did you mean \"file\"? (one of: file, dir, journald, metrics, probe, host)"
    );
}

#[test]
fn missing_type_names_the_table() {
    let e = errors("[sources.log]\npath = \"/x\"\n");
    assert!(
        e.starts_with(
            "vigil.toml:1:1: [sources.log] has no `type`; add `type = \"...\"` (one of: file, dir"
        ),
        "{e}"
    );
}

#[test]
fn errors_inside_a_tagged_source_keep_their_location() {
    let e = errors("[sources.log]\ntype = \"file\"\npath = \"/x\"\n\n[[sources.log.match]]\nregex = '('\nevent = \"x\"\n");
    assert!(e.starts_with("vigil.toml:6:9: invalid regex \"(\""), "{e}");
    let e = errors("[sources.log]\ntype = \"file\"\npaht = \"/x\"\n");
    assert_eq!(
        e.lines().next().unwrap(),
        "vigil.toml:3:1: unknown key \"paht\" in [sources.log]; did you mean \"path\"?"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let e = errors("[sources.a]\ntype = \"nope\"\n[sources.b]\npath = \"/x\"\n[rules.r]\nintent = \"x\"\npriority = 1\non = \"e\"\nbogus = 1\n");
    assert_eq!(e.lines().count(), 3, "{e}");
}

#[test]
fn bad_values_say_what_to_write() {
    let e = errors("[rules.r]\non = \"e\"\nintent = \"x\"\npriority = 1\ncooldown = \"1 hour\"\n");
    assert!(
        e.starts_with("vigil.toml:5:12: invalid duration \"1 hour\""),
        "{e}"
    );
    let e = errors("timezone = \"Mars/Olympus\"\n");
    assert!(
        e.starts_with("vigil.toml:1:12: unknown time zone \"Mars/Olympus\""),
        "{e}"
    );
    let e = errors("[rules.r]\nabsent = \"hb\"\nintent = \"x\"\npriority = 8\n");
    assert_eq!(
        e,
        "vigil.toml:1:1: [rules.r]: `absent` needs `for`, e.g. `for = \"5m\"`"
    );
    let e = errors("[rules.r]\non = \"e\"\ncount = 3\nintent = \"x\"\npriority = 8\n");
    assert!(e.contains("`count = 3` needs a window"), "{e}");
    let e = errors("[sources.p]\ntype = \"probe\"\ncommand = []\n");
    assert!(e.contains("`command` is empty"), "{e}");
    let e = errors("[sources.j]\ntype = \"journald\"\ncommand = []\n");
    assert!(e.starts_with("vigil.toml:1:1: `command` is empty"), "{e}");
    let e = errors("[sources.p]\ntype = \"probe\"\ninterval = \"5s\"\n");
    assert!(e.contains("a probe needs one target"), "{e}");
}

#[test]
fn environment_variables_expand_in_strings() {
    std::env::set_var("VIGIL_TEST_LOG_DIR", "/tmp/logs");
    let c = Config::parse(
        "vigil.toml",
        "[sources.a]\ntype = \"file\"\npath = \"${VIGIL_TEST_LOG_DIR}/a.log\"\n[sources.b]\ntype = \"dir\"\npath = \"${VIGIL_TEST_UNSET_DIR:-/srv/b}\"\nevent = \"x\"\n",
    )
    .unwrap();
    let a = c.sources["a"].get::<FileConfig>().unwrap();
    assert_eq!(a.path, std::path::Path::new("/tmp/logs/a.log"));
    let b = c.sources["b"].get::<DirConfig>().unwrap();
    assert_eq!(b.path, std::path::Path::new("/srv/b"));
    let e = errors("data_dir = \"${VIGIL_TEST_SURELY_UNSET}\"\n");
    assert_eq!(
        e,
        "vigil.toml:1:12: environment variable VIGIL_TEST_SURELY_UNSET is not set; set it, or give a default: ${VIGIL_TEST_SURELY_UNSET:-value}"
    );
}

#[test]
fn toml_syntax_errors_have_a_location() {
    let e = errors("[rules.r\non = 1\n");
    assert!(e.starts_with("vigil.toml:1:"), "{e}");
}

/// Both parts of the built-in default on every host: `builtin()` adds the journald part only
/// where journal files exist (not on most CI machines), so it is parsed here from its text.
/// Each default rule then gets the event it waits for, as its source makes it: a host reading
/// past every default threshold, and the journal lines the kernel and systemd write.
#[test]
fn builtin_default_parses_everywhere_and_each_rule_fires_on_its_event() {
    use crate::event::Event;
    use crate::rules::{Output, RuleEngine};
    use crate::sources::{host, journald::JournaldConfig};

    assert_eq!(Config::builtin().origin, "(built-in default)");
    let base = include_str!("default.toml");
    let c = Config::parse("(built-in default)", base).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sources.keys().collect::<Vec<_>>(), ["host"]);
    let full = format!("{base}{}", include_str!("default_journal.toml"));
    let c = Config::parse("(built-in default)", &full).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sources.keys().collect::<Vec<_>>(), ["host", "journal"]);
    assert!(c.warnings(jiff::Timestamp::UNIX_EPOCH).is_empty());

    const T: i64 = 1_764_000_000_000;
    let mut events = Vec::new();
    let reading = host::Reading {
        disks: vec![("/".into(), 97.5)],
        memory_total_kb: 8_000_000,
        memory_available_kb: 400_000,
        load1: 9.0,
        cpus: 2,
    };
    let host_config = c.sources["host"].get::<host::HostConfig>().unwrap();
    for (kind, data) in host::check(host_config, &reading, &mut Default::default()) {
        events.push(Event::new("host", kind, T, data));
    }
    let journal = &c.sources["journal"]
        .get::<JournaldConfig>()
        .unwrap()
        .matches;
    let failed = "judge.service: Failed with result 'exit-code'.";
    for (i, line) in [
        "Out of memory: Killed process 4242 (python3) total-vm:8123456kB, anon-rss:7000000kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:14000kB oom_score_adj:0",
        "python3[4243]: segfault at 0 ip 00007f3a2b1c4d5e sp 00007ffd1e2f3a40 error 4 in libc.so.6[7f3a2b100000+195000]",
        failed,
        failed,
        failed,
    ]
    .into_iter()
    .enumerate()
    {
        let (kind, data) = journal.classify(line).unwrap_or_else(|| panic!("no match: {line}"));
        // Two minutes apart: identical lines within 60 s would be one event.
        events.push(Event::new("journal", kind, T + i as i64 * 120_000, data));
    }

    let mut engine = RuleEngine::new(&c.rules, T);
    let mut out = Output::default();
    for ev in &events {
        engine.process(ev, &mut out);
    }
    let mut fired: Vec<(String, String, u8, String)> = out
        .proposals
        .into_iter()
        .map(|p| (p.rule, p.intent_type, p.priority, p.reason))
        .collect();
    fired.sort();
    let want = [
        (
            "disk_full",
            "alert_disk_full",
            8,
            "/ is 97.5% full (threshold 90.0%)",
        ),
        (
            "load_high",
            "suggest_load_investigation",
            5,
            "load per CPU is 4.5 (threshold 2.0)",
        ),
        (
            "memory_low",
            "alert_memory_low",
            8,
            "only 5.0% of memory available (390 MB)",
        ),
        (
            "oom_kill",
            "alert_oom_kill",
            9,
            "kernel OOM killer ended python3 (pid 4242)",
        ),
        (
            "segfault",
            "alert_segfault",
            8,
            "python3 (pid 4243) crashed with a segfault",
        ),
        (
            "unit_flapping",
            "alert_unit_flapping",
            8,
            "judge.service failed 3 times in 30m",
        ),
    ]
    .map(|(r, t, p, why)| (r.to_string(), t.to_string(), p, why.to_string()));
    assert_eq!(fired, want);
    assert_eq!(c.rules.len(), want.len(), "every default rule is fed");
}

#[test]
fn check_warns_about_a_window_a_dst_change_moves() {
    let text = "timezone = \"America/New_York\"\n[windows.nightly]\nat = \"02:00-03:00\"\n";
    let c = Config::parse("vigil.toml", text).unwrap();
    let w: Vec<String> = c
        .warnings("2026-01-01T00:00:00Z".parse().unwrap())
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        w,
        ["vigil.toml:2:1: warning: [windows.nightly] on 2026-03-08 02:00-03:00: its start falls in a DST gap or repeated hour; the window opens at 03:00 EDT and stays open 1.0h"]
    );
}

/// Errors a new user meets first, each with its exact message.
#[test]
fn config_errors_name_the_right_place_and_say_what_to_write() {
    let cases = [
        (
            ISSUE_EXAMPLE.replace("intent = \"alert_gpu_oom\"\n", ""),
            "vigil.toml:39:1: missing key \"intent\" in [rules.gpu_oom]; add `intent = ...`",
        ),
        (
            ISSUE_EXAMPLE.replace("priority = 9", "priority = \"nine\""),
            "vigil.toml:42:12: `priority` must be a whole number from 0 to 10, not string \"nine\" in [rules.gpu_oom]",
        ),
        (
            ISSUE_EXAMPLE.replace("within = \"10m\"", "within = 10"),
            "vigil.toml:49:10: `within` must be a duration like \"10m\" (a whole number and a unit: ms, s, m, h, d), not integer `10` in [rules.promotion_cluster]",
        ),
        (
            format!("{ISSUE_EXAMPLE}\n[bogus]\nx = 1\n"),
            "vigil.toml:66:2: unknown key \"bogus\" at the top level; valid keys: data_dir, timezone, api, intents, metrics, rules, store, host",
        ),
        (
            format!("bogus = 1\n{ISSUE_EXAMPLE}"),
            "vigil.toml:1:1: unknown key \"bogus\"; valid keys: data_dir, timezone, api, intents, metrics, rules, store, host",
        ),
        (
            ISSUE_EXAMPLE.replace("interval = \"10s\"", "interval = \"0s\""),
            "vigil.toml:36:12: `interval` must be more than zero; give a duration like \"10s\" in [sources.api_health]",
        ),
        (
            ISSUE_EXAMPLE.replace("interval = \"30s\"", "interval = \"0ms\""),
            "vigil.toml:27:12: `interval` must be more than zero; give a duration like \"10s\" in [sources.gpu]",
        ),
        (
            format!("{ISSUE_EXAMPLE}\n[intents]\nretention = \"18446744073709551615ms\"\n"),
            "vigil.toml:67:13: duration \"18446744073709551615ms\" is too large; the longest is 106751991167d (about 292 million years) in [intents]",
        ),
        (
            format!("{ISSUE_EXAMPLE}\n[intents]\nretention = \"0s\"\n"),
            "vigil.toml:67:1: `retention` in [intents] must be more than zero; give a duration like \"24h\"",
        ),
        (
            "[sources.box]\ntype = \"host\"\ninterval = \"0s\"\n".to_string(),
            "vigil.toml:3:12: `interval` must be more than zero; give a duration like \"10s\" in [sources.box]",
        ),
        (
            "[sources.p]\ntype = \"probe\"\ntcp = \"127.0.0.1:1\"\ntimeout = \"0ms\"\n".to_string(),
            "vigil.toml:4:11: `timeout` must be more than zero; give a duration like \"10s\" in [sources.p]",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(errors(&text), want);
    }
}

#[test]
fn a_missing_config_file_says_the_os_error_once() {
    let e = Config::load(Path::new("/nonexistent/vigil.toml")).unwrap_err();
    assert_eq!(
        format!("{:#}", anyhow::Error::from(e)),
        "cannot read config /nonexistent/vigil.toml: No such file or directory (os error 2); pass an existing file with --config"
    );
}

#[test]
fn a_reason_naming_a_field_no_event_carries_is_a_warning() {
    let text = ISSUE_EXAMPLE.replace(
        "reason = \"GPU OOM: tried to allocate {alloc_gib} GiB\"",
        "reason = \"GPU OOM: {alloc_gb} GiB on {unit}, rule {rule}\"",
    );
    let c = Config::parse("vigil.toml", &text).unwrap();
    let w: Vec<String> = c
        .warnings(jiff::Timestamp::now())
        .iter()
        .map(|d| d.to_string())
        .filter(|w| w.contains("reason"))
        .collect();
    assert_eq!(
        w,
        ["vigil.toml:39:1: warning: [rules.gpu_oom] reason names {alloc_gb}, {unit}, which no \"gpu_oom\" event carries (it has: alloc_gib, count, event_type, line, rule, source, type); did you mean {alloc_gib}?"]
    );
    // The example as written names only fields its events carry; journald adds `unit`.
    let c = Config::parse("vigil.toml", ISSUE_EXAMPLE).unwrap();
    assert!(!c
        .warnings(jiff::Timestamp::now())
        .iter()
        .any(|d| d.message.contains("reason")));
    let journal = "[sources.j]\ntype = \"journald\"\n[rules.r]\non = \"line\"\nintent = \"i\"\npriority = 1\nreason = \"{unit} said {line} ({priority})\"\n";
    let c = Config::parse("vigil.toml", journal).unwrap();
    assert!(c.warnings(jiff::Timestamp::now()).is_empty());
    // A scrape's labels are not known ahead: no warning.
    let scrape = "[sources.m]\ntype = \"metrics\"\nurl = \"http://127.0.0.1:1/\"\n[[sources.m.threshold]]\nmetric = \"x\"\nabove = 1\nevent = \"hot\"\n[rules.r]\non = \"hot\"\nintent = \"i\"\npriority = 1\nreason = \"{gpu} is hot\"\n";
    let c = Config::parse("vigil.toml", scrape).unwrap();
    assert!(c.warnings(jiff::Timestamp::now()).is_empty());
}
