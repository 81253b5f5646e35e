//! The state store port and its two adapters (DynamoDB single table; embedded SQLite file).
//! Both pass one conformance suite (`tests/src/conformance.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::aggregate::DailySummary;
use crate::alert::AlertEvent;
use crate::budget::{Budget, PolicySet, Settings};
use crate::keys::{KeyRecord, KeyStatus};
use crate::period::YearMonth;
use crate::records::{
    Acknowledgement, AuditEntry, Claim, ClaimOutcome, KillSwitch, Observation, OpenAlert, Versioned,
};
use crate::scope::Scope;
use crate::usage::{CounterKey, HourCounters, HourKey, IngestOutcome, MonthCounters, UsageEntry};

pub mod dynamo;
pub mod sqlite;

pub use dynamo::DynamoStore;
pub use sqlite::SqliteStore;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or refused the request for now: retry later.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// A concurrent writer changed the item first (optimistic concurrency).
    #[error("conflicting concurrent update of {0}")]
    Conflict(String),
    /// Stored data could not be read back: a bug or a hand-edited item.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Corrupt(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything spendguard keeps. Every write is idempotent or guarded by a condition, so
/// handlers can be retried and run concurrently.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Replaces all budgets, keys and the settings with `set` (those not in `set` are deleted;
    /// the status of keys that stay is kept).
    async fn put_policy(&self, set: &PolicySet) -> StoreResult<()>;
    /// All budgets and the settings.
    async fn load_policy(&self) -> StoreResult<PolicySet>;
    async fn put_budget(&self, budget: &Budget) -> StoreResult<()>;
    async fn get_budget(&self, id: &str) -> StoreResult<Option<Budget>>;
    /// Returns whether the budget existed.
    async fn delete_budget(&self, id: &str) -> StoreResult<bool>;
    async fn put_settings(&self, settings: &Settings) -> StoreResult<()>;
    /// The settings alone (channels, escalation, prices), without the budgets.
    async fn settings(&self) -> StoreResult<Settings>;

    /// Counts each entry exactly once: an entry whose id was already counted (and whose marker
    /// has not expired by `now`) is reported as a duplicate and changes nothing. The marker and
    /// the counter increments of an entry are written atomically.
    async fn ingest_usage(
        &self,
        entries: &[UsageEntry],
        now: DateTime<Utc>,
        marker_ttl: Duration,
    ) -> StoreResult<IngestOutcome>;
    /// Every scope that has counters in `month` (any zone): what the nightly run summarises.
    async fn scopes_with_counters(&self, month: YearMonth) -> StoreResult<Vec<Scope>>;
    /// Upserts daily summaries (one per scope, zone and date: re-running a day replaces them).
    async fn put_summaries(&self, summaries: &[DailySummary]) -> StoreResult<()>;
    /// A scope's summaries from `from` to `to` (inclusive), any zone, oldest first.
    async fn summaries(
        &self,
        scope: &Scope,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<DailySummary>>;
    /// Month counters for each key (absent keys are left out).
    async fn read_counters(
        &self,
        keys: &[CounterKey],
    ) -> StoreResult<BTreeMap<CounterKey, MonthCounters>>;
    /// Hour counters for each key (absent hours are left out).
    async fn read_hours(&self, keys: &[HourKey]) -> StoreResult<BTreeMap<HourKey, HourCounters>>;

    /// Upserts observations (one per budget, source, window and period).
    async fn put_observations(&self, observations: &[Observation]) -> StoreResult<()>;
    async fn observations(&self, budget_id: &str) -> StoreResult<Vec<Observation>>;

    /// Tries to claim something done once. Exactly one concurrent claimant wins; a claim
    /// whose lease ran out without being finished can be won again.
    async fn claim(&self, claim: &Claim, now: DateTime<Utc>) -> StoreResult<ClaimOutcome>;
    /// For each of `claims`, whether it is finished for good: one batched read, so that a run
    /// needs no claim attempt for what earlier runs already did (`claim` decides the rest).
    async fn claims_done(&self, claims: &[Claim]) -> StoreResult<Vec<bool>>;
    /// Marks a won claim as done for good. `Conflict` if someone else holds it now.
    async fn finish_claim(&self, claim: &Claim) -> StoreResult<()>;
    /// Gives up a won claim whose work failed, so that the next attempt can do it.
    async fn release_claim(&self, claim: &Claim) -> StoreResult<()>;

    /// Records (or replaces) an open alert.
    async fn put_open_alert(&self, alert: &OpenAlert) -> StoreResult<()>;
    /// Every open alert (one read).
    async fn open_alerts(&self) -> StoreResult<Vec<OpenAlert>>;
    /// Acknowledges an open alert; false when there is no such open alert.
    async fn acknowledge_alert(&self, alert_id: &str, ack: &Acknowledgement) -> StoreResult<bool>;
    /// Records that escalation `level` was published (never lowers it).
    async fn set_escalation_level(&self, alert_id: &str, level: u32) -> StoreResult<()>;
    /// Removes an open alert (recovered).
    async fn close_alert(&self, alert_id: &str) -> StoreResult<()>;

    /// Queues a warning for a channel's digest (idempotent per alert).
    async fn queue_digest(
        &self,
        channel: &str,
        event: &AlertEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The queued alerts of a channel, oldest first, with when each was queued.
    async fn digest_queue(&self, channel: &str) -> StoreResult<Vec<(DateTime<Utc>, AlertEvent)>>;
    /// Removes alerts that went out in a digest.
    async fn remove_from_digest(&self, channel: &str, alert_ids: &[String]) -> StoreResult<()>;

    /// Every key in the registry, with its status and the status's version.
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// One key of the registry.
    async fn key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>>;
    /// Writes a key's status if its version is still `expected` (a registered key starts at
    /// 0); returns the new version, or `Conflict` when someone else wrote first. The spec
    /// comes from the budgets file via `put_policy`; a key not in the registry is `Corrupt`.
    async fn put_key_status(
        &self,
        key_id: &str,
        status: &KeyStatus,
        expected: u64,
    ) -> StoreResult<u64>;

    async fn kill_switch(&self, scope: &Scope) -> StoreResult<Option<Versioned<KillSwitch>>>;
    /// Every switch that is not open (engaged or restoring), in one read.
    async fn active_kill_switches(&self) -> StoreResult<Vec<Versioned<KillSwitch>>>;
    /// The switches of several scopes in one read (absent ones are left out).
    async fn kill_switches(&self, scopes: &[Scope]) -> StoreResult<Vec<Versioned<KillSwitch>>>;
    /// Writes the switch if its stored version is still `expected` (`None`: must not exist),
    /// with `audit` in the same transaction: every transition of a switch is in the audit log.
    /// Returns the new version, or `Conflict` when someone else wrote first (nothing written).
    async fn put_kill_switch(
        &self,
        switch: &KillSwitch,
        expected: Option<u64>,
        audit: &AuditEntry,
    ) -> StoreResult<u64>;

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// The newest `limit` entries of a month, newest first.
    async fn audit_log(&self, month: YearMonth, limit: usize) -> StoreResult<Vec<AuditEntry>>;

    /// Records that `id` was seen in `namespace`; true the first time. An expired marker
    /// counts as absent (expiry is checked here, not left to TTL deletion).
    async fn put_marker(
        &self,
        namespace: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Whether an unexpired marker for `id` is in `namespace` (written by `put_marker`).
    async fn has_marker(&self, namespace: &str, id: &str, now: DateTime<Utc>) -> StoreResult<bool>;

    /// A cached value that has not expired by `now`.
    async fn get_cached(&self, key: &str, now: DateTime<Utc>) -> StoreResult<Option<String>>;
    async fn put_cached(
        &self,
        key: &str,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
}

/// JSON helpers shared by the adapters (documents are stored as JSON text).
pub(crate) fn to_doc<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_doc<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> StoreResult<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
