//! The in-process alerts topic: every published alert is written to the store's outbox first,
//! then delivered to its subscribers as the deployment's SNS subscriptions would — fan-out
//! always, key-guard when its filter policy matches. Key-guard gets the alert at once, before
//! the publisher (a webhook request, a check) goes on, so `/status` reads engaged as soon as
//! the request that crossed the emergency tier is answered; fan-out runs right after, on the
//! delivery task. A subscriber's row is deleted only once it handled the alert, and whatever
//! is left (a failure, a crash) is delivered again: at-least-once, the handlers being
//! idempotent by their claims. A failed delivery waits longer each time and is given up
//! (moved to `outbox_dead`, `/health` 503) after an hour, as the deployment's functions give
//! an event up to their failed-events queue after an hour (`MaximumEventAgeInSeconds`).
//! The outbox's SQLite calls run on tokio's blocking pool: a busy store (its writer lock held)
//! must not stall the workers that serve requests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use spendguard_app::ports::bus::{AlertBus, BusError};
use spendguard_app::ports::clock::Clock;
use spendguard_app::ports::store::{StoreError, StoreResult};
use spendguard_domain::alert::AlertEvent;
use spendguard_local::outbox::{Failed, Outbox, Pending, Retry};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use super::metrics::Metrics;
use crate::local::{key_guard_subscribes, sns_event};

const FANOUT: &str = "alert-fanout";
const KEY_GUARD: &str = "key-guard";
/// How often the outbox is looked at for deliveries that are due again.
const RETRY_EVERY: Duration = Duration::from_secs(30);

/// Key-guard is tried again every 30 s for an hour: a stop that waits costs money.
const KEY_GUARD_RETRY: Retry = Retry {
    first: chrono::Duration::seconds(30),
    longest: chrono::Duration::seconds(30),
    give_up_after: chrono::Duration::seconds(3600),
};
/// Fan-out backs off to every 5 minutes (a chat service that is down is not hammered).
const FANOUT_RETRY: Retry = Retry {
    first: chrono::Duration::seconds(30),
    longest: chrono::Duration::seconds(300),
    give_up_after: chrono::Duration::seconds(3600),
};

/// The handlers alerts are delivered to (wired once they are built: they are built on the bus).
pub struct Subscribers {
    pub fanout: alert_fanout::handler::Handler,
    pub guard: Arc<key_guard::handler::Handler>,
}

pub struct OutboxBus {
    outbox: Arc<Outbox>,
    subscribers: OnceLock<Subscribers>,
    /// Rows being delivered now: nobody else delivers them meanwhile.
    in_flight: Mutex<HashSet<i64>>,
    /// Held from writing (or reading) rows until they are claimed, so that the delivery task
    /// cannot take key-guard's row of an alert being published before its publisher does.
    claiming: tokio::sync::Mutex<()>,
    wake: Notify,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// The last key-guard delivery failed (cleared by the next one that succeeds).
    key_guard_failing: AtomicBool,
}

/// What `/health` and `/metrics` say of the outbox.
pub struct OutboxHealth {
    pub pending: std::collections::BTreeMap<String, i64>,
    pub dead_lettered: i64,
    /// Key-guard rows wait and the last attempt to deliver one failed.
    pub key_guard_failing: bool,
}

impl OutboxBus {
    pub fn new(outbox: Outbox, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> OutboxBus {
        OutboxBus {
            outbox: Arc::new(outbox),
            subscribers: OnceLock::new(),
            in_flight: Mutex::new(HashSet::new()),
            claiming: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            metrics,
            clock,
            key_guard_failing: AtomicBool::new(false),
        }
    }

    pub fn wire(&self, subscribers: Subscribers) {
        if self.subscribers.set(subscribers).is_err() {
            warn!("alert subscribers wired twice; the first stay");
        }
    }

    /// Runs `call` on the outbox in tokio's blocking pool.
    async fn outbox<R, F>(&self, call: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Outbox) -> StoreResult<R> + Send + 'static,
    {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || call(&outbox))
            .await
            .map_err(|e| StoreError::Unavailable(format!("outbox: {e}")))?
    }

    pub async fn health(&self) -> Result<OutboxHealth, String> {
        let backlog = self
            .outbox(|o| o.backlog())
            .await
            .map_err(|e| e.to_string())?;
        let guard_waiting = backlog.pending.get(KEY_GUARD).copied().unwrap_or(0) > 0;
        let mut pending = backlog.pending;
        for subscriber in [KEY_GUARD, FANOUT] {
            pending.entry(subscriber.to_string()).or_insert(0);
        }
        Ok(OutboxHealth {
            pending,
            dead_lettered: backlog.dead_lettered,
            key_guard_failing: guard_waiting && self.key_guard_failing.load(Ordering::Relaxed),
        })
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A row claimed for delivery, released however the delivery ends (even cancelled with the
/// request that made it).
struct Claimed<'a> {
    bus: &'a OutboxBus,
    seq: i64,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        self.bus.in_flight().remove(&self.seq);
    }
}

impl OutboxBus {
    /// Hands `alert` to `subscriber`; true once it was handled (its row is then deleted).
    async fn deliver(&self, subscriber: &str, pending: &Pending) -> bool {
        let Some(subscribers) = self.subscribers.get() else {
            return false;
        };
        let event = sns_event(&pending.alert);
        let outcome: Result<Value, String> = match subscriber {
            KEY_GUARD => subscribers
                .guard
                .handle(event)
                .await
                .map_err(|e| e.to_string()),
            _ => subscribers
                .fanout
                .handle(event)
                .await
                .map_err(|e| e.to_string()),
        };
        if subscriber == KEY_GUARD {
            self.key_guard_failing
                .store(outcome.is_err(), Ordering::Relaxed);
        }
        match outcome {
            Ok(report) => {
                if subscriber == KEY_GUARD {
                    self.metrics.switches_from(&report);
                }
                let seq = pending.seq;
                match self.outbox(move |o| o.delivered(seq)).await {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(error = %e, alert = %pending.alert.alert_id, subscriber, "delivered, but the outbox row stays: it will be delivered again");
                        false
                    }
                }
            }
            Err(e) => {
                self.metrics.delivery_failed(subscriber);
                let retry = if subscriber == KEY_GUARD {
                    &KEY_GUARD_RETRY
                } else {
                    &FANOUT_RETRY
                };
                let alert = &pending.alert.alert_id;
                let (seq, now, error, retry) = (pending.seq, self.now(), e.clone(), *retry);
                match self
                    .outbox(move |o| o.failed(seq, now, &error, &retry))
                    .await
                {
                    Ok(Failed::RetryAt { attempts, at }) => {
                        warn!(error = %e, alert = %alert, subscriber, attempts, retry_at = at, "alert delivery failed; retried");
                    }
                    Ok(Failed::GaveUp { reason, .. }) => {
                        error!(alert = %alert, subscriber, reason = %reason, "alert delivery given up: set aside in outbox_dead for a person");
                        self.metrics.dead_lettered(subscriber);
                    }
                    Ok(Failed::Gone) => {}
                    Err(store) => {
                        warn!(error = %e, outbox = %store, alert = %alert, subscriber, "alert delivery failed and its retry could not be recorded; retried");
                    }
                }
                false
            }
        }
    }

    /// Delivers everything not yet delivered, oldest first (key-guard's first).
    pub async fn deliver_pending(&self) {
        for subscriber in [KEY_GUARD, FANOUT] {
            let claimed: Vec<Pending> = {
                let _claiming = self.claiming.lock().await;
                let now = self.now();
                let due = self.outbox(move |o| o.pending(subscriber, now)).await;
                let mut in_flight = self.in_flight();
                match due {
                    Ok(due) => {
                        for dead in &due.set_aside {
                            error!(seq = dead.seq, reason = %dead.reason, subscriber, "outbox row set aside in outbox_dead: it is not an alert");
                            self.metrics.dead_lettered(subscriber);
                        }
                        due.pending
                            .into_iter()
                            .filter(|p| in_flight.insert(p.seq))
                            .collect()
                    }
                    Err(e) => {
                        warn!(error = %e, subscriber, "cannot read the outbox");
                        continue;
                    }
                }
            };
            for pending in claimed {
                let _claim = Claimed {
                    bus: self,
                    seq: pending.seq,
                };
                self.deliver(subscriber, &pending).await;
            }
        }
    }

    /// Runs until `shutdown`: delivers after each publish and retries every [`RETRY_EVERY`];
    /// once more on the way out.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        self.deliver_pending().await;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = shutdown.changed() => break,
            }
            self.deliver_pending().await;
        }
        self.deliver_pending().await;
        info!("alert deliveries stopped");
    }
}

#[async_trait]
impl AlertBus for OutboxBus {
    async fn publish(&self, alert: &AlertEvent) -> Result<(), BusError> {
        let to_guard = key_guard_subscribes(alert);
        let subscribers: &[&str] = if to_guard {
            &[KEY_GUARD, FANOUT]
        } else {
            &[FANOUT]
        };
        // written (and key-guard's row claimed) before anyone can deliver it
        let guard_row = {
            let _claiming = self.claiming.lock().await;
            let (written, now) = (alert.clone(), self.now());
            let seqs = self
                .outbox(move |o| o.put(&written, subscribers, now))
                .await
                .map_err(|e| BusError(e.to_string()))?;
            if to_guard {
                self.in_flight().insert(seqs[0]);
                Some(seqs[0])
            } else {
                None
            }
        };
        self.metrics.alert_published(alert);
        if let Some(seq) = guard_row {
            let _claim = Claimed { bus: self, seq };
            let pending = Pending {
                seq,
                alert: alert.clone(),
            };
            self.deliver(KEY_GUARD, &pending).await;
        }
        self.wake.notify_one();
        Ok(())
    }
}
