//! Spend as spendguard keeps it: usage counters (exactly once per record), hour counters,
//! the nightly summaries, and the figures sources reported (observations).

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::period::YearMonth;
use spendguard_domain::records::{Observation, SourceDay};
use spendguard_domain::scope::Scope;
use spendguard_domain::usage::{
    CounterKey, HourCounters, HourKey, IngestOutcome, MonthCounters, UsageEntry,
};
use std::collections::BTreeMap;

/// Month and hour counters read together ([`SpendStore::read_fresh`]).
pub type FreshCounters = (
    BTreeMap<CounterKey, MonthCounters>,
    BTreeMap<HourKey, HourCounters>,
);

/// What [`SpendStore::pending_leaves`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingLeaves {
    /// Each leaf with when its oldest pending item was written (how long it has waited),
    /// longest-waiting first.
    pub leaves: Vec<(Scope, DateTime<Utc>)>,
    /// More leaves are pending than the limit: the next call finds them.
    pub more: bool,
}

/// What the scheduled check owes the periods that have ended (ADR 031): the late-spend marks
/// roll-ups wrote (spend counted on its key before a quarter-hour boundary, moved into its
/// ancestors after it), and until when the check last evaluated the periods that ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LateSpend {
    pub marks: Vec<LateMark>,
    /// The instant up to which ended periods were last evaluated: the periods that ended
    /// since are evaluated once more at their end, for spend rolled up after the last check
    /// that evaluated them as current (a second before midnight, say).
    pub evaluated_until: Option<DateTime<Utc>>,
}

/// One mark: its store key, the quarter-hours (epoch seconds of their first instant) it holds,
/// and how many moves have added to it (settled only if none came since it was read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LateMark {
    pub key: String,
    pub quarters: Vec<i64>,
    pub moves: u64,
}

impl LateSpend {
    /// Since when ended periods are owed an evaluation: the oldest marked quarter-hour, or the
    /// last evaluation of ended periods, whichever is older.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        let oldest = self
            .marks
            .iter()
            .flat_map(|m| &m.quarters)
            .min()
            .and_then(|q| DateTime::from_timestamp(*q, 0));
        match (oldest, self.evaluated_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[async_trait]
pub trait SpendStore: Send + Sync {
    /// Counts each entry exactly once: an entry whose id was already counted (and whose marker
    /// has not expired by `now`) is reported as a duplicate and changes nothing. The marker and
    /// the counter increments of an entry are written atomically. An entry whose id holds a
    /// reservation (`ReservationStore::reserve`) reconciles it in the same write: the hold
    /// stops counting as its real cost starts to, so nothing is counted twice.
    async fn ingest_usage(
        &self,
        entries: &[UsageEntry],
        now: DateTime<Utc>,
        marker_ttl: Duration,
    ) -> StoreResult<IngestOutcome>;

    /// Every scope that has counters in `month` (any zone): what the nightly run summarises.
    async fn scopes_with_counters(&self, month: YearMonth) -> StoreResult<Vec<Scope>>;

    /// Upserts daily summaries (one per scope, date, zone and source: re-running a day
    /// replaces them).
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

    /// [`SpendStore::read_counters`] and [`SpendStore::read_hours`] as they stand right after
    /// an ingest: a store that counts a record's ancestors later ([`SpendStore::roll_up`])
    /// adds the pending items `fresh_pending` names ([`IngestOutcome::pending`]) where they
    /// are not rolled up yet, so an evaluation sees its own batch. Nothing else pending is
    /// read: other requests' pending spend is seen once rolled up.
    async fn read_fresh(
        &self,
        months: &[CounterKey],
        hours: &[HourKey],
        _fresh_pending: &[String],
    ) -> StoreResult<FreshCounters> {
        // a store that counts every scope at ingest has nothing pending to add
        let months = self.read_counters(months).await?;
        let hours = if hours.is_empty() {
            BTreeMap::new()
        } else {
            self.read_hours(hours).await?
        };
        Ok((months, hours))
    }

    /// Moves what ingest left pending on `leaves` into the ancestor and dimension counters it
    /// counts toward, exactly once; returns how many pending items it moved. Spend recorded
    /// before a period boundary and moved at `now`, after it, is marked [`LateSpend`] in the
    /// same write. A store that counts every scope at ingest has nothing pending (ADR 031).
    async fn roll_up(&self, _leaves: &[Scope], _now: DateTime<Utc>) -> StoreResult<usize> {
        Ok(0)
    }

    /// The [`LateSpend`] marks and the last evaluation of ended periods (read consistently).
    /// A store that counts every scope at ingest owes nothing.
    async fn late_spend(&self) -> StoreResult<LateSpend> {
        Ok(LateSpend::default())
    }

    /// Records that the periods ended up to `until` were evaluated after `evaluated` was read:
    /// removes the marks' quarter-hours, each mark only if no move added to it since (else
    /// the next check evaluates it again), and moves `evaluated_until` forward to `until`.
    async fn settle_late_spend(
        &self,
        _evaluated: &LateSpend,
        _until: DateTime<Utc>,
    ) -> StoreResult<()> {
        Ok(())
    }

    /// Leaves with pending items (ADR 031), the `limit` that have waited longest, each with
    /// when its oldest pending item was written; `more`: others are pending too. A store that
    /// counts every scope at ingest has none.
    async fn pending_leaves(&self, _limit: usize) -> StoreResult<PendingLeaves> {
        Ok(PendingLeaves::default())
    }

    /// Upserts observations (one per budget, source, window and period).
    async fn put_observations(&self, observations: &[Observation]) -> StoreResult<()>;

    async fn observations(&self, budget_id: &str) -> StoreResult<Vec<Observation>>;

    /// Upserts what sources reported per day (one per budget and date: the latest reading
    /// replaces the one before).
    async fn put_source_days(&self, days: &[SourceDay]) -> StoreResult<()>;

    /// A budget's day readings from `from` to `to` (inclusive), oldest first.
    async fn source_days(
        &self,
        budget_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<SourceDay>>;
}
