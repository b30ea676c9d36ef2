//! `type = "metrics"`: scrape a Prometheus text endpoint on an interval; thresholds become
//! events.

use super::{BoxFuture, Source, SourceContext, SourceError};
use crate::config::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub url: String,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub threshold: Vec<Threshold>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Metric name; every series of it is checked unless `labels` narrows it.
    pub metric: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub event: String,
}

fn default_interval() -> Dur {
    Dur::secs(30)
}

fn default_timeout() -> Dur {
    Dur::secs(5)
}

pub struct MetricsSource {
    config: MetricsConfig,
}

impl MetricsSource {
    pub fn new(config: MetricsConfig) -> Self {
        Self { config }
    }
}

impl Source for MetricsSource {
    fn run<'a>(&'a mut self, _ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            Err(SourceError::new(format!(
                "metrics source for {} is not implemented yet",
                self.config.url
            )))
        })
    }
}
