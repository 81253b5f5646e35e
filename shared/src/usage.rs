//! Usage records reported by applications, and the counter updates they turn into.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Timelike, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::money::{Currency, Money, parse_decimal};
use crate::period::{YearMonth, Zone};
use crate::pricing::{PriceBook, Tokens};
use crate::scope::Scope;

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
    pub requests: Option<i64>,
    #[serde(default)]
    pub cost: Option<CostWire>,
    pub timestamp: String,
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
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        UsageError {
            field,
            message: message.into(),
        }
    }
}

const MAX_ID_LEN: usize = 128;
const MAX_LABEL_LEN: usize = 128;

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
        Some(v) => Ok(v as u64),
    }
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
    /// Checks every field and prices the record with `prices` when it carries no cost.
    pub fn validate(self, prices: &PriceBook) -> Result<UsageRecord, UsageError> {
        if self.id.is_empty()
            || self.id.len() > MAX_ID_LEN
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        {
            return Err(UsageError::new(
                "id",
                format!(
                    "must be 1 to {MAX_ID_LEN} characters of letters, digits, `.`, `_`, `-`, `:`"
                ),
            ));
        }
        let scope =
            Scope::parse(&self.scope).map_err(|e| UsageError::new("scope", e.to_string()))?;
        if scope.is_root() {
            return Err(UsageError::new(
                "scope",
                "usage must belong to a scope below `*`",
            ));
        }
        let timestamp = DateTime::parse_from_rfc3339(&self.timestamp)
            .map_err(|e| UsageError::new("timestamp", format!("not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc);
        let provider =
            label("provider", self.provider)?.unwrap_or_else(|| scope.provider().to_string());
        let model = label("model", self.model)?;
        let tokens = Tokens {
            input: count("tokens_in", self.tokens_in, 0)?,
            output: count("tokens_out", self.tokens_out, 0)?,
            cached: count("tokens_cached", self.tokens_cached, 0)?,
        };
        let requests = count("requests", self.requests, 1)?;
        let cost = match self.cost {
            Some(c) => {
                let amount =
                    json_decimal(&c.amount).map_err(|m| UsageError::new("cost.amount", m))?;
                if amount.is_sign_negative() && !amount.is_zero() {
                    return Err(UsageError::new(
                        "cost.amount",
                        format!("must not be negative (got {amount})"),
                    ));
                }
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
                prices
                    .cost(&provider, model, tokens)
                    .map_err(|e| UsageError::new("model", e.to_string()))?
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
    pub fn of(record: &UsageRecord) -> Tally {
        let mut t = Tally::default();
        t.add(Metric::Cost(record.cost.currency), record.cost.amount);
        t.add(Metric::Requests, record.requests.into());
        t.add(Metric::TokensIn, record.tokens.input.into());
        t.add(Metric::TokensOut, record.tokens.output.into());
        t.add(Metric::TokensCached, record.tokens.cached.into());
        t.add(Metric::Records, Decimal::ONE);
        t
    }

    pub fn add(&mut self, metric: Metric, value: Decimal) {
        *self.0.entry(metric).or_default() += value;
    }

    pub fn merge(&mut self, other: &Tally) {
        for (m, v) in &other.0 {
            self.add(*m, *v);
        }
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
}

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

/// One hour of one scope: every metric's total, and requests per minute (bursts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourCounters {
    pub total: Tally,
    pub requests_by_minute: BTreeMap<u32, Decimal>,
}

impl HourCounters {
    pub fn add(&mut self, minute: u32, tally: &Tally) {
        self.total.merge(tally);
        let requests = tally.get(Metric::Requests);
        if !requests.is_zero() {
            *self.requests_by_minute.entry(minute).or_default() += requests;
        }
    }

    pub fn merge(&mut self, other: &HourCounters) {
        self.total.merge(&other.total);
        for (minute, requests) in &other.requests_by_minute {
            *self.requests_by_minute.entry(*minute).or_default() += requests;
        }
    }

    /// The most requests counted in one minute of the hour.
    pub fn busiest_minute(&self) -> Decimal {
        self.requests_by_minute
            .values()
            .copied()
            .max()
            .unwrap_or_default()
    }

    /// The named numbers both store adapters keep: `t_<metric>` totals, `m<minute>` requests.
    pub fn buckets(&self) -> Vec<(String, Decimal)> {
        let totals = self.total.0.iter().map(|(m, v)| (format!("t_{m}"), *v));
        let minutes = self
            .requests_by_minute
            .iter()
            .map(|(minute, v)| (format!("m{minute:02}"), *v));
        totals.chain(minutes).collect()
    }

    /// Reads back one bucket written by [`HourCounters::buckets`]; other names are ignored.
    pub fn add_bucket(&mut self, name: &str, value: Decimal) {
        if let Some(metric) = name.strip_prefix("t_").and_then(Metric::parse) {
            self.total.add(metric, value);
        } else if let Some(minute) = name
            .strip_prefix('m')
            .and_then(|m| m.parse::<u32>().ok())
            .filter(|m| *m < 60)
        {
            *self.requests_by_minute.entry(minute).or_default() += value;
        }
    }
}

/// An increment of one hour counter, at one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourDelta {
    pub key: HourKey,
    pub minute: u32,
    pub tally: Tally,
}

/// A record ready for ingestion: its id and every counter increment it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    pub id: String,
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
    /// The counter increments of `record`: for every zone, every scope it counts toward.
    pub fn of(record: &UsageRecord, zones: &[Zone]) -> UsageEntry {
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
        // hourly counters for the record's scope path (keys live there), not the root
        let hours = record
            .scope
            .rollup()
            .into_iter()
            .filter(|s| !s.is_root())
            .map(|scope| HourDelta {
                key: HourKey::of(scope, record.timestamp),
                minute: record.timestamp.minute(),
                tally: tally.clone(),
            })
            .collect();
        UsageEntry {
            id: record.id.clone(),
            deltas,
            hours,
        }
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
) -> BTreeMap<HourKey, HourCounters> {
    let mut out: BTreeMap<HourKey, HourCounters> = BTreeMap::new();
    for entry in entries {
        for h in &entry.hours {
            out.entry(h.key.clone())
                .or_default()
                .add(h.minute, &h.tally);
        }
    }
    out
}

/// Sums the increments of several entries per counter and day (one write per counter item).
pub fn presum<'a>(
    entries: impl IntoIterator<Item = &'a UsageEntry>,
) -> BTreeMap<CounterKey, BTreeMap<u32, Tally>> {
    let mut out: BTreeMap<CounterKey, BTreeMap<u32, Tally>> = BTreeMap::new();
    for entry in entries {
        for d in &entry.deltas {
            out.entry(d.key.clone())
                .or_default()
                .entry(d.day)
                .or_default()
                .merge(&d.tally);
        }
    }
    out
}

/// What ingestion did with each record id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: Vec<String>,
    pub duplicates: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn wire(json: &str) -> UsageWire {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn json_number_costs_are_read_exactly() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod","cost":{"amount":0.1,"currency":"usd"},"timestamp":"2026-11-22T10:00:00Z"}"#)
            .validate(&PriceBook::default())
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
            let err = wire(json).validate(&PriceBook::default()).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn one_record_updates_every_rollup_scope_in_every_zone() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod/key-1","cost":{"amount":"2","currency":"USD"},"timestamp":"2026-11-30T23:30:00Z"}"#)
            .validate(&PriceBook::default())
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
            .validate(&PriceBook::default())
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
                .validate(&PriceBook::default())
                .unwrap()
        };
        let entries = [
            UsageEntry::of(&mk("1", "1.10"), &[Zone::UTC]),
            UsageEntry::of(&mk("2", "2.20"), &[Zone::UTC]),
        ];
        let sums = presum(&entries);
        assert_eq!(sums.len(), 3); // a/b, a, *
        for days in sums.values() {
            let t = &days[&22];
            assert_eq!(t.get(Metric::Cost(Currency::USD)), dec!(3.30));
            assert_eq!(t.get(Metric::Records), dec!(2));
        }
    }

    #[test]
    fn hour_counters_keep_totals_and_requests_per_minute_through_their_buckets() {
        let r = wire(r#"{"id":"r1","scope":"openai/prod/key-1","requests":7,"cost":{"amount":"2.5","currency":"USD"},"timestamp":"2026-11-23T03:17:45Z"}"#)
            .validate(&PriceBook::default())
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
        let twice = presum_hours([&entry, &entry]);
        let counters = &twice[&entry.hours[0].key];
        assert_eq!(counters.total.get(Metric::Cost(Currency::USD)), dec!(5.0));
        assert_eq!(counters.busiest_minute(), dec!(14));
        let mut back = HourCounters::default();
        for (name, value) in counters.buckets() {
            back.add_bucket(&name, value);
        }
        back.add_bucket("expires_at", dec!(99));
        assert_eq!(&back, counters);
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
