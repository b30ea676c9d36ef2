//! The issue's playbook config parses as written; mistakes in it are reported at their
//! `file:line:col` with what to write instead.

use vigil::config::Config;
use vigil::orchestrator::actions::systemd::Systemd;

const ISSUE: &str = r#"
[windows.maintenance]
at = "03:00-07:00"                 # local time in the config's timezone; may cross midnight

[budgets.gpu_downtime]
seconds = 60                       # production downtime allowed per night (resets per window day)

[escalation]
threshold = 3                      # symptoms of one kind ...
window = "24h"                     # ... within this rolling window arm a flag
flag_ttl = "4h"                    # an armed flag expires after this

[rules.gpu_oom]                    # (from the foundation) a rule may record a symptom
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
symptom = "vllm_oom"

[playbooks.vllm_oom]
on = "alert_gpu_oom"               # intent type, globs allowed
mode = { default = "predictive", escalate_on = "vllm_oom" }
window = "maintenance"             # gates: each optional
budget = "gpu_downtime"
cooldown = "6h"
max_runs = { count = 3, within = "24h" }
lock = "gpu0"
steps = [
  { run = ["/usr/local/bin/fit-check", "--alloc", "{data.alloc_gib}"], mode = "predictive" },
  { systemd = "stop", unit = "judge.service", downtime = true, mode = "canary" },
  { run = ["/usr/local/bin/tune", "--mode", "{mode}"], timeout = "5m", mode = "canary" },
  { systemd = "start", unit = "judge.service", restore = true, mode = "canary" },
  { webhook = "http://127.0.0.1:9000/hook", body = { text = "{reason}" } },
]
"#;

#[test]
fn the_issue_example_parses_as_written() {
    let c = Config::parse("vigil.toml", ISSUE).unwrap_or_else(|e| panic!("{e}"));
    let o = &c.orchestrator;
    assert_eq!(o.windows["maintenance"].at.to_string(), "03:00-07:00");
    assert_eq!(o.budgets["gpu_downtime"].seconds, 60);
    assert_eq!(o.escalation.threshold, 3);
    let pb = &o.playbooks["vllm_oom"];
    assert!(pb.matches("alert_gpu_oom"));
    assert_eq!(pb.mode.default, "predictive");
    assert_eq!(pb.mode.escalate_on.as_deref(), Some("vllm_oom"));
    assert_eq!(pb.mode.escalated, "canary");
    assert_eq!(pb.cooldown, Some(std::time::Duration::from_secs(6 * 3600)));
    assert_eq!(pb.max_runs.unwrap().count, 3);
    assert_eq!(pb.steps.len(), 5);
    assert_eq!(
        pb.steps[1].action.get::<Systemd>(),
        Some(&Systemd {
            verb: "stop".into(),
            unit: "judge.service".into()
        })
    );
    assert_eq!(pb.steps[1].action.kind(), "systemd");
    assert_eq!(pb.steps[1].action.to_string(), "systemd stop judge.service");
    assert!(pb.steps[1].downtime && pb.steps[3].restore);
    assert_eq!(
        pb.steps[2].timeout,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(
        pb.steps_for(&pb.steps, "predictive").count(),
        2,
        "fit-check and the webhook"
    );
    assert_eq!(pb.steps_for(&pb.steps, "canary").count(), 4);
    assert!(pb.has_downtime("canary") && !pb.has_downtime("predictive"));
    assert_eq!(c.rules["gpu_oom"].symptom.as_deref(), Some("vllm_oom"));
}

fn error(text: &str) -> String {
    Config::parse("vigil.toml", text).unwrap_err().to_string()
}

#[test]
fn an_unknown_window_is_reported_at_its_name() {
    let text = ISSUE.replace("window = \"maintenance\" ", "window = \"maintenace\"  ");
    assert_eq!(
        error(&text),
        "vigil.toml:22:10: [playbooks.vllm_oom] uses window \"maintenace\", which is not defined; did you mean \"maintenance\"?"
    );
    let text = ISSUE.replace(
        "budget = \"gpu_downtime\"\ncooldown",
        "budget = \"gpu\"\ncooldown",
    );
    let e = error(&text);
    assert!(
        e.starts_with(
            "vigil.toml:23:10: [playbooks.vllm_oom] uses budget \"gpu\", which is not defined"
        ),
        "{e}"
    );
}

#[test]
fn a_step_is_checked_at_its_place() {
    let text = ISSUE.replace("timeout = \"5m\"", "timout = \"5m\"");
    let e = error(&text);
    assert!(e.starts_with("vigil.toml:30:56:"), "{e}");
    assert!(e.contains("unknown key \"timout\""), "{e}");
    assert!(e.contains("did you mean \"timeout\"?"), "{e}");

    let text = ISSUE.replace(
        "{ webhook = \"http://127.0.0.1:9000/hook\",",
        "{ run = [\"/bin/true\"], webhook = \"http://127.0.0.1:9000/hook\",",
    );
    assert_eq!(
        error(&text),
        "vigil.toml:32:3: step in [playbooks.vllm_oom]: has both `run` and `webhook`; write one action per step"
    );

    let text = ISSUE.replace(
        "{ systemd = \"stop\", unit = \"judge.service\",",
        "{ systemd = \"halt\", unit = \"judge.service\",",
    );
    let e = error(&text);
    assert!(e.starts_with("vigil.toml:29:3: "), "{e}");
    assert!(
        e.contains("systemd \"halt\" is not start, stop, restart or reload"),
        "{e}"
    );

    let text = ISSUE.replace(
        "{ systemd = \"start\", unit = \"judge.service\", restore = true, mode = \"canary\" },\n",
        "",
    );
    let e = error(&text);
    assert!(
        e.contains(
            "in mode \"canary\" a `downtime = true` step has no `restore = true` step after it"
        ),
        "{e}"
    );
}

#[test]
fn a_step_has_one_action_and_only_its_keys() {
    let step = |s: &str| {
        error(&format!(
            "[playbooks.p]\non = \"a\"\nsteps = [\n  {s},\n]\n"
        ))
    };
    assert_eq!(
        step("{ timeout = \"5s\" }"),
        "vigil.toml:4:3: step in [playbooks.p]: no action; a step has one of: run, webhook, systemd, symptom, clear_escalation, log, unit, canary"
    );
    assert_eq!(
        step("{ run = [\"/bin/true\"], unit = \"x.service\" }"),
        "vigil.toml:4:3: step in [playbooks.p]: `unit` belongs to `systemd` steps; remove it"
    );
    assert_eq!(
        step("{ webhook = \"ftp://x\" }"),
        "vigil.toml:4:3: step in [playbooks.p]: webhook \"ftp://x\" is not an http:// or https:// URL"
    );
    let e = step("{ log = \"x\", mdoe = \"canary\" }");
    assert!(
        e.starts_with("vigil.toml:4:16: unknown key \"mdoe\""),
        "{e}"
    );
    assert!(e.contains("did you mean \"mode\"?"), "{e}");
}

#[test]
fn windows_and_the_escalation_section_are_checked() {
    let text = ISSUE.replace("at = \"03:00-07:00\"", "at = \"3am to 7am\"");
    let e = error(&text);
    assert!(
        e.starts_with("vigil.toml:3:6: invalid window \"3am to 7am\""),
        "{e}"
    );
    let text = ISSUE.replace("flag_ttl = \"4h\"", "flag_ttl = \"4 hours\"");
    let e = error(&text);
    assert!(e.starts_with("vigil.toml:11:12: invalid duration"), "{e}");
}

#[test]
fn on_takes_one_glob_or_several() {
    let c = Config::parse(
        "vigil.toml",
        "[playbooks.p]\non = [\"alert_gpu_oom\", \"trigger_*\"]\nsteps = [{ log = \"x\" }]\n",
    )
    .unwrap();
    let pb = &c.orchestrator.playbooks["p"];
    assert!(pb.matches("alert_gpu_oom") && pb.matches("trigger_canary"));
    assert!(!pb.matches("alert_disk_full"));
    let e = Config::parse(
        "vigil.toml",
        "[playbooks.p]\non = []\nsteps = [{ log = \"x\" }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("vigil.toml:2:6: `on` needs at least one"),
        "{e}"
    );
}

#[test]
fn a_window_may_cross_midnight_and_have_its_own_time_zone() {
    let c = Config::parse(
        "vigil.toml",
        "[windows.night]\nat = \"22:00-02:00\"\ntimezone = \"Europe/Paris\"\n",
    )
    .unwrap();
    let w = &c.orchestrator.windows["night"];
    assert!(w.at.crosses_midnight());
    assert_eq!(
        w.timezone.as_ref().unwrap().0.iana_name(),
        Some("Europe/Paris")
    );
}

/// A template naming nothing a step has (`{data}`, `{intent_id}`, `{resaon}`) used to pass
/// `vigil check` and fail only when the step ran, maybe at 3 am in the window. Every kind's
/// templated strings are checked: argv, unit, webhook URL and body, log text, symptom kind.
#[test]
fn a_step_template_that_names_nothing_is_a_config_error() {
    let playbook = |step: &str| {
        format!(
            "[playbooks.p]\non = [\"trigger_x\"]\nmode = \"predictive\"\nsteps = [\n  {step},\n]\n"
        )
    };
    let e = error(&playbook(r#"{ run = ["/bin/echo", "--why={resaon}"] }"#));
    assert_eq!(
        e,
        "vigil.toml:5:3: step in [playbooks.p]: template {resaon} in \"--why={resaon}\" names nothing a step has; did you mean {reason}? use {mode}, {reason}, {intent}, {intent_type}, {playbook} or {data.KEY}, and {{ }} for literal braces"
    );
    for step in [
        r#"{ systemd = "restart", unit = "{data}.service" }"#,
        r#"{ webhook = "http://127.0.0.1:9/{intent_id}" }"#,
        r#"{ webhook = "http://127.0.0.1:9/", body = { a = ["{modes}"] } }"#,
        r#"{ log = "saw {what}" }"#,
        r#"{ symptom = "{kind}" }"#,
        r#"{ clear_escalation = "{flag}" }"#,
    ] {
        let e = error(&playbook(step));
        assert!(e.contains("names nothing a step has"), "{step}: {e}");
    }
    for step in [
        r#"{ run = ["/bin/echo", "{mode}/{reason}/{intent}/{intent_type}/{playbook}/{data.gpu.id}", "{{literal}}", "{\"json\": 1}"] }"#,
        r#"{ webhook = "http://127.0.0.1:9/{intent}", body = { text = "{reason}" } }"#,
    ] {
        Config::parse("vigil.toml", &playbook(step)).unwrap_or_else(|e| panic!("{step}: {e}"));
    }
}

#[test]
fn gates_take_a_scope_of_host_or_fleet() {
    use vigil::store::Scope;
    // The issue's example as written: every gate is the host's.
    let c = Config::parse("vigil.toml", ISSUE).unwrap().orchestrator;
    let pb = &c.playbooks["vllm_oom"];
    assert_eq!(c.budgets["gpu_downtime"].scope, Scope::Host);
    assert_eq!(
        (pb.lock_scope, pb.cooldown_scope),
        (Scope::Host, Scope::Host)
    );
    assert_eq!(pb.max_runs.unwrap().scope, Scope::Host);
    assert_eq!(c.escalation.scope, Scope::Host);
    let fleet = ISSUE
        .replace("seconds = 60 ", "seconds = 60\nscope = \"fleet\" ")
        .replace(
            "lock = \"gpu0\"",
            "lock = { name = \"rolling\", scope = \"fleet\" }",
        )
        .replace(
            "cooldown = \"6h\"",
            "cooldown = { duration = \"6h\", scope = \"fleet\" }",
        )
        .replace(
            "within = \"24h\" }",
            "within = \"24h\", scope = \"fleet\" }",
        )
        .replace("flag_ttl = \"4h\"", "flag_ttl = \"4h\"\nscope = \"fleet\"");
    let c = Config::parse("vigil.toml", &fleet)
        .unwrap_or_else(|e| panic!("{e}"))
        .orchestrator;
    let pb = &c.playbooks["vllm_oom"];
    assert_eq!(c.budgets["gpu_downtime"].scope, Scope::Fleet);
    assert_eq!(pb.lock.as_deref(), Some("rolling"));
    assert_eq!(
        (pb.lock_scope, pb.cooldown_scope),
        (Scope::Fleet, Scope::Fleet)
    );
    assert_eq!(pb.cooldown, Some(std::time::Duration::from_secs(6 * 3600)));
    assert_eq!(pb.max_runs.unwrap().scope, Scope::Fleet);
    assert_eq!(c.escalation.scope, Scope::Fleet);

    // A scope that is neither, and a lock table without its name, say what to write.
    let e = error(&ISSUE.replace(
        "lock = \"gpu0\"",
        "lock = { name = \"rolling\", scope = \"flet\" }",
    ));
    assert!(
        e.contains("a lock name, or a table like { name = \"rolling\", scope = \"fleet\" }"),
        "{e}"
    );
    let e = error(&ISSUE.replace("flag_ttl = \"4h\"", "flag_ttl = \"4h\"\nscope = \"world\""));
    assert!(
        e.contains("unknown variant `world`, expected `host` or `fleet`"),
        "{e}"
    );
}

#[test]
fn a_host_name_that_cannot_name_a_host_is_refused() {
    for bad in ["*", "", "a:b", "gpu 01", "a/b"] {
        let e = error(&format!("host = {bad:?}\n{ISSUE}"));
        assert!(
            e.starts_with("vigil.toml:1:1: host = ") && e.contains("e.g. host = \"gpu-01\""),
            "{bad}: {e}"
        );
    }
    assert!(Config::parse("vigil.toml", &format!("host = \"gpu-01.dc1\"\n{ISSUE}")).is_ok());
}

#[test]
fn a_fleet_scope_on_the_embedded_store_is_a_warning() {
    let fleet = ISSUE.replace(
        "lock = \"gpu0\"",
        "lock = { name = \"rolling\", scope = \"fleet\" }",
    );
    let now = jiff::Timestamp::from_second(1_795_420_800).unwrap();
    let warnings = |text: &str| -> Vec<String> {
        Config::parse("vigil.toml", text)
            .unwrap()
            .warnings(now)
            .iter()
            .map(ToString::to_string)
            .filter(|w| w.contains("scope"))
            .collect()
    };
    if std::env::var_os("VIGIL_STORE_URL").is_none() {
        let w = warnings(&fleet);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("[playbooks.vllm_oom] has scope = \"fleet\", but the store is this host's own SQLite"),
            "{}",
            w[0]
        );
    }
    let shared = format!("{fleet}\n[store]\nurl = \"postgres://vigil@db/vigil\"\n");
    assert!(warnings(&shared).is_empty());
    assert!(warnings(ISSUE).is_empty());
}
