use super::*;
use crate::event::Event;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const MIN: i64 = 60_000;

fn rules(toml_text: &str) -> BTreeMap<String, RuleConfig> {
    let r: BTreeMap<String, RuleConfig> = toml::from_str(toml_text).expect("rules parse");
    for (name, c) in &r {
        c.check().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    r
}

fn ev(kind: &str, ts: i64, data: Value) -> Event {
    Event::new(
        "test",
        kind,
        ts,
        data.as_object().cloned().unwrap_or_default(),
    )
}

fn feed(e: &mut RuleEngine, ev: Event) -> Output {
    let mut out = Output::default();
    e.process(&ev, &mut out);
    out
}

#[test]
fn identical_events_within_60s_are_one() {
    let r = rules("[a]\non = \"x\"\nintent = \"i\"\npriority = 1\ncount = 2\nwithin = \"10m\"\n");
    let mut e = RuleEngine::new(&r, 0);
    assert!(feed(&mut e, ev("x", 0, json!({"k": 1})))
        .proposals
        .is_empty());
    // The same fact 59.999 s later is dropped: no second count.
    assert!(feed(&mut e, ev("x", MIN - 1, json!({"k": 1})))
        .proposals
        .is_empty());
    assert_eq!(e.stats().duplicates_dropped, 1);
    // At 60 s it counts again, and makes two.
    assert_eq!(
        feed(&mut e, ev("x", MIN, json!({"k": 1}))).proposals.len(),
        1
    );
    assert_eq!(e.stats().duplicates_dropped, 1);
    // Different data is never a duplicate.
    assert!(feed(&mut e, ev("x", MIN + 1, json!({"k": 2})))
        .proposals
        .is_empty());
    assert_eq!(e.stats().duplicates_dropped, 1);
}

#[test]
fn a_dropped_repeat_does_not_extend_the_window() {
    let r = rules("[a]\non = \"x\"\nintent = \"i\"\npriority = 1\n");
    let mut e = RuleEngine::new(&r, 0);
    let mut fired = 0;
    for s in (0..=120).step_by(30) {
        fired += feed(&mut e, ev("x", s * 1000, json!({}))).proposals.len();
    }
    // 0 s, 60 s and 120 s get through; 30 s and 90 s are repeats.
    assert_eq!(fired, 3);
    assert_eq!(e.stats().duplicates_dropped, 2);
}

#[test]
fn dedup_table_is_bounded_and_expires() {
    let r =
        rules("[a]\non = \"x\"\nintent = \"i\"\npriority = 1\ncount = 1000000\nwithin = \"1h\"\n");
    let mut e = RuleEngine::new(&r, 0);
    for i in 0..(DEDUP_CAP as i64 + 5_000) {
        feed(&mut e, ev("x", i / 100, json!({ "n": i })));
    }
    assert_eq!(e.dedup_len(), DEDUP_CAP);
    e.tick(10 * MIN, &mut Output::default());
    assert_eq!(e.dedup_len(), 0, "entries older than 60 s are forgotten");
}

#[test]
fn cooldown_suppresses_proposals_until_it_passes() {
    let r = rules("[a]\non = \"x\"\nintent = \"i\"\npriority = 3\ncooldown = \"1h\"\n");
    let mut e = RuleEngine::new(&r, 0);
    assert_eq!(feed(&mut e, ev("x", 0, json!({"n": 1}))).proposals.len(), 1);
    assert!(feed(&mut e, ev("x", 59 * MIN, json!({"n": 2})))
        .proposals
        .is_empty());
    assert_eq!(e.stats().suppressed, 1);
    let out = feed(&mut e, ev("x", 60 * MIN, json!({"n": 3})));
    assert_eq!(out.proposals.len(), 1);
    assert_eq!(out.proposals[0].priority, 3);
    assert_eq!(out.proposals[0].intent_type, "i");
}

#[test]
fn symptom_is_recorded_even_in_cooldown() {
    let r = rules(
        "[a]\non = \"x\"\nintent = \"i\"\npriority = 3\ncooldown = \"1h\"\nsymptom = \"x_seen\"\n",
    );
    let mut e = RuleEngine::new(&r, 0);
    let first = feed(&mut e, ev("x", 0, json!({"n": 1})));
    assert_eq!((first.proposals.len(), first.symptoms.len()), (1, 1));
    let quiet = feed(&mut e, ev("x", MIN, json!({"n": 2})));
    assert_eq!((quiet.proposals.len(), quiet.symptoms.len()), (0, 1));
    assert_eq!(quiet.symptoms[0].kind, "x_seen");
    assert_eq!(quiet.symptoms[0].rule, "a");
    assert_eq!(quiet.symptoms[0].data["n"], json!(2));
}

#[test]
fn group_by_counts_and_cools_down_per_group() {
    let r = rules(
        "[flap]\non = \"unit_failed\"\ngroup_by = [\"unit\"]\ncount = 2\nwithin = \"10m\"\nintent = \"i\"\npriority = 8\ncooldown = \"1h\"\nreason = \"{unit} failed {count} times ({missing})\"\n",
    );
    let mut e = RuleEngine::new(&r, 0);
    let f = |e: &mut RuleEngine, ts: i64, unit: &str| {
        feed(e, ev("unit_failed", ts, json!({ "unit": unit, "ts": ts }))).proposals
    };
    assert!(f(&mut e, 0, "a").is_empty());
    assert!(f(&mut e, 1, "b").is_empty(), "b is its own group");
    let p = f(&mut e, 2, "a");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].reason, "a failed 2 times ({missing})");
    assert_eq!(p[0].data["count"], json!(2));
    assert_eq!(p[0].data["rule"], json!("flap"));
    assert_eq!(p[0].data["event_type"], json!("unit_failed"));
    assert_eq!(p[0].data["source"], json!("test"));
    // b fires although a is cooling down.
    assert_eq!(f(&mut e, 3, "b").len(), 1);
    // a's window was reset when it fired and a is in cooldown.
    assert!(f(&mut e, 4, "a").is_empty());
    assert!(f(&mut e, 5, "a").is_empty());
    assert_eq!(e.group_count("flap"), Some(2));
    // A missing group field is the group "".
    assert!(feed(&mut e, ev("unit_failed", 6, json!({"n": 1})))
        .proposals
        .is_empty());
    assert_eq!(
        feed(&mut e, ev("unit_failed", 7, json!({"n": 2})))
            .proposals
            .len(),
        1
    );
}

#[test]
fn event_fields_win_over_added_proposal_fields() {
    let r = rules("[a]\non = \"x\"\nintent = \"i\"\npriority = 1\nreason = \"{count}/{rule}/{type}/{source}\"\n");
    let mut e = RuleEngine::new(&r, 0);
    let p = feed(
        &mut e,
        ev("x", 0, json!({"source": "gpu0", "count": "many"})),
    )
    .proposals;
    assert_eq!(p[0].data["source"], json!("gpu0"));
    assert_eq!(p[0].data["count"], json!("many"));
    assert_eq!(p[0].reason, "1/a/x/gpu0");
}

#[test]
fn absence_fires_once_and_rearms() {
    let r = rules("[stall]\nabsent = \"hb\"\nfor = \"5m\"\nintent = \"alert\"\npriority = 8\n");
    let start = 1_000_000;
    let mut e = RuleEngine::new(&r, start);
    let tick = |e: &mut RuleEngine, t: i64| {
        let mut out = Output::default();
        e.tick(t, &mut out);
        out.proposals
    };
    assert!(tick(&mut e, start + 5 * MIN - 1).is_empty());
    let p = tick(&mut e, start + 5 * MIN);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].reason, "rule stall: no hb event for 5m");
    assert_eq!(p[0].data["silent_s"], json!(300));
    assert!(
        tick(&mut e, start + 6 * MIN).is_empty(),
        "fires once per stall"
    );
    // The heartbeat comes back: re-armed from its time.
    assert!(feed(&mut e, ev("hb", start + 7 * MIN, json!({})))
        .proposals
        .is_empty());
    assert!(tick(&mut e, start + 12 * MIN - 1).is_empty());
    assert_eq!(tick(&mut e, start + 12 * MIN).len(), 1);
}

#[test]
fn absence_is_also_checked_by_event_time() {
    let r = rules("[stall]\nabsent = \"hb\"\nfor = \"5m\"\nintent = \"alert\"\npriority = 8\n");
    let mut e = RuleEngine::new(&r, 0);
    // No tick at all: an unrelated event at 5 m is enough to notice the stall.
    assert_eq!(
        feed(&mut e, ev("other", 5 * MIN, json!({})))
            .proposals
            .len(),
        1
    );
    // A repeated heartbeat (a dedup repeat) still re-arms.
    feed(&mut e, ev("hb", 6 * MIN, json!({})));
    feed(&mut e, ev("hb", 6 * MIN + 30_000, json!({})));
    assert!(feed(&mut e, ev("other", 11 * MIN, json!({})))
        .proposals
        .is_empty());
    assert_eq!(
        feed(&mut e, ev("other", 11 * MIN + 30_000, json!({})))
            .proposals
            .len(),
        1
    );
}

#[test]
fn where_predicates_filter_matches() {
    let r = rules(
        "[long]\non = \"phase_complete\"\nwhere = { duration_s = { above = 7200 }, status = \"ok\" }\nintent = \"i\"\npriority = 6\n",
    );
    let mut e = RuleEngine::new(&r, 0);
    let p = |e: &mut RuleEngine, ts: i64, d: Value| {
        feed(e, ev("phase_complete", ts, d)).proposals.len()
    };
    assert_eq!(
        p(&mut e, 0, json!({"duration_s": "7200", "status": "ok"})),
        0
    );
    assert_eq!(
        p(&mut e, 1, json!({"duration_s": "7201"})),
        0,
        "missing field"
    );
    assert_eq!(
        p(&mut e, 2, json!({"duration_s": "7201", "status": "bad"})),
        0
    );
    assert_eq!(
        p(&mut e, 3, json!({"duration_s": "7201", "status": "ok"})),
        1
    );
}

#[test]
fn groups_stay_at_the_cap_under_a_flood_of_distinct_values() {
    let r = rules(
        "[g]\non = \"x\"\ngroup_by = [\"k\"]\ncount = 3\nwithin = \"10m\"\nintent = \"i\"\npriority = 1\n",
    );
    let mut e = RuleEngine::new(&r, 0);
    let mut out = Output::default();
    for i in 0..1_000_000i64 {
        e.process(&ev("x", i, json!({ "k": i })), &mut out);
        if i % 1000 == 0 {
            assert!(e.group_count("g").unwrap() <= GROUP_CAP);
        }
    }
    assert!(out.proposals.is_empty());
    assert_eq!(e.group_count("g"), Some(GROUP_CAP));
    assert!(e.stats().groups_evicted >= 1_000_000 - GROUP_CAP as u64);
    assert!(e.dedup_len() <= DEDUP_CAP);
}

#[test]
fn absence_with_where_rearms_only_on_matching_events() {
    let r = rules(
        "[stall]\nabsent = \"hb\"\nwhere = { worker = \"gpu0\" }\nfor = \"5m\"\nintent = \"alert\"\npriority = 8\n",
    );
    let mut e = RuleEngine::new(&r, 0);
    assert_eq!(e.next_deadline(), Some(5 * MIN));
    feed(&mut e, ev("hb", 4 * MIN, json!({"worker": "gpu1"})));
    assert_eq!(
        e.next_deadline(),
        Some(5 * MIN),
        "another worker's heartbeat"
    );
    feed(&mut e, ev("hb", 4 * MIN + 1, json!({"worker": "gpu0"})));
    assert_eq!(e.next_deadline(), Some(9 * MIN + 1));
    let mut out = Output::default();
    e.tick(9 * MIN + 1, &mut out);
    assert_eq!(out.proposals.len(), 1);
    assert_eq!(e.next_deadline(), None, "disarmed until the next heartbeat");
}
