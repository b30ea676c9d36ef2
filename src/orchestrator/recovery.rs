//! Crash recovery: intents whose holder died or whose lease ran out are taken over. One never
//! started goes back to pending; one that was running is resumed as a `Run` and settled
//! through the same path as any run (as failed, never run again), after `on_failure` restored
//! production if it stopped while production was down.
//!
//! In a fleet, a host recovers only its own claims: another host's run acted on that host's
//! services, so only that host can tell what is left to restore. Until it returns, its run's
//! budget reservation keeps counting and its fleet lock stays held; the hosts that see the
//! lock's lease run out raise `alert_fleet_lock_stale` for an operator
//! (`vigil locks release NAME`).

use super::run::{Ending, Run};
use super::{blocking, Orchestrator};
use crate::app::App;
use crate::clock::rfc3339_ms;
use crate::intent::{queue, IntentStatus, NewIntent};
use crate::store::{holder_host, IntentStore, Lease, LeaseFence, RunStore, StoreError, FLEET};
use serde_json::json;
use std::collections::HashSet;

/// A holder of `host` (this one) whose process is gone: its claims can be taken over at once
/// instead of after the lease runs out.
fn holder_dead(holder: &str, host: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(parts_host), Some(pid)) = (
        parts.next(),
        parts.next().and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    if parts_host != host || pid == std::process::id() as i32 || pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

impl Orchestrator {
    /// Takes over intents whose holder died or whose lease ran out, and recovers each;
    /// returns how many.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let scanning = self.claiming.write().await;
        let inflight: HashSet<i64> = self.inflight.lock().unwrap().clone();
        let app = self.app.clone();
        let me = self.holder.clone();
        let host = self.app.config.host();
        let lease = self.lease_ms();
        let taken = blocking(
            move || -> Result<Vec<(i64, Option<String>, i64)>, StoreError> {
                let store = app.store()?;
                let now = app.clock.now_ms();
                let mut taken = Vec::new();
                for Lease {
                    intent: id,
                    holder,
                    expires_at: expires,
                    ..
                } in store.running_intents()?
                {
                    // Our own but no worker has it: its handler failed and could not end it.
                    let mine = holder.as_deref() == Some(me.as_str());
                    if mine && inflight.contains(&id) {
                        continue;
                    }
                    // Another host's: only that host may recover it.
                    if holder.as_deref().is_some_and(|h| holder_host(h) != host) {
                        continue;
                    }
                    let stale = mine
                        || expires.is_none_or(|e| e < now)
                        || holder.as_deref().is_some_and(|h| holder_dead(h, &host));
                    if !stale {
                        continue;
                    }
                    if let Some(epoch) =
                        store.take_over_intent(id, holder.as_deref(), &me, lease, now)?
                    {
                        taken.push((id, holder, epoch));
                    }
                }
                Ok(taken)
            },
        )
        .await?;
        drop(scanning);
        let app = self.app.clone();
        if let Err(e) = blocking(move || alert_stale_fleet_locks(&app)).await {
            tracing::warn!("cannot check the fleet's locks: {e}");
        }
        let n = taken.len();
        for (id, old, epoch) in taken {
            let lease = LeaseFence {
                intent: id,
                holder: self.holder.clone(),
                epoch,
            };
            self.recover_one(lease, old.unwrap_or_default()).await?;
        }
        Ok(n)
    }

    async fn recover_one(&self, lease: LeaseFence, old: String) -> Result<(), StoreError> {
        let id = lease.intent;
        let app = self.app.clone();
        let (intent, run) = blocking(move || -> Result<_, StoreError> {
            let store = app.store()?;
            let intent = store.intent(id)?;
            let run = store
                .runs(None, i64::MIN, true)?
                .into_iter()
                .find(|r| r.intent_id == id);
            Ok((intent, run))
        })
        .await?;
        let Some(intent) = intent else { return Ok(()) };
        let Some(record) = run else {
            // Claimed but no run recorded: nothing happened yet, so it can simply run later.
            let app = self.app.clone();
            let l = lease.clone();
            let resumed = blocking(move || {
                let resumed = app.store()?.set_intent_status_fenced(
                    &l,
                    IntentStatus::Pending,
                    "resumed after its claimant stopped",
                    app.clock.now_ms(),
                )?;
                if resumed {
                    crate::audit::record(
                        &app,
                        "intent_resumed",
                        Some(id),
                        None,
                        json!({"previous_holder": old}),
                    );
                }
                Ok::<_, StoreError>(resumed)
            })
            .await?;
            if !resumed {
                super::lease_lost(&self.app, &lease, None, "resumption").await;
            }
            return Ok(());
        };
        let mut run = Run::resume(self.app.clone(), self.http.clone(), intent, record, lease);
        let ending = run.recover(&old).await;
        run.settle(ending).await.map(drop)
    }
}

/// Settles, as failed, the open runs of intent `id` after its handler failed on a store
/// error; returns whether it had one (if not, the caller ends the intent itself).
pub(super) async fn abandon(
    orch: &Orchestrator,
    id: i64,
    note: String,
) -> Result<bool, StoreError> {
    let app = orch.app.clone();
    let me = orch.holder.clone();
    let found = blocking(move || -> Result<_, StoreError> {
        let store = app.store()?;
        let Some(intent) = store.intent(id)? else {
            return Ok(Vec::new());
        };
        // Only while it is still this orchestrator's: its lease as it stands now.
        let Some(epoch) = store
            .running_intents()?
            .into_iter()
            .find(|l| l.intent == id && l.holder.as_deref() == Some(me.as_str()))
            .map(|l| l.epoch)
        else {
            return Ok(Vec::new());
        };
        let lease = LeaseFence {
            intent: id,
            holder: me,
            epoch,
        };
        Ok(store
            .runs(None, i64::MIN, true)?
            .into_iter()
            .filter(|r| r.intent_id == id)
            .map(|r| (intent.clone(), r, lease.clone()))
            .collect())
    })
    .await?;
    let any = !found.is_empty();
    for (intent, record, lease) in found {
        let run = Run::resume(orch.app.clone(), orch.http.clone(), intent, record, lease);
        run.settle(Ending::Abandoned { note: note.clone() }).await?;
    }
    Ok(any)
}

/// Raises `alert_fleet_lock_stale` for each fleet lock whose holder, on another host, stopped
/// renewing it: the lock is not taken over (that host may still be acting), so an operator
/// must hear of it. Once per acquisition (the epoch is in the dedup key) and dedup window.
fn alert_stale_fleet_locks(app: &App) -> Result<(), StoreError> {
    let host = app.config.host();
    let now = app.clock.now_ms();
    for lock in app.store()?.locks()? {
        let holder = holder_host(&lock.holder);
        if lock.scope != FLEET || lock.expires_at >= now || holder == host {
            continue;
        }
        let mut data = crate::event::Data::new();
        data.insert("lock".into(), lock.name.clone().into());
        data.insert("holder".into(), lock.holder.clone().into());
        // Not `host`: that would hand the alert to the dead host.
        data.insert("holder_host".into(), holder.into());
        data.insert("since".into(), rfc3339_ms(lock.acquired_at).into());
        data.insert(
            "lease_expired_at".into(),
            rfc3339_ms(lock.expires_at).into(),
        );
        let alert = NewIntent {
            intent_type: "alert_fleet_lock_stale".into(),
            priority: 10,
            reason: format!(
                "fleet lock {:?} held by host {holder} since {} ({}), which stopped renewing it at {}; it is not taken over while {holder} may still act: it frees when {holder} returns and settles its run, or `vigil locks release {}`",
                lock.name,
                rfc3339_ms(lock.acquired_at),
                lock.holder,
                rfc3339_ms(lock.expires_at),
                lock.name
            ),
            data,
            dedup_key: Some(format!("{}:{}", lock.name, lock.epoch)),
            origin: "orchestrator".into(),
        };
        if let Ok(crate::store::Put::Inserted(_)) = queue::submit(app, &alert) {
            tracing::warn!("{}", alert.reason);
        }
    }
    Ok(())
}
