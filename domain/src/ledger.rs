//! Two ledgers (ADR 026): what the applications reported a key spent, and what the provider
//! counted for it. A provider ledger well above the reports is spend nobody reported (a leaked
//! key, an uninstrumented caller); reports well above what the provider charged is a price
//! book that has drifted from the provider's prices. Pure: the scan and the report feed it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use crate::key_hours::{BATCH_KIND, ProviderHour, ProviderUsage, Signal};
use crate::money::{Currency, FxRates, Money};
use crate::pricing::{Call, PriceBook, Tokens};
use crate::settings::{Detector, SecurityPolicy};

/// The provider's usage of one key's hour at the price book.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderSpend {
    pub amount: Decimal,
    /// `kind/model` usage the price book has no price for (images, audio, unknown models):
    /// not in `amount`, so the provider ledger is a lower bound.
    pub unpriced: BTreeSet<String>,
}

/// What `hour` costs at `prices` for `provider` (`openai`, `anthropic`), in `currency`.
pub fn provider_spend(
    provider: &str,
    hour: &ProviderHour,
    prices: &PriceBook,
    currency: Currency,
    rates: &FxRates,
) -> ProviderSpend {
    let mut spend = ProviderSpend::default();
    for ((kind, model), usage) in &hour.usage {
        let other_units = !(usage.images.is_zero()
            && usage.characters.is_zero()
            && usage.seconds.is_zero()
            && usage.audio_tokens.is_zero());
        if other_units {
            spend.unpriced.insert(format!("{kind}/{model}"));
        }
        if kind == BATCH_KIND {
            spend.unpriced.insert(format!("{kind}/{model}"));
            continue;
        }
        // no text tokens: nothing the book prices
        if usage.tokens() == usage.audio_tokens {
            continue;
        }
        let count = |d: Decimal| d.to_u64().unwrap_or(u64::MAX);
        // cache writes are in `input_tokens` (Anthropic): priced as input, a lower bound
        let tokens = Tokens {
            input: count(usage.input_tokens),
            output: count(usage.output_tokens),
            cached: count(usage.cached_tokens),
            cache_write: 0,
        };
        // an hour's tokens are many requests: without their count (Anthropic reports none)
        // the long-context tier cannot be told apart, so the base price applies (a lower bound)
        let requests = match count(usage.requests) {
            0 => u64::MAX,
            n => n,
        };
        let call = Call {
            tokens,
            requests,
            batch: false,
        };
        match prices
            .cost(provider, model, call)
            .ok()
            .and_then(|m| rates.convert(m, currency).ok())
        {
            Some(m) => spend.amount = spend.amount.saturating_add(m.amount),
            None => {
                spend.unpriced.insert(format!("{kind}/{model}"));
            }
        }
    }
    spend
}

/// How long after its end an hour's reports are waited for before its two ledgers are
/// compared: applications report minutes after the provider has counted, and a finding once
/// raised is never taken back.
pub const REPORT_GRACE: Duration = Duration::minutes(15);

/// Whether a key's `hour` can be judged for unreported spend at `now`: it has ended at least
/// [`REPORT_GRACE`] ago, and the key's reports are per hour. A key whose reports sum up more
/// than an hour (`aggregated`: in its baseline or on the hour's day) puts a day's spend in one
/// hour and nothing in the others, so its hours cannot be compared with the provider's.
pub fn comparable(hour: DateTime<Utc>, now: DateTime<Utc>, aggregated: bool) -> bool {
    !aggregated && now >= hour + Duration::hours(1) + REPORT_GRACE
}

/// The `unreported_spend` signal of a key's hour: the provider's ledger at least
/// `unreported_ratio` times the reported spend, and at least `min_unreported_cost` above
/// nothing, so that pennies never fire.
pub fn unreported_spend(
    reported: Decimal,
    provider: &ProviderSpend,
    usage: &ProviderHour,
    policy: &SecurityPolicy,
) -> Option<Signal> {
    if provider.amount < policy.min_unreported_cost
        || provider.amount < reported.saturating_mul(policy.unreported_ratio)
    {
        return None;
    }
    let c = policy.currency;
    let times = match provider.amount.checked_div(reported) {
        _ if reported.is_zero() => "nothing reported".to_string(),
        Some(ratio) => format!("{}x the reported", ratio.round_dp(1).normalize()),
        None => "far above the reported".to_string(),
    };
    let mut evidence = format!(
        "the provider counted {} ({}; {times}), the applications reported {}",
        Money::new(provider.amount, c),
        usage.by_kind(),
        Money::new(reported, c)
    );
    if !provider.unpriced.is_empty() {
        let unpriced: Vec<&str> = provider.unpriced.iter().map(String::as_str).collect();
        evidence.push_str(&format!(
            "; not priced (no price in the price book): {}",
            unpriced.join(", ")
        ));
    }
    Some(Signal {
        detector: Detector::UnreportedSpend,
        level: policy.level(Detector::UnreportedSpend),
        evidence,
    })
}

/// One model whose price-book price of a completed day is well above what the provider
/// charged for the same usage: the price book has drifted (or the provider cut its price).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceBookDrift {
    /// The provider's scope of the charge (an OpenAI project id).
    pub scope: String,
    pub day: NaiveDate,
    pub model: String,
    pub priced: Money,
    pub charged: Money,
}

impl PriceBookDrift {
    pub fn summary(&self) -> String {
        let times = self
            .priced
            .amount
            .checked_div(self.charged.amount)
            .map(|ratio| format!(" ({}x)", ratio.round_dp(1).normalize()))
            .unwrap_or_default();
        format!(
            "price book drift: {} on {} in {}: priced {} at the price book, charged {} by the provider{times}",
            self.model, self.day, self.scope, self.priced, self.charged
        )
    }
}

/// The models of one scope and completed day whose priced usage is at least `ratio` times
/// what the provider charged for them. A model the provider charged nothing for (or less:
/// a refund line), or that was priced at less than `min` (pennies), is never drift.
pub fn price_book_drift(
    scope: &str,
    day: NaiveDate,
    priced: &BTreeMap<String, Decimal>,
    charged: &BTreeMap<String, Decimal>,
    ratio: Decimal,
    min: Decimal,
    currency: Currency,
) -> Vec<PriceBookDrift> {
    priced
        .iter()
        .filter_map(|(model, p)| {
            let c = charged.get(model).copied().unwrap_or_default();
            (*p >= min && c > Decimal::ZERO && *p >= c.saturating_mul(ratio)).then(|| {
                PriceBookDrift {
                    scope: scope.to_string(),
                    day,
                    model: model.clone(),
                    priced: Money::new(*p, currency),
                    charged: Money::new(c, currency),
                }
            })
        })
        .collect()
}

/// The provider's own ledger of one completed day: token usage and charges per scope (an
/// OpenAI project) and model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayLedger {
    pub usage: BTreeMap<(String, String), ProviderUsage>,
    pub charged: BTreeMap<(String, String), Money>,
}

type ByModel = BTreeMap<String, Decimal>;

/// The models of `ledger` whose usage, priced at the price book, is at least
/// `price_book_drift_ratio` times what `provider` charged for it that day (and at least
/// `min_unreported_cost`: pennies never drift). Usage the book has no price for is left out.
pub fn day_drift(
    provider: &str,
    day: NaiveDate,
    ledger: &DayLedger,
    prices: &PriceBook,
    policy: &SecurityPolicy,
    rates: &FxRates,
) -> Vec<PriceBookDrift> {
    let c = policy.currency;
    // per scope: priced and charged, per model
    let mut by_scope: BTreeMap<&str, (ByModel, ByModel)> = BTreeMap::new();
    for ((scope, model), usage) in &ledger.usage {
        let mut hour = ProviderHour::default();
        hour.add("", model, usage);
        let spend = provider_spend(provider, &hour, prices, c, rates);
        if spend.unpriced.is_empty() {
            let priced = &mut by_scope.entry(scope).or_default().0;
            let sum = priced.entry(model.clone()).or_default();
            *sum = sum.saturating_add(spend.amount);
        }
    }
    for ((scope, model), money) in &ledger.charged {
        if let Ok(m) = rates.convert(*money, c) {
            let charged = &mut by_scope.entry(scope).or_default().1;
            let sum = charged.entry(model.clone()).or_default();
            *sum = sum.saturating_add(m.amount);
        }
    }
    by_scope
        .iter()
        .flat_map(|(scope, (priced, charged))| {
            price_book_drift(
                scope,
                day,
                priced,
                charged,
                policy.price_book_drift_ratio,
                policy.min_unreported_cost,
                c,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hours::ProviderUsage;
    use crate::pricing::Price;
    use rust_decimal_macros::dec;

    fn book() -> PriceBook {
        PriceBook(BTreeMap::from([(
            "openai/text-embedding-3-large".to_string(),
            Price {
                currency: Currency::USD,
                input: dec!(0.13),
                output: dec!(0),
                cached_input: None,
                cache_write: None,
                batch_percent: None,
                long_context: None,
            },
        )]))
    }

    fn thief() -> ProviderHour {
        let mut hour = ProviderHour::default();
        hour.add(
            "embeddings",
            "text-embedding-3-large",
            &ProviderUsage {
                requests: dec!(500),
                input_tokens: dec!(100_000_000),
                ..ProviderUsage::default()
            },
        );
        hour.add(
            "images",
            "gpt-image-1",
            &ProviderUsage {
                requests: dec!(40),
                images: dec!(40),
                ..ProviderUsage::default()
            },
        );
        hour
    }

    #[test]
    fn tokens_are_priced_and_other_units_are_named_as_unpriced() {
        let spend = provider_spend(
            "openai",
            &thief(),
            &book(),
            Currency::USD,
            &FxRates::default(),
        );
        assert_eq!(spend.amount, dec!(13));
        assert_eq!(
            spend.unpriced.iter().collect::<Vec<_>>(),
            ["images/gpt-image-1"]
        );
    }

    #[test]
    fn an_hour_is_comparable_once_ended_and_graced_and_only_without_aggregates() {
        let hour: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(!comparable(hour, at("2026-11-23T10:40:00Z"), false));
        assert!(!comparable(hour, at("2026-11-23T11:14:59Z"), false));
        assert!(comparable(hour, at("2026-11-23T11:15:00Z"), false));
        assert!(!comparable(hour, at("2026-11-23T13:00:00Z"), true));
    }

    #[test]
    fn audio_tokens_are_named_unpriced_and_text_tokens_priced() {
        let mut hour = ProviderHour::default();
        hour.add(
            "completions",
            "text-embedding-3-large",
            &ProviderUsage {
                input_tokens: dec!(100_000_000),
                audio_tokens: dec!(5_000),
                ..ProviderUsage::default()
            },
        );
        let spend = provider_spend("openai", &hour, &book(), Currency::USD, &FxRates::default());
        assert_eq!(spend.amount, dec!(13));
        assert_eq!(
            spend.unpriced.iter().collect::<Vec<_>>(),
            ["completions/text-embedding-3-large"]
        );
    }

    #[test]
    fn batch_usage_is_named_unpriced_not_priced_at_the_full_price() {
        let mut hour = ProviderHour::default();
        hour.add(
            BATCH_KIND,
            "text-embedding-3-large",
            &ProviderUsage {
                input_tokens: dec!(100_000_000),
                ..ProviderUsage::default()
            },
        );
        let spend = provider_spend("openai", &hour, &book(), Currency::USD, &FxRates::default());
        assert_eq!(spend.amount, dec!(0));
        assert_eq!(
            spend.unpriced.iter().collect::<Vec<_>>(),
            ["batch/text-embedding-3-large"]
        );
    }

    #[test]
    fn unreported_spend_fires_above_the_ratio_and_the_minimum_only() {
        let policy = SecurityPolicy::default();
        let hour = thief();
        let spend = provider_spend("openai", &hour, &book(), Currency::USD, &FxRates::default());
        let signal = unreported_spend(dec!(0), &spend, &hour, &policy).expect("13 USD unreported");
        assert_eq!(signal.detector, Detector::UnreportedSpend);
        assert!(
            signal.evidence.contains(
                "the provider counted 13.00 USD (embeddings 100000000 tokens; images 40 images; nothing reported)"
            ),
            "{}",
            signal.evidence
        );
        assert!(signal.evidence.contains("images/gpt-image-1"));
        // reported 7: 13 is less than twice that
        assert_eq!(unreported_spend(dec!(7), &spend, &hour, &policy), None);
        // reported 6.50: exactly twice
        assert!(unreported_spend(dec!(6.5), &spend, &hour, &policy).is_some());
        // pennies: 4.99 unreported is below the minimum
        let pennies = ProviderSpend {
            amount: dec!(4.99),
            unpriced: BTreeSet::new(),
        };
        assert_eq!(unreported_spend(dec!(0), &pennies, &hour, &policy), None);
        // a ratio too large for a decimal still fires, without one
        let tiny = Decimal::new(1, 28);
        let signal = unreported_spend(tiny, &spend, &hour, &policy).expect("13 USD unreported");
        assert!(signal.evidence.contains("13.00 USD"), "{}", signal.evidence);
    }

    #[test]
    fn a_days_ledger_drifts_where_the_book_prices_twice_the_charge() {
        let day: NaiveDate = "2026-11-22".parse().unwrap();
        let mut ledger = DayLedger::default();
        let tokens = |n: i64| ProviderUsage {
            input_tokens: Decimal::from(n),
            ..ProviderUsage::default()
        };
        // the book says 0.13 per million; the provider charged 0.065 (half) and 0.13 (the same)
        ledger.usage.insert(
            ("proj_a".into(), "text-embedding-3-large".into()),
            tokens(100_000_000),
        );
        ledger.usage.insert(
            ("proj_b".into(), "text-embedding-3-large".into()),
            tokens(100_000_000),
        );
        ledger.charged.insert(
            ("proj_a".into(), "text-embedding-3-large".into()),
            Money::new(dec!(6.5), Currency::USD),
        );
        ledger.charged.insert(
            ("proj_b".into(), "text-embedding-3-large".into()),
            Money::new(dec!(13), Currency::USD),
        );
        let drift = day_drift(
            "openai",
            day,
            &ledger,
            &book(),
            &SecurityPolicy::default(),
            &FxRates::default(),
        );
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert_eq!(
            (drift[0].scope.as_str(), drift[0].model.as_str()),
            ("proj_a", "text-embedding-3-large")
        );
    }

    #[test]
    fn a_refund_is_no_drift() {
        let day: NaiveDate = "2026-11-22".parse().unwrap();
        let priced = BTreeMap::from([("gpt-4o".to_string(), dec!(20))]);
        let refunded = BTreeMap::from([("gpt-4o".to_string(), dec!(-3))]);
        let drift = price_book_drift(
            "proj_a",
            day,
            &priced,
            &refunded,
            dec!(1.5),
            dec!(1),
            Currency::USD,
        );
        assert_eq!(drift, [], "a negative charge is a refund line, not a price");
    }

    #[test]
    fn drift_names_the_models_priced_well_above_their_charge() {
        let day: NaiveDate = "2026-11-22".parse().unwrap();
        let priced = BTreeMap::from([
            ("gpt-4o".to_string(), dec!(20)),
            ("gpt-4o-mini".to_string(), dec!(1.05)),
            ("o3".to_string(), dec!(0.02)),
        ]);
        let charged = BTreeMap::from([
            ("gpt-4o".to_string(), dec!(10)),
            ("gpt-4o-mini".to_string(), dec!(1)),
            ("o3".to_string(), dec!(0.01)),
        ]);
        let drift = price_book_drift(
            "proj_a",
            day,
            &priced,
            &charged,
            dec!(1.5),
            dec!(1),
            Currency::USD,
        );
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert_eq!(drift[0].model, "gpt-4o");
        assert_eq!(
            drift[0].summary(),
            "price book drift: gpt-4o on 2026-11-22 in proj_a: priced 20.00 USD at the price book, charged 10.00 USD by the provider (2x)"
        );
    }
}
