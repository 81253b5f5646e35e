//! Usage records reported by applications, and the counter updates they turn into.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Timelike, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::budget::Budget;
use crate::budget::SourceSpec;
use crate::money::{
    Currency, FxRates, Money, OutOfRange, checked_add, checked_add_with, parse_decimal,
};
use crate::period::{YearMonth, Zone};
use crate::pricing::{Call, PriceBook, Tokens};
use crate::scope::Scope;
use crate::settings::PolicySet;
use chrono::Duration;

/// One priced, validated usage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The idempotency key: a record with an id already counted is never counted again.
    pub id: String,
    pub scope: Scope,
    pub provider: String,
    pub model: Option<String>,
    pub tokens: Tokens,
    pub requests: u64,
    pub cost: Money,
    pub timestamp: DateTime<Utc>,
    /// How many minutes up to `timestamp` the record sums up (1: one call or one minute).
    /// Burst detection reads its requests as spread over them; its counters are dated by
    /// `timestamp` alone.
    pub covers_minutes: u32,
    pub user: Option<String>,
    pub endpoint: Option<String>,
    pub feature: Option<String>,
}

/// A usage record as applications send it (JSON). Validated by [`UsageWire::validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageWire {
    pub id: String,
    pub scope: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub tokens_in: Option<i64>,
    #[serde(default)]
    pub tokens_out: Option<i64>,
    #[serde(default)]
    pub tokens_cached: Option<i64>,
    #[serde(default)]
    pub tokens_cache_write: Option<i64>,
    /// The call went through a batch API: priced at the model's batch percent.
    #[serde(default)]
    pub batch: Option<bool>,
    #[serde(default)]
    pub requests: Option<i64>,
    #[serde(default)]
    pub cost: Option<CostWire>,
    pub timestamp: String,
    #[serde(default)]
    pub covers_minutes: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostWire {
    /// A decimal string (`"0.0125"`) or a JSON number, read from its exact text.
    pub amount: Box<RawValue>,
    pub currency: String,
}

/// Why a usage record was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct UsageError {
    pub field: &'static str,
    pub message: String,
}

impl UsageError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        UsageError {
            field,
            message: message.into(),
        }
    }
}

const MAX_ID_LEN: usize = 128;
const MAX_LABEL_LEN: usize = 128;

/// The bounds of an inbound usage record (docs/webhook.md#bounds). Each keeps the arithmetic
/// downstream far from `Decimal`'s limits and one record's counters inside one transaction.
pub mod bounds {
    use chrono::Duration;
    use rust_decimal::Decimal;

    /// Most one record may cost, in its currency: a billion.
    pub const MAX_COST: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
    /// Fractional digits kept of a cost; finer digits are rounded (half to even).
    pub const COST_DECIMALS: u32 = 12;
    /// Most tokens of each kind, and most requests, one record may carry: a trillion.
    pub const MAX_COUNT: u64 = 1_000_000_000_000;
    /// How old a record may be: record ids are remembered this long, so an older record
    /// could be counted twice.
    pub const MAX_AGE: Duration = crate::usage::USAGE_MARKER_TTL;
    /// How far ahead of the receiver's clock a record may be dated (clock skew).
    pub const MAX_AHEAD: Duration = Duration::minutes(5);
    /// Most segments of a record's scope (`openai/prod/team/app/key-1` has five). With
    /// [`crate::settings::MAX_COUNTER_ZONES`] zones, a record writes at most 95 items: one
    /// DynamoDB transaction always holds it.
    pub const MAX_SCOPE_DEPTH: usize = 6;
    /// Longest period one record may sum up: 31 days, in minutes.
    pub const MAX_COVERS_MINUTES: u32 = 31 * 24 * 60;
}

fn label(field: &'static str, value: Option<String>) -> Result<Option<String>, UsageError> {
    match value {
        Some(v) if v.is_empty() || v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) => {
            Err(UsageError::new(
                field,
                format!("must be 1 to {MAX_LABEL_LEN} printable characters"),
            ))
        }
        other => Ok(other),
    }
}

fn count(field: &'static str, value: Option<i64>, default: u64) -> Result<u64, UsageError> {
    match value {
        None => Ok(default),
        Some(v) if v < 0 => Err(UsageError::new(
            field,
            format!("must not be negative (got {v})"),
        )),
        Some(v) if v as u64 > bounds::MAX_COUNT => Err(UsageError::new(
            field,
            format!("must be at most {} (got {v})", bounds::MAX_COUNT),
        )),
        Some(v) => Ok(v as u64),
    }
}

fn covers_minutes(value: Option<i64>) -> Result<u32, UsageError> {
    match value {
        None => Ok(1),
        Some(v) if (1..=i64::from(bounds::MAX_COVERS_MINUTES)).contains(&v) => Ok(v as u32),
        Some(v) => Err(UsageError::new(
            "covers_minutes",
            format!(
                "must be 1 to {} (31 days) minutes (got {v})",
                bounds::MAX_COVERS_MINUTES
            ),
        )),
    }
}

/// Checks a record id (the idempotency key; also an `/authorize` request id).
pub(crate) fn record_id(field: &'static str, id: &str) -> Result<(), UsageError> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
    {
        return Err(UsageError::new(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters of letters, digits, `.`, `_`, `-`, `:`"),
        ));
    }
    Ok(())
}

/// Parses the scope usage is reported under: a path below `*`, not a dimension, not too deep.
pub(crate) fn usage_scope(field: &'static str, text: &str) -> Result<Scope, UsageError> {
    let scope = Scope::parse(text).map_err(|e| UsageError::new(field, e.to_string()))?;
    if scope.is_root() {
        return Err(UsageError::new(
            field,
            "usage must belong to a scope below `*`",
        ));
    }
    if scope.is_dimension() {
        return Err(UsageError::new(
            field,
            "`_` scopes are counted from a record's model, user, feature and endpoint; report usage under its own path",
        ));
    }
    let depth = scope.as_str().split('/').count();
    if depth > bounds::MAX_SCOPE_DEPTH {
        return Err(UsageError::new(
            field,
            format!(
                "has {depth} segments; at most {} (each segment is one more counter per time zone)",
                bounds::MAX_SCOPE_DEPTH
            ),
        ));
    }
    Ok(scope)
}

/// A cost within the bounds, rounded to [`bounds::COST_DECIMALS`] places.
pub(crate) fn bounded_cost(field: &'static str, amount: Decimal) -> Result<Decimal, UsageError> {
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(UsageError::new(
            field,
            format!("must not be negative (got {amount})"),
        ));
    }
    if amount > bounds::MAX_COST {
        return Err(UsageError::new(
            field,
            format!(
                "must be at most {} per record (got {amount}): is it in the currency's units, not cents or micro-units?",
                bounds::MAX_COST
            ),
        ));
    }
    Ok(amount.round_dp_with_strategy(
        bounds::COST_DECIMALS,
        rust_decimal::RoundingStrategy::MidpointNearestEven,
    ))
}

/// Reads a JSON value that is a decimal string or a number, exactly.
pub fn json_decimal(raw: &RawValue) -> Result<Decimal, String> {
    let text = raw.get().trim();
    let digits = if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|e| e.to_string())?
    } else {
        text.to_string()
    };
    parse_decimal(&digits).map_err(|_| format!("`{digits}` is not a decimal number"))
}

impl UsageWire {
    /// Checks every field against its bounds ([`bounds`]; `now` is the receiver's clock) and
    /// prices the record with `prices` when it carries no cost.
    pub fn validate(
        self,
        prices: &PriceBook,
        now: DateTime<Utc>,
    ) -> Result<UsageRecord, UsageError> {
        record_id("id", &self.id)?;
        let scope = usage_scope("scope", &self.scope)?;
        let timestamp = DateTime::parse_from_rfc3339(&self.timestamp)
            .map_err(|e| UsageError::new("timestamp", format!("not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc);
        if timestamp < now - bounds::MAX_AGE {
            return Err(UsageError::new(
                "timestamp",
                format!(
                    "{} is more than {} days old: record ids are remembered that long, so it could be counted twice",
                    self.timestamp,
                    bounds::MAX_AGE.num_days()
                ),
            ));
        }
        if timestamp > now + bounds::MAX_AHEAD {
            return Err(UsageError::new(
                "timestamp",
                format!(
                    "{} is in the future (more than {} minutes ahead of {})",
                    self.timestamp,
                    bounds::MAX_AHEAD.num_minutes(),
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        let provider =
            label("provider", self.provider)?.unwrap_or_else(|| scope.provider().to_string());
        let model = label("model", self.model)?;
        let tokens = Tokens {
            input: count("tokens_in", self.tokens_in, 0)?,
            output: count("tokens_out", self.tokens_out, 0)?,
            cached: count("tokens_cached", self.tokens_cached, 0)?,
            cache_write: count("tokens_cache_write", self.tokens_cache_write, 0)?,
        };
        let requests = count("requests", self.requests, 1)?;
        let covers_minutes = covers_minutes(self.covers_minutes)?;
        let cost = match self.cost {
            Some(c) => {
                let amount =
                    json_decimal(&c.amount).map_err(|m| UsageError::new("cost.amount", m))?;
                let amount = bounded_cost("cost.amount", amount)?;
                let currency = Currency::parse(&c.currency)
                    .map_err(|e| UsageError::new("cost.currency", e.to_string()))?;
                Money::new(amount, currency)
            }
            None => {
                let model = model.as_deref().ok_or_else(|| {
                    UsageError::new(
                        "cost",
                        "a record without `cost` needs `model` so it can be priced",
                    )
                })?;
                let priced = prices
                    .cost(
                        &provider,
                        model,
                        Call {
                            tokens,
                            requests,
                            batch: self.batch.unwrap_or(false),
                        },
                    )
                    .map_err(|e| UsageError::new("model", e.to_string()))?;
                Money::new(bounded_cost("cost", priced.amount)?, priced.currency)
            }
        };
        Ok(UsageRecord {
            id: self.id,
            scope,
            provider,
            model,
            tokens,
            requests,
            cost,
            timestamp,
            covers_minutes,
            user: label("user", self.user)?,
            endpoint: label("endpoint", self.endpoint)?,
            feature: label("feature", self.feature)?,
        })
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Cost(Currency),
    Requests,
    TokensIn,
    TokensOut,
    TokensCached,
    Records,
}

impl Metric {
    /// Stable name used by the store adapters (`cost.USD`, `requests`, ...).
    pub fn name(&self) -> String {
        match self {
            Metric::Cost(c) => format!("cost.{c}"),
            Metric::Requests => "requests".into(),
            Metric::TokensIn => "tokens_in".into(),
            Metric::TokensOut => "tokens_out".into(),
            Metric::TokensCached => "tokens_cached".into(),
            Metric::Records => "records".into(),
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "requests" => Metric::Requests,
            "tokens_in" => Metric::TokensIn,
            "tokens_out" => Metric::TokensOut,
            "tokens_cached" => Metric::TokensCached,
            "records" => Metric::Records,
            other => Metric::Cost(Currency::parse(other.strip_prefix("cost.")?).ok()?),
        })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Totals of every metric over some records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub BTreeMap<Metric, Decimal>);

impl Tally {
    /// One record's figures (each within [`bounds`], so this cannot overflow).
    pub fn of(record: &UsageRecord) -> Tally {
        Tally(BTreeMap::from([
            (Metric::Cost(record.cost.currency), record.cost.amount),
            (Metric::Requests, record.requests.into()),
            (Metric::TokensIn, record.tokens.input.into()),
            (Metric::TokensOut, record.tokens.output.into()),
            (Metric::TokensCached, record.tokens.cached.into()),
            (Metric::Records, Decimal::ONE),
        ]))
    }

    pub fn add(&mut self, metric: Metric, value: Decimal) -> Result<(), OutOfRange> {
        let total = self.0.entry(metric).or_default();
        *total = checked_add_with(*total, value, || format!("sum of {metric}"))?;
        Ok(())
    }

    pub fn merge(&mut self, other: &Tally) -> Result<(), OutOfRange> {
        for (m, v) in &other.0 {
            self.add(*m, *v)?;
        }
        Ok(())
    }

    pub fn get(&self, metric: Metric) -> Decimal {
        self.0.get(&metric).copied().unwrap_or_default()
    }

    /// Cost per currency.
    pub fn costs(&self) -> impl Iterator<Item = Money> + '_ {
        self.0.iter().filter_map(|(m, v)| match m {
            Metric::Cost(c) => Some(Money::new(*v, *c)),
            _ => None,
        })
    }
}

/// Largest value a stored counter may hold to be read: far above what bounded records can
/// add up to (10^20), and far enough below `Decimal::MAX` that sums of many days and
/// conversions never overflow. A larger stored value (hand-edited, or written before the
/// bounds) makes its day unreadable: the windows that include it fail, loudly, and no others.
pub const MAX_COUNTER_VALUE: Decimal =
    Decimal::from_parts(1_661_992_960, 1_808_227_885, 5, false, 0);

/// Reads one stored counter value (the store's text of a number).
pub fn counter_value(name: &str, text: &str) -> Result<Decimal, String> {
    let value = parse_decimal(text)
        .map_err(|_| format!("counter `{name}` holds `{text}`, not a decimal number"))?;
    if value.is_sign_negative() || value > MAX_COUNTER_VALUE {
        return Err(format!(
            "counter `{name}` holds {text}: outside 0 to {MAX_COUNTER_VALUE}"
        ));
    }
    Ok(value)
}

/// Counters are kept per scope, time zone and local calendar month, with a bucket per day.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey {
    pub scope: Scope,
    pub zone: Zone,
    pub month: YearMonth,
}

/// An increment of one day's bucket of one counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDelta {
    pub key: CounterKey,
    pub day: u32,
    pub tally: Tally,
}

/// One month of counters: a tally per local day of the month.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthCounters {
    pub days: BTreeMap<u32, Tally>,
    /// Days with a stored value that cannot be read ([`counter_value`]), and why.
    pub unreadable: BTreeMap<u32, String>,
}

impl MonthCounters {
    /// Adds one stored value read back by an adapter; a bad one spoils only its day.
    pub fn read(&mut self, day: u32, metric: Metric, name: &str, text: &str) {
        let added = counter_value(name, text).and_then(|v| {
            self.days
                .entry(day)
                .or_default()
                .add(metric, v)
                .map_err(|e| e.to_string())
        });
        if let Err(why) = added {
            self.unreadable.entry(day).or_insert(why);
        }
    }
}

/// How long an hour counter is kept: longer than the longest baseline
/// (`security.baseline_days` is at most 56). Both stores drop older ones.
pub const HOUR_COUNTER_RETENTION: Duration = Duration::days(60);

/// Hourly counters: one per scope and UTC hour, what key-theft detection reads (ADR 016).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourKey {
    pub scope: Scope,
    /// The start of the hour.
    pub hour: DateTime<Utc>,
}

impl HourKey {
    pub fn of(scope: Scope, at: DateTime<Utc>) -> HourKey {
        HourKey {
            scope,
            hour: start_of_hour(at),
        }
    }

    /// `2026-11-23T03`: how the adapters name the hour.
    pub fn label(&self) -> String {
        self.hour.format("%Y-%m-%dT%H").to_string()
    }
}

pub fn start_of_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// One hour of one scope: every metric's total, requests per minute (bursts) and cost per
/// minute (hourly and rolling windows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourCounters {
    pub total: Tally,
    pub requests_by_minute: BTreeMap<u32, Decimal>,
    /// Cost per minute of the hour and currency; only the minutes with any (items written
    /// before minute costs have none: their windows read nothing from them).
    pub cost_by_minute: BTreeMap<(u32, Currency), Decimal>,
    /// Records of the hour that sum up more than an hour ([`UsageRecord::covers_minutes`]):
    /// their hour of day says nothing about when the key was used.
    pub aggregates: Decimal,
    /// Why a stored value of this hour cannot be read ([`counter_value`]).
    pub unreadable: Option<String>,
}

fn add_requests(
    by_minute: &mut BTreeMap<u32, Decimal>,
    minute: u32,
    requests: Decimal,
) -> Result<(), OutOfRange> {
    let total = by_minute.entry(minute).or_default();
    *total = checked_add_with(*total, requests, || format!("requests in minute {minute}"))?;
    Ok(())
}

fn add_cost(
    by_minute: &mut BTreeMap<(u32, Currency), Decimal>,
    minute: u32,
    cost: Money,
) -> Result<(), OutOfRange> {
    let total = by_minute.entry((minute, cost.currency)).or_default();
    *total = checked_add_with(*total, cost.amount, || format!("cost in minute {minute}"))?;
    Ok(())
}

impl HourCounters {
    /// Adds one record's increment: its whole tally to the hour, and its requests per minute
    /// and (for scopes with minute windows) its cost to the minute it is dated at (a record
    /// summing up minutes counts its cost when it reports: a rolling window sees it then, early
    /// rather than never).
    pub fn add(&mut self, delta: &HourDelta) -> Result<(), OutOfRange> {
        self.total.merge(&delta.tally)?;
        let minute_costs = delta
            .tally
            .costs()
            .filter(|c| delta.minute_costs && !c.amount.is_zero());
        for cost in minute_costs {
            add_cost(&mut self.cost_by_minute, delta.minute, cost)?;
        }
        if delta.aggregate {
            self.aggregates = checked_add(self.aggregates, Decimal::ONE, "aggregates")?;
        }
        if !delta.requests_per_minute.is_zero() {
            add_requests(
                &mut self.requests_by_minute,
                delta.minute,
                delta.requests_per_minute,
            )?;
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &HourCounters) -> Result<(), OutOfRange> {
        self.total.merge(&other.total)?;
        for (minute, requests) in &other.requests_by_minute {
            add_requests(&mut self.requests_by_minute, *minute, *requests)?;
        }
        for ((minute, currency), amount) in &other.cost_by_minute {
            add_cost(
                &mut self.cost_by_minute,
                *minute,
                Money::new(*amount, *currency),
            )?;
        }
        self.aggregates = checked_add(self.aggregates, other.aggregates, "aggregates")?;
        if self.unreadable.is_none() {
            self.unreadable.clone_from(&other.unreadable);
        }
        Ok(())
    }

    /// The most requests counted in one minute of the hour.
    pub fn busiest_minute(&self) -> Decimal {
        self.requests_by_minute
            .values()
            .copied()
            .max()
            .unwrap_or_default()
    }

    /// The named numbers both store adapters keep (and add to): `t_<metric>` totals,
    /// `m<minute>` requests, `c<minute>_<currency>` costs, `agg` aggregate records.
    pub fn buckets(&self) -> Vec<(String, Decimal)> {
        let totals = self.total.0.iter().map(|(m, v)| (format!("t_{m}"), *v));
        let minutes = self
            .requests_by_minute
            .iter()
            .map(|(minute, v)| (format!("m{minute:02}"), *v));
        let costs = self
            .cost_by_minute
            .iter()
            .map(|((minute, currency), v)| (format!("c{minute:02}_{currency}"), *v));
        let aggregates =
            (!self.aggregates.is_zero()).then(|| (AGGREGATES.to_string(), self.aggregates));
        totals
            .chain(minutes)
            .chain(costs)
            .chain(aggregates)
            .collect()
    }

    /// The cost of one minute of the hour in `to`, converted at `rates`.
    pub fn cost_in_minute(
        &self,
        minute: u32,
        to: Currency,
        rates: &FxRates,
    ) -> Result<Decimal, String> {
        let mut total = Decimal::ZERO;
        let of_minute = self
            .cost_by_minute
            .iter()
            .filter(|((m, _), _)| *m == minute);
        for ((_, currency), amount) in of_minute {
            let converted = rates
                .convert(Money::new(*amount, *currency), to)
                .map_err(|e| e.to_string())?;
            total =
                checked_add(total, converted.amount, "minute cost").map_err(|e| e.to_string())?;
        }
        Ok(total)
    }

    /// Reads back one bucket written by [`HourCounters::buckets`] (the store's text of its
    /// number); other names are ignored. A bad value makes the hour unreadable.
    pub fn read_bucket(&mut self, name: &str, text: &str) {
        let metric = name.strip_prefix("t_").and_then(Metric::parse);
        let minute = name
            .strip_prefix('m')
            .and_then(|m| m.parse::<u32>().ok())
            .filter(|m| *m < 60);
        let aggregates = name == AGGREGATES;
        let cost = name
            .strip_prefix('c')
            .and_then(|c| c.split_once('_'))
            .and_then(|(minute, currency)| {
                let minute = minute.parse::<u32>().ok().filter(|m| *m < 60)?;
                Some((minute, Currency::parse(currency).ok()?))
            });
        if metric.is_none() && minute.is_none() && cost.is_none() && !aggregates {
            return;
        }
        let added = counter_value(name, text).and_then(|value| {
            if let Some((minute, currency)) = cost {
                return add_cost(
                    &mut self.cost_by_minute,
                    minute,
                    Money::new(value, currency),
                )
                .map_err(|e| e.to_string());
            }
            if aggregates {
                return checked_add(self.aggregates, value, name)
                    .map(|sum| self.aggregates = sum)
                    .map_err(|e| e.to_string());
            }
            match (metric, minute) {
                (Some(metric), _) => self.total.add(metric, value),
                (None, Some(minute)) => add_requests(&mut self.requests_by_minute, minute, value),
                (None, None) => Ok(()),
            }
            .map_err(|e| e.to_string())
        });
        if let Err(why) = added
            && self.unreadable.is_none()
        {
            self.unreadable = Some(why);
        }
    }
}

/// The bucket of an hour counter that counts aggregate records.
const AGGREGATES: &str = "agg";

/// An increment of one hour counter, at one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourDelta {
    pub key: HourKey,
    pub minute: u32,
    pub tally: Tally,
    /// The record's requests divided by the minutes it covers: what burst detection sees.
    pub requests_per_minute: Decimal,
    /// The record sums up more than an hour.
    pub aggregate: bool,
    /// Count the cost per minute too: a budget with an hourly or rolling window watches the
    /// scope (the other hour items stay as small as theft detection needs).
    pub minute_costs: bool,
}

/// A record ready for ingestion: its id and every counter increment it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    pub id: String,
    /// The record's own scope: the one its sender reports for (the other scopes it counts
    /// toward are its ancestors and dimensions).
    pub leaf: Scope,
    pub deltas: Vec<CounterDelta>,
    pub hours: Vec<HourDelta>,
}

impl UsageRecord {
    /// Every scope the record counts toward: its scope and the ones it rolls up to, and the
    /// dimension scopes of its model, user, feature and endpoint.
    pub fn scopes_counted(&self) -> Vec<Scope> {
        let mut scopes = self.scope.rollup();
        let model = self
            .model
            .as_ref()
            .map(|m| format!("{}:{m}", self.provider));
        for (dimension, value) in [
            ("model", &model),
            ("user", &self.user),
            ("feature", &self.feature),
            ("endpoint", &self.endpoint),
        ] {
            if let Some(s) = value
                .as_deref()
                .and_then(|v| Scope::dimension(dimension, v))
            {
                scopes.push(s);
            }
        }
        scopes
    }
}

impl UsageEntry {
    /// The counter increments of `record` when no budget has an hourly or rolling window.
    pub fn of(record: &UsageRecord, zones: &[Zone]) -> UsageEntry {
        Self::counting(record, zones, &BTreeSet::new())
    }

    /// The counter increments of `record`: month counters for every zone and every scope it
    /// counts toward; hour counters for its scope path (keys live there, ADR 016) and for the
    /// scopes in `minute_scopes` it counts toward (budgets with hourly or rolling windows on
    /// them, the root and dimension scopes included; ADR 027).
    pub fn counting(
        record: &UsageRecord,
        zones: &[Zone],
        minute_scopes: &BTreeSet<Scope>,
    ) -> UsageEntry {
        let tally = Tally::of(record);
        let scopes = record.scopes_counted();
        let mut deltas = Vec::new();
        for zone in zones {
            let date = zone.date_of(record.timestamp);
            for scope in scopes.iter().cloned() {
                deltas.push(CounterDelta {
                    key: CounterKey {
                        scope,
                        zone: *zone,
                        month: YearMonth::of(date),
                    },
                    day: date.day(),
                    tally: tally.clone(),
                });
            }
        }
        // an aggregate's requests count toward bursts at its average rate, rounded up so that
        // a trickle is never read as none
        let requests_per_minute = (Decimal::from(record.requests)
            / Decimal::from(record.covers_minutes.max(1)))
        .round_dp_with_strategy(4, rust_decimal::RoundingStrategy::AwayFromZero);
        let path = record.scope.rollup();
        let hours = scopes
            .iter()
            .filter(|s| (path.contains(s) && !s.is_root()) || minute_scopes.contains(*s))
            .cloned()
            .map(|scope| HourDelta {
                minute_costs: minute_scopes.contains(&scope),
                key: HourKey::of(scope, record.timestamp),
                minute: record.timestamp.minute(),
                tally: tally.clone(),
                requests_per_minute,
                aggregate: record.covers_minutes > 60,
            })
            .collect();
        UsageEntry {
            id: record.id.clone(),
            leaf: record.scope.clone(),
            deltas,
            hours,
        }
    }

    /// How many counter items `counting(record, zones, minute_scopes)` writes (`items().len()`)
    /// without building the entry: admitting a record counts them, and building the entry's
    /// increments only to count them cost a tally per item and record.
    pub fn item_count(
        record: &UsageRecord,
        zones: &[Zone],
        minute_scopes: &BTreeSet<Scope>,
    ) -> usize {
        let scopes = record.scopes_counted();
        let distinct: BTreeSet<&Scope> = scopes.iter().collect();
        // a month item per scope and zone (a record falls in one local month per zone)
        let mut distinct_zones: Vec<&Zone> = Vec::with_capacity(zones.len());
        for zone in zones {
            if !distinct_zones.contains(&zone) {
                distinct_zones.push(zone);
            }
        }
        let path = record.scope.rollup();
        let hours = distinct
            .iter()
            .filter(|s| (path.contains(s) && !s.is_root()) || minute_scopes.contains(**s))
            .count();
        distinct.len() * distinct_zones.len() + hours
    }

    /// How many counter items the entry writes (month and hour items).
    pub fn items(&self) -> BTreeSet<String> {
        let months = self
            .deltas
            .iter()
            .map(|d| format!("{}|{}|{}", d.key.scope, d.key.zone, d.key.month));
        let hours = self
            .hours
            .iter()
            .map(|h| format!("{}|{}", h.key.scope, h.key.label()));
        months.chain(hours).collect()
    }
}

/// Sums the hourly increments of several entries per hour counter.
pub fn presum_hours<'a>(
    entries: impl IntoIterator<Item = &'a UsageEntry>,
) -> Result<BTreeMap<HourKey, HourCounters>, OutOfRange> {
    let mut out: BTreeMap<HourKey, HourCounters> = BTreeMap::new();
    for entry in entries {
        for h in &entry.hours {
            out.entry(h.key.clone()).or_default().add(h)?;
        }
    }
    Ok(out)
}

/// Sums the increments of several entries per counter and day (one write per counter item).
pub fn presum<'a>(
    entries: impl IntoIterator<Item = &'a UsageEntry>,
) -> Result<BTreeMap<CounterKey, BTreeMap<u32, Tally>>, OutOfRange> {
    let mut out: BTreeMap<CounterKey, BTreeMap<u32, Tally>> = BTreeMap::new();
    for entry in entries {
        for d in &entry.deltas {
            out.entry(d.key.clone())
                .or_default()
                .entry(d.day)
                .or_default()
                .merge(&d.tally)?;
        }
    }
    Ok(out)
}

/// What ingestion did with each record id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: Vec<String>,
    pub duplicates: Vec<String>,
    /// The store's names of the pending items this ingest wrote (ADR 031; none on a store
    /// that counts every scope at once): what a read right after it adds to the counters, so
    /// that the evaluation sees exactly this request's spend and reads nothing else pending.
    pub pending: Vec<String>,
}

/// Most items one record's transaction may write (DynamoDB's limit), its marker included.
pub const MAX_ITEMS_PER_RECORD: usize = 100;

/// How long a record id is remembered. A replay within this time never counts twice.
pub const USAGE_MARKER_TTL: Duration = Duration::days(35);

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
    admit_counting(
        record,
        &budgets_counting(&policy.budgets, record),
        &policy.settings.rates,
        &PolicySet::counter_zones(&policy.budgets),
        &PolicySet::minute_scopes(&policy.budgets),
    )
}

/// [`admit`], given the budgets `record` counts toward and the policy's counting zones and
/// minute scopes (worked out once per policy by [`crate::policy_index::IndexedPolicy`]).
pub(crate) fn admit_counting(
    record: &UsageRecord,
    counting: &[&Budget],
    rates: &FxRates,
    zones: &[Zone],
    minute_scopes: &BTreeSet<Scope>,
) -> Result<(), UsageError> {
    let from = record.cost.currency;
    if let Some(b) = counting
        .iter()
        .find(|b| !rates.can_convert(from, b.currency))
    {
        return Err(UsageError {
            field: "cost.currency",
            message: format!(
                "{from} cannot be counted toward budget `{}` ({}, scope {}): no exchange rate is configured; report in {} or add \"{from}/{}\" to [currency_rates]",
                b.id, b.currency, b.scope, b.currency, b.currency
            ),
        });
    }
    let items = UsageEntry::item_count(record, zones, minute_scopes) + 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn wire(json: &str) -> UsageWire {
        serde_json::from_str(json).unwrap()
    }

    /// The receiver's clock for these records (dated 22 to 30 November 2026).
    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn json_number_costs_are_read_exactly() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod","cost":{"amount":0.1,"currency":"usd"},"timestamp":"2026-11-22T10:00:00Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        assert_eq!(r.cost, Money::new(dec!(0.1), Currency::USD));
        assert_eq!(r.provider, "openai");
        assert_eq!(r.requests, 1);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                r#"{"id":"","scope":"a/b","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-22T10:00:00Z"}"#,
                "id",
            ),
            (
                r#"{"id":"x","scope":"a//b","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-22T10:00:00Z"}"#,
                "scope",
            ),
            (
                r#"{"id":"x","scope":"a/b","tokens_in":-5,"cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-22T10:00:00Z"}"#,
                "tokens_in",
            ),
            (
                r#"{"id":"x","scope":"a/b","cost":{"amount":"-1","currency":"USD"},"timestamp":"2026-11-22T10:00:00Z"}"#,
                "cost.amount",
            ),
            (
                r#"{"id":"x","scope":"a/b","cost":{"amount":"1","currency":"ZZZ"},"timestamp":"2026-11-22T10:00:00Z"}"#,
                "cost.currency",
            ),
            (
                r#"{"id":"x","scope":"a/b","cost":{"amount":"1","currency":"USD"},"timestamp":"yesterday"}"#,
                "timestamp",
            ),
            (
                r#"{"id":"x","scope":"a/b","timestamp":"2026-11-22T10:00:00Z"}"#,
                "cost",
            ),
            (
                r#"{"id":"x","scope":"a/b","model":"unknown","timestamp":"2026-11-22T10:00:00Z"}"#,
                "model",
            ),
        ];
        for (json, field) in cases {
            let err = wire(json)
                .validate(&PriceBook::default(), now())
                .unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn one_record_updates_every_rollup_scope_in_every_zone() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod/key-1","cost":{"amount":"2","currency":"USD"},"timestamp":"2026-11-30T23:30:00Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        let tokyo = Zone::parse("Asia/Tokyo").unwrap();
        let entry = UsageEntry::of(&r, &[Zone::UTC, tokyo]);
        assert_eq!(
            entry.deltas.len(),
            8,
            "4 scopes of the path in 2 zones (no dimensions on this record)"
        );
        // 23:30 UTC on 30 Nov is 08:30 on 1 Dec in Tokyo: a different month bucket
        let tokyo_delta = entry.deltas.iter().find(|d| d.key.zone == tokyo).unwrap();
        assert_eq!(
            tokyo_delta.key.month,
            YearMonth {
                year: 2026,
                month: 12
            }
        );
        assert_eq!(tokyo_delta.day, 1);
        let utc_delta = entry
            .deltas
            .iter()
            .find(|d| d.key.zone == Zone::UTC)
            .unwrap();
        assert_eq!(utc_delta.day, 30);
    }

    #[test]
    fn dimensions_are_counted_beside_the_path() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod/k","model":"gpt-4o","user":"u-42","feature":"search","endpoint":"/v1/chat","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-30T10:00:00Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        let scopes: Vec<String> = r.scopes_counted().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            scopes,
            [
                "openai/prod/k",
                "openai/prod",
                "openai",
                "*",
                "_model/openai:gpt-4o",
                "_user/u-42",
                "_feature/search",
                "_endpoint/v1-chat"
            ]
        );
    }

    #[test]
    fn presum_adds_entries_per_counter_and_day() {
        let mk = |id: &str, amount: &str| {
            wire(&format!(r#"{{"id":"{id}","scope":"a/b","cost":{{"amount":"{amount}","currency":"USD"}},"timestamp":"2026-11-22T10:00:00Z"}}"#))
                .validate(&PriceBook::default(), now())
                .unwrap()
        };
        let entries = [
            UsageEntry::of(&mk("1", "1.10"), &[Zone::UTC]),
            UsageEntry::of(&mk("2", "2.20"), &[Zone::UTC]),
        ];
        let sums = presum(&entries).unwrap();
        assert_eq!(sums.len(), 3); // a/b, a, *
        for days in sums.values() {
            let t = &days[&22];
            assert_eq!(t.get(Metric::Cost(Currency::USD)), dec!(3.30));
            assert_eq!(t.get(Metric::Records), dec!(2));
        }
    }

    #[test]
    fn an_aggregate_counts_toward_bursts_at_its_average_rate_and_fully_everywhere_else() {
        let day = |covers: &str| {
            let r = wire(&format!(r#"{{"id":"d1","scope":"openai/dev/key-1","requests":3200,"cost":{{"amount":"80","currency":"USD"}},"timestamp":"2026-11-23T15:00:00Z"{covers}}}"#))
                .validate(&PriceBook::default(), now())
                .unwrap();
            let entry = UsageEntry::of(&r, &[Zone::UTC]);
            let hours = presum_hours([&entry]).unwrap();
            (r, hours[&entry.hours[0].key].clone())
        };
        let (call, as_one_minute) = day("");
        assert_eq!(call.covers_minutes, 1);
        assert_eq!(as_one_minute.busiest_minute(), dec!(3200));
        let (daily, as_a_day) = day(r#","covers_minutes":1440"#);
        assert_eq!(daily.covers_minutes, 1440);
        // 3200 / 1440 = 2.2222…, rounded up at the fourth place
        assert_eq!(as_a_day.busiest_minute(), dec!(2.2223));
        assert_eq!(
            as_a_day.total, as_one_minute.total,
            "spend and requests count in full"
        );
        let (_, trickle) = day(r#","covers_minutes":44640"#);
        assert_eq!(trickle.busiest_minute(), dec!(0.0717));
        assert_eq!(as_one_minute.aggregates, Decimal::ZERO);
        assert_eq!(as_a_day.aggregates, Decimal::ONE);
        let (_, hourly) = day(r#","covers_minutes":60"#);
        assert_eq!(
            hourly.aggregates,
            Decimal::ZERO,
            "an hour's sum keeps its hour of day"
        );
        let mut back = HourCounters::default();
        for (name, value) in as_a_day.buckets() {
            back.read_bucket(&name, &value.to_string());
        }
        assert_eq!(back, as_a_day, "the stores keep the aggregate count");
    }

    #[test]
    fn covers_minutes_outside_one_minute_to_31_days_is_refused_naming_it() {
        for bad in ["0", "-5", "44641", "10000000000"] {
            let err = wire(&format!(r#"{{"id":"r1","scope":"openai/prod","cost":{{"amount":"1","currency":"USD"}},"timestamp":"2026-11-22T10:00:00Z","covers_minutes":{bad}}}"#))
                .validate(&PriceBook::default(), now())
                .unwrap_err();
            assert_eq!(err.field, "covers_minutes", "{bad}: {err}");
        }
        assert!(serde_json::from_str::<UsageWire>(r#"{"id":"r1","scope":"openai/prod","timestamp":"2026-11-22T10:00:00Z","covers_minutes":"1440"}"#).is_err());
    }

    #[test]
    fn hour_counters_keep_totals_and_requests_per_minute_through_their_buckets() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod/key-1","requests":7,"cost":{"amount":"2.5","currency":"USD"},"timestamp":"2026-11-23T03:17:45Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        let entry = UsageEntry::of(&r, &[Zone::UTC]);
        let hours: Vec<String> = entry
            .hours
            .iter()
            .map(|h| h.key.scope.to_string())
            .collect();
        assert_eq!(hours, ["openai/prod/key-1", "openai/prod", "openai"]);
        assert_eq!(entry.hours[0].key.label(), "2026-11-23T03");
        assert_eq!(entry.items().len(), 4 + 3, "4 month items, 3 hour items");
        assert_eq!(
            UsageEntry::item_count(&r, &[Zone::UTC], &BTreeSet::new()),
            4 + 3
        );
        let twice = presum_hours([&entry, &entry]).unwrap();
        let counters = &twice[&entry.hours[0].key];
        assert_eq!(counters.total.get(Metric::Cost(Currency::USD)), dec!(5.0));
        assert_eq!(counters.busiest_minute(), dec!(14));
        let mut back = HourCounters::default();
        for (name, value) in counters.buckets() {
            back.read_bucket(&name, &value.to_string());
        }
        back.read_bucket("expires_at", "99");
        assert_eq!(&back, counters);
    }

    #[test]
    fn every_bound_is_enforced_naming_its_field() {
        let record = |fields: &str| {
            format!(
                r#"{{"id":"b1","scope":"openai/prod/k","timestamp":"2026-11-30T12:00:00Z",{fields}}}"#
            )
        };
        let cases = [
            (record(r#""cost":{"amount":"79228162514264337593543950335","currency":"USD"}"#), "cost.amount", "at most 1000000000"),
            (record(r#""cost":{"amount":"1000000000.01","currency":"USD"}"#), "cost.amount", "at most"),
            (record(r#""cost":{"amount":1e300,"currency":"USD"}"#), "cost.amount", "not a decimal"),
            (record(r#""tokens_in":1000000000001,"cost":{"amount":"1","currency":"USD"}"#), "tokens_in", "at most 1000000000000"),
            (record(r#""requests":9223372036854775807,"cost":{"amount":"1","currency":"USD"}"#), "requests", "at most"),
            (r#"{"id":"b1","scope":"a/b/c/d/e/f/g","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-30T12:00:00Z"}"#.to_string(), "scope", "7 segments"),
            (r#"{"id":"b1","scope":"_model/x","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-30T12:00:00Z"}"#.to_string(), "scope", "own path"),
            (r#"{"id":"b1","scope":"a/b","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-10-26T23:58:59Z"}"#.to_string(), "timestamp", "more than 35 days old"),
            (r#"{"id":"b1","scope":"a/b","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-12-01T00:04:01Z"}"#.to_string(), "timestamp", "in the future"),
        ];
        for (json, field, says) in cases {
            let err = wire(&json)
                .validate(&PriceBook::default(), now())
                .unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
            assert!(err.message.contains(says), "{json}: {err}");
        }
        // exactly at each bound is accepted
        let at_bounds = wire(r#"{"id":"b2","scope":"a/b/c/d/e/f","tokens_in":1000000000000,"requests":1000000000000,"cost":{"amount":"1000000000","currency":"USD"},"timestamp":"2026-12-01T00:04:00Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        assert_eq!(at_bounds.cost.amount, dec!(1000000000));
        let oldest = wire(r#"{"id":"b3","scope":"a/b","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-10-26T23:59:00Z"}"#)
            .validate(&PriceBook::default(), now());
        assert!(oldest.is_ok(), "{oldest:?}");
    }

    #[test]
    fn minute_costs_are_kept_per_currency_and_read_back_from_their_buckets() {
        let record = |id: &str, amount: &str, currency: &str, at: &str| {
            wire(&format!(r#"{{"id":"{id}","scope":"openai/prod/key-1","cost":{{"amount":"{amount}","currency":"{currency}"}},"timestamp":"{at}"}}"#))
                .validate(&PriceBook::default(), now())
                .unwrap()
        };
        let watched = BTreeSet::from([Scope::parse("openai/prod").unwrap()]);
        let entries = [
            ("a", "1.25", "USD", "2026-11-23T03:17:05Z"),
            ("b", "0.75", "USD", "2026-11-23T03:17:59Z"),
            ("c", "2", "EUR", "2026-11-23T03:17:10Z"),
            ("d", "3", "USD", "2026-11-23T03:42:00Z"),
        ]
        .map(|(id, amount, currency, at)| {
            UsageEntry::counting(&record(id, amount, currency, at), &[Zone::UTC], &watched)
        });
        let hours = presum_hours(&entries).unwrap();
        let hour = DateTime::parse_from_rfc3339("2026-11-23T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let key = HourKey::of(Scope::parse("openai/prod").unwrap(), hour);
        let counters = &hours[&key];
        // the key's own hour item, which no minute window watches, keeps no minute costs
        let unwatched = HourKey::of(Scope::parse("openai/prod/key-1").unwrap(), hour);
        assert!(hours[&unwatched].cost_by_minute.is_empty());
        assert_eq!(hours[&unwatched].total, counters.total);
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(
            counters.cost_by_minute,
            BTreeMap::from([
                ((17, eur), dec!(2)),
                ((17, Currency::USD), dec!(2.00)),
                ((42, Currency::USD), dec!(3)),
            ])
        );
        let mut back = HourCounters::default();
        for (name, value) in counters.buckets() {
            back.read_bucket(&name, &value.to_string());
        }
        assert_eq!(&back, counters);
        let rates = FxRates::default();
        assert_eq!(back.cost_in_minute(42, Currency::USD, &rates), Ok(dec!(3)));
        assert!(
            back.cost_in_minute(17, Currency::USD, &rates)
                .unwrap_err()
                .contains("EUR")
        );
        // an item written before minute costs reads as none; a bad one makes the hour unreadable
        let mut old = HourCounters::default();
        old.read_bucket("t_cost.USD", "5");
        assert!(old.cost_by_minute.is_empty() && old.unreadable.is_none());
        old.read_bucket("c17_USD", "1e40");
        assert!(old.unreadable.is_some());
    }

    #[test]
    fn items_are_counted_without_building_the_entry_as_the_entry_names_them() {
        let zones: Vec<Zone> = ["UTC", "Asia/Tokyo", "UTC", "America/Los_Angeles"]
            .iter()
            .map(|z| Zone::parse(z).unwrap())
            .collect();
        let root = Scope::root();
        let model = Scope::dimension("model", "openai:gpt-4o").unwrap();
        let project = Scope::parse("openai/prod").unwrap();
        let elsewhere = Scope::parse("anthropic").unwrap();
        let minute_sets = [vec![], vec![root.clone()], vec![model, project, elsewhere]];
        for record in [
            r#"{"id":"r1","scope":"openai/prod/key-1","model":"gpt-4o","user":"u-1","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-30T23:30:00Z"}"#,
            r#"{"id":"r2","scope":"openai","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-23T03:17:45Z"}"#,
            r#"{"id":"r3","scope":"a","feature":"chat","endpoint":"/v1","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-23T03:17:45Z"}"#,
        ] {
            let r = wire(record).validate(&PriceBook::default(), now()).unwrap();
            for n in 0..=zones.len() {
                for minute_scopes in &minute_sets {
                    let minute_scopes: BTreeSet<Scope> = minute_scopes.iter().cloned().collect();
                    let entry = UsageEntry::counting(&r, &zones[..n], &minute_scopes);
                    assert_eq!(
                        UsageEntry::item_count(&r, &zones[..n], &minute_scopes),
                        entry.items().len(),
                        "{record} in {n} zones, minute scopes {minute_scopes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn budgets_with_minute_windows_get_hour_counters_on_their_scope_even_the_root() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod","model":"gpt-4o","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-23T03:17:45Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        let scopes = |minute_scopes: &[Scope]| -> Vec<String> {
            let minute_scopes = minute_scopes.iter().cloned().collect();
            UsageEntry::counting(&r, &[Zone::UTC], &minute_scopes)
                .hours
                .iter()
                .map(|h| h.key.scope.to_string())
                .collect()
        };
        assert_eq!(scopes(&[]), ["openai/prod", "openai"]);
        let model = Scope::dimension("model", "openai:gpt-4o").unwrap();
        let elsewhere = Scope::parse("anthropic").unwrap();
        let counted = scopes(&[Scope::root(), model.clone(), elsewhere]);
        assert_eq!(
            counted,
            [
                "openai/prod".to_string(),
                "openai".to_string(),
                Scope::root().to_string(),
                model.to_string()
            ]
        );
    }

    #[test]
    fn a_record_without_cost_is_priced_with_its_cache_writes_and_batch_flag() {
        let mut book = PriceBook::default();
        book.0.insert(
            "anthropic/sonnet".into(),
            crate::pricing::Price {
                currency: Currency::USD,
                input: dec!(3),
                output: dec!(15),
                cached_input: None,
                cache_write: Some(dec!(3.75)),
                batch_percent: Some(dec!(50)),
                long_context: None,
            },
        );
        let priced = |extra: &str| {
            wire(&format!(r#"{{"id":"p1","scope":"anthropic/prod","model":"sonnet","tokens_in":1000,"tokens_cache_write":2000,"timestamp":"2026-11-30T10:00:00Z"{extra}}}"#))
                .validate(&book, now())
                .unwrap()
                .cost
                .amount
        };
        // (1000*3 + 2000*3.75) / 1e6
        assert_eq!(priced(""), dec!(0.0105));
        assert_eq!(priced(r#","batch":true"#), dec!(0.00525));
        let err = wire(r#"{"id":"p2","scope":"anthropic/prod","model":"sonnet","tokens_cache_write":-1,"timestamp":"2026-11-30T10:00:00Z"}"#)
            .validate(&book, now())
            .unwrap_err();
        assert_eq!(err.field, "tokens_cache_write");
    }

    #[test]
    fn costs_keep_twelve_decimals() {
        let r = wire(r#"{"id":"r1","scope":"a/b","cost":{"amount":0.30000000000000004,"currency":"USD"},"timestamp":"2026-11-30T10:00:00Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        assert_eq!(r.cost.amount, dec!(0.300000000000));
        let tiny = wire(r#"{"id":"r2","scope":"a/b","cost":{"amount":"0.0000000000005","currency":"USD"},"timestamp":"2026-11-30T10:00:00Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        assert_eq!(tiny.cost.amount, Decimal::ZERO, "half to even");
    }

    #[test]
    fn the_largest_record_fits_one_transaction() {
        // the deepest scope, all four dimensions, in the most zones a policy may use
        let r = wire(r#"{"id":"r1","scope":"a/b/c/d/e/f","model":"m","user":"u","feature":"f","endpoint":"e","cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-30T10:00:00Z"}"#)
            .validate(&PriceBook::default(), now())
            .unwrap();
        let zones: Vec<Zone> = [
            "UTC",
            "Asia/Tokyo",
            "Europe/Paris",
            "America/New_York",
            "Asia/Kolkata",
            "Australia/Sydney",
            "America/Los_Angeles",
            "Europe/London",
        ]
        .iter()
        .map(|z| Zone::parse(z).unwrap())
        .collect();
        assert_eq!(zones.len(), crate::settings::MAX_COUNTER_ZONES);
        let entry = UsageEntry::of(&r, &zones);
        let items = entry.items().len();
        assert_eq!(
            UsageEntry::item_count(&r, &zones, &BTreeSet::new()),
            items,
            "counted as named"
        );
        assert!(
            items < 100,
            "{items} items and the marker must fit DynamoDB's 100"
        );
    }

    #[test]
    fn stored_counters_out_of_range_spoil_only_their_day() {
        let mut month = MonthCounters::default();
        month.read(1, Metric::Cost(Currency::USD), "d01_cost.USD", "12.5");
        month.read(
            2,
            Metric::Cost(Currency::USD),
            "d02_cost.USD",
            "79228162514264337593543950335",
        );
        month.read(3, Metric::Cost(Currency::USD), "d03_cost.USD", "1e35");
        month.read(4, Metric::Requests, "d04_requests", "-3");
        assert_eq!(month.days[&1].get(Metric::Cost(Currency::USD)), dec!(12.5));
        assert_eq!(
            month.unreadable.keys().copied().collect::<Vec<_>>(),
            [2, 3, 4]
        );
        let mut hour = HourCounters::default();
        hour.read_bucket("m03", "1e40");
        assert!(hour.unreadable.as_deref().unwrap().contains("m03"));
    }

    proptest! {
        /// Tallies of extreme values never panic: each sum is either exact or refused.
        #[test]
        fn tallies_of_extreme_values_are_exact_or_refused(
            values in prop::collection::vec(
                prop_oneof![
                    Just(Decimal::MAX),
                    Just(Decimal::MIN),
                    Just(Decimal::new(1, 28)),
                    (0i64..i64::MAX, 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
                ],
                1..40,
            )
        ) {
            let mut t = Tally::default();
            let mut exact = Some(Decimal::ZERO);
            for v in &values {
                exact = exact.and_then(|e| e.checked_add(*v));
                match t.add(Metric::Requests, *v) {
                    Ok(()) => prop_assert_eq!(Some(t.get(Metric::Requests)), exact),
                    Err(e) => {
                        prop_assert!(exact.is_none(), "refused a representable sum: {}", e);
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn metric_names_round_trip() {
        for m in [
            Metric::Cost(Currency::USD),
            Metric::Requests,
            Metric::TokensIn,
            Metric::TokensOut,
            Metric::TokensCached,
            Metric::Records,
        ] {
            assert_eq!(Metric::parse(&m.name()), Some(m));
        }
        assert_eq!(Metric::parse("cost.ZZZ"), None);
    }
}
