//! Small records the store keeps: spend observations, claims, open alerts, the audit log,
//! kill switches.

use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::alert::AlertEvent;
use crate::ids::{AlertId, BudgetId, ChannelName, KeyId};
use crate::money::Money;
use crate::period::{WindowKind, Zone};
use crate::scope::Scope;

/// Spend a source reported for one window of a budget, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub budget_id: String,
    /// The source kind (`aws_budgets`, `openai`, `gcp_budget`, ...).
    pub source: String,
    pub window: WindowKind,
    /// The period the spend belongs to (`M#2026-11`).
    pub period_key: String,
    pub actual: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Money>,
    pub observed_at: DateTime<Utc>,
}

/// What a provider or cloud source reported for one day of a budget (a local day in the
/// budget's zone), as budget-check last saw it: what the nightly summaries of provider-sourced
/// budgets are made of (`spend::spend_per_day`, ADR 029).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDay {
    pub budget_id: String,
    /// The source kind (`openai`, `aws_budgets`, ...).
    pub source: String,
    pub date: NaiveDate,
    pub reading: DayReading,
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DayReading {
    /// The source's own cost of that day (it reports costs per day).
    Day { spend: Money },
    /// The running total of period `period_key` (`M#2026-11`) as last seen that day (the
    /// source reports only a total so far).
    RunningTotal { period_key: String, total: Money },
}

/// What a claim guards; each space has its own keys in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClaimSpace {
    /// Raising an alert, or its recovery or escalation (per budget).
    Alert { budget_id: BudgetId },
    /// Delivering an alert to one channel (per alert).
    Delivery { alert_id: AlertId },
    /// Acting on one key (disabling it for an incident, enabling it again).
    Key { key_id: KeyId },
}

/// Who holds a claim, how long a claim that was never finished blocks others (a crashed
/// claimant), and when its record may be forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// One id per run or invocation.
    pub owner: String,
    pub duration: Duration,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    pub fn new(owner: impl Into<String>, duration: Duration, expires_at: DateTime<Utc>) -> Lease {
        Lease {
            owner: owner.into(),
            duration,
            expires_at,
        }
    }
}

/// What is published once besides a crossing's alert: its recovery or an escalation, or a
/// nightly anomaly alert or report (of one local day in one zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    Recovery,
    /// The escalation to this level (1 is the first one after the alert).
    Escalation(u32),
    Anomaly(NaiveDate, Zone),
    Report(NaiveDate, Zone),
}

impl fmt::Display for FollowUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FollowUp::Recovery => f.write_str("recovery"),
            FollowUp::Escalation(level) => write!(f, "escalation-{level}"),
            FollowUp::Anomaly(day, zone) => write!(f, "anomaly#{day}@{zone}"),
            FollowUp::Report(day, zone) => write!(f, "report#{day}@{zone}"),
        }
    }
}

/// A claim on doing something once: of all concurrent claimants exactly one wins; the winner
/// finishes it (done for good) or releases it (failed: someone may try again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub space: ClaimSpace,
    pub key: String,
    /// Who holds the claim (one id per run or invocation).
    pub owner: String,
    /// How long a claim that was never finished blocks others (a crashed claimant).
    pub lease: Duration,
    /// When the claim may be forgotten.
    pub expires_at: DateTime<Utc>,
}

impl Claim {
    fn new(space: ClaimSpace, key: String, lease: Lease) -> Claim {
        Claim {
            space,
            key,
            owner: lease.owner,
            lease: lease.duration,
            expires_at: lease.expires_at,
        }
    }

    /// Raising the alert of one crossing: keyed by window, period, tier and alert id.
    pub fn alert(event: &AlertEvent, lease: Lease) -> Claim {
        Claim::new(
            ClaimSpace::Alert {
                budget_id: BudgetId::new(&event.budget_id),
            },
            format!(
                "{}#{}#{}#{}",
                event.window, event.period_key, event.tier, event.alert_id
            ),
            lease,
        )
    }

    /// Publishing a follow-up of alert `alert_id` once, under `space` (the alert's budget).
    pub fn follow_up(space: &BudgetId, alert_id: &AlertId, what: FollowUp, lease: Lease) -> Claim {
        Claim::new(
            ClaimSpace::Alert {
                budget_id: space.clone(),
            },
            format!("{what}#{alert_id}"),
            lease,
        )
    }

    /// Acting on a key once: `action` names the act (`disable#<incident>`, `lease`, ...).
    pub fn key(key_id: &KeyId, action: &str, lease: Lease) -> Claim {
        Claim::new(
            ClaimSpace::Key {
                key_id: key_id.clone(),
            },
            action.into(),
            lease,
        )
    }

    /// Delivering an alert (or a digest) to one channel once.
    pub fn delivery(alert_id: &AlertId, channel: &ChannelName, lease: Lease) -> Claim {
        Claim::new(
            ClaimSpace::Delivery {
                alert_id: alert_id.clone(),
            },
            channel.to_string(),
            lease,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This claimant won: it must do the work, then finish (or release on failure).
    Won,
    /// Already done by someone: nothing to do.
    AlreadyRaised,
    /// Another claimant holds a live lease and may still publish.
    HeldByOther,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    pub detail: serde_json::Value,
}

/// How long the deployed store keeps an audit entry (DynamoDB's TTL): thirteen months and a
/// margin, so a year is always comparable; export it (point-in-time recovery, a backup) to keep
/// it longer. The embedded store keeps every entry.
pub const AUDIT_RETENTION: Duration = Duration::days(400);

impl AuditEntry {
    /// The key both stores order the audit log by: time to the microsecond, then the id.
    pub fn sort_key(&self) -> String {
        format!("{}#{}", self.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"), self.id)
    }
}

/// The state of a kill switch. Applications stop calling when it is not `Open`; they stay
/// stopped while it is `Engaged` or `Releasing`, and ramp up while it is `Restoring`.
/// The transitions are in `docs/keys.md#the-incident-lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SwitchState {
    Open,
    Engaged {
        reason: String,
        actor: String,
        at: DateTime<Utc>,
        /// The incident that engaged it (the alert id, or a manual request id).
        #[serde(default)]
        incident: String,
        /// Every incident that holds the switch, in the order they joined (the first is
        /// `incident`). A restore releases them all; keys are stopped once per incident.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        incidents: Vec<String>,
    },
    /// A restore (`restore`) is re-enabling the keys its `incidents` hold. Any new emergency
    /// moves the switch back to `Engaged` and the restore stops without re-enabling more.
    Releasing {
        restore: String,
        actor: String,
        since: DateTime<Utc>,
        incidents: Vec<String>,
    },
    Restoring {
        step: u32,
        since: DateTime<Utc>,
    },
}

impl SwitchState {
    /// Whether applications must stop (engaged, or a restore has not finished).
    pub fn stops(&self) -> bool {
        matches!(
            self,
            SwitchState::Engaged { .. } | SwitchState::Releasing { .. }
        )
    }

    /// The incidents that hold the switch (none when open or ramping up).
    pub fn holding(&self) -> Vec<String> {
        match self {
            SwitchState::Engaged {
                incident,
                incidents,
                ..
            } => {
                if incidents.is_empty() && !incident.is_empty() {
                    vec![incident.clone()]
                } else {
                    incidents.clone()
                }
            }
            SwitchState::Releasing { incidents, .. } => incidents.clone(),
            SwitchState::Open | SwitchState::Restoring { .. } => Vec::new(),
        }
    }

    /// The state's name, as `status` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            SwitchState::Open => "open",
            SwitchState::Engaged { .. } => "engaged",
            SwitchState::Releasing { .. } => "releasing",
            SwitchState::Restoring { .. } => "restoring",
        }
    }
}

/// An incident a restore released: a late delivery of it engages nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub incident: String,
    pub at: DateTime<Utc>,
}

/// How long a released incident is remembered: longer than any redelivery (Lambda keeps an
/// event at most 6 hours, SNS retries for days) and an alert's period.
pub const RELEASED_MEMORY: Duration = Duration::days(35);

/// The kill switch of a scope, with the limit factor applications should honour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub scope: Scope,
    pub state: SwitchState,
    /// 1.0 is normal; 0.1 means "use a tenth of your usual rate".
    #[serde(with = "rust_decimal::serde::str")]
    pub limit_factor: Decimal,
    pub updated_at: DateTime<Utc>,
    /// Incidents restores released (the last [`RELEASED_MEMORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<Released>,
}

impl KillSwitch {
    /// Whether the switch is engaged and `incident` holds it: what a stop checks under its
    /// lease, so that a restore that released the incident first is never undone.
    pub fn holds(&self, incident: &str) -> bool {
        matches!(self.state, SwitchState::Engaged { .. })
            && self.state.holding().iter().any(|i| i == incident)
    }

    /// Whether restore `restore_id` is still releasing the switch (no new emergency
    /// interrupted it, no other restore took over).
    pub fn is_released_by(&self, restore_id: &str) -> bool {
        matches!(&self.state, SwitchState::Releasing { restore, .. } if restore == restore_id)
    }

    /// Whether a restore released `incident`.
    pub fn was_released(&self, incident: &str) -> bool {
        self.released.iter().any(|r| r.incident == incident)
    }

    /// Remembers `incidents` as released at `now`, forgetting those older than the memory.
    pub fn release(&mut self, incidents: &[String], now: DateTime<Utc>) {
        self.released.retain(|r| r.at > now - RELEASED_MEMORY);
        for incident in incidents {
            if !self.was_released(incident) {
                self.released.push(Released {
                    incident: incident.clone(),
                    at: now,
                });
            }
        }
    }
}

/// Who acknowledged an alert, and when: acknowledged alerts are not escalated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// A raised alert that pages (critical or emergency) and has not recovered yet: budget-check
/// escalates it while unacknowledged and emits its recovery when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAlert {
    pub event: crate::alert::AlertEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
    /// The last escalation level published (0: none yet).
    #[serde(default)]
    pub escalation_level: u32,
}

/// A kill switch as stored, with the version used for optimistic concurrency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}
