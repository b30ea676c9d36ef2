//! `type = "probe"`: check an HTTP URL, a TCP address or a command on an interval; emits
//! `probe_failed` and `probe_ok`.

use super::{BoxFuture, Source, SourceContext, SourceError};
use crate::config::Dur;
use serde::Deserialize;

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

fn default_interval() -> Dur {
    Dur::secs(10)
}

fn default_timeout() -> Dur {
    Dur::secs(2)
}

impl ProbeConfig {
    /// Exactly one of `http`, `tcp`, `command`.
    pub fn check(&self) -> Result<(), String> {
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
}

pub struct ProbeSource {
    config: ProbeConfig,
}

impl ProbeSource {
    pub fn new(config: ProbeConfig) -> Self {
        Self { config }
    }
}

impl Source for ProbeSource {
    fn run<'a>(&'a mut self, _ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            Err(SourceError::new(format!(
                "probe {:?} is not implemented yet",
                self.config.http
            )))
        })
    }
}
