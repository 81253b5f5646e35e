//! Throttling at the provider (`reduce_limits{factor}`): each OpenAI project (Anthropic
//! workspace) the scope covers gets its rate limits scaled by the factor, after they are
//! recorded; the alert's recovery (a lift at the same factor) puts back exactly the recorded
//! limits, unless someone changed an entry's limits since. One invocation acts on a project at
//! a time (a lease), and the record says what was done, so replays and concurrent deliveries
//! change nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use futures::future::join_all;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::ports::clock::Clock;
use crate::ports::rate_limits::ProviderRateLimits;
use crate::ports::store::StateStore;
use spendguard_domain::records::AuditEntry;
use spendguard_domain::resources::{provider_limits, rate_limited};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::throttle::{PutBack, ThrottleRecord, check_factor, put_back};

/// A throttle that was never finished (a crashed invocation) blocks others this long.
const LEASE: Duration = Duration::minutes(2);
/// How long a throttle's record is kept (the recovery may come at the end of the period).
const RECORD_RETENTION: Duration = Duration::days(400);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum ThrottleOutcome {
    /// Every model's limits scaled by `factor`.
    Lowered {
        factor: String,
        models: usize,
    },
    /// Lowered already at this factor or a stricter one.
    AlreadyLowered {
        factor: String,
    },
    /// The recorded limits are back; `left` names the models changed by hand since (left as
    /// they are) or gone.
    Restored {
        models: usize,
        left: Vec<String>,
    },
    /// Lowered by a stricter alert that has not recovered: it stays lowered.
    StillLowered {
        factor: String,
    },
    /// This scope's order is lifted; another scope's, milder, is still in force: relaxed to
    /// it (`left`: models changed by hand, or gone).
    Relaxed {
        factor: String,
        left: Vec<String>,
    },
    /// Nothing spendguard lowered is recorded.
    NotLowered,
    /// Another invocation is acting on it right now.
    InProgress,
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct ThrottleReport {
    /// `openai:project:<id>`, `anthropic:workspace:<id>`.
    pub resource: String,
    #[serde(flatten)]
    pub outcome: ThrottleOutcome,
    /// When what was changed takes effect, if the provider says later than at once
    /// (Anthropic: within about an hour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takes_effect: Option<&'static str>,
}

impl ThrottleReport {
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            ThrottleOutcome::Failed(why) => Some(format!("{}: {why}", self.resource)),
            ThrottleOutcome::InProgress => {
                Some(format!("{}: still in progress elsewhere", self.resource))
            }
            _ => None,
        }
    }
}

/// What an alert orders of the providers' rate limits: its `reduce_limits`, or its recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Lower,
    Lift,
}

pub struct Throttle {
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    /// One per provider with an admin key (OpenAI, Anthropic).
    pub targets: Vec<Arc<dyn ProviderRateLimits>>,
    /// How long (ms) to wait between attempts for another invocation's lease on a project.
    pub lease_waits: &'static [u64],
}

fn record_key(resource: &str) -> String {
    format!("throttle#{resource}")
}

/// The OpenAI projects and Anthropic workspaces `scope` covers, by the rule of the providers'
/// spend limits (a project is on the scope covering every budget and key that names it), each
/// with the provider that throttles it: `(resource, project, target)`.
pub fn throttled_under(
    targets: &[Arc<dyn ProviderRateLimits>],
    policy: &PolicySet,
    scope: &Scope,
) -> Vec<(
    spendguard_domain::resources::Resource,
    String,
    Arc<dyn ProviderRateLimits>,
)> {
    provider_limits(policy)
        .into_iter()
        .filter(|r| scope.contains(&r.scope))
        .filter_map(|r| {
            let (provider, container) = rate_limited(&r)?;
            let target = targets.iter().find(|t| t.provider() == provider)?;
            Some((r.clone(), container.to_string(), target.clone()))
        })
        .collect()
}

impl Throttle {
    /// Carries out `order` on every OpenAI project (Anthropic workspace) under `scope`: lowers the rate limits to
    /// `factor` of what they were (a stricter factor lowers further, from the recorded limits),
    /// or lifts this scope's order at `factor`.
    pub async fn apply(
        &self,
        order: Order,
        policy: &PolicySet,
        scope: &Scope,
        factor: Decimal,
        actor: &str,
    ) -> Vec<ThrottleReport> {
        let projects = throttled_under(&self.targets, policy, scope);
        join_all(
            projects
                .into_iter()
                .map(|(resource, project, target)| async move {
                    let resource = resource.id;
                    let target = target.as_ref();
                    let (outcome, action) = match order {
                        Order::Lower => (
                            self.leased(
                                &resource,
                                self.lower_leased(target, &resource, &project, scope, factor),
                            )
                            .await,
                            "rate_limits_lowered",
                        ),
                        Order::Lift => (
                            self.leased(
                                &resource,
                                self.lift_leased(target, &resource, &project, scope, factor),
                            )
                            .await,
                            "rate_limits_restored",
                        ),
                    };
                    let mut report = self.report(resource, outcome, scope, actor, action).await;
                    if matches!(
                        report.outcome,
                        ThrottleOutcome::Lowered { .. }
                            | ThrottleOutcome::Restored { .. }
                            | ThrottleOutcome::Relaxed { .. }
                    ) {
                        report.takes_effect = target.takes_effect();
                    }
                    report
                }),
        )
        .await
    }

    async fn report(
        &self,
        resource: String,
        outcome: ThrottleOutcome,
        scope: &Scope,
        actor: &str,
        action: &str,
    ) -> ThrottleReport {
        let action = match &outcome {
            ThrottleOutcome::Lowered { .. }
            | ThrottleOutcome::Restored { .. }
            | ThrottleOutcome::Relaxed { .. } => Some(action),
            ThrottleOutcome::Failed(_) => Some("rate_limits_failed"),
            _ => None,
        };
        if let Some(action) = action {
            info!(%resource, ?outcome, "{action}");
            let entry = AuditEntry {
                id: uuid::Uuid::new_v4().to_string(),
                at: self.clock.now(),
                actor: actor.into(),
                action: action.into(),
                scope: Some(scope.clone()),
                detail: json!({"resource": resource, "outcome": outcome}),
            };
            if let Err(e) = self.store.append_audit(&entry).await {
                warn!(%resource, error = %e, "audit entry not written");
            }
        }
        ThrottleReport {
            resource,
            outcome,
            takes_effect: None,
        }
    }

    /// Runs `work` holding the project's throttle lease.
    async fn leased(
        &self,
        resource: &str,
        work: impl Future<Output = Result<ThrottleOutcome, String>>,
    ) -> ThrottleOutcome {
        let lease = match crate::lease::exclusive(
            self.store.as_ref(),
            self.clock.as_ref(),
            &format!("throttle:{resource}"),
            LEASE,
            self.lease_waits,
        )
        .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => return ThrottleOutcome::InProgress,
            Err(e) => return ThrottleOutcome::Failed(e.to_string()),
        };
        let outcome = work.await.unwrap_or_else(ThrottleOutcome::Failed);
        if let Err(e) = lease.release().await {
            warn!(%resource, error = %e, "throttle lease not released; it expires");
        }
        outcome
    }

    async fn record(&self, resource: &str) -> Result<Option<ThrottleRecord>, String> {
        let text = self
            .store
            .get_cached(&record_key(resource), self.clock.now())
            .await
            .map_err(|e| format!("reading its recorded limits: {e}"))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| format!("its recorded limits are unreadable: {e}"))
        })
        .transpose()
    }

    async fn put_record(&self, resource: &str, record: &ThrottleRecord) -> Result<(), String> {
        let text = serde_json::to_string(record).map_err(|e| e.to_string())?;
        self.store
            .put_cached(&record_key(resource), &text, record.at + RECORD_RETENTION)
            .await
            .map_err(|e| format!("recording its limits: {e}"))
    }

    async fn lower_leased(
        &self,
        target: &dyn ProviderRateLimits,
        resource: &str,
        project: &str,
        scope: &Scope,
        factor: Decimal,
    ) -> Result<ThrottleOutcome, String> {
        let factor = check_factor(factor).map_err(|e| e.to_string())?;
        let mut record = match self.record(resource).await?.filter(|r| !r.lifted) {
            Some(r) => r,
            None => ThrottleRecord {
                factors: BTreeMap::new(),
                applied_factors: Vec::new(),
                previous: target
                    .rate_limits(project)
                    .await
                    .map_err(|e| e.to_string())?,
                at: self.clock.now(),
                applied: false,
                lifted: false,
            },
        };
        let in_force = record.factor();
        // this scope's strictest order, as its limit factor keeps
        let ordered = record
            .factors
            .get(scope)
            .map_or(factor, |f| (*f).min(factor));
        record.factors.insert(scope.clone(), ordered);
        let to = record.factor().unwrap_or(factor);
        if record.applied && in_force == Some(to) {
            // replays, and milder orders, change nothing at the provider (a milder order is
            // still recorded: it holds the throttle once the stricter one recovers)
            self.put_record(resource, &record).await?;
            return Ok(ThrottleOutcome::AlreadyLowered {
                factor: to.normalize().to_string(),
            });
        }
        if !record.applied_factors.contains(&to) {
            record.applied_factors.push(to);
        }
        record.applied = false;
        // recorded before anything changes
        self.put_record(resource, &record).await?;
        for before in &record.previous {
            let lowered = before.scaled(to).map_err(|e| e.to_string())?;
            target
                .set_rate_limit(project, &lowered)
                .await
                .map_err(|e| format!("{}: {e}", before.model))?;
        }
        record.applied = true;
        self.put_record(resource, &record).await?;
        Ok(ThrottleOutcome::Lowered {
            factor: to.normalize().to_string(),
            models: record.previous.len(),
        })
    }

    async fn lift_leased(
        &self,
        target: &dyn ProviderRateLimits,
        resource: &str,
        project: &str,
        scope: &Scope,
        factor: Decimal,
    ) -> Result<ThrottleOutcome, String> {
        let Some(mut record) = self.record(resource).await?.filter(|r| !r.lifted) else {
            return Ok(ThrottleOutcome::NotLowered);
        };
        // the same rule as the limit factor: only the recovery of this scope's order in force
        // lifts it
        if record.factors.get(scope) != Some(&factor) {
            return Ok(ThrottleOutcome::StillLowered {
                factor: record
                    .factor()
                    .map_or_else(String::new, |f| f.normalize().to_string()),
            });
        }
        record.factors.remove(scope);
        // another scope's order still in force: relaxed to it, else back to the recorded limits
        let to = record.factor();
        let now = target
            .rate_limits(project)
            .await
            .map_err(|e| e.to_string())?;
        let mut left = Vec::new();
        for step in put_back(&record, &now, to).map_err(|e| e.to_string())? {
            match step {
                PutBack::Set(limit) => target
                    .set_rate_limit(project, &limit)
                    .await
                    .map_err(|e| format!("{}: {e}", limit.model))?,
                PutBack::AlreadyBack => {}
                PutBack::ChangedByHand { model, now, .. } => {
                    left.push(format!("{model}: now {now:?}: left as the operator set it"))
                }
                PutBack::Gone { model, .. } => {
                    left.push(format!("{model}: its rate limit is gone at the provider"))
                }
            }
        }
        let models = record.previous.len();
        match to {
            Some(f) => {
                if !record.applied_factors.contains(&f) {
                    record.applied_factors.push(f);
                }
                self.put_record(resource, &record).await?;
                Ok(ThrottleOutcome::Relaxed {
                    factor: f.normalize().to_string(),
                    left,
                })
            }
            None => {
                record.lifted = true;
                self.put_record(resource, &record).await?;
                Ok(ThrottleOutcome::Restored { models, left })
            }
        }
    }
}
