//! A supervised unit inside the whole daemon: a line of its own output fires a rule, which
//! stores an intent, with no log file and no source configured.

mod common;

use common::TestDaemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_output_line_fires_a_rule_through_the_daemon() {
    let d = TestDaemon::start(
        r#"
[units.judge]
command = ["/bin/sh", "-c", "echo 'loading model'; echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB' >&2; exec sleep 1000"]

[[units.judge.match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom"

[rules.oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
"#,
    )
    .await;
    d.wait_until("an alert_gpu_oom intent", || {
        d.intents().iter().any(|i| i.intent_type == "alert_gpu_oom")
    })
    .await;
    let i = d
        .intents()
        .into_iter()
        .find(|i| i.intent_type == "alert_gpu_oom")
        .unwrap();
    assert_eq!(i.priority, 9);
    assert_eq!(i.data["alloc_gib"], "2.50", "{:?}", i.data);
    assert_eq!(i.data["unit"], "judge", "{:?}", i.data);
    d.app.supervisor.get().unwrap().stop_all().await;
    d.stop().await;
}
