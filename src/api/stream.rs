//! What changes, as it happens: one bounded broadcast of [`Change`]s (audit entries, intents
//! stored, source states, unit states) held by the app as [`Changes`], and `GET /api/stream`,
//! which serves it as Server-Sent Events for the dashboard.
//!
//! Bounded on purpose: the broadcast keeps the last [`CAPACITY`] changes; a client that reads
//! slower than vigil changes skips what it missed and is told so (an event `lagged` with the
//! count, and `vigil_stream_skipped_total` counts them), so a slow or stuck browser never grows
//! vigil's memory. Nothing is kept for a client
//! that is not connected: the page fetches the current state (`GET /api/dashboard`) when it
//! (re)connects, then follows the stream.

use crate::api::ApiState;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Changes kept for clients that read late; past it a client skips (and is told).
pub const CAPACITY: usize = 256;
/// A comment line this often keeps proxies and the browser from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// One hour in ms: the chart's buckets.
pub const HOUR_MS: i64 = 3_600_000;
/// Hours of events the chart shows.
pub const HOURS: usize = 24;

/// One change: its kind names what changed (`audit`, `intent_stored`, `sources`, `unit`,
/// `canary`, ...) and is the SSE event name; `data` is the JSON the stream sends with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: &'static str,
    pub data: Value,
}

/// The app's broadcast of changes, the count of events per hour the dashboard's chart shows,
/// and the signal that ends open streams when vigil stops. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Changes {
    tx: broadcast::Sender<Change>,
    events_per_hour: Arc<EventsPerHour>,
    closing: Arc<watch::Sender<bool>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            events_per_hour: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
        }
    }
}

impl Changes {
    /// Tells every client watching that `kind` changed. Never blocks, never fails: with no
    /// client connected (the CLI, a daemon nobody watches) the change goes nowhere.
    pub fn publish(&self, kind: &'static str, data: Value) {
        let _ = self.tx.send(Change { kind, data });
    }

    /// Follows the changes published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    /// Counts one event seen at `ts_ms` into its hour (the chart's events; kept in memory
    /// since the daemon started).
    pub fn count_event(&self, ts_ms: i64) {
        self.events_per_hour.add(ts_ms);
    }

    /// Events per hour for the [`HOURS`] hours up to the one holding `now_ms`, oldest first.
    pub fn events_per_hour(&self, now_ms: i64) -> [u64; HOURS] {
        self.events_per_hour.last_day(now_ms)
    }

    /// Ends every open stream (vigil is stopping: the API's graceful shutdown would otherwise
    /// wait for streams that never end).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// One counter per hour of the day, each tagged with the hour it counts, so an old hour's
/// slot is reset when its hour comes round again: fixed memory, no allocation per event.
struct EventsPerHour {
    /// Hours since the epoch each slot counts.
    hour: [AtomicI64; HOURS],
    count: [AtomicU64; HOURS],
}

impl Default for EventsPerHour {
    fn default() -> Self {
        Self {
            hour: std::array::from_fn(|_| AtomicI64::new(i64::MIN)),
            count: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl EventsPerHour {
    fn slot(hour: i64) -> usize {
        hour.rem_euclid(HOURS as i64) as usize
    }

    // The pipeline is the only writer, so a slot's reset and its increments cannot race.
    fn add(&self, ts_ms: i64) {
        let hour = ts_ms.div_euclid(HOUR_MS);
        let i = Self::slot(hour);
        if self.hour[i].load(Ordering::Relaxed) != hour {
            self.count[i].store(0, Ordering::Relaxed);
            self.hour[i].store(hour, Ordering::Relaxed);
        }
        self.count[i].fetch_add(1, Ordering::Relaxed);
    }

    fn last_day(&self, now_ms: i64) -> [u64; HOURS] {
        let now_hour = now_ms.div_euclid(HOUR_MS);
        std::array::from_fn(|k| {
            let hour = now_hour - (HOURS - 1 - k) as i64;
            let i = Self::slot(hour);
            if self.hour[i].load(Ordering::Relaxed) == hour {
                self.count[i].load(Ordering::Relaxed)
            } else {
                0
            }
        })
    }
}

/// `GET /api/stream`: the changes as Server-Sent Events, `event: KIND` and `data: JSON`, from
/// now on; first a `hello` (with the server's time) so the client knows it is connected, a
/// comment every [`KEEP_ALIVE`], and `lagged` (`{"skipped": N}`) when this client fell
/// behind and missed changes (reload the state). Ends when vigil stops; `EventSource`
/// reconnects by itself.
pub async fn stream(State(s): State<ApiState>) -> Response {
    let changes = s.app.changes.clone();
    let metrics = s.app.metrics.clone();
    let rx = changes.subscribe();
    let closing = changes.closing.subscribe();
    let hello = json!({"now_ms": s.app.clock.now_ms()});
    let first = Some(SseEvent::default().event("hello").data(hello.to_string()));
    let events =
        futures_util::stream::unfold((first, rx, closing), move |(first, mut rx, mut closing)| {
            let metrics = metrics.clone();
            async move {
                if let Some(ev) = first {
                    return Some((Ok::<_, std::convert::Infallible>(ev), (None, rx, closing)));
                }
                if *closing.borrow() {
                    return None;
                }
                let ev = tokio::select! {
                    r = rx.recv() => match r {
                        Ok(c) => SseEvent::default().event(c.kind).data(c.data.to_string()),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            metrics.stream_skipped_total.add(&[], n as f64);
                            SseEvent::default()
                                .event("lagged")
                                .data(json!({"skipped": n}).to_string())
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = closing.wait_for(|c| *c) => return None,
                };
                Some((Ok(ev), (None, rx, closing)))
            }
        });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Through a buffering reverse proxy (nginx), events would otherwise arrive in batches.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_into_their_hour_and_old_hours_drop_out() {
        let c = Changes::default();
        let t0 = 1_800_000_000_000 / HOUR_MS * HOUR_MS;
        c.count_event(t0 + 1);
        c.count_event(t0 + 2);
        c.count_event(t0 + HOUR_MS);
        let day = c.events_per_hour(t0 + HOUR_MS + 5);
        assert_eq!(day[HOURS - 1], 1);
        assert_eq!(day[HOURS - 2], 2);
        assert_eq!(day.iter().sum::<u64>(), 3);
        // A day later the same slot counts the new hour from zero.
        c.count_event(t0 + 24 * HOUR_MS);
        let day = c.events_per_hour(t0 + 24 * HOUR_MS);
        assert_eq!(day[HOURS - 1], 1);
        assert_eq!(day.iter().sum::<u64>(), 2, "t0's hour is out of the window");
    }

    #[test]
    fn a_slow_subscriber_skips_and_memory_stays_bounded() {
        let c = Changes::default();
        let mut rx = c.subscribe();
        for i in 0..(CAPACITY + 10) {
            c.publish("audit", json!(i));
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(rx.try_recv().unwrap().data, json!(10));
    }
}
