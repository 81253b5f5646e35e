//! Usage ingestion: validated records -> counter increments, counted exactly once.

use chrono::{DateTime, Utc};

use spendguard_domain::budget::Budget;

use crate::ports::store::{StateStore, StoreResult};
use spendguard_domain::senders::usage_marker_id;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::usage::USAGE_MARKER_TTL;
use spendguard_domain::usage::{IngestOutcome, UsageEntry, UsageRecord};

/// Counts `records` into the counters of every scope they roll up to, in every time zone a
/// budget uses (and UTC). Replayed or concurrent deliveries of a record count once; `sender`'s
/// record ids are its own (none: the shared secrets').
pub async fn ingest_usage(
    store: &dyn StateStore,
    budgets: &[Budget],
    records: &[UsageRecord],
    sender: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<IngestOutcome> {
    let zones = PolicySet::counter_zones(budgets);
    let minute_scopes = PolicySet::minute_scopes(budgets);
    let entries: Vec<UsageEntry> = records
        .iter()
        .map(|r| UsageEntry {
            id: usage_marker_id(sender, &r.id),
            ..UsageEntry::counting(r, &zones, &minute_scopes)
        })
        .collect();
    store.ingest_usage(&entries, now, USAGE_MARKER_TTL).await
}
