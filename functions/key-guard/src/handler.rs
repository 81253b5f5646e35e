//! Events -> actions: an alert that orders `disable_keys`, `shutdown` or `reduce_limits` (SNS,
//! filtered on the `actions` attribute), a manual disable / restore / status, or a Secrets
//! Manager rotation step.

use aws_lambda_events::event::sns::{SnsEvent, SnsMessage};
use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use spendguard_app::flows::drill;
use spendguard_app::flows::guard::{GuardError, KeyGuard};
use spendguard_app::flows::rotation::{RotationError, RotationEvent, Rotator};
use spendguard_app::flows::throttle::{Order, ThrottleReport};
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::secrets::SecretError;
use spendguard_app::ports::store::StoreError;
use spendguard_app::refreshing::OnFirstUse;
use spendguard_app::signing::{Admission, AlertSigning};
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::alert::KeyOrder;
use spendguard_domain::alert_signature::SIGNATURE_ATTRIBUTE;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::RestorePolicy;
use tracing::{error, info};

#[derive(Debug, thiserror::Error)]
pub enum KeyGuardError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Rotation(#[from] RotationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An alert not signed with the deployment's key: refused (and audited), not acted on.
    #[error("alert refused, not signed by spendguard: {0}")]
    Forged(String),
    /// The alert-signing key could not be read: nothing is acted on unverified.
    #[error(transparent)]
    Signing(#[from] SecretError),
    /// key-guard could not start: a secret it needs cannot be read (a later event tries again).
    #[error("key-guard cannot act: {0}")]
    NotStarted(SecretError),
    /// The drill found problems and could not publish their alerts.
    #[error("the drill's alerts were not published: {0}")]
    DrillUnpublished(String),
    /// Some providers' rate limits were not lowered or put back; the retry finishes them.
    #[error("provider rate limits incomplete: {}", .0.join("; "))]
    ThrottleIncomplete(Vec<String>),
}

impl From<KeyGuardError> for Diagnostic {
    fn from(e: KeyGuardError) -> Diagnostic {
        let error_type = match &e {
            KeyGuardError::InvalidEvent(_) => "InvalidEvent",
            KeyGuardError::Guard(GuardError::Incomplete(_)) => "KeysIncomplete",
            KeyGuardError::Guard(GuardError::NotEngaged(_)) => "NotEngaged",
            KeyGuardError::Guard(GuardError::Interrupted(..)) => "RestoreInterrupted",
            KeyGuardError::Guard(GuardError::Store(_) | GuardError::StoppedWithoutStore { .. })
            | KeyGuardError::Store(_) => "StoreUnavailable",
            KeyGuardError::Rotation(r) if r.is_retryable() => "RotationRetryable",
            KeyGuardError::Rotation(_) => "RotationRefused",
            KeyGuardError::ThrottleIncomplete(_) => "ThrottleIncomplete",
            KeyGuardError::DrillUnpublished(_) => "DrillUnpublished",
            KeyGuardError::Signing(_) => "SigningKeyUnavailable",
            KeyGuardError::NotStarted(_) => "SecretUnavailable",
            KeyGuardError::Forged(_) => "ForgedAlert",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// A manual invocation by an operator.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum Manual {
    Disable {
        scope: String,
        reason: String,
        actor: String,
    },
    /// Stops the keys and the opted-in resources; `dry_run` lists them and changes nothing.
    Shutdown {
        scope: String,
        #[serde(default)]
        reason: Option<String>,
        actor: String,
        #[serde(default)]
        dry_run: bool,
    },
    Restore {
        scope: String,
        actor: String,
    },
    Status {
        scope: String,
    },
    /// The stop-path drill: reads what every stop would write, changes nothing, and raises one
    /// critical alert per problem and day (the daily schedule, or `spendguard drill`).
    Drill,
}

pub struct Handler {
    pub guard: KeyGuard,
    pub rotator: Rotator,
    /// Where the drill's alerts go (the alerts topic); without it the drill only reports.
    pub alerts: Option<Arc<dyn AlertBus>>,
    /// The deployment's alert-signing key: an alert that does not verify under it is refused
    /// (none: alerts are taken unsigned, for local runs).
    pub signing: Option<Arc<AlertSigning>>,
}

/// `event` for key-guard as begun by [`crate::app::start`]: it waits for the start's reads; an
/// event that cannot get a secret fails, naming it (never its value) in its error and the log.
pub async fn handle_started(
    started: &OnFirstUse<Handler>,
    event: Value,
) -> Result<Value, KeyGuardError> {
    let handler = started.get().await.map_err(|e| {
        error!(secret = %e.reference, reason = %e.message, "key-guard cannot start: a secret cannot be read");
        KeyGuardError::NotStarted(e)
    })?;
    handler.handle(event).await
}

/// The spendguard signature an SNS delivery carries, if any.
fn signature(sns: &SnsMessage) -> Option<&str> {
    sns.message_attributes
        .get(SIGNATURE_ATTRIBUTE)
        .map(|a| a.value.as_str())
}

fn scope(text: &str) -> Result<Scope, KeyGuardError> {
    Scope::parse(text).map_err(|e| KeyGuardError::InvalidEvent(format!("scope: {e}")))
}

impl Handler {
    pub async fn handle(&self, event: Value) -> Result<Value, KeyGuardError> {
        // what an emergency stops with the store down: read now if the start could not
        self.guard.warm_if_unread().await;
        if event.get("Step").is_some() && event.get("SecretId").is_some() {
            let rotation: RotationEvent = serde_json::from_value(event)
                .map_err(|e| KeyGuardError::InvalidEvent(e.to_string()))?;
            let done = self.rotator.run(&rotation).await?;
            info!(step = %rotation.step, secret = %rotation.secret_id, "{done}");
            return Ok(json!({ "step": rotation.step, "result": done }));
        }
        if event.get("Records").is_some() {
            let sns: SnsEvent = serde_json::from_value(event)
                .map_err(|e| KeyGuardError::InvalidEvent(e.to_string()))?;
            let mut results = Vec::new();
            for record in sns.records {
                if let Some(signing) = &self.signing {
                    let admission = signing
                        .admit(
                            self.guard.store.as_ref(),
                            self.guard.clock.as_ref(),
                            "key-guard",
                            &record.sns.message_id,
                            &record.sns.message,
                            signature(&record.sns),
                        )
                        .await?;
                    if let Admission::Refused(why) = admission {
                        // never carried out; an error, so that the errors alarm and the
                        // dead-letter queue show it (a key mismatch would otherwise drop every
                        // order unseen)
                        return Err(KeyGuardError::Forged(why));
                    }
                }
                let alert: AlertEvent = serde_json::from_str(&record.sns.message).map_err(|e| {
                    KeyGuardError::InvalidEvent(format!("SNS message is not an AlertEvent: {e}"))
                })?;
                results.push(self.on_alert(&alert).await?);
            }
            return Ok(json!({ "alerts": results }));
        }
        let manual: Manual = serde_json::from_value(event).map_err(|e| {
            KeyGuardError::InvalidEvent(format!(
                "{e}: expected an alert, a rotation step, or {{\"action\": \"disable\" | \"shutdown\" | \"restore\" | \"status\", \"scope\", ...}} or {{\"action\": \"drill\"}}"
            ))
        })?;
        match manual {
            Manual::Disable {
                scope: s,
                reason,
                actor,
            } => {
                let incident = format!("manual-{}", uuid::Uuid::new_v4());
                let report = self
                    .guard
                    .disable(&scope(&s)?, &reason, &actor, &incident)
                    .await?;
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
            Manual::Shutdown {
                scope: s,
                actor,
                dry_run: true,
                ..
            } => {
                let plan = self.guard.plan_shutdown(&scope(&s)?, &actor).await?;
                Ok(serde_json::to_value(plan).unwrap_or_default())
            }
            Manual::Shutdown {
                scope: s,
                reason,
                actor,
                dry_run: false,
            } => {
                let reason = reason.ok_or_else(|| {
                    KeyGuardError::InvalidEvent("a shutdown needs a `reason` (or `dry_run`)".into())
                })?;
                let incident = format!("manual-{}", uuid::Uuid::new_v4());
                let report = self
                    .guard
                    .shut_down(&scope(&s)?, &reason, &actor, &incident)
                    .await?;
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
            Manual::Restore { scope: s, actor } => {
                let report = self
                    .guard
                    .restore(&scope(&s)?, &actor, &self.restore_policy().await?)
                    .await?;
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
            Manual::Status { scope: s } => Ok(self.guard.status(&scope(&s)?).await?),
            Manual::Drill => {
                let policy = self.guard.store.load_policy().await?;
                let report = drill::drill(&self.guard, &policy).await;
                let raised = match &self.alerts {
                    Some(bus) => Some(
                        drill::raise(&self.guard, &policy, &report, bus.as_ref())
                            .await
                            .map_err(KeyGuardError::DrillUnpublished)?,
                    ),
                    None => None,
                };
                info!(
                    checked = report.checked,
                    problems = report.problems.len(),
                    "stop-path drill"
                );
                Ok(json!({
                    "checked": report.checked,
                    "problems": report.problems,
                    "alerts_raised": raised,
                }))
            }
        }
    }

    async fn restore_policy(&self) -> Result<RestorePolicy, StoreError> {
        Ok(self.guard.store.settings().await?.restore)
    }

    /// An alert's actions. Only budget alerts and their recoveries act (an escalation only
    /// tells more people about an alert that already acted).
    async fn on_alert(&self, alert: &AlertEvent) -> Result<Value, KeyGuardError> {
        let (order, actor) = alert.key_order();
        match order {
            KeyOrder::Stop { shutdown } => {
                let report = if shutdown {
                    self.guard
                        .shut_down(&alert.scope, &alert.summary, actor, &alert.alert_id)
                        .await?
                } else {
                    self.guard
                        .disable(&alert.scope, &alert.summary, actor, &alert.alert_id)
                        .await?
                };
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
            KeyOrder::Adjust { factor, rotate } => {
                let mut done = json!({"scope": alert.scope});
                let mut throttled = Vec::new();
                if let Some(f) = factor {
                    let (now, stands) = self
                        .guard
                        .reduce_limits(&alert.alert_id, &alert.scope, f, actor)
                        .await?;
                    done["limit_factor"] = json!(now.normalize().to_string());
                    if stands {
                        throttled = self
                            .guard
                            .throttle_at_providers(Order::Lower, &alert.scope, f, actor)
                            .await?;
                    } else {
                        done["not_lowered"] = json!(
                            "the alert has recovered already: a late delivery lowers nothing"
                        );
                    }
                }
                if rotate {
                    let keys = self
                        .guard
                        .rotate(&alert.scope, actor, &alert.alert_id)
                        .await?;
                    done["rotated"] = serde_json::to_value(keys).unwrap_or_default();
                }
                with_throttles(done, throttled)
            }
            KeyOrder::Lift { factor } => {
                let recovered = alert.related_alert_id.as_deref().unwrap_or(&alert.alert_id);
                let now = self
                    .guard
                    .lift_limits(recovered, &alert.scope, factor, actor)
                    .await?;
                let lifted = self
                    .guard
                    .throttle_at_providers(Order::Lift, &alert.scope, factor, actor)
                    .await?;
                with_throttles(
                    json!({"scope": alert.scope, "limit_factor": now.normalize().to_string()}),
                    lifted,
                )
            }
            KeyOrder::Ignore(why) => Ok(json!({ "ignored": why })),
        }
    }
}

/// `done` with what happened to the providers' rate limits; any that failed fails the
/// invocation (Lambda retries: what was done is recorded and not done twice).
fn with_throttles(mut done: Value, reports: Vec<ThrottleReport>) -> Result<Value, KeyGuardError> {
    let failures: Vec<String> = reports.iter().filter_map(|r| r.failure()).collect();
    if !failures.is_empty() {
        return Err(KeyGuardError::ThrottleIncomplete(failures));
    }
    if !reports.is_empty() {
        done["provider_rate_limits"] = serde_json::to_value(reports).unwrap_or_default();
    }
    Ok(done)
}
