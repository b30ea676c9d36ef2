//! The rule engine on its own, fed lines as a config's sources would turn them into events, on
//! explicit timestamps (ms): for tests of rules' thresholds and windows.

use serde_json::Value;
use vigil::config::Config;
use vigil::event::Event;
use vigil::rules::{Output, Proposal, RuleEngine};
use vigil::sources::file::FileConfig;
use vigil::sources::journald::JournaldConfig;

/// The engine's start: 2025-11-24T16:00:00Z.
pub const T0: i64 = 1_764_000_000_000;

pub struct Observer {
    pub config: Config,
    pub engine: RuleEngine,
}

impl Observer {
    /// The engine over `config`'s rules, starting at `T0`.
    pub fn start(config: Config) -> Self {
        let engine = RuleEngine::new(&config.rules, T0);
        Observer { config, engine }
    }

    /// The event the named source makes of a log or journal line, as the source would.
    pub fn line(&self, source: &str, ts: i64, line: &str) -> Option<Event> {
        let s = &self.config.sources[source];
        let matches = match (s.get::<FileConfig>(), s.get::<JournaldConfig>()) {
            (Some(c), _) => &c.matches,
            (_, Some(c)) => &c.matches,
            _ => panic!("{source} is a {} source, not a line source", s.kind()),
        };
        matches
            .classify(line)
            .map(|(kind, data)| Event::new(source, kind, ts, data))
    }

    pub fn feed(&mut self, ev: Event) -> Output {
        let mut out = Output::default();
        self.engine.process(&ev, &mut out);
        out
    }

    /// Proposals of `rule` for a line (nothing when the line makes no event).
    pub fn feed_line(&mut self, rule: &str, source: &str, ts: i64, line: &str) -> Vec<Proposal> {
        match self.line(source, ts, line) {
            Some(ev) => of(rule, self.feed(ev)),
            None => Vec::new(),
        }
    }

    pub fn feed_event(
        &mut self,
        rule: &str,
        source: &str,
        kind: &str,
        ts: i64,
        data: Value,
    ) -> Vec<Proposal> {
        let data = data.as_object().cloned().unwrap_or_default();
        of(rule, self.feed(Event::new(source, kind, ts, data)))
    }

    pub fn tick(&mut self, rule: &str, now: i64) -> Vec<Proposal> {
        let mut out = Output::default();
        self.engine.tick(now, &mut out);
        of(rule, out)
    }
}

pub fn of(rule: &str, out: Output) -> Vec<Proposal> {
    out.proposals
        .into_iter()
        .filter(|p| p.rule == rule)
        .collect()
}
