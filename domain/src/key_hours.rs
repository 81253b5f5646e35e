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
    /// What the provider's own usage of the hour costs at the price book (ADR 026); `spend`
    /// is what the applications reported.
    #[serde(default, with = "rust_decimal::serde::str")]
    pub provider_spend: Decimal,
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
            provider_spend: Decimal::ZERO,
        }
    }

    /// What the provider counted for the key's hour, every kind of usage together: it also
    /// sees calls nobody reported.
    pub fn merge_provider(&mut self, provider: &ProviderHour) {
        let total = provider.total();
        self.requests = self.requests.max(total.requests);
        self.tokens = self.tokens.max(total.tokens());
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

/// One kind of usage of one model in a key's hour, as the provider counted it. Each kind
/// fills the units it has: tokens (completions, embeddings, moderations, messages), images,
/// characters (speech), seconds (transcriptions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderUsage {
    /// Model requests (Anthropic's usage report does not count them: zero).
    pub requests: Decimal,
    /// Input tokens not read from a cache (Anthropic: cache writes included).
    pub input_tokens: Decimal,
    /// Input tokens read from a cache.
    pub cached_tokens: Decimal,
    pub output_tokens: Decimal,
    /// Audio input and output tokens (OpenAI completions), priced apart from text tokens.
    #[serde(default)]
    pub audio_tokens: Decimal,
    pub images: Decimal,
    pub characters: Decimal,
    pub seconds: Decimal,
}

impl ProviderUsage {
    pub fn tokens(&self) -> Decimal {
        self.input_tokens
            .saturating_add(self.cached_tokens)
            .saturating_add(self.output_tokens)
            .saturating_add(self.audio_tokens)
    }

    /// Adds `other` (a provider's figures are not bounded by us: saturating).
    pub fn add(&mut self, other: &ProviderUsage) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.audio_tokens = self.audio_tokens.saturating_add(other.audio_tokens);
        self.images = self.images.saturating_add(other.images);
        self.characters = self.characters.saturating_add(other.characters);
        self.seconds = self.seconds.saturating_add(other.seconds);
    }

    /// `1200 tokens, 4 images`: the units this usage has.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.tokens(), "tokens"),
            (self.audio_tokens, "of them audio"),
            (self.images, "images"),
            (self.characters, "characters"),
            (self.seconds, "seconds"),
        ]
        .into_iter()
        .filter(|(n, _)| !n.is_zero())
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
        if parts.is_empty() {
            format!("{} requests", self.requests)
        } else {
            parts.join(", ")
        }
    }
}

/// The usage kind of completions made through OpenAI's Batch API: charged at a discount the
/// price book does not hold, so never priced at the book's full price (ADR 026).
pub const BATCH_KIND: &str = "batch";

/// One key's hour as the provider counted it: per usage kind (`completions`, `embeddings`,
/// `images`, …; Anthropic `messages`) and model (empty when the provider did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderHour {
    pub usage: BTreeMap<(String, String), ProviderUsage>,
}

impl ProviderHour {
    pub fn add(&mut self, kind: &str, model: &str, usage: &ProviderUsage) {
        self.usage
            .entry((kind.to_string(), model.to_string()))
            .or_default()
            .add(usage);
    }

    pub fn total(&self) -> ProviderUsage {
        let mut total = ProviderUsage::default();
        for u in self.usage.values() {
            total.add(u);
        }
        total
    }

    /// Per kind: what the hour had of each (`embeddings 1200 tokens; images 4 images`).
    pub fn by_kind(&self) -> String {
        let mut kinds: BTreeMap<&str, ProviderUsage> = BTreeMap::new();
        for ((kind, _), u) in &self.usage {
            kinds.entry(kind).or_default().add(u);
        }
        kinds
            .iter()
            .map(|(kind, u)| format!("{kind} {}", u.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Per provider key id and hour start.
pub type KeyHours = BTreeMap<(String, DateTime<Utc>), ProviderHour>;
