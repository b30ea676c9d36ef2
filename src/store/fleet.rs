//! The fleet as the store sees it: the hosts sharing it, when each was last seen (its
//! orchestrator's heartbeat), its sources down and its runs in flight. One host on SQLite.

use super::StoreError;
use crate::clock::ms_as_rfc3339;
use serde::Serialize;

/// One host of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// The last heartbeat of its orchestrator (ms; RFC 3339 in JSON), if any.
    #[serde(serialize_with = "ms_as_rfc3339::ser_opt")]
    pub last_seen_ms: Option<i64>,
    /// Its sources recorded down, by name.
    pub sources_down: Vec<String>,
    /// Its runs started and not ended.
    pub runs_in_flight: u64,
}

pub trait FleetStore: Send + Sync {
    /// The host this store acts as (`Config::host`).
    fn host(&self) -> &str;
    /// Every host that has a heartbeat, a source state or a run in flight, by name.
    fn fleet(&self) -> Result<Vec<HostStatus>, StoreError>;
}

/// Assembles `HostStatus`es from the three lists the backends read.
pub(crate) fn assemble(
    seen: Vec<(String, i64)>,
    down: Vec<(String, String, bool)>,
    runs: Vec<(String, i64)>,
) -> Vec<HostStatus> {
    use std::collections::BTreeMap;
    let mut out: BTreeMap<String, HostStatus> = BTreeMap::new();
    let entry = |out: &mut BTreeMap<String, HostStatus>, host: String| {
        out.entry(host.clone())
            .or_insert_with(|| HostStatus {
                host,
                last_seen_ms: None,
                sources_down: Vec::new(),
                runs_in_flight: 0,
            })
            .host
            .clone()
    };
    for (host, at) in seen {
        let k = entry(&mut out, host);
        out.get_mut(&k).unwrap().last_seen_ms = Some(at);
    }
    for (host, source, up) in down {
        let k = entry(&mut out, host);
        if !up {
            out.get_mut(&k).unwrap().sources_down.push(source);
        }
    }
    for (host, n) in runs {
        let k = entry(&mut out, host);
        out.get_mut(&k).unwrap().runs_in_flight = n as u64;
    }
    out.into_values().collect()
}
