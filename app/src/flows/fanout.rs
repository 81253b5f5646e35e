//! Fan-out (flow 3): every alert is delivered to each channel it names once, whatever SNS and
//! Lambda retry: a delivery claim per alert and channel, warnings collected into digests, the
//! kill-switch state of the alert's scope shown with it. Channels are built by the function that
//! runs the fan-out (`ChannelBuilder`), their secrets read once per cold start.

use crate::flows::security;
use crate::lease::Claimed;
use crate::ports::channels::Channel;
use crate::ports::channels::ChannelBuilder;
use crate::ports::channels::LogChannel;
use crate::ports::clock::Clock;
use crate::ports::secrets::SecretVault;
use crate::ports::store::AckOutcome;
use crate::ports::store::StateStore;
use crate::ports::store::StoreError;
use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use serde::Serialize;
use spendguard_domain::alert::{AlertEvent, AlertKind};
use spendguard_domain::budget::Severity;
use spendguard_domain::ids::{AlertId, ChannelName};
use spendguard_domain::message::Message;
use spendguard_domain::message::digest_id;
use spendguard_domain::records::{Acknowledgement, AuditEntry, Claim, Lease, SwitchState};
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::ChannelSpec;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{info, warn};

/// A delivery claim that was never finished (a crashed invocation) blocks others this long.
pub const DELIVERY_LEASE: Duration = Duration::minutes(2);

/// How often a claim held by another invocation is looked at again.
const IN_PROGRESS_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Delivery claims are kept this long.
const DELIVERY_RETENTION: Duration = Duration::days(35);

/// Most alerts in one digest message.
const DIGEST_MAX: usize = 50;

/// Builds channels from their specs; each secret is read once per cold start.
pub struct ChannelRegistry {
    pub vault: Arc<dyn SecretVault>,
    pub builder: Arc<dyn ChannelBuilder>,
    secrets: Mutex<HashMap<String, Secret>>,
}

impl ChannelRegistry {
    pub fn new(vault: Arc<dyn SecretVault>, builder: Arc<dyn ChannelBuilder>) -> Self {
        ChannelRegistry {
            vault,
            builder,
            secrets: Mutex::new(HashMap::new()),
        }
    }

    async fn secret(&self, reference: &str) -> Result<Secret, String> {
        if let Some(s) = self.secrets.lock().await.get(reference) {
            return Ok(s.clone());
        }
        let secret = self
            .vault
            .read(reference)
            .await
            .map_err(|e| e.to_string())?;
        self.secrets
            .lock()
            .await
            .insert(reference.to_string(), secret.clone());
        Ok(secret)
    }

    async fn channel(&self, spec: &ChannelSpec) -> Result<Box<dyn Channel>, String> {
        let secret = match &spec.secret {
            Some(reference) => Some(self.secret(reference).await?),
            None => None,
        };
        self.builder.build(spec.kind, secret)
    }
}

/// What happened at one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Outcome {
    Sent,
    /// Delivered by an earlier attempt.
    AlreadySent,
    /// Another invocation held the delivery claim for longer than a delivery takes (it may
    /// have crashed): unconfirmed, so the invocation fails and Lambda's retry settles it.
    InProgress,
    /// Kept for the channel's next digest.
    QueuedForDigest,
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    pub alert_id: String,
    pub channels: Vec<(String, Outcome)>,
}

impl DeliveryReport {
    pub fn failed(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter_map(|(name, o)| match o {
                Outcome::Failed(why) => Some(format!("{name}: {why}")),
                Outcome::InProgress => Some(format!(
                    "{name}: another invocation holds the delivery claim; a retry confirms it"
                )),
                _ => None,
            })
            .collect()
    }
}

/// What an acknowledgement reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledged {
    /// An open paging alert: it escalates no further.
    Alert,
    /// An open paging alert someone acknowledged before: nothing changed.
    AlreadyAcknowledged { by: String, at: DateTime<Utc> },
    /// A security finding: its pattern is expected for the rest of its day.
    Finding { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error(
        "no open alert or security finding with id `{0}` (it recovered, was never paging, or the id is wrong)"
    )]
    UnknownAlert(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some channels failed after their retries; the rest were delivered. Lambda retries the
    /// invocation and only the failed channels are sent again.
    #[error("delivery failed for {}", failures.join("; "))]
    DeliveryFailed { failures: Vec<String> },
    /// Alerts not signed with the deployment's key: refused (and audited), delivered nowhere.
    #[error("alert refused, not signed by spendguard: {}", .0.join("; "))]
    Forged(Vec<String>),
    /// The alert-signing key could not be read: nothing is delivered unverified.
    #[error(transparent)]
    Signing(#[from] crate::ports::secrets::SecretError),
}

pub struct Fanout {
    pub store: Arc<dyn StateStore>,
    pub registry: ChannelRegistry,
    pub clock: Arc<dyn Clock>,
}

/// The kill-switch state of a scope's path, in words.
fn switch_state(
    switches: &[spendguard_domain::records::Versioned<spendguard_domain::records::KillSwitch>],
) -> String {
    if let Some(s) = switches.iter().find(|s| s.value.state.stops()) {
        return format!("engaged on {}", s.value.scope);
    }
    match switches
        .iter()
        .find(|s| matches!(s.value.state, SwitchState::Restoring { .. }))
    {
        Some(s) => format!(
            "restoring (limit factor {})",
            s.value.limit_factor.normalize()
        ),
        None => "open".into(),
    }
}

impl Fanout {
    /// Acknowledges `alert_id`: an open alert stops escalating; a security finding's pattern
    /// is marked as expected for the rest of its day (`reason`, kept in the audit log).
    pub async fn acknowledge(
        &self,
        alert_id: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Acknowledged, FanoutError> {
        let now = self.clock.now();
        let ack = Acknowledgement {
            actor: actor.to_string(),
            at: now,
        };
        let reason = reason.unwrap_or_else(|| "acknowledged".into());
        match self.store.acknowledge_alert(alert_id, &ack).await? {
            AckOutcome::Acknowledged(alert) => {
                info!(%alert_id, %actor, "alert acknowledged: no further escalation");
                self.store
                    .append_audit(&AuditEntry {
                        id: uuid::Uuid::new_v4().to_string(),
                        at: now,
                        actor: actor.into(),
                        action: "alert_acknowledged".into(),
                        scope: Some(alert.event.scope.clone()),
                        detail: serde_json::json!({
                            "alert_id": alert_id,
                            "budget_id": alert.event.budget_id,
                            "window": alert.event.window,
                            "severity": alert.event.severity,
                            "reason": reason,
                        }),
                    })
                    .await?;
                return Ok(Acknowledged::Alert);
            }
            AckOutcome::AlreadyAcknowledged(earlier) => {
                return Ok(Acknowledged::AlreadyAcknowledged {
                    by: earlier.actor,
                    at: earlier.at,
                });
            }
            AckOutcome::Unknown => {}
        }
        if security::acknowledge(self.store.as_ref(), alert_id, actor, &reason, now).await? {
            info!(%alert_id, %actor, "security finding marked as expected for its day");
            return Ok(Acknowledged::Finding { reason });
        }
        Err(FanoutError::UnknownAlert(alert_id.to_string()))
    }

    /// Delivers one alert to every channel it names and the log, concurrently.
    pub async fn deliver(&self, event: &AlertEvent) -> Result<DeliveryReport, FanoutError> {
        let settings = self.store.settings().await?;
        let kill_switch = switch_state(&self.store.kill_switches(&event.scope.rollup()).await?);
        let message = Message::Alert {
            event: Box::new(event.clone()),
            kill_switch,
        };
        let mut names: Vec<String> = event.channels.clone();
        names.retain(|n| n != "log");
        names.dedup();
        let owner = uuid::Uuid::new_v4().to_string();
        let sends = names.iter().map(|name| {
            self.deliver_to(name, settings.channels.get(name), event, &message, &owner)
        });
        let mut channels: Vec<(String, Outcome)> =
            names.iter().cloned().zip(join_all(sends).await).collect();
        // the log line is always written, and needs no claim
        let _ = LogChannel.send(&message).await;
        channels.push(("log".into(), Outcome::Sent));
        for (name, outcome) in &channels {
            if let Outcome::Failed(why) = outcome {
                warn!(alert_id = %event.alert_id, channel = %name, reason = %why, "delivery failed");
            }
        }
        Ok(DeliveryReport {
            alert_id: event.alert_id.clone(),
            channels,
        })
    }

    async fn deliver_to(
        &self,
        name: &str,
        spec: Option<&ChannelSpec>,
        event: &AlertEvent,
        message: &Message,
        owner: &str,
    ) -> Outcome {
        let Some(spec) = spec else {
            return Outcome::Failed(format!("channel `{name}` is not defined in the settings"));
        };
        let now = self.clock.now();
        if spec.digest_minutes.is_some()
            && event.kind == AlertKind::Budget
            && event.severity <= Severity::Warning
        {
            return match self.store.queue_digest(name, event, now).await {
                Ok(()) => Outcome::QueuedForDigest,
                Err(e) => Outcome::Failed(e.to_string()),
            };
        }
        let claim = Claim::delivery(
            &AlertId::new(&event.alert_id),
            &ChannelName::new(name),
            Lease::new(owner, DELIVERY_LEASE, now + DELIVERY_RETENTION),
        );
        self.send_claimed(&claim, spec, message).await
    }

    async fn send_claimed(&self, claim: &Claim, spec: &ChannelSpec, message: &Message) -> Outcome {
        // Another invocation holding the claim is either delivering (it finishes within its
        // delivery deadline) or crashed (its lease runs out). Wait for the first; after that,
        // report it unconfirmed so Lambda retries later instead of the alert being dropped.
        let give_up = std::time::Instant::now() + self.registry.builder.delivery_deadline();
        let held = loop {
            match Claimed::take(self.store.as_ref(), claim.clone(), self.clock.now()).await {
                Err(e) => return Outcome::Failed(e.to_string()),
                Ok(Claimed::Done) => return Outcome::AlreadySent,
                Ok(Claimed::Won(held)) => break held,
                Ok(Claimed::Busy) if std::time::Instant::now() < give_up => {
                    tokio::time::sleep(IN_PROGRESS_POLL).await;
                }
                Ok(Claimed::Busy) => return Outcome::InProgress,
            }
        };
        let result = match self.registry.channel(spec).await {
            Ok(channel) => channel.send(message).await.map_err(|e| e.message),
            Err(e) => Err(format!("channel unusable: {e}")),
        };
        match result {
            Ok(()) => match held.finish().await {
                Ok(()) => Outcome::Sent,
                // sent, but another invocation took the claim over: it may send again
                Err(e) => Outcome::Failed(format!("sent, but the claim was lost: {e}")),
            },
            Err(why) => Outcome::Failed(held.release_after(why).await),
        }
    }

    /// Sends each channel's digest once its oldest warning has waited `digest_minutes`.
    pub async fn flush_digests(&self) -> Result<usize, FanoutError> {
        let settings = self.store.settings().await?;
        let now = self.clock.now();
        let mut sent = 0;
        let mut failures = Vec::new();
        for (name, spec) in settings
            .channels
            .iter()
            .filter(|(_, s)| s.digest_minutes.is_some())
        {
            let queue = self.store.digest_queue(name).await?;
            let Some((oldest, _)) = queue.first() else {
                continue;
            };
            let due: DateTime<Utc> =
                *oldest + Duration::minutes(i64::from(spec.digest_minutes.unwrap_or(60)));
            if now < due {
                continue;
            }
            let batch: Vec<AlertEvent> =
                queue.into_iter().take(DIGEST_MAX).map(|(_, e)| e).collect();
            let ids: Vec<String> = batch.iter().map(|e| e.alert_id.clone()).collect();
            let digest_id = digest_id(&ids);
            let claim = Claim::delivery(
                &AlertId::new(digest_id),
                &ChannelName::new(name),
                Lease::new(
                    uuid::Uuid::new_v4().to_string(),
                    DELIVERY_LEASE,
                    now + DELIVERY_RETENTION,
                ),
            );
            let message = Message::Digest {
                channel: name.clone(),
                events: batch,
            };
            match self.send_claimed(&claim, spec, &message).await {
                Outcome::Sent => {
                    sent += 1;
                    self.store.remove_from_digest(name, &ids).await?;
                }
                Outcome::AlreadySent => self.store.remove_from_digest(name, &ids).await?,
                Outcome::Failed(why) => failures.push(format!("digest for {name}: {why}")),
                _ => {}
            }
        }
        if !failures.is_empty() {
            return Err(FanoutError::DeliveryFailed { failures });
        }
        Ok(sent)
    }
}
