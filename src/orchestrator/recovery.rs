//! Crash recovery: intents whose holder died or whose lease ran out are taken over. One never
//! started goes back to pending; one that was running is resumed as a `Run` and settled
//! through the same path as any run (as failed, never run again), after `on_failure` restored
//! production if it stopped while production was down.

use super::run::{Ending, Run};
use super::{blocking, hostname, Orchestrator};
use crate::intent::IntentStatus;
use crate::store::{IntentStore, Lease, LeaseFence, RunStore, StoreError};
use serde_json::json;
use std::collections::HashSet;

/// A holder whose process is gone on this host: its claims can be taken over at once instead
/// of after the lease runs out.
fn holder_dead(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (
        parts.next(),
        parts.next().and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    if host != hostname() || pid == std::process::id() as i32 || pid <= 0 {
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
                    let stale = mine
                        || expires.is_none_or(|e| e < now)
                        || holder.as_deref().is_some_and(holder_dead);
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
