//! The API token's settings: `[api] token_file`, a listen address other than loopback (a
//! config error without a configured token; there reads need the token too), and a token
//! file that cannot be read.

mod common;

use common::{out, vigil};
use std::sync::Arc;
use vigil::app::App;
use vigil::clock::SystemClock;
use vigil::config::Config;

#[test]
fn listening_beyond_loopback_without_a_configured_token_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigil.toml");
    std::fs::write(&file, "[api]\nlisten = \"0.0.0.0:9108\"\n").unwrap();
    let (code, stdout, err) = out(vigil(dir.path()).arg("check").arg("--config").arg(&file));
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        err.trim(),
        format!(
            "{}:2:10: [api] listen = \"0.0.0.0:9108\" is reachable from other hosts, and no token is configured; set `token_file = \"/etc/vigil/api.token\"` under [api], or listen on 127.0.0.1",
            file.display()
        )
    );

    std::fs::write(
        &file,
        "[api]\nlisten = \"0.0.0.0:9108\"\ntoken_file = \"/etc/vigil/api.token\"\n",
    )
    .unwrap();
    let (code, _, err) = out(vigil(dir.path()).arg("check").arg("--config").arg(&file));
    assert_eq!(code, 0, "{err}");

    std::fs::write(&file, "[api]\ntoken = \"t\"\ntoken_file = \"/x\"\n").unwrap();
    let (code, _, err) = out(vigil(dir.path()).arg("check").arg("--config").arg(&file));
    assert_eq!(code, 1);
    assert!(
        err.contains("set `token` or `token_file`, not both"),
        "{err}"
    );

    // Off, the API listens nowhere: no token needed.
    std::fs::write(&file, "[api]\nlisten = \"0.0.0.0:9108\"\nenabled = false\n").unwrap();
    let (code, _, err) = out(vigil(dir.path()).arg("check").arg("--config").arg(&file));
    assert_eq!(code, 0, "{err}");
}

async fn start(
    api: &str,
    data: &std::path::Path,
) -> (
    Arc<App>,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<vigil::daemon::Summary, vigil::daemon::DaemonError>>,
) {
    let config = Config::parse("test.toml", &format!("[api]\n{api}")).unwrap();
    let app = Arc::new(App::new(config, data.to_path_buf(), Arc::new(SystemClock)));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(vigil::daemon::run(app.clone(), Default::default(), rx));
    (app, stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_reads_need_the_token_from_token_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api.token");
    std::fs::write(&token_file, "  s3cret-from-file\n").unwrap();
    let api = format!(
        "listen = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let (app, stop, handle) = start(&api, &dir.path().join("data")).await;
    let mut waited = 0;
    while app.api_addr.get().is_none() {
        assert!(waited < 1000, "API listening");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    let port = app.api_addr.get().unwrap().port();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let client = reqwest::Client::new();
    for path in [
        "/api/intents",
        "/api/sources",
        "/metrics",
        "/api/orchestrator",
    ] {
        let r = client.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without the token");
        let r = client
            .get(url(path))
            .bearer_auth("s3cret-from-file")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
    }
    // Health probes stay open for service managers and load balancers.
    for path in ["/healthz", "/readyz"] {
        let r = client.get(url(path)).send().await.unwrap();
        assert_ne!(r.status(), 401, "{path}");
    }
    let body = serde_json::json!({"intent_type": "alert_x", "priority": 5, "reason": "r"});
    let r = client
        .post(url("/api/intents"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(url("/api/intents"))
        .bearer_auth("s3cret-from-file")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        !dir.path().join("data/api.token").exists(),
        "no token generated when one is configured"
    );
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_that_cannot_be_read_stops_the_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/api.token");
    let api = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        missing.display()
    );
    let (_app, _stop, handle) = start(&api, &dir.path().join("data")).await;
    let err = handle
        .await
        .unwrap()
        .err()
        .expect("the start fails")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "cannot read the API token file {}",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("remove [api] token_file to have one generated"),
        "{err}"
    );

    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    std::fs::write(&missing, "\n").unwrap();
    let (_app, _stop, handle) = start(&api, &dir.path().join("data")).await;
    let err = handle
        .await
        .unwrap()
        .err()
        .expect("the start fails")
        .to_string();
    assert!(err.contains("is empty"), "{err}");
}
