//! Invariant state and `for` first sightings in PostgreSQL.

use super::PgStore;
use crate::store::{InvariantState, InvariantStore, PendingAlert, StoreError};
use std::collections::BTreeMap;

impl InvariantStore for PgStore {
    fn invariant_states(&self) -> Result<BTreeMap<String, InvariantState>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT id, state, since_ms, violations FROM invariant_state",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    InvariantState {
                        state: r.get(1),
                        since_ms: r.get(2),
                        violations: r.get(3),
                    },
                )
            })
            .collect())
    }

    fn save_invariant_state(
        &self,
        id: &str,
        s: &InvariantState,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.exec(
                "INSERT INTO invariant_state (id, state, since_ms, violations, updated_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET state = $2, since_ms = $3, violations = $4, updated_ms = $5",
                &[&id, &s.state, &s.since_ms, &s.violations, &now_ms],
            )
            .map(drop)
        })
    }

    fn invariant_sightings(
        &self,
        id: &str,
        keys: &[String],
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.write(|c| {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let first: Option<i64> = c
                    .opt(
                        "SELECT first_seen_ms FROM invariant_pending WHERE id = $1 AND key = $2",
                        &[&id, k],
                    )?
                    .map(|r| r.get(0));
                out.push(match first {
                    // First seen in the future: the clock was ahead then. It counts as now, so
                    // the `for` timer restarts instead of never firing; the stamp is
                    // rewritten, so this is said once.
                    Some(t) if t > now_ms => {
                        c.exec(
                            "UPDATE invariant_pending SET first_seen_ms = $3 WHERE id = $1 AND key = $2",
                            &[&id, k, &now_ms],
                        )?;
                        tracing::warn!(
                            invariant = id,
                            "invariant {id}: violation {k:?} was first seen {:.1}h in the future (the clock was ahead); its `for` timer restarts now",
                            (t - now_ms) as f64 / 3_600_000.0
                        );
                        now_ms
                    }
                    Some(t) => t,
                    None => {
                        c.exec(
                            "INSERT INTO invariant_pending (id, key, first_seen_ms) VALUES ($1, $2, $3)",
                            &[&id, k, &now_ms],
                        )?;
                        now_ms
                    }
                });
            }
            c.exec(
                "DELETE FROM invariant_pending WHERE id = $1 AND NOT (key = ANY($2))",
                &[&id, &keys],
            )?;
            Ok(out.clone())
        })
    }

    fn queue_alert(&self, a: &PendingAlert) -> Result<bool, StoreError> {
        self.write(|c| {
            let unsent_red = c
                .opt(
                    "SELECT 1 FROM alert_outbox WHERE invariant = $1 AND NOT resolved AND NOT sending",
                    &[&a.invariant],
                )?
                .is_some();
            Ok(if a.resolved && unsent_red {
                c.exec(
                    "DELETE FROM alert_outbox WHERE invariant = $1",
                    &[&a.invariant],
                )?;
                false
            } else {
                c.exec(
                    "INSERT INTO alert_outbox (invariant, resolved, payload, created_ms, next_attempt_ms)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (invariant) DO UPDATE SET resolved = $2, payload = $3, created_ms = $4, next_attempt_ms = $5, sending = false",
                    &[&a.invariant, &a.resolved, &a.payload, &a.created_ms, &a.next_attempt_ms],
                )?;
                true
            })
        })
    }

    fn due_alerts(&self, now_ms: i64) -> Result<Vec<PendingAlert>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "UPDATE alert_outbox SET sending = true WHERE next_attempt_ms <= $1
                 RETURNING invariant, resolved, payload, created_ms, next_attempt_ms",
                &[&now_ms],
            )
        })?;
        let mut due: Vec<PendingAlert> = rows
            .iter()
            .map(|r| PendingAlert {
                invariant: r.get(0),
                resolved: r.get(1),
                payload: r.get(2),
                created_ms: r.get(3),
                next_attempt_ms: r.get(4),
            })
            .collect();
        // RETURNING has no ORDER BY.
        due.sort_by_key(|a| a.created_ms);
        Ok(due)
    }

    fn alert_done(&self, invariant: &str, created_ms: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.exec(
                "DELETE FROM alert_outbox WHERE invariant = $1 AND created_ms = $2",
                &[&invariant, &created_ms],
            )
            .map(drop)
        })
    }

    fn alert_later(
        &self,
        invariant: &str,
        created_ms: i64,
        payload: &str,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.exec(
                "UPDATE alert_outbox SET payload = $3, next_attempt_ms = $4, sending = false
                 WHERE invariant = $1 AND created_ms = $2",
                &[&invariant, &created_ms, &payload, &next_attempt_ms],
            )
            .map(drop)
        })
    }
}
