//! Usage ingestion: validated records -> counter increments, counted exactly once.

use chrono::{DateTime, Duration, Utc};

use crate::budget::{Budget, PolicySet};
use crate::store::{StateStore, StoreResult};
use crate::usage::{IngestOutcome, UsageEntry, UsageRecord};

/// How long a record id is remembered. A replay within this time never counts twice.
pub const USAGE_MARKER_TTL: Duration = Duration::days(35);

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
