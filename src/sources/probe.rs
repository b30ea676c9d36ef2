//! `type = "probe"`: check an HTTP URL, a TCP address or a command on an interval; emits
//! `probe_failed` and `probe_ok`.

use super::{BoxFuture, Source, SourceContext, SourceError, SourceKind};
use crate::config::Dur;
use crate::event::Data;
use crate::exec::Cmd;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// GET this URL; a 2xx answer is healthy.
    pub http: Option<String>,
    /// Connect to this `host:port`.
    pub tcp: Option<String>,
    /// Run this argv; exit status 0 is healthy.
    pub command: Option<Vec<String>>,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

/// Bytes of an HTTP probe's answer read at most; the rest is not waited for.
const PROBE_BODY: usize = 64 << 10;

fn default_interval() -> Dur {
    Dur::secs(10)
}

fn default_timeout() -> Dur {
    Dur::secs(2)
}

impl SourceKind for ProbeConfig {
    /// Exactly one of `http`, `tcp`, `command`.
    fn check(&self) -> Result<(), String> {
        if self.command.as_ref().is_some_and(Vec::is_empty) {
            return Err("`command` is empty; give the program and its arguments, like [\"pg_isready\", \"-q\"]".into());
        }
        let set = [
            self.http.is_some(),
            self.tcp.is_some(),
            self.command.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            1 => Ok(()),
            0 => Err("a probe needs one target: add `http = \"http://...\"`, `tcp = \"host:port\"` or `command = [\"prog\", \"arg\"]`".into()),
            _ => Err("a probe checks one target: keep only one of `http`, `tcp` and `command`".into()),
        }
    }

    fn event_types(&self) -> Vec<String> {
        vec!["probe_failed".into(), "probe_ok".into()]
    }

    fn positive(&self) -> Vec<(&'static str, Dur)> {
        vec![("interval", self.interval), ("timeout", self.timeout)]
    }

    fn event_fields(&self, event: &str) -> Option<Vec<String>> {
        let fields: &[&str] = match event {
            "probe_failed" => &["probe", "error", "consecutive"],
            _ => &["probe", "after_failures"],
        };
        Some(fields.iter().map(|f| f.to_string()).collect())
    }

    fn build(&self) -> Box<dyn Source> {
        Box::new(ProbeSource::new(self.clone()))
    }
}

/// Checks one target on `interval`. Emits `probe_failed` `{probe, error, consecutive}` on every
/// failed check (`consecutive` counts up, so repeated failures are distinct events and survive
/// dedup) and `probe_ok` `{probe, after_failures}` on the first success after failures; steady
/// success emits nothing. The source itself is up while it runs, whatever the target does.
pub struct ProbeSource {
    config: ProbeConfig,
    /// Failed checks in a row; kept across restarts of the source.
    failures: u64,
    client: Option<reqwest::Client>,
}

impl ProbeSource {
    pub fn new(config: ProbeConfig) -> Self {
        Self {
            config,
            failures: 0,
            client: None,
        }
    }

    /// What the events call the target: the URL, the address or the argv.
    pub fn target(&self) -> String {
        if let Some(u) = &self.config.http {
            u.clone()
        } else if let Some(a) = &self.config.tcp {
            a.clone()
        } else {
            self.config.command.as_deref().unwrap_or_default().join(" ")
        }
    }

    /// One check: `Err` holds why the target is unhealthy.
    async fn check(&mut self) -> Result<(), String> {
        let timeout = self.config.timeout.0;
        if let Some(url) = &self.config.http {
            let client = self
                .client
                .get_or_insert_with(|| crate::http::client(timeout))
                .clone();
            let failed = |e: reqwest::Error| {
                if e.is_timeout() {
                    format!("no complete answer within {}", self.config.timeout)
                } else {
                    crate::error::chain(&e)
                }
            };
            let mut resp = client.get(url).send().await.map_err(failed)?;
            let status = resp.status();
            // The answer counts only once its body arrived (up to a bound) within the
            // timeout: a server that sends its headers and then hangs is not healthy.
            let mut read = 0;
            while read < PROBE_BODY {
                match resp.chunk().await.map_err(failed)? {
                    Some(chunk) => read += chunk.len(),
                    None => break,
                }
            }
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {status}"))
            }
        } else if let Some(addr) = &self.config.tcp {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect: {e}")),
                Err(_) => Err(format!("connect: no answer within {}", self.config.timeout)),
            }
        } else {
            let argv = self.config.command.clone().unwrap_or_default();
            let out = Cmd::new(argv, timeout)
                .run()
                .await
                .map_err(|e| e.to_string())?;
            if out.success() {
                Ok(())
            } else {
                let last = out.stderr.trim().lines().last().unwrap_or("").to_string();
                if last.is_empty() {
                    Err(out.describe())
                } else {
                    Err(format!("{}: {last}", out.describe()))
                }
            }
        }
    }
}

impl Source for ProbeSource {
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            ctx.up();
            let target = self.target();
            let mut tick = tokio::time::interval(self.config.interval.0);
            // A slow check delays the next one rather than causing a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = ctx.stopping() => return Ok(()),
                }
                let result = tokio::select! {
                    r = self.check() => r,
                    _ = ctx.stopping() => return Ok(()),
                };
                let mut data = Data::new();
                data.insert("probe".into(), Value::String(target.clone()));
                let kind = match result {
                    Ok(()) if self.failures == 0 => continue,
                    Ok(()) => {
                        data.insert("after_failures".into(), self.failures.into());
                        self.failures = 0;
                        "probe_ok"
                    }
                    Err(error) => {
                        self.failures += 1;
                        tracing::debug!(source = %ctx.name, probe = %target, "probe failed: {error}");
                        data.insert("error".into(), Value::String(error));
                        data.insert("consecutive".into(), self.failures.into());
                        "probe_failed"
                    }
                };
                if !ctx.emit(kind, data).await {
                    return Ok(());
                }
            }
        })
    }
}
