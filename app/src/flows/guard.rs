//! Emergency stop and restore (flow 4) as one explicit state machine (docs/keys.md, "The
//! incident lifecycle"):
//!
//! - a kill switch is engaged by incidents (an alert id, or a manual request): the first
//!   engages it, later ones join it, and every change is audited with the switch itself;
//! - a key is held by the set of incidents that stopped it; an intent is recorded before
//!   every provider call, so a retry after a crash recognises spendguard's own stop;
//! - a restore first marks the switch `Releasing`; any emergency that arrives meanwhile moves
//!   it back to `Engaged` and the restore stops; a key is re-enabled only when the last
//!   incident holding it is released; released incidents are remembered, so a late delivery
//!   engages nothing;
//! - with the store down, keys are still stopped from the registry as last read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use tracing::{error, info, warn};

use crate::flows::shutdown::{ResourceOutcome, ResourceReport, Shutdown};
use crate::flows::throttle::{Order, Throttle, ThrottleReport};
use crate::flows::withhold::RestoreOutcome;
use crate::lease::Held;
use crate::ports::clock::Clock;
use crate::ports::keys::{KeyProvider, UserCredentials};
use crate::ports::rate_limits::ProviderRateLimits;
use crate::ports::secret_versions::SecretVersions;
use crate::ports::shutdown::ShutdownTarget;
use crate::ports::store::{StateStore, StoreError};
use spendguard_domain::ids::KeyId;
use spendguard_domain::keys::{
    Credential, KeyRecord, KeySpec, KeyStatus, Measure, ProviderKind, Release, session_deny_policy,
};
use spendguard_domain::records::{AuditEntry, Claim, KillSwitch, Lease, SwitchState, Versioned};
use spendguard_domain::scope::Scope;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::RestorePolicy;

/// One invocation acts on a key at a time; a lease left by a crashed one blocks this long.
pub const KEY_ACTION_LEASE: Duration = Duration::minutes(2);
const KEY_CLAIM_RETENTION: Duration = Duration::days(90);
/// Attempts of a compare-and-set that keeps meeting concurrent writers.
const CAS_ATTEMPTS: usize = 8;
/// Attempts to engage the switch when the store is unavailable (after the keys are stopped).
const OUTAGE_RETRIES_MS: [u64; 3] = [500, 1000, 2000];

/// What happened to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum KeyOutcome {
    Disabled(Vec<Measure>),
    /// Already stopped by spendguard; this incident now holds it too.
    AlreadyDisabled,
    /// It was already disabled by someone else: spendguard leaves it, and never re-enables it.
    DisabledElsewhere,
    /// Another invocation is acting on it right now.
    InProgress,
    Restored,
    /// Released by this restore, but still held by other incidents (another switch, nested
    /// or not, that is still engaged): it stays stopped.
    StillHeld(Vec<String>),
    /// Not stopped: a restore released the incident before this key's turn came.
    Released,
    /// A new emergency stopped the restore before this key was re-enabled.
    Interrupted,
    /// Rotation of its secret was started (Secrets Manager runs key-guard's rotation steps).
    RotationStarted,
    /// Rotated earlier for this incident.
    AlreadyRotated,
    /// Nothing to rotate: the key names no secret with a rotation strategy.
    NotRotatable,
    /// Restored, but part of it was left as an operator set it.
    RestoredWithNotes(String),
    /// Stopped at the provider while the store was unavailable: recorded once it is back.
    StoppedUnrecorded(Vec<Measure>),
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
    /// Resources stopped or restored: the providers' spend limits a stop sets, and what a
    /// `shutdown` stops.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceReport>,
    /// What could not even be listed (a cloud's API refused); the switch stays engaged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// What was noted and is not a failure (a late delivery ignored, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The incident was released by a restore already: this delivery stops nothing.
    #[serde(skip)]
    pub late: bool,
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
            notes: Vec::new(),
            late: false,
        }
    }

    pub fn failures(&self) -> Vec<String> {
        let keys = self.keys.iter().filter_map(|k| match &k.outcome {
            KeyOutcome::Failed(why) => Some(format!("{}: {why}", k.key_id)),
            KeyOutcome::InProgress => Some(format!("{}: still in progress elsewhere", k.key_id)),
            KeyOutcome::StoppedUnrecorded(_) => Some(format!(
                "{}: stopped, but not recorded (the store is unavailable)",
                k.key_id
            )),
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
    /// A new emergency arrived while the restore ran: the switch is engaged again (by
    /// `.1`), and keys not yet re-enabled stay stopped. Restore again once it is handled.
    #[error("the restore of {} was interrupted by incident(s) {}: the switch is engaged again and keys not yet re-enabled stay stopped", .0.scope, .1.join(", "))]
    Interrupted(Box<GuardReport>, Vec<String>),
    /// The store is unavailable: the keys under the scope were stopped at their providers
    /// from the registry as last read, but the switch and the keys' records are not written.
    #[error("the store is unavailable ({cause}); stopped at the providers without a record: {}", report.keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>().join(", "))]
    StoppedWithoutStore {
        report: Box<GuardReport>,
        cause: StoreError,
    },
}

/// What engaging a switch for an incident did.
pub enum Engagement {
    /// The switch now holds the incident (engaged by it, joined, or already held).
    Holds(Versioned<KillSwitch>),
    /// A restore released this incident: a late delivery, nothing engaged.
    AlreadyReleased,
}

/// The registry as last read, and what was stopped while the store was down.
#[derive(Default)]
pub struct Registry {
    keys: Mutex<Vec<KeyRecord>>,
    /// Whether the store was ever read: until it was, `keys` holds nothing to stop.
    read: AtomicBool,
    /// key id -> (incident, measures): stopped during an outage, not yet recorded.
    unrecorded: Mutex<BTreeMap<String, (String, Vec<Measure>)>>,
}

impl Registry {
    fn remember(&self, keys: &[KeyRecord]) {
        if let Ok(mut k) = self.keys.lock() {
            *k = keys.to_vec();
            self.read.store(true, Ordering::SeqCst);
        }
    }

    fn under(&self, scope: &Scope) -> Vec<KeyRecord> {
        self.keys
            .lock()
            .map(|k| {
                k.iter()
                    .filter(|r| scope.contains(&r.spec.scope))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn note_unrecorded(&self, key_id: &str, incident: &str, measures: &[Measure]) {
        if let Ok(mut u) = self.unrecorded.lock() {
            u.insert(key_id.into(), (incident.into(), measures.to_vec()));
        }
    }

    fn unrecorded(&self, key_id: &str) -> Option<(String, Vec<Measure>)> {
        self.unrecorded.lock().ok()?.get(key_id).cloned()
    }

    fn recorded(&self, key_id: &str) {
        if let Ok(mut u) = self.unrecorded.lock() {
            u.remove(key_id);
        }
    }
}

/// The marker of an alert whose recovery key-guard has seen.
fn recovered_key(alert_id: &str) -> String {
    format!("recovered#{alert_id}")
}

/// How long a recovery is remembered: longer than SNS retries and Lambda's event age, and than
/// any budget period a replayed alert could belong to.
const RECOVERY_MEMORY: Duration = Duration::days(400);

pub struct KeyGuard {
    pub store: Arc<dyn StateStore>,
    pub providers: Vec<Arc<dyn KeyProvider>>,
    /// Withholds and restores secrets (Secrets Manager); without it those measures fail.
    pub secrets: Option<Arc<dyn SecretVersions>>,
    pub clock: Arc<dyn Clock>,
    /// Where opted-in resources are stopped by a `shutdown` (none: keys only).
    pub shutdown_targets: Vec<Arc<dyn ShutdownTarget>>,
    /// Where a `reduce_limits` also lowers the provider's own rate limits (OpenAI projects,
    /// Anthropic workspaces): one per provider with an admin key.
    pub rate_limits: Vec<Arc<dyn ProviderRateLimits>>,
    /// The registry as last read (what an emergency stops while the store is down).
    pub registry: Registry,
    /// How long (ms) to wait between attempts for another invocation's lease on a key or a
    /// resource before reporting it in progress (and failing, so that Lambda retries).
    pub lease_waits: &'static [u64],
}

fn switch_words(s: &KillSwitch) -> String {
    match &s.state {
        SwitchState::Restoring { step, .. } => format!("restoring (step {})", step + 1),
        other => other.name().into(),
    }
}

/// The measures a key is stopped with.
fn wanted(spec: &KeySpec) -> Vec<&'static str> {
    match spec.provider {
        ProviderKind::Anthropic => vec!["provider_disabled"],
        // the access key, then what the user holds besides it: Bedrock API keys, and the
        // sessions made from the key before it stopped
        ProviderKind::AwsIam => vec![
            "provider_disabled",
            "service_credentials_disabled",
            "sessions_revoked",
        ],
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
        // in place of disabling it: a measure by that name is never taken again
        Measure::ProviderAlreadyOff => "provider_disabled",
        Measure::ServiceCredentialsDisabled { .. } => "service_credentials_disabled",
        Measure::SessionsRevoked { .. } => "sessions_revoked",
    }
}

/// Which resources a stop changes: those every `disable_keys` sets (the providers' own
/// spend limits), or the cloud resources only a `shutdown` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stops {
    WithTheKeys,
    CloudResources,
}

fn with(incidents: &[String], incident: &str) -> Vec<String> {
    let mut out = incidents.to_vec();
    if !out.iter().any(|i| i == incident) {
        out.push(incident.to_string());
    }
    out
}

impl KeyGuard {
    pub fn new(
        store: Arc<dyn StateStore>,
        providers: Vec<Arc<dyn KeyProvider>>,
        secrets: Option<Arc<dyn SecretVersions>>,
        clock: Arc<dyn Clock>,
        shutdown_targets: Vec<Arc<dyn ShutdownTarget>>,
    ) -> Self {
        KeyGuard {
            store,
            providers,
            secrets,
            clock,
            shutdown_targets,
            rate_limits: Vec::new(),
            registry: Registry::default(),
            lease_waits: &crate::lease::LEASE_WAITS_MS,
        }
    }

    /// With the providers' rate limits lowered by `reduce_limits` too.
    pub fn with_rate_limits(self, rate_limits: Vec<Arc<dyn ProviderRateLimits>>) -> Self {
        KeyGuard {
            rate_limits,
            ..self
        }
    }

    /// Takes the registry as read at start (alongside the start's other reads), so an
    /// emergency can stop keys even if the store is unavailable when it arrives. A failure is
    /// logged: [`warm_if_unread`](Self::warm_if_unread) or the next successful read fills it.
    pub fn warm_from(&self, read: Result<Vec<KeyRecord>, StoreError>) {
        match read {
            Ok(keys) => self.registry.remember(&keys),
            Err(e) => warn!(error = %e, "key registry not read at start"),
        }
    }

    /// Reads the registry if it was never read (its read at start failed): each event tries
    /// again until one succeeds.
    pub async fn warm_if_unread(&self) {
        if self.registry.read.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.all_keys().await {
            warn!(error = %e, "key registry still not read");
        }
    }

    pub(crate) fn provider(&self, kind: ProviderKind) -> Option<&Arc<dyn KeyProvider>> {
        self.providers.iter().find(|p| p.kind() == kind)
    }

    fn entry(
        &self,
        action: &str,
        actor: &str,
        scope: &Scope,
        detail: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: self.clock.now(),
            actor: actor.into(),
            action: action.into(),
            scope: Some(scope.clone()),
            detail,
        }
    }

    async fn audit(&self, action: &str, actor: &str, scope: &Scope, detail: serde_json::Value) {
        let entry = self.entry(action, actor, scope, detail);
        if let Err(e) = self.store.append_audit(&entry).await {
            warn!(error = %e, action, "audit entry not written");
        }
    }

    async fn all_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let keys = self.store.keys().await?;
        self.registry.remember(&keys);
        Ok(keys)
    }

    async fn keys_under(&self, scope: &Scope) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self
            .all_keys()
            .await?
            .into_iter()
            .filter(|k| scope.contains(&k.spec.scope))
            .collect())
    }

    /// The key as it is now: its secret names the live key id after a rotation.
    pub(crate) async fn live(&self, spec: &KeySpec) -> KeySpec {
        let mut live = spec.clone();
        if let (Some(arn), Some(secrets)) = (&spec.secret_arn, &self.secrets)
            && let Ok((_, value)) = secrets.current(arn).await
            && !spendguard_domain::keys::is_marker(&value)
            && let Some(id) = Credential::parse(&Secret::new(value)).key_id
        {
            live.key_id = Some(id);
        }
        live
    }

    // ---- the switch ----------------------------------------------------------------------

    /// Makes the switch of `scope` hold `incident` (engaging it, joining it, or interrupting
    /// a restore), unless a restore released that incident already.
    pub async fn engage(
        &self,
        scope: &Scope,
        reason: &str,
        actor: &str,
        incident: &str,
    ) -> Result<Engagement, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.store.kill_switch(scope).await?;
            let now = self.clock.now();
            let (held, released) = match &current {
                Some(v) => (v.value.state.holding(), v.value.released.clone()),
                None => (Vec::new(), Vec::new()),
            };
            // released, or being released by a restore: a redelivery, not a new emergency
            let releasing = matches!(
                current.as_ref().map(|v| &v.value.state),
                Some(SwitchState::Releasing { .. })
            ) && held.iter().any(|i| i == incident);
            if releasing
                || current
                    .as_ref()
                    .is_some_and(|v| v.value.was_released(incident))
            {
                return Ok(Engagement::AlreadyReleased);
            }
            let (action, detail) = match current.as_ref().map(|v| &v.value.state) {
                Some(SwitchState::Engaged { .. }) if held.iter().any(|i| i == incident) => {
                    if let Some(v) = current {
                        return Ok(Engagement::Holds(v));
                    }
                    continue;
                }
                Some(SwitchState::Engaged { .. }) => (
                    "incident_joined",
                    json!({"incident": incident, "reason": reason, "incidents": with(&held, incident)}),
                ),
                Some(SwitchState::Releasing { restore, .. }) => (
                    "restore_interrupted",
                    json!({"incident": incident, "reason": reason, "restore": restore, "incidents": with(&held, incident)}),
                ),
                _ => (
                    "kill_switch_engaged",
                    json!({"incident": incident, "reason": reason}),
                ),
            };
            let incidents = with(&held, incident);
            let (first_reason, first_actor, since) = match current.as_ref().map(|v| &v.value.state)
            {
                Some(SwitchState::Engaged {
                    reason, actor, at, ..
                }) => (reason.clone(), actor.clone(), *at),
                _ => (reason.to_string(), actor.to_string(), now),
            };
            let switch = KillSwitch {
                scope: scope.clone(),
                state: SwitchState::Engaged {
                    reason: first_reason,
                    actor: first_actor,
                    at: since,
                    incident: incidents[0].clone(),
                    incidents,
                },
                limit_factor: Decimal::ZERO,
                updated_at: now,
                released,
            };
            let mut detail = detail;
            detail["version"] = json!(current.as_ref().map_or(1, |v| v.version + 1));
            let audit = self.entry(action, actor, scope, detail);
            match self
                .store
                .put_kill_switch(&switch, current.as_ref().map(|v| v.version), &audit)
                .await
            {
                Ok(version) => {
                    info!(%scope, %incident, action, "kill switch holds the incident");
                    return Ok(Engagement::Holds(Versioned {
                        value: switch,
                        version,
                    }));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "kill switch {scope} kept changing"
        )))
    }

    /// Whether the switch of `scope` is still released by restore `restore_id`.
    async fn still_releasing(&self, scope: &Scope, restore_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .kill_switch(scope)
            .await?
            .is_some_and(|v| v.value.is_released_by(restore_id)))
    }

    // ---- stopping --------------------------------------------------------------------------

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
        if !report.late {
            // the providers' own limits were set with the keys
            let (resources, problems) = self
                .resources_where(Stops::CloudResources)
                .stop(scope, &report.incident, actor)
                .await;
            report.resources.extend(resources);
            report.problems.extend(problems);
        }
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

    /// Every resource a stop may have changed: what a restore puts back.
    fn resources(&self) -> Shutdown {
        Shutdown {
            store: self.store.clone(),
            clock: self.clock.clone(),
            targets: self.shutdown_targets.clone(),
            lease_waits: self.lease_waits,
        }
    }

    /// The resources one kind of stop changes.
    fn resources_where(&self, stops: Stops) -> Shutdown {
        let with_keys = stops == Stops::WithTheKeys;
        Shutdown {
            targets: self
                .shutdown_targets
                .iter()
                .filter(|t| t.stops_with_keys() == with_keys)
                .cloned()
                .collect(),
            ..self.resources()
        }
    }

    async fn disable_report(
        &self,
        scope: &Scope,
        reason: &str,
        actor: &str,
        incident: &str,
    ) -> Result<GuardReport, GuardError> {
        let mut waits = OUTAGE_RETRIES_MS.iter();
        let mut stopped_unrecorded: Option<Vec<KeyReport>> = None;
        let switch = loop {
            match self.engage(scope, reason, actor, incident).await {
                Ok(Engagement::Holds(switch)) => break switch,
                Ok(Engagement::AlreadyReleased) => {
                    self.audit(
                        "late_delivery_ignored",
                        actor,
                        scope,
                        json!({"incident": incident, "reason": "a restore released this incident"}),
                    )
                    .await;
                    let mut report =
                        GuardReport::new(scope, incident.into(), "unchanged".into(), Vec::new());
                    report.late = true;
                    report.notes.push(format!(
                        "incident {incident} was restored already: a late delivery engages nothing"
                    ));
                    self.sweep_resources(scope, actor, &mut report).await;
                    return Ok(report);
                }
                Err(e) if e.is_retryable() => {
                    // the store is down: stop what the registry last listed, then try again
                    if stopped_unrecorded.is_none() {
                        stopped_unrecorded =
                            Some(self.stop_from_registry(scope, incident, &e).await);
                    }
                    match waits.next() {
                        Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(*ms)).await,
                        None => {
                            let report = GuardReport::new(
                                scope,
                                incident.into(),
                                "not recorded".into(),
                                stopped_unrecorded.unwrap_or_default(),
                            );
                            return Err(GuardError::StoppedWithoutStore {
                                report: Box::new(report),
                                cause: e,
                            });
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        let keys = self.keys_under(scope).await?;
        // the keys, and at the same time the providers' own spend limits (recorded first, so
        // a restore puts back exactly them): a slow provider delays neither
        let provider_limits = self.resources_where(Stops::WithTheKeys);
        let (outcomes, (limits, problems)) = futures::future::join(
            join_all(
                keys.iter()
                    .map(|k| self.disable_key(&k.spec, scope, incident, actor)),
            ),
            provider_limits.stop(scope, incident, actor),
        )
        .await;
        let mut report = GuardReport::new(
            scope,
            incident.into(),
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
        report.resources = limits;
        report.problems = problems;
        if !switch.value.released.is_empty() {
            self.sweep_resources(scope, actor, &mut report).await;
        }
        Ok(report)
    }

    /// A restore of this switch released incidents: if it failed after its release (before
    /// it put back every resource), those no incident holds any more come back now. Part of a
    /// stop, so what goes wrong is noted (and audited), not a failure of the stop.
    async fn sweep_resources(&self, scope: &Scope, actor: &str, report: &mut GuardReport) {
        if self.shutdown_targets.is_empty() {
            return;
        }
        let (resources, problems) = self.resources().release(scope, actor).await;
        for r in resources {
            match r.failure() {
                Some(why) => report
                    .notes
                    .push(format!("left stopped by an earlier restore: {why}")),
                None if r.outcome == ResourceOutcome::Restored => report.notes.push(format!(
                    "{}: put back (an earlier restore had left it stopped)",
                    r.resource.id
                )),
                None => {}
            }
        }
        report.notes.extend(
            problems
                .into_iter()
                .map(|p| format!("resources an earlier restore left: {p}")),
        );
    }

    /// With the store unavailable: stops the keys the registry last listed under `scope` at
    /// their providers, and remembers them, so that they are recorded as spendguard's own
    /// stop once the store is back (by this process).
    async fn stop_from_registry(
        &self,
        scope: &Scope,
        incident: &str,
        cause: &StoreError,
    ) -> Vec<KeyReport> {
        let keys = self.registry.under(scope);
        error!(%scope, %incident, error = %cause, keys = keys.len(), "store unavailable: stopping keys from the registry as last read");
        let outcomes = join_all(keys.iter().map(|k| async move {
            let spec = self.live(&k.spec).await;
            let mut done = Vec::new();
            let result = self.apply(&spec, incident, None, &mut done, None).await;
            if !done.is_empty() {
                self.registry.note_unrecorded(&spec.id, incident, &done);
            }
            match result {
                Ok(()) => KeyOutcome::StoppedUnrecorded(done),
                Err(why) => KeyOutcome::Failed(why),
            }
        }))
        .await;
        keys.iter()
            .zip(outcomes)
            .map(|(k, outcome)| KeyReport {
                key_id: k.spec.id.clone(),
                provider: k.spec.provider,
                scope: k.spec.scope.clone(),
                outcome,
            })
            .collect()
    }

    /// Takes the key's lease, waiting a little for another invocation to finish with it.
    async fn key_lease(&self, key_id: &str) -> Result<Option<Held<'_>>, StoreError> {
        crate::lease::exclusive(
            self.store.as_ref(),
            self.clock.as_ref(),
            key_id,
            KEY_ACTION_LEASE,
            self.lease_waits,
        )
        .await
    }

    /// The key's record, read afresh.
    async fn record(&self, key_id: &str) -> Result<KeyRecord, StoreError> {
        self.store
            .key(key_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no key `{key_id}` in the registry")))
    }

    /// Makes `incident` hold the key, under the key's lease: joins a stop already recorded,
    /// or stops it with an intent recorded before every provider call. Nothing is done for an
    /// incident its switch no longer holds (a restore released it while this ran): stopping
    /// the key then would leave it off with nobody to bring it back.
    async fn disable_key(
        &self,
        spec: &KeySpec,
        scope: &Scope,
        incident: &str,
        actor: &str,
    ) -> KeyOutcome {
        let lease = match self.key_lease(&spec.id).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return KeyOutcome::InProgress,
            Err(e) => return KeyOutcome::Failed(e.to_string()),
        };
        let outcome = match self.disable_leased(spec, scope, incident, actor).await {
            Ok(o) => o,
            Err(e) => KeyOutcome::Failed(e.to_string()),
        };
        // the work is recorded; a lease that cannot be released expires on its own
        if let Err(e) = lease.release().await {
            warn!(key = %spec.id, error = %e, "key lease not released; it expires");
        }
        outcome
    }

    /// Whether the switch of `scope` is engaged and holds `incident`.
    async fn holds(&self, scope: &Scope, incident: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .kill_switch(scope)
            .await?
            .is_some_and(|v| v.value.holds(incident)))
    }

    /// Stops the key (or joins its stop), holding its lease.
    async fn disable_leased(
        &self,
        spec: &KeySpec,
        scope: &Scope,
        incident: &str,
        actor: &str,
    ) -> Result<KeyOutcome, StoreError> {
        if !self.holds(scope, incident).await? {
            return Ok(KeyOutcome::Released);
        }
        let record = self.record(&spec.id).await?;
        let now = self.clock.now();
        let live = self.live(&record.spec).await;
        // (incidents, measures recorded as done, the key's secret version a stop recorded)
        let (incidents, carried, recorded_secret, version) = match &record.status {
            KeyStatus::DisabledBySpendguard { incidents, .. }
                if incidents.iter().any(|i| i == incident) =>
            {
                return Ok(KeyOutcome::AlreadyDisabled);
            }
            KeyStatus::DisabledBySpendguard {
                incidents,
                at,
                measures,
            } => {
                // stopped already for another incident: this one holds it too
                let held = KeyStatus::DisabledBySpendguard {
                    incidents: with(incidents, incident),
                    at: *at,
                    measures: measures.clone(),
                };
                self.store
                    .put_key_status(&spec.id, &held, record.version)
                    .await?;
                self.audit(
                    "key_held",
                    actor,
                    &record.spec.scope,
                    json!({"key": spec.id, "incident": incident, "incidents": held.holders()}),
                )
                .await;
                return Ok(KeyOutcome::AlreadyDisabled);
            }
            // an invocation that died while stopping it: its intent says the key is ours
            KeyStatus::Disabling {
                incidents,
                measures,
                ..
            } => (
                with(incidents, incident),
                measures.clone(),
                None,
                record.version,
            ),
            // a restore that died while re-enabling it: any measure may be undone already, so
            // every one is done again, the secret withheld from the version recorded before
            // and the service credentials it recorded kept (those not yet turned back on are
            // not found active again)
            KeyStatus::Enabling { measures, .. } => (
                vec![incident.to_string()],
                measures
                    .iter()
                    .filter(|m| matches!(m, Measure::ServiceCredentialsDisabled { .. }))
                    .cloned()
                    .collect(),
                measures.iter().find_map(|m| match m {
                    Measure::SecretWithheld { previous_version } => Some(previous_version.clone()),
                    _ => None,
                }),
                record.version,
            ),
            KeyStatus::Active | KeyStatus::DisabledElsewhere { .. } => {
                if let Some((stopped_for, measures)) = self.registry.unrecorded(&spec.id) {
                    // stopped during an outage by this process: record it as spendguard's
                    let status = KeyStatus::DisabledBySpendguard {
                        incidents: with(&[stopped_for], incident),
                        at: now,
                        measures: measures.clone(),
                    };
                    self.store
                        .put_key_status(&spec.id, &status, record.version)
                        .await?;
                    self.registry.recorded(&spec.id);
                    self.audit(
                        "key_disabled",
                        actor,
                        &live.scope,
                        json!({"key": spec.id, "incident": incident, "measures": measures, "note": "stopped while the store was unavailable"}),
                    )
                    .await;
                    return Ok(KeyOutcome::Disabled(measures));
                }
                let off_already = match self.provider(live.provider) {
                    Some(p) if live.provider.reversible_at_provider() => !p
                        .is_active(&live)
                        .await
                        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", live.provider)))?,
                    _ => false,
                };
                // an IAM key off already still leaves its user's Bedrock keys and sessions: those
                // are stopped, the key itself is left as its owner set it
                if off_already && live.provider == ProviderKind::AwsIam {
                    (
                        vec![incident.to_string()],
                        vec![Measure::ProviderAlreadyOff],
                        None,
                        record.version,
                    )
                } else if off_already {
                    if !matches!(record.status, KeyStatus::DisabledElsewhere { .. }) {
                        self.store
                            .put_key_status(
                                &spec.id,
                                &KeyStatus::DisabledElsewhere { seen_at: now },
                                record.version,
                            )
                            .await?;
                    }
                    return Ok(KeyOutcome::DisabledElsewhere);
                } else {
                    (vec![incident.to_string()], Vec::new(), None, record.version)
                }
            }
        };
        // the intent, before any provider call
        self.store
            .put_key_status(
                &spec.id,
                &KeyStatus::Disabling {
                    incidents,
                    at: now,
                    measures: carried.clone(),
                },
                version,
            )
            .await?;
        let mut done = carried;
        let result = self
            .apply(
                &live,
                incident,
                recorded_secret.as_deref(),
                &mut done,
                Some(&spec.id),
            )
            .await;
        self.record_stop(&spec.id, &done, result.is_ok()).await?;
        match result {
            Ok(()) => {
                info!(key = %spec.id, provider = %live.provider, "key disabled");
                self.audit(
                    "key_disabled",
                    actor,
                    &live.scope,
                    json!({"key": spec.id, "incident": incident, "measures": done}),
                )
                .await;
                Ok(KeyOutcome::Disabled(done))
            }
            Err(why) => {
                warn!(key = %spec.id, reason = %why, "key not fully disabled; the switch stays engaged");
                self.audit(
                    "key_disable_failed",
                    actor,
                    &live.scope,
                    json!({"key": spec.id, "incident": incident, "error": why}),
                )
                .await;
                Ok(KeyOutcome::Failed(why))
            }
        }
    }

    /// Records the measures done so far on the key's stop intent, keeping the incidents that
    /// joined meanwhile (a join is the only other writer while the lease is held); `finished`
    /// turns the intent into the stop.
    async fn record_stop(
        &self,
        key_id: &str,
        done: &[Measure],
        finished: bool,
    ) -> Result<(), StoreError> {
        loop {
            let current = self.record(key_id).await?;
            let KeyStatus::Disabling { incidents, at, .. } = &current.status else {
                return Err(StoreError::Conflict(format!(
                    "key {key_id} changed while it was being stopped"
                )));
            };
            let (incidents, at, measures) = (incidents.clone(), *at, done.to_vec());
            let status = if finished {
                KeyStatus::DisabledBySpendguard {
                    incidents,
                    at,
                    measures,
                }
            } else {
                KeyStatus::Disabling {
                    incidents,
                    at,
                    measures,
                }
            };
            match self
                .store
                .put_key_status(key_id, &status, current.version)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The IAM user a key belongs to and its other credentials, with the key's id.
    fn user_credentials<'a>(
        &'a self,
        spec: &'a KeySpec,
    ) -> Result<(&'a dyn UserCredentials, &'a str, &'a str), String> {
        let credentials = self
            .provider(spec.provider)
            .and_then(|p| p.user_credentials())
            .ok_or(format!("no {} admin access is configured", spec.provider))?;
        match (&spec.user, &spec.key_id) {
            (Some(user), Some(key_id)) => Ok((credentials, user, key_id)),
            _ => Err(format!("key {} needs user and key_id", spec.id)),
        }
    }

    /// Applies the measures of `spec` not yet in `done` (provider calls are idempotent, so a
    /// measure whose record a crash lost is simply done again). With `progress` (the key's
    /// id), a measure whose undo cannot be found out afterwards is recorded before it is made.
    async fn apply(
        &self,
        spec: &KeySpec,
        incident: &str,
        recorded_secret: Option<&str>,
        done: &mut Vec<Measure>,
        progress: Option<&str>,
    ) -> Result<(), String> {
        for w in wanted(spec) {
            // the service credentials are listed again: those still active join the record
            if w != "service_credentials_disabled" && done.iter().any(|m| measure_name(m) == w) {
                continue;
            }
            match w {
                "provider_disabled" => {
                    let provider = self
                        .provider(spec.provider)
                        .ok_or(format!("no {} admin access is configured", spec.provider))?;
                    provider.disable(spec).await.map_err(|e| e.to_string())?;
                    done.push(Measure::ProviderDisabled);
                }
                "secret_withheld" => {
                    let secrets = self
                        .secrets
                        .as_ref()
                        .ok_or("withholding a secret needs Secrets Manager")?;
                    let arn = spec
                        .secret_arn
                        .as_deref()
                        .ok_or("the key has no secret to withhold")?;
                    let previous = crate::flows::withhold::withhold(
                        secrets.as_ref(),
                        arn,
                        incident,
                        recorded_secret,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    done.push(Measure::SecretWithheld {
                        previous_version: previous,
                    });
                }
                "service_credentials_disabled" => {
                    let (credentials, user, _) = self.user_credentials(spec)?;
                    let active = credentials
                        .active_service_credentials(user)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut ids = match done
                        .iter()
                        .position(|m| measure_name(m) == w)
                        .map(|i| done.remove(i))
                    {
                        Some(Measure::ServiceCredentialsDisabled { ids }) => ids,
                        _ => Vec::new(),
                    };
                    ids.extend(
                        active
                            .iter()
                            .filter(|a| !ids.contains(a))
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                    done.push(Measure::ServiceCredentialsDisabled { ids });
                    // which were active is known only now: recorded before any is changed
                    if let Some(key_id) = progress
                        && !active.is_empty()
                    {
                        self.record_stop(key_id, done, false)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    for id in &active {
                        credentials
                            .set_service_credential(user, id, false)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                "sessions_revoked" => {
                    let (credentials, user, key_id) = self.user_credentials(spec)?;
                    let policy = session_deny_policy(key_id);
                    let before = self.clock.now();
                    credentials
                        .deny_sessions_before(user, &policy, before)
                        .await
                        .map_err(|e| e.to_string())?;
                    done.push(Measure::SessionsRevoked { policy, before });
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
        Ok(())
    }

    // ---- restoring -------------------------------------------------------------------------

    /// Releases the incidents that hold the switch of `scope`: re-enables each key under it
    /// that no other incident holds, puts back opted-in resources, and starts the limit ramp.
    /// A new emergency during the restore stops it ([`GuardError::Interrupted`]).
    pub async fn restore(
        &self,
        scope: &Scope,
        actor: &str,
        policy: &RestorePolicy,
    ) -> Result<GuardReport, GuardError> {
        let restore_id = format!("restore-{}", uuid::Uuid::new_v4());
        let current = self.store.kill_switch(scope).await?;
        if let Some(current) = &current
            && !current.value.state.stops()
        {
            // restored already (a repeated restore): only resources a failed restore left
            // stopped are put back
            let mut report = GuardReport::new(
                scope,
                String::new(),
                switch_words(&current.value),
                Vec::new(),
            );
            report.limit_factor = Some(current.value.limit_factor.normalize().to_string());
            report.notes.push("restored already".into());
            let report = self.release_resources(scope, actor, report).await?;
            if report.resources.is_empty() && current.value.state == SwitchState::Open {
                return Err(GuardError::NotEngaged(scope.clone()));
            }
            return Ok(report);
        }
        let releasing = self.start_release(scope, actor, &restore_id).await?;
        let keys = self.keys_under(scope).await?;
        let outcomes = join_all(
            keys.iter()
                .map(|k| self.release_key(&k.spec, scope, &releasing, &restore_id, actor)),
        )
        .await;
        let mut report = GuardReport::new(
            scope,
            releasing.join(", "),
            "releasing".into(),
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
        let interrupted = report
            .keys
            .iter()
            .any(|k| k.outcome == KeyOutcome::Interrupted);
        if interrupted || !self.still_releasing(scope, &restore_id).await? {
            return Err(self.interrupted(scope, report).await?);
        }
        if !report.failures().is_empty() {
            // the switch stays releasing: restoring again finishes the rest
            return Err(GuardError::Incomplete(Box::new(report)));
        }
        let now = self.clock.now();
        let first = policy.steps.first().copied().unwrap_or(Decimal::ONE);
        let Some(current) = self.store.kill_switch(scope).await? else {
            return Err(GuardError::NotEngaged(scope.clone()));
        };
        let mut ramp = KillSwitch {
            scope: scope.clone(),
            state: SwitchState::Restoring {
                step: 0,
                since: now,
            },
            limit_factor: first,
            updated_at: now,
            released: current.value.released.clone(),
        };
        ramp.release(&releasing, now);
        let audit = self.entry(
            "restore_finished",
            actor,
            scope,
            json!({"restore": restore_id, "released": releasing, "limit_factor": first.to_string(), "version": current.version + 1}),
        );
        if !matches!(&current.value.state, SwitchState::Releasing { restore, .. } if *restore == restore_id)
        {
            return Err(self.interrupted(scope, report).await?);
        }
        match self
            .store
            .put_kill_switch(&ramp, Some(current.version), &audit)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => return Err(self.interrupted(scope, report).await?),
            Err(e) => return Err(e.into()),
        }
        report.switch = "restoring (step 1)".into();
        report.limit_factor = Some(first.normalize().to_string());
        // resources come back once the release is committed (an interrupted restore puts
        // none back), those no other switch's incident still holds
        self.release_resources(scope, actor, report).await
    }

    /// Puts back the resources under `scope` no incident holds any more; a failure fails the
    /// restore (the switch is restoring already: running the restore again finishes them).
    async fn release_resources(
        &self,
        scope: &Scope,
        actor: &str,
        mut report: GuardReport,
    ) -> Result<GuardReport, GuardError> {
        let (resources, problems) = self.resources().release(scope, actor).await;
        report.resources = resources;
        report.problems.extend(problems);
        if report.failures().is_empty() {
            Ok(report)
        } else {
            Err(GuardError::Incomplete(Box::new(report)))
        }
    }

    /// Moves an engaged switch (or one a failed restore left releasing) to `Releasing` by
    /// this restore; returns the incidents it releases.
    async fn start_release(
        &self,
        scope: &Scope,
        actor: &str,
        restore_id: &str,
    ) -> Result<Vec<String>, GuardError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(current) = self.store.kill_switch(scope).await? else {
                return Err(GuardError::NotEngaged(scope.clone()));
            };
            if !current.value.state.stops() {
                return Err(GuardError::NotEngaged(scope.clone()));
            }
            let incidents = current.value.state.holding();
            let now = self.clock.now();
            let switch = KillSwitch {
                state: SwitchState::Releasing {
                    restore: restore_id.into(),
                    actor: actor.into(),
                    since: now,
                    incidents: incidents.clone(),
                },
                updated_at: now,
                ..current.value.clone()
            };
            let audit = self.entry(
                "restore_started",
                actor,
                scope,
                json!({"restore": restore_id, "incidents": incidents, "version": current.version + 1}),
            );
            match self
                .store
                .put_kill_switch(&switch, Some(current.version), &audit)
                .await
            {
                Ok(_) => return Ok(incidents),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(format!("kill switch {scope} kept changing")).into())
    }

    /// The error of a restore that stopped before its end: a new emergency engaged the
    /// switch again (naming the incidents that hold it now), or another restore took over.
    async fn interrupted(
        &self,
        scope: &Scope,
        mut report: GuardReport,
    ) -> Result<GuardError, StoreError> {
        let current = self.store.kill_switch(scope).await?;
        if let Some(v) = &current {
            report.switch = switch_words(&v.value);
        }
        Ok(match current.map(|v| v.value.state) {
            Some(SwitchState::Releasing { restore, .. }) => {
                report.problems.push(format!(
                    "another restore ({restore}) took over: it finishes the restore"
                ));
                GuardError::Incomplete(Box::new(report))
            }
            Some(state) => GuardError::Interrupted(Box::new(report), state.holding()),
            None => GuardError::NotEngaged(scope.clone()),
        })
    }

    /// Releases `releasing` from one key, under its lease; re-enables it when no incident
    /// holds it any more and the restore has not been interrupted.
    async fn release_key(
        &self,
        spec: &KeySpec,
        scope: &Scope,
        releasing: &[String],
        restore_id: &str,
        actor: &str,
    ) -> KeyOutcome {
        let Ok(lease) = self.key_lease(&spec.id).await else {
            return KeyOutcome::Failed("the store is unavailable".into());
        };
        let Some(lease) = lease else {
            return KeyOutcome::InProgress;
        };
        let outcome = match self
            .release_leased(spec, scope, releasing, restore_id, actor)
            .await
        {
            Ok(o) => o,
            Err(e) => KeyOutcome::Failed(e.to_string()),
        };
        if let Err(e) = lease.release().await {
            warn!(key = %spec.id, error = %e, "key lease not released; it expires");
        }
        outcome
    }

    async fn release_leased(
        &self,
        spec: &KeySpec,
        scope: &Scope,
        releasing: &[String],
        restore_id: &str,
        actor: &str,
    ) -> Result<KeyOutcome, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let record = self.record(&spec.id).await?;
            let (measures, unfinished) = match record.status.release(releasing, self.clock.now()) {
                Release::NotHeld if record.status == KeyStatus::Active => {
                    return Ok(KeyOutcome::Restored);
                }
                Release::NotHeld => return Ok(KeyOutcome::DisabledElsewhere),
                Release::StillHeld(status) => {
                    match self
                        .store
                        .put_key_status(&spec.id, &status, record.version)
                        .await
                    {
                        Ok(_) => {
                            let remaining = status.holders().to_vec();
                            self.audit(
                                "key_released",
                                actor,
                                &spec.scope,
                                json!({"key": spec.id, "released": releasing, "still_held_by": remaining}),
                            )
                            .await;
                            return Ok(KeyOutcome::StillHeld(remaining));
                        }
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Release::Last {
                    measures,
                    unfinished,
                } => (measures, unfinished),
            };
            // the last holder: re-enable, unless an emergency interrupted the restore
            if !self.still_releasing(scope, restore_id).await? {
                return Ok(KeyOutcome::Interrupted);
            }
            // a stop that died before recording its measures may have done any of them
            // found out from the live key (after a rotation, the key the stop acted on)
            let undo = if unfinished {
                self.all_measures(&self.live(spec).await, &measures).await
            } else {
                measures
            };
            let version = match self
                .store
                .put_key_status(
                    &spec.id,
                    &KeyStatus::Enabling {
                        at: self.clock.now(),
                        measures: undo.clone(),
                    },
                    record.version,
                )
                .await
            {
                Ok(v) => v,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            };
            return self.enable(spec, &undo, version, actor).await;
        }
        Err(StoreError::Conflict(format!(
            "status of key {} kept changing",
            spec.id
        )))
    }

    /// Every measure a stop of `spec` may have taken (for a stop whose records a crash cut
    /// short): those recorded, and the others it wanted, found out from their state.
    async fn all_measures(&self, spec: &KeySpec, recorded: &[Measure]) -> Vec<Measure> {
        let mut out = recorded.to_vec();
        for w in wanted(spec) {
            if out.iter().any(|m| measure_name(m) == w) {
                continue;
            }
            match w {
                "provider_disabled" => out.push(Measure::ProviderDisabled),
                "secret_withheld" => {
                    if let (Some(secrets), Some(arn)) = (&self.secrets, &spec.secret_arn)
                        && let Ok((_, value)) = secrets.current(arn).await
                        && spendguard_domain::keys::is_marker(&value)
                        && let Ok(Some(previous)) = secrets.previous(arn).await
                    {
                        out.push(Measure::SecretWithheld {
                            previous_version: previous,
                        });
                    }
                }
                // lifting a deny that was never made is harmless
                "sessions_revoked" => {
                    if let Some(key_id) = &spec.key_id {
                        out.push(Measure::SessionsRevoked {
                            policy: session_deny_policy(key_id),
                            before: self.clock.now(),
                        });
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Undoes `measures` (newest first), then records the key active.
    async fn enable(
        &self,
        spec: &KeySpec,
        measures: &[Measure],
        version: u64,
        actor: &str,
    ) -> Result<KeyOutcome, StoreError> {
        let live = self.live(spec).await;
        let mut notes = Vec::new();
        for m in measures.iter().rev() {
            let result = match m {
                Measure::ProviderDisabled => match self.provider(live.provider) {
                    Some(p) => p.enable(&live).await.map_err(|e| e.to_string()),
                    None => Err(format!("no {} admin access is configured", live.provider)),
                },
                Measure::SecretWithheld { previous_version } => {
                    match (&self.secrets, &live.secret_arn) {
                        (Some(secrets), Some(arn)) => {
                            match crate::flows::withhold::restore(
                                secrets.as_ref(),
                                arn,
                                previous_version,
                            )
                            .await
                            {
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
                Measure::ProviderAlreadyOff => {
                    notes.push(
                        "the key was off before the stop: left off, as its owner set it".into(),
                    );
                    Ok(())
                }
                Measure::ServiceCredentialsDisabled { ids } => {
                    self.enable_service_credentials(&live, ids, &mut notes)
                        .await
                }
                Measure::SessionsRevoked { policy, .. } => match self.user_credentials(&live) {
                    Ok((credentials, user, _)) => credentials
                        .lift_session_deny(user, policy)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(why) => Err(why),
                },
            };
            if let Err(why) = result {
                self.audit(
                    "key_restore_failed",
                    actor,
                    &live.scope,
                    json!({"key": spec.id, "error": why}),
                )
                .await;
                // the intent stays: restoring again finishes it
                return Ok(KeyOutcome::Failed(why));
            }
        }
        // a key that was off before the stop is off still: as it was found
        let status = if measures.contains(&Measure::ProviderAlreadyOff) {
            KeyStatus::DisabledElsewhere {
                seen_at: self.clock.now(),
            }
        } else {
            KeyStatus::Active
        };
        self.store
            .put_key_status(&spec.id, &status, version)
            .await?;
        self.audit(
            "key_restored",
            actor,
            &live.scope,
            json!({"key": spec.id, "notes": notes}),
        )
        .await;
        Ok(if notes.is_empty() {
            KeyOutcome::Restored
        } else {
            KeyOutcome::RestoredWithNotes(notes.join("; "))
        })
    }

    /// Turns back on the service credentials a stop turned off; one deleted since is noted.
    async fn enable_service_credentials(
        &self,
        spec: &KeySpec,
        ids: &[String],
        notes: &mut Vec<String>,
    ) -> Result<(), String> {
        let (credentials, user, _) = self.user_credentials(spec)?;
        for id in ids {
            let found = credentials
                .set_service_credential(user, id, true)
                .await
                .map_err(|e| e.to_string())?;
            if !found {
                notes.push(format!(
                    "service credential {id} of {user} was deleted since: nothing to turn back on"
                ));
            }
        }
        Ok(())
    }

    // ---- rotation and limits -----------------------------------------------------------------

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
        let Some(secrets) = &self.secrets else {
            return KeyOutcome::Failed("no Secrets Manager access is configured".into());
        };
        let now = self.clock.now();
        let claim = Claim::key(
            &KeyId::new(&key.spec.id),
            &format!("rotate#{incident}"),
            Lease::new(
                uuid::Uuid::new_v4().to_string(),
                KEY_ACTION_LEASE,
                now + KEY_CLAIM_RETENTION,
            ),
        );
        match crate::lease::once(self.store.as_ref(), claim, now, || {
            secrets.start_rotation(arn)
        })
        .await
        {
            Ok(crate::lease::Once::Did(())) => {
                info!(key = %key.spec.id, %incident, "rotation started");
                KeyOutcome::RotationStarted
            }
            Ok(crate::lease::Once::Done) => KeyOutcome::AlreadyRotated,
            Ok(crate::lease::Once::Busy) => KeyOutcome::InProgress,
            Err(e) => KeyOutcome::Failed(e.to_string()),
        }
    }

    /// Lowers the limit factor of an open switch (alert `alert_id`'s `reduce_limits`); keys
    /// stay enabled. Returns the factor now, and whether the order stands: not when the
    /// alert's recovery was seen already (a replay, or a delivery out of order), so nothing is
    /// lowered that no recovery would lift.
    pub async fn reduce_limits(
        &self,
        alert_id: &str,
        scope: &Scope,
        factor: Decimal,
        actor: &str,
    ) -> Result<(Decimal, bool), StoreError> {
        if self.recovery_seen(alert_id).await? {
            return Ok((self.factor_now(scope).await?, false));
        }
        let now = self
            .set_factor(scope, actor, |current| current.min(factor))
            .await?;
        // the recovery may have been recorded between the look above and the lowering, and
        // read the factor before it was lowered: seen now, the lowering is undone here (seen
        // later, the recovery reads the lowered factor and lifts it)
        if self.recovery_seen(alert_id).await? {
            let lifted = self.lift_factor(scope, factor, actor).await?;
            return Ok((lifted, false));
        }
        Ok((now, true))
    }

    async fn recovery_seen(&self, alert_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get_cached(&recovered_key(alert_id), self.clock.now())
            .await?
            .is_some())
    }

    async fn factor_now(&self, scope: &Scope) -> Result<Decimal, StoreError> {
        Ok(self
            .store
            .kill_switch(scope)
            .await?
            .map_or(Decimal::ONE, |v| v.value.limit_factor))
    }

    /// Back to 1 if the factor is still `factor` (what the recovered alert ordered).
    async fn lift_factor(
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

    /// Lowers (or lifts) the rate limits of the OpenAI projects under `scope` at OpenAI
    /// ([`Throttle::apply`]); nothing without an admin key.
    pub async fn throttle_at_providers(
        &self,
        order: Order,
        scope: &Scope,
        factor: Decimal,
        actor: &str,
    ) -> Result<Vec<ThrottleReport>, StoreError> {
        let Some(throttle) = self.throttle() else {
            return Ok(Vec::new());
        };
        let policy = self.store.load_policy().await?;
        Ok(throttle.apply(order, &policy, scope, factor, actor).await)
    }

    fn throttle(&self) -> Option<Throttle> {
        (!self.rate_limits.is_empty()).then(|| Throttle {
            store: self.store.clone(),
            clock: self.clock.clone(),
            targets: self.rate_limits.clone(),
            lease_waits: self.lease_waits,
        })
    }

    /// Raises the limit factor back to 1 when the alert that lowered it recovers.
    /// `alert_id` is the recovered alert's: recorded first, so its later deliveries lower
    /// nothing.
    pub async fn lift_limits(
        &self,
        alert_id: &str,
        scope: &Scope,
        factor: Decimal,
        actor: &str,
    ) -> Result<Decimal, StoreError> {
        let now = self.clock.now();
        self.store
            .put_cached(&recovered_key(alert_id), "recovered", now + RECOVERY_MEMORY)
            .await?;
        self.lift_factor(scope, factor, actor).await
    }

    async fn set_factor(
        &self,
        scope: &Scope,
        actor: &str,
        change: impl Fn(Decimal) -> Decimal,
    ) -> Result<Decimal, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.store.kill_switch(scope).await?;
            let (state, factor, version, released) = match &current {
                Some(v) => (
                    v.value.state.clone(),
                    v.value.limit_factor,
                    Some(v.version),
                    v.value.released.clone(),
                ),
                None => (SwitchState::Open, Decimal::ONE, None, Vec::new()),
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
                released,
            };
            let audit = self.entry(
                "limit_factor_set",
                actor,
                scope,
                json!({"limit_factor": next.to_string(), "version": version.map_or(1, |v| v + 1)}),
            );
            match self.store.put_kill_switch(&switch, version, &audit).await {
                Ok(_) => return Ok(next),
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
            state,
            limit_factor: factor,
            updated_at: now,
            ..v.value.clone()
        };
        let audit = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: now,
            actor: "budget-check".into(),
            action: "limit_ramp_step".into(),
            scope: Some(v.value.scope.clone()),
            detail: json!({"limit_factor": factor.to_string(), "state": switch.state.name(), "version": v.version + 1}),
        };
        match store
            .put_kill_switch(&switch, Some(v.version), &audit)
            .await
        {
            Ok(_) => moved += 1,
            Err(StoreError::Conflict(_)) => {} // someone else moved it
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}
