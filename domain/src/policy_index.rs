//! A policy with its usage budgets indexed by the scope they watch, and what counting a record
//! needs (time zones, minute-counted scopes) worked out once per policy. Matching a record
//! against every budget cost one scope comparison per budget and record: a batch of 1,000
//! records against 1,000 budgets made a million (performance review 2026-12, §4.6).

use std::collections::{BTreeSet, HashMap};

use crate::budget::{Budget, SourceSpec};
use crate::period::Zone;
use crate::scope::Scope;
use crate::settings::PolicySet;
use crate::usage::{UsageError, UsageRecord, UsageWire, admit_counting};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A policy, indexed for usage: built once per policy read, shared by every request it serves.
#[derive(Debug, Clone)]
pub struct IndexedPolicy {
    set: PolicySet,
    /// Usage-sourced budgets by their scope, as positions in `set.budgets`.
    usage_by_scope: HashMap<Scope, Vec<usize>>,
    zones: Vec<Zone>,
    minute_scopes: BTreeSet<Scope>,
}

impl IndexedPolicy {
    pub fn new(set: PolicySet) -> IndexedPolicy {
        let mut usage_by_scope: HashMap<Scope, Vec<usize>> = HashMap::new();
        for (i, b) in set.budgets.iter().enumerate() {
            if b.source == SourceSpec::Usage {
                usage_by_scope.entry(b.scope.clone()).or_default().push(i);
            }
        }
        IndexedPolicy {
            zones: PolicySet::counter_zones(&set.budgets),
            minute_scopes: PolicySet::minute_scopes(&set.budgets),
            usage_by_scope,
            set,
        }
    }

    pub fn set(&self) -> &PolicySet {
        &self.set
    }

    /// The time zones usage is counted in ([`PolicySet::counter_zones`]).
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The scopes counted by the minute ([`PolicySet::minute_scopes`]).
    pub fn minute_scopes(&self) -> &BTreeSet<Scope> {
        &self.minute_scopes
    }

    /// The usage budgets whose counters `record` adds to, in the policy's order.
    pub fn budgets_counting(&self, record: &UsageRecord) -> Vec<&Budget> {
        self.usage_budgets(std::slice::from_ref(record))
    }

    /// The usage budgets a batch of records counts toward, in the policy's order: only the
    /// budgets on the scopes each record counts toward are looked at.
    pub fn usage_budgets(&self, records: &[UsageRecord]) -> Vec<&Budget> {
        let positions: BTreeSet<usize> = records
            .iter()
            .flat_map(|r| r.scopes_counted())
            .filter_map(|scope| self.usage_by_scope.get(&scope))
            .flatten()
            .copied()
            .collect();
        positions
            .into_iter()
            .map(|i| &self.set.budgets[i])
            .collect()
    }

    /// Whether the policy can count `record` at all ([`crate::usage::admit`]).
    pub fn admit(&self, record: &UsageRecord) -> Result<(), UsageError> {
        admit_counting(
            record,
            &self.budgets_counting(record),
            &self.set.settings.rates,
            &self.zones,
            &self.minute_scopes,
        )
    }
}

/// Most records in one batch (`POST /usage`).
pub const MAX_BATCH_RECORDS: usize = 1000;

/// Why a batch was refused: the field (`records[3].cost.amount`, `body`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub field: String,
    pub message: String,
}

impl BatchError {
    fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        BatchError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageBatch {
    records: Vec<Box<RawValue>>,
}

/// Parses and validates a whole usage batch (`{"records": [...]}`) against `policy`: any bad
/// record refuses the whole batch, naming its path, and nothing is counted.
pub fn parse_batch(
    body: &[u8],
    policy: &IndexedPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<UsageRecord>, BatchError> {
    let batch: UsageBatch = serde_json::from_slice(body)
        .map_err(|e| BatchError::at("body", format!("expected {{\"records\": [...]}}: {e}")))?;
    if batch.records.is_empty() {
        return Err(BatchError::at("records", "the batch is empty"));
    }
    if batch.records.len() > MAX_BATCH_RECORDS {
        return Err(BatchError::at(
            "records",
            format!("at most {MAX_BATCH_RECORDS} records per batch"),
        ));
    }
    let mut records = Vec::with_capacity(batch.records.len());
    for (i, raw) in batch.records.iter().enumerate() {
        let wire: UsageWire = serde_json::from_str(raw.get())
            .map_err(|e| BatchError::at(format!("records[{i}]"), e.to_string()))?;
        let record = wire
            .validate(&policy.set().settings.prices, now)
            .and_then(|r| policy.admit(&r).map(|()| r))
            .map_err(|e| BatchError::at(format!("records[{i}].{}", e.field), e.message))?;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Window;
    use crate::money::Currency;
    use crate::period::WindowKind;
    use crate::pricing::PriceBook;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    /// The reference model: every budget compared with every record.
    fn linear<'a>(budgets: &'a [Budget], records: &[UsageRecord]) -> Vec<&'a Budget> {
        budgets
            .iter()
            .filter(|b| {
                b.source == SourceSpec::Usage
                    && records
                        .iter()
                        .any(|r| r.scopes_counted().contains(&b.scope))
            })
            .collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const SEGMENTS: [&str; 4] = ["openai", "anthropic", "prod", "k1"];
    const SCOPES: [&str; 9] = [
        "*",
        "openai",
        "anthropic",
        "openai/prod",
        "openai/prod/k1",
        "anthropic/prod",
        "_model/openai:gpt-4o",
        "_user/u-1",
        "_feature/chat",
    ];

    fn budget(i: usize, scope: &str, usage: bool, minute: bool) -> Budget {
        Budget {
            id: format!("b{i}"),
            description: None,
            scope: Scope::parse(scope).unwrap(),
            currency: Currency::USD,
            zone: if i.is_multiple_of(3) {
                Zone::parse("Europe/Paris").unwrap()
            } else {
                Zone::UTC
            },
            windows: vec![Window {
                kind: if minute {
                    WindowKind::Hourly
                } else {
                    WindowKind::Monthly
                },
                limit: Decimal::ONE_HUNDRED,
                tiers: Vec::new(),
                provider_cap: false,
            }],
            source: if usage {
                SourceSpec::Usage
            } else {
                SourceSpec::GcpBudget {
                    budget_id: format!("g{i}"),
                }
            },
            routing: Default::default(),
        }
    }

    fn record(i: usize, path: &[usize], model: bool, user: bool) -> UsageRecord {
        let scope: Vec<&str> = path.iter().map(|p| SEGMENTS[*p]).collect();
        let mut wire = serde_json::json!({
            "id": format!("r{i}"),
            "scope": scope.join("/"),
            "cost": {"amount": "1", "currency": "USD"},
            "timestamp": "2026-11-22T10:00:00Z",
        });
        if model {
            wire["model"] = "gpt-4o".into();
        }
        if user {
            wire["user"] = "u-1".into();
        }
        serde_json::from_value::<UsageWire>(wire)
            .unwrap()
            .validate(&PriceBook::default(), now())
            .unwrap()
    }

    fn ids(budgets: &[&Budget]) -> Vec<String> {
        budgets.iter().map(|b| b.id.clone()).collect()
    }

    proptest! {
        /// The index finds exactly the budgets the linear scan finds, in the same order, for
        /// any policy (duplicated scopes, non-usage budgets, dimensions, the root) and batch.
        #[test]
        fn the_index_agrees_with_the_linear_scan(
            budgets in prop::collection::vec((0..SCOPES.len(), any::<bool>(), any::<bool>()), 0..30),
            records in prop::collection::vec(
                (prop::collection::vec(0..SEGMENTS.len(), 1..4), any::<bool>(), any::<bool>()),
                0..8,
            ),
        ) {
            let budgets: Vec<Budget> = budgets
                .iter()
                .enumerate()
                .map(|(i, (s, usage, minute))| budget(i, SCOPES[*s], *usage, *minute))
                .collect();
            let records: Vec<UsageRecord> = records
                .iter()
                .enumerate()
                .map(|(i, (path, model, user))| record(i, path, *model, *user))
                .collect();
            let policy = IndexedPolicy::new(PolicySet {
                budgets: budgets.clone(),
                ..PolicySet::default()
            });
            prop_assert_eq!(ids(&policy.usage_budgets(&records)), ids(&linear(&budgets, &records)));
            for r in &records {
                prop_assert_eq!(
                    ids(&policy.budgets_counting(r)),
                    ids(&crate::usage::budgets_counting(&budgets, r))
                );
            }
            prop_assert_eq!(policy.zones().to_vec(), PolicySet::counter_zones(&budgets));
            prop_assert_eq!(policy.minute_scopes(), &PolicySet::minute_scopes(&budgets));
        }
    }

    /// A report is evaluated against every budget it counts toward, dimension budgets (a
    /// model's, a user's) included: a short rolling window on a model is seen only there.
    #[test]
    fn a_batch_affects_the_budgets_of_its_dimensions_too() {
        let r = serde_json::from_str::<UsageWire>(r#"{"id":"r1","scope":"openai/prod/k","model":"gpt-4o","user":"u-42","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-30T10:00:00Z"}"#)
            .unwrap()
            .validate(&PriceBook::default(), now())
            .unwrap();
        let budget = |id: &str, scope: Scope| Budget {
            id: id.into(),
            description: None,
            scope,
            currency: Currency::USD,
            zone: Zone::UTC,
            windows: Vec::new(),
            source: SourceSpec::Usage,
            routing: Default::default(),
        };
        let budgets = vec![
            budget("prod", Scope::parse("openai/prod").unwrap()),
            budget("model", Scope::dimension("model", "openai:gpt-4o").unwrap()),
            budget("user", Scope::dimension("user", "u-42").unwrap()),
            budget(
                "other-model",
                Scope::dimension("model", "openai:o3").unwrap(),
            ),
            budget("elsewhere", Scope::parse("anthropic").unwrap()),
        ];
        let policy = IndexedPolicy::new(PolicySet {
            budgets,
            ..PolicySet::default()
        });
        let ids: Vec<&str> = policy
            .usage_budgets(&[r])
            .iter()
            .map(|b| b.id.as_str())
            .collect();
        assert_eq!(ids, ["prod", "model", "user"]);
    }
}
