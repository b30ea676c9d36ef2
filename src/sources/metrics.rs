//! `type = "metrics"`: scrape a Prometheus text endpoint on an interval; thresholds become
//! events.

use super::{BoxFuture, Source, SourceContext, SourceError, SourceKind};
use crate::config::Dur;
use crate::event::Data;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

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

impl SourceKind for MetricsConfig {
    fn positive(&self) -> Vec<(&'static str, Dur)> {
        vec![("interval", self.interval), ("timeout", self.timeout)]
    }

    fn event_types(&self) -> Vec<String> {
        self.threshold.iter().map(|t| t.event.clone()).collect()
    }

    fn build(&self) -> Box<dyn Source> {
        Box::new(MetricsSource::new(self.clone()))
    }
}

fn default_interval() -> Dur {
    Dur::secs(30)
}

fn default_timeout() -> Dur {
    Dur::secs(5)
}

/// What a scrape asks for: the `Accept` header Prometheus sends, OpenMetrics first.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Malformed lines logged per scrape; the rest are only counted.
const MAX_WARNED: usize = 5;

/// Largest metrics page read.
const MAX_BODY: usize = 32 << 20;

/// Scrapes `url` every `interval` and checks each `[[threshold]]` against every matching series.
///
/// Events fire on crossing, not on every scrape: a series that goes past its threshold emits
/// `event` once, with data `{metric, value, <labels>, above|below}`, and re-arms only when a
/// later scrape sees it back on the good side. A value stuck high therefore does not flood the
/// rules; a series that starts already past the threshold fires on the first scrape. NaN is
/// "unknown" and changes nothing.
///
/// A failed scrape (connection refused, timeout, non-2xx) ends `run` with a `SourceError`: the
/// supervisor shows `vigil_source_up = 0` with the reason and retries with backoff; the next
/// successful scrape marks the source up again. Which series are past their threshold is kept
/// across those restarts, so an outage of the target does not re-fire every alert.
pub struct MetricsSource {
    config: MetricsConfig,
    /// (threshold index, series labels) currently past the threshold.
    firing: HashSet<(usize, Vec<(String, String)>)>,
    client: Option<reqwest::Client>,
}

impl MetricsSource {
    pub fn new(config: MetricsConfig) -> Self {
        Self {
            config,
            firing: HashSet::new(),
            client: None,
        }
    }

    /// One scrape: the page's text and the format it is in (from its `Content-Type`).
    async fn scrape(&mut self) -> Result<(String, Format), SourceError> {
        let url = &self.config.url;
        let timeout = self.config.timeout.0;
        let client = self
            .client
            .get_or_insert_with(|| crate::http::client(timeout))
            .clone();
        let what = |e: reqwest::Error| {
            let mut msg = format!("scraping {url} failed: ");
            if e.is_timeout() {
                msg.push_str(&format!("no answer within {}", self.config.timeout));
            } else {
                msg.push_str(&crate::error::chain(&e));
            }
            msg.push_str("; check the target is running and `url` is right");
            SourceError::new(msg)
        };
        let resp = client
            .get(url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .send()
            .await
            .map_err(what)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(SourceError::new(format!(
                "scraping {url} failed: HTTP {status}; check `url` points at a Prometheus metrics page"
            )));
        }
        let format = Format::of(
            resp.headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        // Read by chunks so a runaway page cannot take the daemon's memory.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(what)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(SourceError::new(format!(
                    "scraping {url} failed: the page is larger than {} MiB; point `url` at a smaller metrics page",
                    MAX_BODY >> 20
                )));
            }
        }
        Ok((String::from_utf8_lossy(&body).into_owned(), format))
    }

    /// Checks every threshold against one scrape; returns the events to emit.
    fn evaluate(&mut self, samples: &[Sample]) -> Vec<(String, Data)> {
        let mut out = Vec::new();
        for (idx, t) in self.config.threshold.iter().enumerate() {
            for s in samples {
                if s.name != t.metric
                    || !t
                        .labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
                {
                    continue;
                }
                if s.value.is_nan() {
                    continue;
                }
                let crossed = match (t.above, t.below) {
                    (Some(a), _) if s.value > a => Some(("above", a)),
                    (_, Some(b)) if s.value < b => Some(("below", b)),
                    _ => None,
                };
                let key = (idx, s.labels.clone());
                match crossed {
                    None => {
                        self.firing.remove(&key);
                    }
                    Some((side, limit)) => {
                        if !self.firing.insert(key) {
                            continue;
                        }
                        let mut data = Data::new();
                        for (k, v) in &s.labels {
                            data.insert(k.clone(), Value::String(v.clone()));
                        }
                        data.insert("metric".into(), Value::String(s.name.clone()));
                        data.insert("value".into(), json_number(s.value));
                        data.insert(side.into(), json_number(limit));
                        out.push((t.event.clone(), data));
                    }
                }
            }
        }
        out
    }
}

/// JSON has no infinities: those become strings ("+Inf"), finite values numbers.
fn json_number(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(if v > 0.0 { "+Inf" } else { "-Inf" }.into()))
}

impl Source for MetricsSource {
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.config.interval.0);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = ctx.stopping() => return Ok(()),
                }
                let (text, format) = tokio::select! {
                    r = self.scrape() => r?,
                    _ = ctx.stopping() => return Ok(()),
                };
                let (samples, bad) = parse_as(&text, format);
                // A page vigil cannot fully read is not "up" as if all were well: the
                // thresholds on the lines it skipped are blind, so say so and count them.
                ctx.degraded(bad.first().map(|(line, why)| {
                    format!(
                        "{} of {} samples in the last scrape could not be parsed as {format} (first at line {line}: {why}); thresholds on them are not checked",
                        bad.len(),
                        bad.len() + samples.len(),
                    )
                }));
                ctx.up();
                if !bad.is_empty() {
                    ctx.metrics
                        .scrape_samples_invalid_total
                        .add(&[&ctx.name], bad.len() as f64);
                }
                for (line, why) in bad.iter().take(MAX_WARNED) {
                    tracing::warn!(source = %ctx.name, url = %self.config.url, "skipped malformed metrics line {line}: {why}");
                }
                for (kind, data) in self.evaluate(&samples) {
                    if !ctx.emit(&kind, data).await {
                        return Ok(());
                    }
                }
            }
        })
    }
}

/// One series value from the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// The two text formats a target may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: timestamps in integer milliseconds.
    Prometheus,
    /// OpenMetrics 1.0: timestamps in (fractional) seconds, exemplars after `#`, `# EOF` last.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` names; anything else is read as Prometheus text.
    pub fn of(content_type: Option<&str>) -> Format {
        match content_type {
            Some(t)
                if t.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::Prometheus,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Prometheus => "Prometheus text",
            Format::OpenMetrics => "OpenMetrics",
        })
    }
}

/// Parses Prometheus text exposition format; see [`parse_as`].
pub fn parse(text: &str) -> (Vec<Sample>, Vec<(usize, String)>) {
    parse_as(text, Format::Prometheus)
}

/// Parses a metrics page in `format`. A page that ends with `# EOF` is OpenMetrics whatever
/// its `Content-Type` said (servers mislabel it). Comments and blank lines are skipped, and
/// so are exemplars; reading stops at `# EOF`. A malformed line is skipped too and reported
/// as (1-based line number, why), never fatal.
pub fn parse_as(text: &str, format: Format) -> (Vec<Sample>, Vec<(usize, String)>) {
    let eof = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::trim)
        == Some("# EOF");
    let format = if eof { Format::OpenMetrics } else { format };
    let mut samples = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line == "# EOF" {
            break;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line, format) {
            Ok(s) => samples.push(s),
            Err(why) => bad.push((i + 1, why)),
        }
    }
    (samples, bad)
}

fn parse_line(line: &str, format: Format) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("expected a metric name".into());
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = parse_labels(r, &mut labels)?;
    }
    // An exemplar (`# {trace_id="..."} 0.5 1520879607.789`) follows the value and timestamp;
    // label values, which may hold `#`, are already behind us.
    if let Some(at) = rest.find('#') {
        let exemplar = rest[at + 1..].trim_start();
        if !exemplar.starts_with('{') {
            return Err("unexpected text after the value".into());
        }
        rest = &rest[..at];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = parse_value(value)?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(t) => Some(parse_timestamp(t, format)?),
    };
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Milliseconds since the epoch: Prometheus text writes them as an integer, OpenMetrics
/// writes seconds, often with a fraction.
fn parse_timestamp(t: &str, format: Format) -> Result<i64, String> {
    let invalid = || format!("invalid timestamp {t:?}");
    match format {
        Format::Prometheus => t.parse::<i64>().map_err(|_| invalid()),
        Format::OpenMetrics => {
            let secs = t.parse::<f64>().map_err(|_| invalid())?;
            let ms = (secs * 1000.0).round();
            if ms.is_finite() && ms.abs() < i64::MAX as f64 {
                Ok(ms as i64)
            } else {
                Err(invalid())
            }
        }
    }
}

/// Parses `a="x",b="y"}` (after the `{`); returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated labels")?;
        let key = &s[..end];
        if key.is_empty() {
            return Err("expected a label name".into());
        }
        s = s[end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after label {key}"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted value for label {key}"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("unterminated value for label {key}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("unterminated value for label {key}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        out.push((key.to_string(), value));
        s = s[close + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err(format!("expected `,` or `}}` after label {key}"));
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("invalid value {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let text = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n\
            gpu_mem{gpu=\"0\",name=\"say \\\"hi\\\"\\n\\\\\"} 1.5e3 1700000000000\n\
            up{job=\"a\",} NaN\nlat_bucket{le=\"+Inf\"} +Inf\nneg -Inf\n\n  spaced { a = \"b\" }  -2  \n";
        let (s, bad) = parse(text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(
            s[1].labels,
            vec![
                ("gpu".into(), "0".into()),
                ("name".into(), "say \"hi\"\n\\".into())
            ]
        );
        assert_eq!(s[1].value, 1500.0);
        assert_eq!(s[1].timestamp_ms, Some(1_700_000_000_000));
        assert!(s[2].value.is_nan());
        assert_eq!(s[3].value, f64::INFINITY);
        assert_eq!(s[4].value, f64::NEG_INFINITY);
        assert_eq!(s[5].labels, vec![("a".into(), "b".into())]);
        assert_eq!(s[5].value, -2.0);
    }

    #[test]
    fn malformed_lines_are_skipped_with_their_number() {
        let text =
            "ok 1\nbroken{a=\"x} 2\nnovalue\n9bad 1\nx{a=\"1\"} abc\nx 1 2 3\nfine{a=\"1\"} 2\n";
        let (s, bad) = parse(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        assert!(bad[3].1.contains("invalid value"), "{bad:?}");
    }
}
