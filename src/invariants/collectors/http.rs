//! `type = "http"`: GET a URL returning JSON; an array of objects (or one object) is the table.

use super::{json_table, CollectError, Collector, Cycle, Declared, Table};
use crate::sources::BoxFuture;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// An empty URL (e.g. an unset `${VAR:-}`) skips the invariants that need this table, and
    /// the source is not reported unavailable.
    pub url: String,
}

impl Collector for HttpConfig {
    fn declared(&self, table: &str) -> Vec<Declared> {
        vec![Declared {
            name: table.to_string(),
            columns: None,
        }]
    }

    fn collect<'a>(
        &'a self,
        table: &'a str,
        _cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>> {
        Box::pin(async move {
            let err = |e: reqwest::Error| CollectError(format!("{e} ({})", self.url));
            let client = crate::http::client(crate::http::DEFAULT_TIMEOUT);
            let resp = client.get(&self.url).send().await.map_err(err)?;
            let resp = resp.error_for_status().map_err(err)?;
            let doc: serde_json::Value = resp.json().await.map_err(err)?;
            Ok(vec![json_table(table, &doc)?])
        })
    }

    fn unconfigured(&self) -> Option<String> {
        self.url
            .is_empty()
            .then(|| "its `url` is empty (set the variable it reads to check it)".into())
    }
}
