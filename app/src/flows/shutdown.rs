//! Shutdown of the resources that burn money (the `shutdown` action): what opted in — by the
//! `spendguard:shutdown = <scope>` tag, or by name in the budgets file — is stopped, and its
//! state before is recorded first so that `restore` puts back exactly that, and leaves alone
//! whatever an operator changed in between. Every change is claimed once per incident and
//! resource, so concurrent and retried shutdowns act once.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use crate::lease::Held;
use crate::ports::clock::Clock;
use crate::ports::shutdown::ShutdownError;
use crate::ports::shutdown::ShutdownTarget;
use crate::ports::store::{StateStore, StoreError};
use spendguard_domain::records::AuditEntry;
use spendguard_domain::resources::Resource;
use spendguard_domain::resources::ResourceState;
use spendguard_domain::scope::Scope;

/// The inline deny-all policy that versions before December 2026 put on an opted-in IAM role.
/// A stop now attaches AWS's managed `AWSDenyAll` instead (findings #8 and #10 of the security
/// review: putting it needed `iam:PutRolePolicy` with any document, and a role was recognised
/// as stopped by this name alone); the name is kept only to restore those versions' stops.
pub const DENY_POLICY_NAME: &str = "spendguard-shutdown-deny";
/// A change that was never finished (a crashed invocation) blocks others this long.
const LEASE: Duration = Duration::minutes(2);
/// How long the recorded state before a shutdown is kept (a restore may come much later).
const RECORD_RETENTION: Duration = Duration::days(400);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum ResourceOutcome {
    /// Dry run: this change would be made.
    WouldStop(String),
    Stopped,
    /// Stopped earlier (this incident, or an earlier one not yet restored).
    AlreadyStopped,
    /// It was in the stopped state before spendguard came: left, and never started by restore.
    WasNotRunning,
    /// Part of spendguard itself: never stopped.
    Protected(String),
    /// Another invocation is acting on it right now.
    InProgress,
    Restored,
    /// Released by this restore, but still held by other incidents: it stays stopped.
    StillHeld(Vec<String>),
    /// Changed since the shutdown: left as the operator set it.
    ChangedByHand(String),
    /// Not stopped: a restore released the incident before this resource's turn came.
    Released,
    /// A new emergency stopped the restore before this resource was put back.
    Interrupted,
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    #[serde(flatten)]
    pub resource: Resource,
    /// Its state before the shutdown (as recorded), or now for a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<ResourceState>,
    #[serde(flatten)]
    pub outcome: ResourceOutcome,
}

impl ResourceReport {
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            ResourceOutcome::Failed(why) => Some(format!("{}: {why}", self.resource.id)),
            ResourceOutcome::InProgress => {
                Some(format!("{}: still in progress elsewhere", self.resource.id))
            }
            _ => None,
        }
    }
}

/// What was stopped, kept until the restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The incident that stopped it.
    incident: String,
    previous: ResourceState,
    at: DateTime<Utc>,
    #[serde(default)]
    restored: bool,
    /// Every incident that holds it stopped (the first stopped it; later ones joined): the
    /// last one released restores it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    held_by: Vec<String>,
    /// Whether the stop was carried out (the record is written first, then the resource is
    /// stopped, then this is set): a redelivery of the incident stops nothing twice.
    #[serde(default = "carried_out")]
    applied: bool,
    /// The scope the resource had when it was stopped: a provider limit's scope follows the
    /// registry, and the restore of the scope it was stopped under must still find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<Scope>,
}

/// Records written before `applied` existed were finished under a claim of their own.
fn carried_out() -> bool {
    true
}

impl Record {
    /// The scope whose switches hold the resource.
    fn scope<'a>(&'a self, resource: &'a Resource) -> &'a Scope {
        self.scope.as_ref().unwrap_or(&resource.scope)
    }

    fn holders(&self) -> Vec<String> {
        if self.held_by.is_empty() {
            vec![self.incident.clone()]
        } else {
            self.held_by.clone()
        }
    }
}

fn record_key(resource: &Resource) -> String {
    format!("shutdown#{}", resource.id)
}

/// Whether a stop holds `resource` now (recorded, not yet restored): whoever else keeps it
/// (a provider cap) leaves it to the stop's restore.
pub async fn held_by_stop(
    store: &dyn StateStore,
    now: DateTime<Utc>,
    resource: &Resource,
) -> Result<bool, ShutdownError> {
    let text = store
        .get_cached(&record_key(resource), now)
        .await
        .map_err(|e| ShutdownError(format!("reading its stop record: {e}")))?;
    match text {
        None => Ok(false),
        Some(t) => serde_json::from_str::<Record>(&t)
            .map(|r| !r.restored)
            .map_err(|e| ShutdownError(format!("its stop record is unreadable: {e}"))),
    }
}

/// Stops and restores opted-in resources across targets.
#[derive(Clone)]
pub struct Shutdown {
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    pub targets: Vec<Arc<dyn ShutdownTarget>>,
    /// How long (ms) to wait between attempts for another invocation's lease on a resource.
    pub lease_waits: &'static [u64],
}

/// Resources under a scope, with the target that owns each, and the targets that failed to
/// list theirs.
type Found<'a> = (Vec<(&'a dyn ShutdownTarget, Resource)>, Vec<String>);

impl Shutdown {
    async fn under(&self, scope: &Scope) -> Found<'_> {
        let (listed, problems) = self.listed(scope).await;
        let under = listed
            .into_iter()
            .filter(|(_, r)| scope.contains(&r.scope))
            .collect();
        (under, problems)
    }

    /// Every resource the targets list for `scope`, under it or not.
    async fn listed(&self, scope: &Scope) -> Found<'_> {
        if self.targets.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let policy = match self.store.load_policy().await {
            Ok(p) => p,
            Err(e) => return (Vec::new(), vec![format!("policy: {e}")]),
        };
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for target in &self.targets {
            let (resources, errors) = target.opted_in_partially(&policy, scope).await;
            found.extend(resources.into_iter().map(|r| (target.as_ref(), r)));
            problems.extend(
                errors
                    .into_iter()
                    .map(|e| format!("listing opted-in resources: {e}")),
            );
        }
        (found, problems)
    }

    async fn audit(
        &self,
        action: &str,
        actor: &str,
        resource: &Resource,
        detail: serde_json::Value,
    ) {
        let mut detail = detail;
        detail["resource"] = json!(resource.id);
        detail["kind"] = json!(resource.kind);
        let entry = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: self.clock.now(),
            actor: actor.into(),
            action: action.into(),
            scope: Some(resource.scope.clone()),
            detail,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            warn!(error = %e, action, "audit entry not written");
        }
    }

    async fn record(&self, resource: &Resource) -> Result<Option<Record>, ShutdownError> {
        let text = self
            .store
            .get_cached(&record_key(resource), self.clock.now())
            .await
            .map_err(|e| ShutdownError(format!("reading its recorded state: {e}")))?;
        match text {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| ShutdownError(format!("its recorded state is unreadable: {e}"))),
        }
    }

    async fn put_record(&self, resource: &Resource, record: &Record) -> Result<(), ShutdownError> {
        let text = serde_json::to_string(record).map_err(|e| ShutdownError(e.to_string()))?;
        self.store
            .put_cached(&record_key(resource), &text, record.at + RECORD_RETENTION)
            .await
            .map_err(|e| ShutdownError(format!("recording its state: {e}")))
    }

    /// What a shutdown of `scope` would change, changing nothing.
    pub async fn plan(&self, scope: &Scope) -> (Vec<ResourceReport>, Vec<String>) {
        let (found, problems) = self.under(scope).await;
        let reports = join_all(found.into_iter().map(|(target, resource)| async move {
            if let Some(why) = target.protected(&resource).await {
                return ResourceReport {
                    resource,
                    before: None,
                    outcome: ResourceOutcome::Protected(why),
                };
            }
            let (before, outcome) = match target.state(&resource).await {
                Ok(now) if now == resource.kind.stopped_from(&now) => {
                    (Some(now), ResourceOutcome::WasNotRunning)
                }
                Ok(now) => {
                    let change = format!("{now} -> {}", resource.kind.stopped_from(&now));
                    (Some(now), ResourceOutcome::WouldStop(change))
                }
                Err(e) => (None, ResourceOutcome::Failed(e.to_string())),
            };
            ResourceReport {
                resource,
                before,
                outcome,
            }
        }))
        .await;
        (reports, problems)
    }

    /// Stops every opted-in resource under `scope`, once per incident and resource.
    pub async fn stop(
        &self,
        scope: &Scope,
        incident: &str,
        actor: &str,
    ) -> (Vec<ResourceReport>, Vec<String>) {
        let (found, problems) = self.under(scope).await;
        let reports = join_all(
            found
                .into_iter()
                .map(|(target, resource)| self.stop_one(target, resource, scope, incident, actor)),
        )
        .await;
        (reports, problems)
    }

    /// The resource's lease: one invocation acts on it at a time.
    async fn lease(&self, resource: &Resource) -> Result<Option<Held<'_>>, StoreError> {
        crate::lease::exclusive(
            self.store.as_ref(),
            self.clock.as_ref(),
            &resource.id,
            LEASE,
            self.lease_waits,
        )
        .await
    }

    async fn stop_one(
        &self,
        target: &dyn ShutdownTarget,
        resource: Resource,
        scope: &Scope,
        incident: &str,
        actor: &str,
    ) -> ResourceReport {
        let report = |before, outcome| ResourceReport {
            resource: resource.clone(),
            before,
            outcome,
        };
        if let Some(why) = target.protected(&resource).await {
            warn!(resource = %resource.id, "{why}");
            return report(None, ResourceOutcome::Protected(why));
        }
        // one invocation at a time per resource: the record says who stopped it already
        let lease = match self.lease(&resource).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return report(None, ResourceOutcome::InProgress),
            Err(e) => return report(None, ResourceOutcome::Failed(e.to_string())),
        };
        let result = self.stop_claimed(target, &resource, scope, incident).await;
        if let Err(e) = lease.release().await {
            warn!(resource = %resource.id, error = %e, "resource lease not released; it expires");
        }
        match result {
            Ok((before, ResourceOutcome::Released)) => report(before, ResourceOutcome::Released),
            Ok((before, outcome)) => {
                if outcome == ResourceOutcome::Stopped {
                    info!(resource = %resource.id, "resource stopped");
                }
                self.audit(
                    "resource_stopped",
                    actor,
                    &resource,
                    json!({"incident": incident, "before": before, "outcome": outcome}),
                )
                .await;
                report(before, outcome)
            }
            Err((before, e)) => {
                warn!(resource = %resource.id, error = %e, "resource not stopped; the switch stays engaged");
                self.audit(
                    "resource_stop_failed",
                    actor,
                    &resource,
                    json!({"incident": incident, "error": e.to_string()}),
                )
                .await;
                report(before, ResourceOutcome::Failed(e.to_string()))
            }
        }
    }

    /// Records the state before (unless an earlier attempt did), then stops; holding the
    /// resource's lease, and only while the switch of `scope` still holds `incident`.
    async fn stop_claimed(
        &self,
        target: &dyn ShutdownTarget,
        resource: &Resource,
        scope: &Scope,
        incident: &str,
    ) -> Result<(Option<ResourceState>, ResourceOutcome), (Option<ResourceState>, ShutdownError)>
    {
        // a restore that released the incident first must not be undone by this stop; one
        // that is still releasing it puts the resource back only once its release is
        // committed (and not at all if a new emergency interrupts it), so it is stopped
        let held = self
            .store
            .kill_switch(scope)
            .await
            .map_err(|e| (None, ShutdownError(format!("reading the kill switch: {e}"))))?
            .is_some_and(|v| v.value.state.holding().iter().any(|i| i == incident));
        if !held {
            return Ok((None, ResourceOutcome::Released));
        }
        let record = match self.record(resource).await.map_err(|e| (None, e))? {
            Some(r) if !r.restored => {
                // stopped (or being stopped) already: this incident holds it too
                let mut joined = r.clone();
                if !r.holders().iter().any(|i| i == incident) {
                    joined.held_by = r.holders();
                    joined.held_by.push(incident.to_string());
                    self.put_record(resource, &joined)
                        .await
                        .map_err(|e| (Some(r.previous.clone()), e))?;
                }
                // the record says what was meant; the resource says what is: an attempt that
                // crashed before its stop, or a restore that crashed after putting it back,
                // leaves it running, and then it is stopped now
                if joined.applied
                    && target
                        .state(resource)
                        .await
                        .map_err(|e| (None, e))?
                        .seen_as(&r.previous)
                        == resource.kind.stopped_from(&r.previous)
                {
                    return Ok((Some(r.previous), ResourceOutcome::AlreadyStopped));
                }
                joined
            }
            _ => {
                let now = target.state(resource).await.map_err(|e| (None, e))?;
                if now == resource.kind.stopped_from(&now) {
                    return Ok((Some(now), ResourceOutcome::WasNotRunning));
                }
                let record = Record {
                    incident: incident.into(),
                    previous: now.clone(),
                    at: self.clock.now(),
                    restored: false,
                    held_by: vec![incident.into()],
                    applied: false,
                    scope: Some(resource.scope.clone()),
                };
                self.put_record(resource, &record)
                    .await
                    .map_err(|e| (Some(now), e))?;
                record
            }
        };
        let previous = Some(record.previous.clone());
        target
            .set(resource, &resource.kind.stopped_from(&record.previous))
            .await
            .map_err(|e| (previous.clone(), e))?;
        // nobody else writes the record while the lease is held
        let applied = Record {
            applied: true,
            ..record
        };
        self.put_record(resource, &applied)
            .await
            .map_err(|e| (previous.clone(), e))?;
        Ok((previous, ResourceOutcome::Stopped))
    }

    /// Puts back every resource under `scope` that a shutdown stopped and that no incident
    /// holds any more: an incident holds a resource while a switch covering it (the
    /// resource's scope or an ancestor) holds the incident, engaged or being released. Runs
    /// after a restore has released its switch, so an interrupted restore touches no resource,
    /// and is safe to run again (a repeated restore finishes what failed). A resource changed
    /// since the shutdown is left as the operator set it, and reported.
    pub async fn release(&self, scope: &Scope, actor: &str) -> (Vec<ResourceReport>, Vec<String>) {
        let (listed, mut problems) = self.listed(scope).await;
        let mut found = Vec::new();
        for (target, resource) in listed {
            if scope.contains(&resource.scope) {
                found.push((target, resource));
            } else if target.stops_with_keys() {
                // a provider limit whose scope moved with the registry since its stop: the
                // restore of the scope it was stopped under puts it back
                match self.record(&resource).await {
                    Ok(Some(record)) if !record.restored => {
                        if let Some(stopped_under) = record.scope.filter(|s| scope.contains(s)) {
                            found.push((
                                target,
                                Resource {
                                    scope: stopped_under,
                                    ..resource
                                },
                            ));
                        }
                    }
                    Ok(_) => {}
                    // unknown whether this restore owes it: say so, never skip it quietly
                    Err(e) => problems.push(format!("{}: {e}", resource.id)),
                }
            }
        }
        // every opted-in resource, under its lease: a stop that is recording one right now
        // (its incident still held when it looked) finishes first, or sees the release
        let reports = join_all(
            found
                .into_iter()
                .map(|(target, resource)| self.release_one(target, resource, actor)),
        )
        .await;
        (reports.into_iter().flatten().collect(), problems)
    }

    /// `None`: nothing spendguard stopped is recorded for the resource.
    async fn release_one(
        &self,
        target: &dyn ShutdownTarget,
        resource: Resource,
        actor: &str,
    ) -> Option<ResourceReport> {
        let report = |before, outcome| ResourceReport {
            resource: resource.clone(),
            before,
            outcome,
        };
        let lease = match self.lease(&resource).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Some(report(None, ResourceOutcome::InProgress)),
            Err(e) => return Some(report(None, ResourceOutcome::Failed(e.to_string()))),
        };
        let result = self.release_leased(target, &resource).await;
        if let Err(e) = lease.release().await {
            warn!(resource = %resource.id, error = %e, "resource lease not released; it expires");
        }
        match result {
            Ok(None) => None,
            Ok(Some((record, outcome @ ResourceOutcome::StillHeld(_)))) => {
                Some(report(Some(record.previous), outcome))
            }
            Ok(Some((record, outcome))) => {
                self.audit(
                    "resource_restored",
                    actor,
                    &resource,
                    json!({"incident": record.incident, "to": record.previous, "outcome": outcome}),
                )
                .await;
                Some(report(Some(record.previous), outcome))
            }
            Err(e) => {
                let message = e.to_string();
                self.audit(
                    "resource_restore_failed",
                    actor,
                    &resource,
                    json!({"error": message}),
                )
                .await;
                Some(report(None, ResourceOutcome::Failed(message)))
            }
        }
    }

    /// Holding the resource's lease: reads its record and the switches covering it again
    /// (a stop may have joined, another restore may have put it back), then puts it back
    /// unless an incident still holds it.
    async fn release_leased(
        &self,
        target: &dyn ShutdownTarget,
        resource: &Resource,
    ) -> Result<Option<(Record, ResourceOutcome)>, ShutdownError> {
        let Some(record) = self.record(resource).await?.filter(|r| !r.restored) else {
            return Ok(None);
        };
        let switches = self
            .store
            .kill_switches(&record.scope(resource).rollup())
            .await
            .map_err(|e| ShutdownError(format!("reading the kill switches over it: {e}")))?;
        let holding: Vec<String> = record
            .holders()
            .into_iter()
            .filter(|i| switches.iter().any(|s| s.value.state.holding().contains(i)))
            .collect();
        if !holding.is_empty() {
            return Ok(Some((record, ResourceOutcome::StillHeld(holding))));
        }
        let mut previous = record.previous.clone();
        if let ResourceState::DenyPolicy { attached: false } = previous {
            // stopped by an earlier version, with its inline deny: the target removes that
            // policy if it is still what spendguard wrote; AWSDenyAll was not attached before
            // (a later incident that joined attached it)
            target.set(resource, &previous).await?;
            previous = ResourceState::DenyAll { attached: false };
        }
        let stopped = resource.kind.stopped_from(&previous);
        let now = target.state(resource).await?.seen_as(&previous);
        // a state between the two is a stop or restore that failed halfway: finished here
        let outcome = if now == stopped || now.partly_between(&stopped, &previous) {
            target.set(resource, &previous).await?;
            ResourceOutcome::Restored
        } else if now == previous {
            ResourceOutcome::Restored
        } else {
            ResourceOutcome::ChangedByHand(format!(
                "now {now} (spendguard left {stopped}): left as the operator set it"
            ))
        };
        let done = Record {
            restored: true,
            ..record.clone()
        };
        self.put_record(resource, &done).await?;
        Ok(Some((record, outcome)))
    }
}
