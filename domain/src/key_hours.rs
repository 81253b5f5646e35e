//! One key's hours as theft detection sees them: the figures of an hour (spendguard's counters
//! merged with the provider's own count) and the detectors that fired on it.

use crate::money::{Currency, FxRates};
use crate::settings::Detector;
use crate::settings::ThreatLevel;
use crate::usage::HourCounters;
use crate::usage::Metric;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One hour of one key, as detection sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourFigures {
    #[serde(with = "rust_decimal::serde::str")]
    pub spend: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub requests: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub busiest_minute: Decimal,
    /// Input and output tokens.
    #[serde(default, with = "rust_decimal::serde::str")]
    pub tokens: Decimal,
    /// Some of the hour's usage came in records that sum up more than an hour: when in the
    /// day it happened is unknown.
    #[serde(default)]
    pub aggregated: bool,
}

impl HourFigures {
    /// Spend in `currency`; a cost in a currency without a configured rate is left out.
    pub fn of(c: &HourCounters, currency: Currency, rates: &FxRates) -> HourFigures {
        let spend = c
            .total
            .costs()
            .filter_map(|m| rates.convert(m, currency).ok())
            .map(|m| m.amount)
            .fold(Decimal::ZERO, Decimal::saturating_add);
        HourFigures {
            spend,
            requests: c.total.get(Metric::Requests),
            busiest_minute: c.busiest_minute(),
            // stored counters are bounded (MAX_COUNTER_VALUE): saturation is never reached,
            // and a saturated figure would still be flagged
            tokens: c
                .total
                .get(Metric::TokensIn)
                .saturating_add(c.total.get(Metric::TokensOut)),
            aggregated: !c.aggregates.is_zero(),
        }
    }

    /// What the provider counted for the key's hour: it also sees calls nobody reported.
    pub fn merge_provider(&mut self, provider: &ProviderHour) {
        self.requests = self.requests.max(provider.requests);
        self.tokens = self.tokens.max(provider.tokens);
    }

    pub fn used(&self) -> bool {
        !self.requests.is_zero() || !self.spend.is_zero() || !self.tokens.is_zero()
    }
}

/// One detector that fired, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub detector: Detector,
    pub level: ThreatLevel,
    pub evidence: String,
}

/// One key's hour as the provider counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderHour {
    /// Model requests (OpenAI reports them; Anthropic's usage report does not: zero).
    pub requests: Decimal,
    /// Input (cached or not) and output tokens.
    pub tokens: Decimal,
}

/// Per provider key id and hour start.
pub type KeyHours = BTreeMap<(String, DateTime<Utc>), ProviderHour>;
