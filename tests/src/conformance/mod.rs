//! The store conformance suite: the same cases, unchanged, against every `StateStore` backend.
//! `conformance_suite!(make_store)` turns each case into a test.

pub mod alerts;
pub mod audit;
pub mod claims;
pub mod keys;
pub mod markers;
pub mod policy;
pub mod reservations;
pub mod spend;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use spendguard_app::ports::store::StateStore;
use spendguard_domain::budget::{
    Action, Basis, Budget, Severity, SourceSpec, Threshold, Tier, Window,
};
use spendguard_domain::ids::BudgetId;
use spendguard_domain::money::{Currency, Money};
use spendguard_domain::period::{Period, WindowKind, YearMonth, Zone};
use spendguard_domain::pricing::Tokens;
use spendguard_domain::records::ClaimSpace;
use spendguard_domain::records::{AuditEntry, Claim};
use spendguard_domain::scope::Scope;
use spendguard_domain::usage::{CounterKey, Metric, UsageEntry, UsageRecord};

pub type Store = Arc<dyn StateStore>;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn usd(v: i64, scale: u32) -> Money {
    Money::new(Decimal::new(v, scale), Currency::USD)
}

pub fn budget(id: &str, scope: &str, kind: WindowKind, limit: i64) -> Budget {
    Budget {
        id: id.into(),
        description: None,
        scope: Scope::parse(scope).unwrap(),
        currency: Currency::USD,
        zone: Zone::UTC,
        windows: vec![Window {
            provider_cap: false,
            kind,
            limit: Decimal::from(limit),
            tiers: vec![Tier {
                name: "warning".into(),
                threshold: Threshold::Percent(Decimal::from(80)),
                basis: Basis::Actual,
                severity: Severity::Warning,
                actions: vec![Action::Notify],
            }],
        }],
        source: SourceSpec::Usage,
        routing: BTreeMap::from([("warning".to_string(), vec!["log".to_string()])]),
    }
}

pub fn record(id: &str, scope: &str, cents: i64, when: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        scope: Scope::parse(scope).unwrap(),
        provider: "openai".into(),
        model: Some("gpt-4o".into()),
        tokens: Tokens {
            input: 100,
            output: 50,
            cached: 10,
            cache_write: 0,
        },
        requests: 1,
        cost: usd(cents, 2),
        timestamp: when,
        covers_minutes: 1,
        user: None,
        endpoint: None,
        feature: None,
    }
}

fn entries(records: &[UsageRecord], zones: &[Zone]) -> Vec<UsageEntry> {
    records.iter().map(|r| UsageEntry::of(r, zones)).collect()
}

/// Rolls up the pending usage of every scope with counters in `month`, as the table's stream
/// does (ADR 031; nothing on a store that counts every scope at ingest).
pub async fn roll_up_all(store: &dyn StateStore, month: YearMonth) {
    let leaves = store.scopes_with_counters(month).await.unwrap();
    store.roll_up(&leaves, Utc::now()).await.unwrap();
}

/// A scope's total of `metric` in a month, from the store's counters once the pending usage of
/// every scope with counters that month is rolled up (as the table's stream does, ADR 031).
pub async fn month_total(
    store: &dyn StateStore,
    scope: &str,
    zone: Zone,
    month: YearMonth,
    metric: Metric,
) -> Decimal {
    roll_up_all(store, month).await;
    let key = CounterKey {
        scope: Scope::parse(scope).unwrap(),
        zone,
        month,
    };
    let counters = store
        .read_counters(std::slice::from_ref(&key))
        .await
        .unwrap();
    counters
        .get(&key)
        .map(|m| m.days.values().map(|t| t.get(metric)).sum())
        .unwrap_or_default()
}

const NOV: YearMonth = YearMonth {
    year: 2026,
    month: 11,
};
const USD_COST: Metric = Metric::Cost(Currency::USD);

/// A scope's cost in US dollars this month (UTC).
pub async fn month_cost_now(store: &dyn StateStore, scope: &str) -> Decimal {
    let month = YearMonth::of(Utc::now().date_naive());
    month_total(store, scope, Zone::UTC, month, USD_COST).await
}

/// A claim on raising a monthly alert of budget `b1` at `tier` (keyed as check keys them).
fn claim(tier: &str, period: &Period, owner: &str) -> Claim {
    Claim {
        space: ClaimSpace::Alert {
            budget_id: BudgetId::new("b1"),
        },
        key: format!(
            "{}#{}#{tier}#{tier}-{}",
            WindowKind::Monthly,
            period.key(),
            period.key()
        ),
        owner: owner.into(),
        lease: Duration::minutes(5),
        expires_at: period.end + Duration::days(35),
    }
}

/// An audit entry for a switch a test writes directly.
pub fn audit(id: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: at("2026-11-22T10:00:00Z"),
        actor: "test".into(),
        action: "switch_written".into(),
        scope: None,
        detail: serde_json::Value::Null,
    }
}

/// Generates one test per conformance case for a backend, one module per capability of the
/// store port (`policy::budgets_crud`, `claims::abandoned_claims_can_be_taken_over`, ...).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cap policy, $make;
            budgets_crud,
            key_status_survives_reapplying_the_budgets_file,
            every_policy_write_moves_its_version,
            a_held_policy_sees_an_apply_within_its_ttl,
        );
        $crate::conformance_suite!(@cap spend, $make;
            replayed_usage_counts_once,
            hour_counters_keep_totals_and_minutes_once,
            minute_costs_round_trip_and_answer_minute_windows,
            duplicate_ids_within_one_batch_count_once,
            a_batch_mixing_new_replayed_repeated_and_expired_ids_counts_each_once,
            concurrent_replays_count_once,
            overlapping_concurrent_batches_are_exact,
            large_batch_is_counted_exactly,
            counters_give_day_week_and_month,
            expired_usage_markers_are_ignored,
            observations_are_upserted,
            source_days_are_upserted_and_read_by_date_range,
            summaries_of_one_day_are_kept_per_source,
        );
        $crate::conformance_suite!(@cap reservations, $make;
            concurrent_reservations_never_exceed_the_headroom,
            a_replayed_request_answers_the_same_and_holds_once,
            expired_holds_stop_counting,
        );
        $crate::conformance_suite!(@cap claims, $make;
            alert_claims_have_exactly_one_winner,
            abandoned_claims_can_be_taken_over,
            finished_claims_are_read_in_one_batch,
            delivery_claims_are_per_alert_and_channel,
        );
        $crate::conformance_suite!(@cap alerts, $make;
            open_alerts_are_acknowledged_escalated_and_closed,
            digest_queues_keep_each_alert_once,
        );
        $crate::conformance_suite!(@cap keys, $make;
            key_status_uses_optimistic_versions,
            kill_switch_writes_carry_their_audit_entry,
            active_switches_are_listed_in_one_read,
            kill_switch_uses_optimistic_versions,
        );
        $crate::conformance_suite!(@cap audit, $make; audit_log_is_newest_first);
        $crate::conformance_suite!(@cap markers, $make;
            markers_expire_in_code,
            cache_entries_expire,
        );
    };
    (@cap $cap:ident, $make:expr; $($case:ident),* $(,)?) => {
        mod $cap {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let store: $crate::conformance::Store = $make.await;
                    $crate::conformance::$cap::$case(store).await;
                }
            )*
        }
    };
}
