//! The redis collector against a real redis-server: for every pattern kind, a key of another
//! type that matches the pattern is left out and named; the rest of the table is read.

mod common;

use common::redis_server::RedisServer;
use std::sync::Arc;
use vigil::clock::ManualClock;
use vigil::invariants::Harness;

fn harness(dir: &std::path::Path, text: &str) -> Harness {
    let clock = Arc::new(ManualClock::at("2026-01-15T10:00:00Z"));
    common::invariants::harness(dir, text, clock, Arc::default())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_pattern_kind_skips_keys_of_another_type() {
    let redis = RedisServer::start();
    // For each kind: how to write a key of its type, and the type it reads.
    let kinds = [
        ("zset", &["ZADD", "k:zset:good", "1", "m"][..], "zset"),
        ("hash", &["HSET", "k:hash:good", "f", "v"][..], "hash"),
        ("get", &["SET", "k:get:good", "v"][..], "string"),
        ("set", &["SADD", "k:set:good", "m"][..], "set"),
    ];
    for (kind, write, redis_type) in kinds {
        redis.cmd(write);
        // A key of another type under the same pattern.
        let wrong = format!("k:{kind}:wrong");
        if kind == "set" {
            redis.cmd(&["SET", &wrong, "x"]);
        } else {
            redis.cmd(&["SADD", &wrong, "x"]);
        }
        let dir = tempfile::tempdir().unwrap();
        let h = harness(
            dir.path(),
            &format!(
                "[collectors.r]\ntype = \"redis\"\nurl = \"{}\"\n{kind} = \"k:{kind}:{{name}}\"\ntable = \"t\"\n\
                 [invariants.T-01]\nname = \"rows\"\nseverity = \"minor\"\nquery = \"SELECT name FROM t\"\n",
                redis.url()
            ),
        );
        let r = h.run_cycle(None).await.unwrap();
        assert!(r.sources_unavailable.is_empty(), "{kind}: {r:#?}");
        let names: Vec<String> = r
            .violations
            .iter()
            .map(|v| v.observed_state["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["good"], "{kind}: the rest of the table is read");
        assert_eq!(
            r.items_skipped
                .iter()
                .map(|s| s.item.as_str())
                .collect::<Vec<_>>(),
            [format!("{wrong}: not a {redis_type}")],
            "{kind}"
        );
    }
}
