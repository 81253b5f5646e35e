//! Caps as code (`provider_cap = true`): keeps each provider limit a budget names equal to the
//! budget's monthly limit — planned and set by `budgets apply`, kept by every budget-check run.
//! A limit changed at the provider by hand is one drift finding per change, then set back. A
//! limit a stop holds (one cent until the restore) is left alone: the restore puts the cap back.
//! Each limit is kept under the same lease a stop takes on it.

use std::sync::Arc;

use chrono::Duration;
use futures::future::join_all;
use serde::Serialize;
use tracing::{info, warn};

use crate::flows::shutdown::held_by_stop;
use crate::lease::{Once, once};
use crate::ports::bus::AlertBus;
use crate::ports::clock::Clock;
use crate::ports::shutdown::ShutdownTarget;
use crate::ports::store::StateStore;
use spendguard_domain::budget::Severity;
use spendguard_domain::caps::{CapRecord, CapStep, ProviderCap, cap_step, provider_caps};
use spendguard_domain::drill::{DrillProblem, drill_channels};
use spendguard_domain::records::{Claim, Lease};
use spendguard_domain::resources::{ResourceState, provider_limits};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

/// A cap's lease (the one a stop takes on the same limit).
const LEASE: Duration = Duration::minutes(2);
const RECORD_RETENTION: Duration = Duration::days(400);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum CapOutcome {
    /// The provider has the budget's limit.
    InPlace,
    /// Would be set (a plan): from what the provider has now (`None`: no limit).
    WouldSet {
        from: Option<u64>,
    },
    Set {
        from: Option<u64>,
    },
    /// Changed at the provider by hand to `by_hand` cents (0: removed), reported and set back.
    Drifted {
        by_hand: u64,
    },
    /// A stop holds it: its restore puts the cap back.
    HeldByStop,
    InProgress,
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct CapReport {
    /// `openai:project:<id>` or `openai:organization`.
    pub resource: String,
    pub budget: String,
    pub cents: u64,
    #[serde(flatten)]
    pub outcome: CapOutcome,
}

pub struct CapKeeper {
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    /// The provider's limits (OpenAI's spend limits).
    pub target: Arc<dyn ShutdownTarget>,
    pub lease_waits: &'static [u64],
}

fn record_key(resource: &str) -> String {
    format!("cap#{resource}")
}

fn dollars(cents: u64) -> String {
    format!("{}.{:02} USD", cents / 100, cents % 100)
}

impl CapKeeper {
    /// What keeping the caps of `policy` would change, changing nothing.
    pub async fn plan(&self, policy: &PolicySet) -> Vec<CapReport> {
        let caps = provider_caps(&policy.budgets).unwrap_or_default();
        join_all(caps.into_iter().map(|cap| async move {
            let outcome = match self.target.state(&cap.resource).await {
                Ok(ResourceState::SpendLimit { cents }) if cents == Some(cap.cents) => {
                    CapOutcome::InPlace
                }
                Ok(ResourceState::SpendLimit { cents }) => CapOutcome::WouldSet { from: cents },
                Ok(other) => CapOutcome::Failed {
                    error: format!("not a spend limit: {other}"),
                },
                Err(e) => CapOutcome::Failed { error: e.0 },
            };
            report(&cap, outcome)
        }))
        .await
    }

    /// Keeps every cap of `policy`. Drift findings go to `findings` (budget-check's runs); an
    /// operator's `budgets apply`, which showed the change first, reports it instead.
    pub async fn keep(
        &self,
        policy: &PolicySet,
        findings: Option<&dyn AlertBus>,
    ) -> Vec<CapReport> {
        let caps = provider_caps(&policy.budgets).unwrap_or_default();
        let channels = drill_channels(policy);
        // the scope a stop of each limit is under (ADR 020): its switches hold the limit
        let stop_scopes = provider_limits(policy);
        join_all(caps.into_iter().map(|cap| {
            let channels = channels.clone();
            let stop_scope = stop_scopes
                .iter()
                .find(|r| r.id == cap.resource.id)
                .map_or_else(|| cap.resource.scope.clone(), |r| r.scope.clone());
            async move {
                let lease = match crate::lease::exclusive(
                    self.store.as_ref(),
                    self.clock.as_ref(),
                    &cap.resource.id,
                    LEASE,
                    self.lease_waits,
                )
                .await
                {
                    Ok(Some(lease)) => lease,
                    Ok(None) => return report(&cap, CapOutcome::InProgress),
                    Err(e) => {
                        return report(
                            &cap,
                            CapOutcome::Failed {
                                error: e.to_string(),
                            },
                        );
                    }
                };
                let outcome = self
                    .keep_leased(&cap, &stop_scope, findings, channels)
                    .await
                    .unwrap_or_else(|error| CapOutcome::Failed { error });
                if let Err(e) = lease.release().await {
                    warn!(resource = %cap.resource.id, error = %e, "cap lease not released; it expires");
                }
                report(&cap, outcome)
            }
        }))
        .await
    }

    async fn keep_leased(
        &self,
        cap: &ProviderCap,
        stop_scope: &Scope,
        findings: Option<&dyn AlertBus>,
        channels: Vec<String>,
    ) -> Result<CapOutcome, String> {
        let now = self.clock.now();
        // a stop holds it: recorded (its restore puts the cap back), or under a switch that is
        // engaged or being released (a stop that found it lowered already records nothing)
        if held_by_stop(self.store.as_ref(), now, &cap.resource)
            .await
            .map_err(|e| e.0)?
        {
            return Ok(CapOutcome::HeldByStop);
        }
        let switches = self
            .store
            .kill_switches(&stop_scope.rollup())
            .await
            .map_err(|e| format!("reading the kill switches over it: {e}"))?;
        if switches.iter().any(|s| !s.value.state.holding().is_empty()) {
            return Ok(CapOutcome::HeldByStop);
        }
        let current = match self.target.state(&cap.resource).await.map_err(|e| e.0)? {
            ResourceState::SpendLimit { cents } => cents,
            other => return Err(format!("not a spend limit: {other}")),
        };
        let key = record_key(&cap.resource.id);
        let record: Option<CapRecord> = match self
            .store
            .get_cached(&key, now)
            .await
            .map_err(|e| format!("reading the cap's record: {e}"))?
        {
            Some(t) => Some(
                serde_json::from_str(&t)
                    .map_err(|e| format!("the cap's record is unreadable: {e}"))?,
            ),
            None => None,
        };
        let generation = record.as_ref().map_or(0, |r| r.generation);
        let drift = match cap_step(cap.cents, current, record.as_ref()) {
            CapStep::InPlace => {
                if record.as_ref().map(|r| r.cents) != Some(cap.cents) {
                    self.put_record(&key, cap.cents, generation).await?;
                }
                return Ok(CapOutcome::InPlace);
            }
            CapStep::Set { drift } => drift,
        };
        // a hand change: one finding per change (this generation of spendguard's value)
        if let (Some(by_hand), Some(bus)) = (drift, findings) {
            let problem = DrillProblem {
                subject: format!("spend limit {}", cap.resource.id),
                scope: cap.resource.scope.clone(),
                problem: if by_hand == 0 {
                    format!(
                        "removed at the provider by hand; budget {} keeps it at {}",
                        cap.budget_id,
                        dollars(cap.cents)
                    )
                } else {
                    format!(
                        "changed at the provider by hand to {}; budget {} keeps it at {}",
                        dollars(by_hand),
                        cap.budget_id,
                        dollars(cap.cents)
                    )
                },
                fix: "spendguard set it back: change the budget's monthly limit in the budgets file to change the cap".into(),
            };
            let event = problem.alert_once(
                &format!("generation {generation}"),
                Severity::Warning,
                channels,
                now,
            );
            let claim = Claim::alert(
                &event,
                Lease::new(
                    uuid::Uuid::new_v4().to_string(),
                    Duration::minutes(5),
                    now + RECORD_RETENTION,
                ),
            );
            match once(self.store.as_ref(), claim, now, || bus.publish(&event)).await {
                Ok(Once::Did(()) | Once::Done | Once::Busy) => {}
                Err(e) => return Err(format!("its drift finding was not published: {e}")),
            }
        }
        // the next generation before the set: a crash after the set must not leave the next
        // hand change under this generation's claim (at worst one change is reported twice)
        self.put_record(&key, cap.cents, generation + 1).await?;
        self.target
            .set(
                &cap.resource,
                &ResourceState::SpendLimit {
                    cents: Some(cap.cents),
                },
            )
            .await
            .map_err(|e| e.0)?;
        info!(resource = %cap.resource.id, cents = cap.cents, "provider cap set");
        Ok(match drift {
            Some(by_hand) => CapOutcome::Drifted { by_hand },
            None => CapOutcome::Set { from: current },
        })
    }

    async fn put_record(&self, key: &str, cents: u64, generation: u64) -> Result<(), String> {
        let now = self.clock.now();
        let record = CapRecord {
            cents,
            generation,
            at: now,
        };
        let text = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        self.store
            .put_cached(key, &text, now + RECORD_RETENTION)
            .await
            .map_err(|e| format!("recording the cap: {e}"))
    }
}

fn report(cap: &ProviderCap, outcome: CapOutcome) -> CapReport {
    CapReport {
        resource: cap.resource.id.clone(),
        budget: cap.budget_id.clone(),
        cents: cap.cents,
        outcome,
    }
}
