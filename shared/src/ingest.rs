//! Usage ingestion: validated records -> counter increments, counted exactly once.

use chrono::{DateTime, Duration, Utc};

use crate::budget::{Budget, PolicySet, SourceSpec};
use crate::store::{StateStore, StoreResult};
use crate::usage::{IngestOutcome, UsageEntry, UsageError, UsageRecord};

/// How long a record id is remembered. A replay within this time never counts twice.
pub const USAGE_MARKER_TTL: Duration = Duration::days(35);

/// Most items one record's transaction may write (DynamoDB's limit), its marker included.
const MAX_ITEMS_PER_RECORD: usize = 100;

/// The usage budgets whose counters `record` adds to.
pub fn budgets_counting<'a>(budgets: &'a [Budget], record: &UsageRecord) -> Vec<&'a Budget> {
    let counted = record.scopes_counted();
    budgets
        .iter()
        .filter(|b| b.source == SourceSpec::Usage && counted.contains(&b.scope))
        .collect()
}

/// Whether the policy can count `record` at all: its cost must convert into the currency of
/// every budget it counts toward (otherwise those budgets could not be evaluated for the rest
/// of the period), and its counters must fit one transaction.
pub fn admit(record: &UsageRecord, policy: &PolicySet) -> Result<(), UsageError> {
    let from = record.cost.currency;
    if let Some(b) = budgets_counting(&policy.budgets, record)
        .into_iter()
        .find(|b| !policy.settings.rates.can_convert(from, b.currency))
    {
        return Err(UsageError {
            field: "cost.currency",
            message: format!(
                "{from} cannot be counted toward budget `{}` ({}, scope {}): no exchange rate is configured; report in {} or add \"{from}/{}\" to [currency_rates]",
                b.id, b.currency, b.scope, b.currency, b.currency
            ),
        });
    }
    let zones = PolicySet::counter_zones(&policy.budgets);
    let items = UsageEntry::of(record, &zones).items().len() + 1;
    if items > MAX_ITEMS_PER_RECORD {
        return Err(UsageError {
            field: "scope",
            message: format!(
                "the record would update {items} items ({} time zones x its scope path and dimensions); at most {MAX_ITEMS_PER_RECORD}: use a shorter scope or fewer dimensions",
                zones.len()
            ),
        });
    }
    Ok(())
}

/// Counts `records` into the counters of every scope they roll up to, in every time zone a
/// budget uses (and UTC). Replayed or concurrent deliveries of a record count once.
pub async fn ingest_usage(
    store: &dyn StateStore,
    budgets: &[Budget],
    records: &[UsageRecord],
    now: DateTime<Utc>,
) -> StoreResult<IngestOutcome> {
    let zones = PolicySet::counter_zones(budgets);
    let entries: Vec<UsageEntry> = records.iter().map(|r| UsageEntry::of(r, &zones)).collect();
    store.ingest_usage(&entries, now, USAGE_MARKER_TTL).await
}
