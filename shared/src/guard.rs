//! Emergency stop and restore (flow 4): engage the kill switch first (applications that read it
//! stop at once), then stop every key under the scope at its provider, once per incident and
//! key (and, for a `shutdown`, every opted-in resource); later re-enable exactly what
//! spendguard stopped and ramp the limit factor back up.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::budget::RestorePolicy;
use crate::clock::Clock;
use crate::keys::vault::{RestoreOutcome, SecretsAdmin};
use crate::keys::{Credential, KeyProvider, KeyRecord, KeySpec, KeyStatus, Measure, ProviderKind};
use crate::records::{AuditEntry, Claim, ClaimOutcome, KillSwitch, SwitchState, Versioned};
use crate::scope::Scope;
use crate::secret::Secret;
use crate::shutdown::{ResourceReport, Shutdown, ShutdownTarget};
use crate::store::{StateStore, StoreError};

/// A key action that was never finished (a crashed invocation) blocks others this long.
pub const KEY_ACTION_LEASE: Duration = Duration::minutes(2);
const KEY_CLAIM_RETENTION: Duration = Duration::days(90);

/// What happened to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum KeyOutcome {
    Disabled(Vec<Measure>),
    /// Done earlier for this incident.
    AlreadyDisabled,
    /// It was already disabled by someone else: spendguard leaves it, and never re-enables it.
    DisabledElsewhere,
    /// Another invocation is acting on it right now.
    InProgress,
    Restored,
    /// Rotation of its secret was started (Secrets Manager runs key-guard's rotation steps).
    RotationStarted,
    /// Rotated earlier for this incident.
    AlreadyRotated,
    /// Nothing to rotate: the key names no secret with a rotation strategy.
    NotRotatable,
    /// Restored, but part of it was left as an operator set it.
    RestoredWithNotes(String),
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub key_id: String,
    pub provider: ProviderKind,
    pub scope: Scope,
    #[serde(flatten)]
    pub outcome: KeyOutcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardReport {
    pub scope: Scope,
    pub incident: String,
    /// The kill switch after the action.
    pub switch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_factor: Option<String>,
    pub keys: Vec<KeyReport>,
    /// Resources stopped or restored (a `shutdown`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceReport>,
    /// What could not even be listed (a cloud's API refused); the switch stays engaged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl GuardReport {
    fn new(scope: &Scope, incident: String, switch: String, keys: Vec<KeyReport>) -> Self {
        GuardReport {
            scope: scope.clone(),
            incident,
            switch,
            limit_factor: None,
            keys,
            resources: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn failures(&self) -> Vec<String> {
        let keys = self.keys.iter().filter_map(|k| match &k.outcome {
            KeyOutcome::Failed(why) => Some(format!("{}: {why}", k.key_id)),
            KeyOutcome::InProgress => Some(format!("{}: still in progress elsewhere", k.key_id)),
            _ => None,
        });
        let resources = self.resources.iter().filter_map(ResourceReport::failure);
        keys.chain(resources)
            .chain(self.problems.iter().cloned())
            .collect()
    }

    fn into_result(self) -> Result<GuardReport, GuardError> {
        if self.failures().is_empty() {
            Ok(self)
        } else {
            Err(GuardError::Incomplete(Box::new(self)))
        }
    }
}

/// What a shutdown would do (a dry run): nothing is changed.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownPlan {
    pub scope: Scope,
    pub dry_run: bool,
    /// The kill switch now; a shutdown engages it.
    pub switch: String,
    /// The keys a shutdown would stop.
    pub keys: Vec<String>,
    pub resources: Vec<ResourceReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some keys could not be handled; the switch stays engaged and a retry finishes the rest.
    #[error("incomplete for scope {}: {}", .0.scope, .0.failures().join("; "))]
    Incomplete(Box<GuardReport>),
    #[error("the kill switch of {0} is not engaged: nothing to restore")]
    NotEngaged(Scope),
}

pub struct KeyGuard {
    pub store: Arc<dyn StateStore>,
    pub providers: Vec<Arc<dyn KeyProvider>>,
    /// Withholds and restores secrets (Secrets Manager); without it those measures fail.
    pub secrets: Option<Arc<SecretsAdmin>>,
    pub clock: Arc<dyn Clock>,
    /// Where opted-in resources are stopped by a `shutdown` (none: keys only).
    pub shutdown_targets: Vec<Arc<dyn ShutdownTarget>>,
}

fn switch_words(s: &KillSwitch) -> String {
    match &s.state {
        SwitchState::Open => "open".into(),
        SwitchState::Engaged { .. } => "engaged".into(),
        SwitchState::Restoring { step, .. } => format!("restoring (step {})", step + 1),
    }
}

impl KeyGuard {
    fn provider(&self, kind: ProviderKind) -> Option<&Arc<dyn KeyProvider>> {
        self.providers.iter().find(|p| p.kind() == kind)
    }

    async fn audit(&self, action: &str, actor: &str, scope: &Scope, detail: serde_json::Value) {
        let entry = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: self.clock.now(),
            actor: actor.into(),
            action: action.into(),
            scope: Some(scope.clone()),
            detail,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            warn!(error = %e, action, "audit entry not written");
        }
    }

    /// Engages the switch unless it already is; returns the incident in force.
    pub async fn engage(
        &self,
        scope: &Scope,
        reason: &str,
        actor: &str,
        incident: &str,
    ) -> Result<(String, Versioned<KillSwitch>), StoreError> {
        for _ in 0..8 {
            let current = self.store.kill_switch(scope).await?;
            if let Some(v) = &current
                && let SwitchState::Engaged { incident, .. } = &v.value.state
            {
                return Ok((incident.clone(), v.clone()));
            }
            let now = self.clock.now();
            let switch = KillSwitch {
                scope: scope.clone(),
                state: SwitchState::Engaged {
                    reason: reason.into(),
                    actor: actor.into(),
                    at: now,
                    incident: incident.into(),
                },
                limit_factor: Decimal::ZERO,
                updated_at: now,
            };
            match self
                .store
                .put_kill_switch(&switch, current.as_ref().map(|v| v.version))
                .await
            {
                Ok(version) => {
                    info!(%scope, %incident, "kill switch engaged");
                    self.audit(
                        "kill_switch_engaged",
                        actor,
                        scope,
                        json!({"incident": incident, "reason": reason}),
                    )
                    .await;
                    return Ok((
                        incident.into(),
                        Versioned {
                            value: switch,
                            version,
                        },
                    ));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "kill switch {scope} kept changing"
        )))
    }

    async fn keys_under(&self, scope: &Scope) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|k| scope.contains(&k.spec.scope))
            .collect())
    }

    /// The key as it is now: its secret names the live key id after a rotation.
    async fn live(&self, spec: &KeySpec) -> KeySpec {
        let mut live = spec.clone();
        if let (Some(arn), Some(admin)) = (&spec.secret_arn, &self.secrets)
            && let Ok(out) = admin
                .client
                .get_secret_value()
                .secret_id(arn)
                .version_stage("AWSCURRENT")
                .send()
                .await
            && let Some(value) = out.secret_string()
            && let Some(id) = Credential::parse(&Secret::new(value)).key_id
        {
            live.key_id = Some(id);
        }
        live
    }

    /// Stops spend in `scope`: the switch first, then every key under it.
    pub async fn disable(
        &self,
        scope: &Scope,
        reason: &str,
        actor: &str,
        incident: &str,
    ) -> Result<GuardReport, GuardError> {
        self.disable_report(scope, reason, actor, incident)
            .await?
            .into_result()
    }

    /// A `shutdown`: what `disable` does, then every opted-in resource under `scope` is stopped.
    /// A partial failure leaves the switch engaged and fails, so a retry does only the rest.
    pub async fn shut_down(
        &self,
        scope: &Scope,
        reason: &str,
        actor: &str,
        incident: &str,
    ) -> Result<GuardReport, GuardError> {
        let mut report = self.disable_report(scope, reason, actor, incident).await?;
        let (resources, problems) = self.resources().stop(scope, &report.incident, actor).await;
        report.resources = resources;
        report.problems = problems;
        report.into_result()
    }

    /// What `shut_down` would stop, changing nothing.
    pub async fn plan_shutdown(
        &self,
        scope: &Scope,
        actor: &str,
    ) -> Result<ShutdownPlan, GuardError> {
        let switch = self.store.kill_switch(scope).await?;
        let keys = self
            .keys_under(scope)
            .await?
            .into_iter()
            .map(|k| k.spec.id)
            .collect();
        let (resources, problems) = self.resources().plan(scope).await;
        let plan = ShutdownPlan {
            scope: scope.clone(),
            dry_run: true,
            switch: switch
                .map(|v| switch_words(&v.value))
                .unwrap_or("open".into()),
            keys,
            resources,
            problems,
        };
        self.audit(
            "shutdown_planned",
            actor,
            scope,
            json!({"keys": plan.keys, "resources": plan.resources, "problems": plan.problems}),
        )
        .await;
        Ok(plan)
    }

    fn resources(&self) -> Shutdown {
        Shutdown {
            store: self.store.clone(),
            clock: self.clock.clone(),
            targets: self.shutdown_targets.clone(),
        }
    }

    async fn disable_report(
        &self,
        scope: &Scope,
        reason: &str,
        actor: &str,
        incident: &str,
    ) -> Result<GuardReport, GuardError> {
        let (incident, switch) = self.engage(scope, reason, actor, incident).await?;
        let keys = self.keys_under(scope).await?;
        let outcomes = join_all(keys.iter().map(|k| self.disable_key(k, &incident, actor))).await;
        let mut report = GuardReport::new(
            scope,
            incident,
            switch_words(&switch.value),
            keys.iter()
                .zip(outcomes)
                .map(|(k, outcome)| KeyReport {
                    key_id: k.spec.id.clone(),
                    provider: k.spec.provider,
                    scope: k.spec.scope.clone(),
                    outcome,
                })
                .collect(),
        );
        report.limit_factor = Some(switch.value.limit_factor.normalize().to_string());
        Ok(report)
    }

    fn wanted(spec: &KeySpec) -> Vec<&'static str> {
        match spec.provider {
            ProviderKind::Anthropic | ProviderKind::AwsIam => vec!["provider_disabled"],
            ProviderKind::Openai => {
                let mut w = Vec::new();
                if spec.secret_arn.is_some() {
                    w.push("secret_withheld");
                }
                if spec.allow_delete {
                    w.push("provider_deleted");
                }
                w
            }
            ProviderKind::SecretOnly => vec!["secret_withheld"],
        }
    }

    fn measure_name(m: &Measure) -> &'static str {
        match m {
            Measure::ProviderDisabled => "provider_disabled",
            Measure::SecretWithheld { .. } => "secret_withheld",
            Measure::ProviderDeleted => "provider_deleted",
        }
    }

    async fn disable_key(&self, key: &KeyRecord, incident: &str, actor: &str) -> KeyOutcome {
        let wanted = Self::wanted(&key.spec);
        let mut done: Vec<Measure> = match &key.status {
            KeyStatus::DisabledBySpendguard {
                incident: i,
                measures,
                ..
            } if i == incident => measures.clone(),
            _ => Vec::new(),
        };
        if wanted
            .iter()
            .all(|w| done.iter().any(|m| Self::measure_name(m) == *w))
            && !done.is_empty()
        {
            return KeyOutcome::AlreadyDisabled;
        }
        let now = self.clock.now();
        let claim = match self
            .claim_key_action(
                key,
                &format!("disable#{incident}"),
                KeyOutcome::AlreadyDisabled,
            )
            .await
        {
            Ok(claim) => claim,
            Err(outcome) => return outcome,
        };
        let spec = self.live(&key.spec).await;
        let result = self.stop(&spec, incident, &wanted, &mut done).await;
        let outcome = match result {
            Ok(Some(elsewhere)) => {
                let _ = self
                    .store
                    .set_key_status(&spec.id, &KeyStatus::DisabledElsewhere { seen_at: now })
                    .await;
                elsewhere
            }
            Ok(None) => KeyOutcome::Disabled(done.clone()),
            Err(why) => KeyOutcome::Failed(why),
        };
        if !done.is_empty() {
            let status = KeyStatus::DisabledBySpendguard {
                incident: incident.into(),
                at: now,
                measures: done.clone(),
            };
            if let Err(e) = self.store.set_key_status(&spec.id, &status).await {
                warn!(key = %spec.id, error = %e, "key status not recorded");
            }
        }
        match &outcome {
            KeyOutcome::Failed(why) => {
                warn!(key = %spec.id, reason = %why, "key not fully disabled; the switch stays engaged");
                let _ = self.store.release_claim(&claim).await;
                self.audit(
                    "key_disable_failed",
                    actor,
                    &spec.scope,
                    json!({"key": spec.id, "incident": incident, "error": why}),
                )
                .await;
            }
            _ => {
                let _ = self.store.finish_claim(&claim).await;
                info!(key = %spec.id, provider = %spec.provider, "key disabled");
                self.audit(
                    "key_disabled",
                    actor,
                    &spec.scope,
                    json!({"key": spec.id, "incident": incident, "outcome": outcome}),
                )
                .await;
            }
        }
        outcome
    }

    /// Applies the measures not yet done. `Ok(Some(..))`: the key was already off elsewhere.
    async fn stop(
        &self,
        spec: &KeySpec,
        incident: &str,
        wanted: &[&str],
        done: &mut Vec<Measure>,
    ) -> Result<Option<KeyOutcome>, String> {
        for w in wanted {
            if done.iter().any(|m| Self::measure_name(m) == *w) {
                continue;
            }
            match *w {
                "provider_disabled" => {
                    let provider = self
                        .provider(spec.provider)
                        .ok_or(format!("no {} admin access is configured", spec.provider))?;
                    if !provider.is_active(spec).await.map_err(|e| e.to_string())?
                        && done.is_empty()
                    {
                        return Ok(Some(KeyOutcome::DisabledElsewhere));
                    }
                    provider.disable(spec).await.map_err(|e| e.to_string())?;
                    done.push(Measure::ProviderDisabled);
                }
                "secret_withheld" => {
                    let admin = self
                        .secrets
                        .as_ref()
                        .ok_or("withholding a secret needs Secrets Manager")?;
                    let arn = spec
                        .secret_arn
                        .as_deref()
                        .ok_or("the key has no secret to withhold")?;
                    let previous = admin
                        .withhold(arn, incident)
                        .await
                        .map_err(|e| e.to_string())?;
                    done.push(Measure::SecretWithheld {
                        previous_version: previous,
                    });
                }
                _ => {
                    let provider = self
                        .provider(spec.provider)
                        .ok_or(format!("no {} admin access is configured", spec.provider))?;
                    provider.disable(spec).await.map_err(|e| e.to_string())?;
                    done.push(Measure::ProviderDeleted);
                }
            }
        }
        Ok(None)
    }

    /// Re-enables the keys spendguard stopped in `scope` and starts the limit ramp.
    pub async fn restore(
        &self,
        scope: &Scope,
        actor: &str,
        policy: &RestorePolicy,
    ) -> Result<GuardReport, GuardError> {
        let Some(switch) = self.store.kill_switch(scope).await? else {
            return Err(GuardError::NotEngaged(scope.clone()));
        };
        let incident = match &switch.value.state {
            SwitchState::Engaged { incident, .. } => incident.clone(),
            SwitchState::Restoring { .. } => String::new(),
            SwitchState::Open => return Err(GuardError::NotEngaged(scope.clone())),
        };
        let keys: Vec<KeyRecord> = self
            .keys_under(scope)
            .await?
            .into_iter()
            .filter(|k| matches!(k.status, KeyStatus::DisabledBySpendguard { .. }))
            .collect();
        let outcomes = join_all(keys.iter().map(|k| self.enable_key(k, actor))).await;
        let mut report = GuardReport::new(
            scope,
            incident,
            switch_words(&switch.value),
            keys.iter()
                .zip(outcomes)
                .map(|(k, outcome)| KeyReport {
                    key_id: k.spec.id.clone(),
                    provider: k.spec.provider,
                    scope: k.spec.scope.clone(),
                    outcome,
                })
                .collect(),
        );
        let (resources, problems) = self.resources().restore(scope, actor).await;
        report.resources = resources;
        report.problems = problems;
        if !report.failures().is_empty() {
            return Err(GuardError::Incomplete(Box::new(report)));
        }
        if let SwitchState::Engaged { .. } = switch.value.state {
            let now = self.clock.now();
            let first = policy.steps.first().copied().unwrap_or(Decimal::ONE);
            let ramp = KillSwitch {
                scope: scope.clone(),
                state: SwitchState::Restoring {
                    step: 0,
                    since: now,
                },
                limit_factor: first,
                updated_at: now,
            };
            match self
                .store
                .put_kill_switch(&ramp, Some(switch.version))
                .await
            {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.audit(
                "restore_started",
                actor,
                scope,
                json!({"limit_factor": first.to_string()}),
            )
            .await;
            report.switch = "restoring (step 1)".into();
            report.limit_factor = Some(first.normalize().to_string());
        }
        Ok(report)
    }

    async fn enable_key(&self, key: &KeyRecord, actor: &str) -> KeyOutcome {
        let KeyStatus::DisabledBySpendguard {
            incident, measures, ..
        } = &key.status
        else {
            return KeyOutcome::Restored;
        };
        let claim = match self
            .claim_key_action(key, &format!("enable#{incident}"), KeyOutcome::Restored)
            .await
        {
            Ok(claim) => claim,
            Err(outcome) => return outcome,
        };
        let spec = self.live(&key.spec).await;
        let mut notes = Vec::new();
        let mut failure = None;
        for m in measures.iter().rev() {
            let result = match m {
                Measure::ProviderDisabled => match self.provider(spec.provider) {
                    Some(p) => p.enable(&spec).await.map_err(|e| e.to_string()),
                    None => Err(format!("no {} admin access is configured", spec.provider)),
                },
                Measure::SecretWithheld { previous_version } => {
                    match (&self.secrets, &spec.secret_arn) {
                        (Some(admin), Some(arn)) => {
                            match admin.restore(arn, previous_version, incident).await {
                                Ok(RestoreOutcome::ChangedByOperator) => {
                                    notes.push(
                                        "the secret was changed since: left as the operator set it"
                                            .to_string(),
                                    );
                                    Ok(())
                                }
                                Ok(_) => Ok(()),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        _ => Err("restoring a secret needs Secrets Manager".into()),
                    }
                }
                Measure::ProviderDeleted => {
                    notes.push("deleted at OpenAI (permanent): issue a new key".to_string());
                    Ok(())
                }
            };
            if let Err(e) = result {
                failure = Some(e);
                break;
            }
        }
        if let Some(why) = failure {
            let _ = self.store.release_claim(&claim).await;
            self.audit(
                "key_restore_failed",
                actor,
                &spec.scope,
                json!({"key": spec.id, "error": why}),
            )
            .await;
            return KeyOutcome::Failed(why);
        }
        if let Err(e) = self
            .store
            .set_key_status(&spec.id, &KeyStatus::Active)
            .await
        {
            let _ = self.store.release_claim(&claim).await;
            return KeyOutcome::Failed(e.to_string());
        }
        let _ = self.store.finish_claim(&claim).await;
        self.audit(
            "key_restored",
            actor,
            &spec.scope,
            json!({"key": spec.id, "notes": notes}),
        )
        .await;
        if notes.is_empty() {
            KeyOutcome::Restored
        } else {
            KeyOutcome::RestoredWithNotes(notes.join("; "))
        }
    }

    /// Claims acting on `key` once (`what`: `disable#<incident>`, `enable#...`, `rotate#...`).
    /// `Err` is what to report instead of acting: `done` when an earlier invocation did it.
    async fn claim_key_action(
        &self,
        key: &KeyRecord,
        what: &str,
        done: KeyOutcome,
    ) -> Result<Claim, KeyOutcome> {
        let now = self.clock.now();
        let claim = Claim::key(
            &key.spec.id,
            what,
            &uuid::Uuid::new_v4().to_string(),
            KEY_ACTION_LEASE,
            now + KEY_CLAIM_RETENTION,
        );
        match self.store.claim(&claim, now).await {
            Err(e) => Err(KeyOutcome::Failed(e.to_string())),
            Ok(ClaimOutcome::AlreadyRaised) => Err(done),
            Ok(ClaimOutcome::HeldByOther) => Err(KeyOutcome::InProgress),
            Ok(ClaimOutcome::Won) => Ok(claim),
        }
    }

    /// Starts the rotation of every key under `scope` that has a secret and a rotation
    /// strategy, once per incident and key (a `rotate_keys` action). Secrets Manager then
    /// calls key-guard's rotation steps, which test the new key before it is made current.
    pub async fn rotate(
        &self,
        scope: &Scope,
        actor: &str,
        incident: &str,
    ) -> Result<Vec<KeyReport>, GuardError> {
        let keys = self.keys_under(scope).await?;
        let outcomes = join_all(keys.iter().map(|k| self.rotate_key(k, incident))).await;
        let reports: Vec<KeyReport> = keys
            .iter()
            .zip(outcomes)
            .map(|(k, outcome)| KeyReport {
                key_id: k.spec.id.clone(),
                provider: k.spec.provider,
                scope: k.spec.scope.clone(),
                outcome,
            })
            .collect();
        self.audit(
            "keys_rotation_started",
            actor,
            scope,
            json!({"incident": incident, "keys": reports}),
        )
        .await;
        GuardReport::new(scope, incident.into(), "unchanged".into(), reports)
            .into_result()
            .map(|r| r.keys)
    }

    async fn rotate_key(&self, key: &KeyRecord, incident: &str) -> KeyOutcome {
        let (Some(arn), Some(_)) = (&key.spec.secret_arn, key.spec.rotation) else {
            return KeyOutcome::NotRotatable;
        };
        let Some(admin) = &self.secrets else {
            return KeyOutcome::Failed("no Secrets Manager access is configured".into());
        };
        let claim = match self
            .claim_key_action(
                key,
                &format!("rotate#{incident}"),
                KeyOutcome::AlreadyRotated,
            )
            .await
        {
            Ok(claim) => claim,
            Err(outcome) => return outcome,
        };
        match admin.client.rotate_secret().secret_id(arn).send().await {
            Ok(_) => {
                if let Err(e) = self.store.finish_claim(&claim).await {
                    warn!(error = %e, key = %key.spec.id, "rotation claim not finished");
                }
                info!(key = %key.spec.id, %incident, "rotation started");
                KeyOutcome::RotationStarted
            }
            Err(e) => {
                let _ = self.store.release_claim(&claim).await;
                KeyOutcome::Failed(format!(
                    "RotateSecret: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                ))
            }
        }
    }

    /// Lowers the limit factor of an open switch (a `reduce_limits` action); keys stay enabled.
    pub async fn reduce_limits(
        &self,
        scope: &Scope,
        factor: Decimal,
        actor: &str,
    ) -> Result<Decimal, StoreError> {
        self.set_factor(scope, actor, |current| current.min(factor))
            .await
    }

    /// Raises the limit factor back to 1 when the alert that lowered it recovers.
    pub async fn lift_limits(
        &self,
        scope: &Scope,
        factor: Decimal,
        actor: &str,
    ) -> Result<Decimal, StoreError> {
        self.set_factor(scope, actor, |current| {
            if current == factor {
                Decimal::ONE
            } else {
                current
            }
        })
        .await
    }

    async fn set_factor(
        &self,
        scope: &Scope,
        actor: &str,
        change: impl Fn(Decimal) -> Decimal,
    ) -> Result<Decimal, StoreError> {
        for _ in 0..8 {
            let current = self.store.kill_switch(scope).await?;
            let (state, factor, version) = match &current {
                Some(v) => (v.value.state.clone(), v.value.limit_factor, Some(v.version)),
                None => (SwitchState::Open, Decimal::ONE, None),
            };
            // an engaged or restoring switch is already stricter and has its own way back
            if state != SwitchState::Open {
                return Ok(factor);
            }
            let next = change(factor);
            if next == factor {
                return Ok(factor);
            }
            let now = self.clock.now();
            let switch = KillSwitch {
                scope: scope.clone(),
                state,
                limit_factor: next,
                updated_at: now,
            };
            match self.store.put_kill_switch(&switch, version).await {
                Ok(_) => {
                    self.audit(
                        "limit_factor_set",
                        actor,
                        scope,
                        json!({"limit_factor": next.to_string()}),
                    )
                    .await;
                    return Ok(next);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "kill switch {scope} kept changing"
        )))
    }

    /// The switch and every key under the scope.
    pub async fn status(&self, scope: &Scope) -> Result<serde_json::Value, StoreError> {
        let switch = self.store.kill_switch(scope).await?;
        let keys = self.keys_under(scope).await?;
        Ok(json!({
            "scope": scope,
            "switch": switch.as_ref().map(|s| serde_json::to_value(&s.value).unwrap_or_default()),
            "keys": keys.iter().map(|k| json!({"id": k.spec.id, "provider": k.spec.provider, "scope": k.spec.scope, "status": k.status})).collect::<Vec<_>>(),
        }))
    }
}

/// Advances restoring switches one step when their step has lasted `step_minutes` (called by
/// the scheduled check). Returns how many switches moved.
pub async fn advance_ramps(
    store: &dyn StateStore,
    policy: &RestorePolicy,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut moved = 0;
    for v in store.active_kill_switches().await? {
        let SwitchState::Restoring { step, since } = v.value.state else {
            continue;
        };
        if now < since + Duration::minutes(i64::from(policy.step_minutes)) {
            continue;
        }
        let next = step as usize + 1;
        let (state, factor) = match policy.steps.get(next) {
            Some(f) if next + 1 < policy.steps.len() => (
                SwitchState::Restoring {
                    step: next as u32,
                    since: now,
                },
                *f,
            ),
            _ => (SwitchState::Open, Decimal::ONE),
        };
        let switch = KillSwitch {
            scope: v.value.scope.clone(),
            state,
            limit_factor: factor,
            updated_at: now,
        };
        match store.put_kill_switch(&switch, Some(v.version)).await {
            Ok(_) => moved += 1,
            Err(StoreError::Conflict(_)) => {} // someone else moved it
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}
