//! The CLI's way into a running daemon: commands that change what the daemon owns (its
//! supervised units, its canaries) ask the daemon through its API instead of writing the store
//! under it, and wait for the answer. The daemon is found through `DATA_DIR/daemon.json` (its
//! pid, start time and API address) and the token the same way the daemon resolves it.

use anyhow::{bail, Context};
use std::time::Duration;
use vigil::app::App;
use vigil::daemon::record;

/// A running daemon's API, for one CLI command.
pub struct DaemonApi {
    base: String,
    token: String,
    rt: tokio::runtime::Runtime,
}

/// The daemon running on the app's data directory, when there is one with an API.
pub fn running(app: &App) -> anyhow::Result<Option<DaemonApi>> {
    let Some(rec) = record::read(&app.data_dir)? else {
        return Ok(None);
    };
    if !rec.running() {
        return Ok(None);
    }
    let Some(addr) = rec.api else {
        bail!(
            "a daemon (pid {}) runs on {} without its API; stop it, or enable [api] so commands can reach it",
            rec.pid,
            app.data_dir.display()
        );
    };
    let token = vigil::api::token::resolve(&app.config.api, &app.data_dir)
        .context("the running daemon's API needs its token")?;
    Ok(Some(DaemonApi {
        base: format!("http://{addr}"),
        token: token.secret,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    }))
}

impl DaemonApi {
    /// `POST path` with a JSON body; the JSON answer, or the API's error message as the error.
    /// `timeout` bounds the whole exchange (the daemon answers once the change is done).
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let resp = vigil::http::client(timeout)
                .post(&url)
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await
                .with_context(|| format!("cannot reach the daemon at {url}"))?;
            answer(&url, resp).await
        })
    }
}

/// The body of a 2xx answer as JSON (`null` when empty), else the API's `error` message.
async fn answer(url: &str, resp: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(text);
        bail!("the daemon answered {status} to {url}: {msg}");
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("the daemon's answer to {url} is not JSON"))
}
