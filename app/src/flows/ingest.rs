//! Usage ingestion: validated records -> counter increments, counted exactly once.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use spendguard_domain::budget::Budget;
use spendguard_domain::period::Zone;
use spendguard_domain::policy_index::IndexedPolicy;
use spendguard_domain::scope::Scope;

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
    ingest_counting(store, &zones, &minute_scopes, records, sender, now).await
}

/// [`ingest_usage`] with what counting needs already worked out for the policy.
pub async fn ingest_indexed(
    store: &dyn StateStore,
    policy: &IndexedPolicy,
    records: &[UsageRecord],
    sender: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<IngestOutcome> {
    let (zones, minute_scopes) = (policy.zones(), policy.minute_scopes());
    ingest_counting(store, zones, minute_scopes, records, sender, now).await
}

async fn ingest_counting(
    store: &dyn StateStore,
    zones: &[Zone],
    minute_scopes: &BTreeSet<Scope>,
    records: &[UsageRecord],
    sender: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<IngestOutcome> {
    let entries: Vec<UsageEntry> = records
        .iter()
        .map(|r| UsageEntry {
            id: usage_marker_id(sender, &r.id),
            ..UsageEntry::counting(r, zones, minute_scopes)
        })
        .collect();
    store.ingest_usage(&entries, now, USAGE_MARKER_TTL).await
}
