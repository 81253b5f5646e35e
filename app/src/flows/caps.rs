//! Caps as code (`provider_cap = true`): keeps each provider limit a budget names equal to the
//! budget's monthly limit — planned and set by `budgets apply`, kept by every budget-check run.
//! A limit changed at the provider by hand is one drift finding per change, then set back. A
//! limit a stop holds (one cent until the restore) is left alone: the restore puts the cap back.
//! Each limit is kept under the same lease a stop takes on it. Anthropic's spend limits are an
//! early-access preview: an organisation without them gets one finding, never a failure.

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
use spendguard_domain::resources::{ResourceKind, ResourceState, provider_limits};
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
    /// The provider does not offer these limits to this organisation (Anthropic's early
    /// access): reported once, not kept, not a failure.
    NotEnabled,
    /// A stop holds it: its restore puts the cap back.
    HeldByStop,
    InProgress,
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct CapReport {
    /// `openai:project:<id>`, `openai:organization`, `anthropic:workspace:<id>`,
    /// `anthropic:organization`.
    pub resource: String,
    pub budget: String,
    pub cents: u64,
    #[serde(flatten)]
    pub outcome: CapOutcome,
}

pub struct CapKeeper {
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    /// The providers' limits, by the kind each sets (OpenAI's, Anthropic's spend limits): one
    /// per provider with an admin key.
    pub targets: Vec<(ResourceKind, Arc<dyn ShutdownTarget>)>,
    pub lease_waits: &'static [u64],
}

/// The admin key a provider's caps need, as the setting that names it.
pub fn admin_key_setting(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::AnthropicSpendLimit => {
            "the Anthropic admin key (SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN)"
        }
        _ => "the OpenAI admin key (SPENDGUARD_OPENAI_ADMIN_KEY_ARN)",
    }
}

fn record_key(resource: &str) -> String {
    format!("cap#{resource}")
}

fn dollars(cents: u64) -> String {
    format!("{}.{:02} USD", cents / 100, cents % 100)
}

impl CapKeeper {
    /// The provider that sets `cap`, if its admin key is configured.
    pub fn target(&self, cap: &ProviderCap) -> Result<&dyn ShutdownTarget, String> {
        self.targets
            .iter()
            .find(|(kind, _)| *kind == cap.resource.kind)
            .map(|(_, t)| t.as_ref())
            .ok_or_else(|| format!("{} is not configured", admin_key_setting(cap.resource.kind)))
    }

    /// The cap's limit at the provider now (`None`: no limit), or `NotEnabled` / `Failed`.
    async fn current(&self, cap: &ProviderCap) -> Result<Option<u64>, CapOutcome> {
        let failed = |error: String| CapOutcome::Failed { error };
        let target = self.target(cap).map_err(failed)?;
        match target.state(&cap.resource).await {
            Ok(ResourceState::SpendLimit { cents }) => Ok(cents),
            Ok(other) => Err(failed(format!("not a spend limit: {other}"))),
            // a refusal from a provider that does not offer the limits at all is not a failure
            Err(e) => match target.enabled().await {
                Ok(false) => Err(CapOutcome::NotEnabled),
                Ok(true) | Err(_) => Err(failed(e.0)),
            },
        }
    }

    /// What keeping the caps of `policy` would change, changing nothing.
    pub async fn plan(&self, policy: &PolicySet) -> Vec<CapReport> {
        let caps = provider_caps(&policy.budgets).unwrap_or_default();
        join_all(caps.into_iter().map(|cap| async move {
            let outcome = match self.current(&cap).await {
                Ok(cents) if cents == Some(cap.cents) => CapOutcome::InPlace,
                Ok(cents) => CapOutcome::WouldSet { from: cents },
                Err(outcome) => outcome,
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
        let current = match self.current(cap).await {
            Ok(cents) => cents,
            Err(CapOutcome::NotEnabled) => {
                if let Some(bus) = findings {
                    self.not_enabled_finding(cap, bus, channels).await?;
                }
                return Ok(CapOutcome::NotEnabled);
            }
            Err(CapOutcome::Failed { error }) => return Err(error),
            Err(other) => return Ok(other),
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
            self.publish_once(
                problem,
                &format!("generation {generation}"),
                Severity::Warning,
                bus,
                channels,
            )
            .await
            .map_err(|e| format!("its drift finding was not published: {e}"))?;
        }
        // the next generation before the set: a crash after the set must not leave the next
        // hand change under this generation's claim (at worst one change is reported twice)
        self.put_record(&key, cap.cents, generation + 1).await?;
        self.target(cap)?
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

    /// One finding for a cap the provider does not offer, ever (until the claim expires).
    async fn not_enabled_finding(
        &self,
        cap: &ProviderCap,
        bus: &dyn AlertBus,
        channels: Vec<String>,
    ) -> Result<(), String> {
        let problem = DrillProblem {
            subject: format!("spend limit {}", cap.resource.id),
            scope: cap.resource.scope.clone(),
            problem: format!(
                "the provider does not offer spend limits to this organisation (Anthropic's are an early-access preview): budget {}'s provider_cap of {} is not kept",
                cap.budget_id,
                dollars(cap.cents)
            ),
            fix: format!(
                "request access to spend limits from the provider, or remove provider_cap from budget {}",
                cap.budget_id
            ),
        };
        self.publish_once(problem, "not enabled", Severity::Warning, bus, channels)
            .await
            .map_err(|e| format!("its not-enabled finding was not published: {e}"))
    }

    /// Publishes `problem` once per `occurrence` (claimed for the record's retention).
    async fn publish_once(
        &self,
        problem: DrillProblem,
        occurrence: &str,
        severity: Severity,
        bus: &dyn AlertBus,
        channels: Vec<String>,
    ) -> Result<(), String> {
        let now = self.clock.now();
        let event = problem.alert_once(occurrence, severity, channels, now);
        let claim = Claim::alert(
            &event,
            Lease::new(
                uuid::Uuid::new_v4().to_string(),
                Duration::minutes(5),
                now + RECORD_RETENTION,
            ),
        );
        match once(self.store.as_ref(), claim, now, || bus.publish(&event)).await {
            Ok(Once::Did(()) | Once::Done | Once::Busy) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
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
