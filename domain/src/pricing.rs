//! The price book: what a million tokens cost, per provider and model.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

/// Prices per million tokens for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str")]
    pub input: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub output: Decimal,
    /// Cached (cache-read) input tokens; the input price applies when absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cached_input: Option<Decimal>,
}

/// Keyed by `provider/model`, e.g. `openai/gpt-4o`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook(pub BTreeMap<String, Price>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error(
        "no price for model `{provider}/{model}`: send `cost` with the record or add [prices.\"{provider}/{model}\"] to the budgets file"
    )]
    NoPrice { provider: String, model: String },
    #[error("the tokens priced at `{provider}/{model}` cost more than an amount can hold")]
    OutOfRange { provider: String, model: String },
}

/// Token counts of one call. `input` excludes cached tokens, which are counted in `cached`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

impl PriceBook {
    /// The model's price; a dated snapshot the book does not name (`gpt-4o-2024-08-06`,
    /// `claude-sonnet-4-5-20250929`: the names in the providers' usage data) has its base
    /// model's price.
    pub fn price_of(&self, provider: &str, model: &str) -> Option<&Price> {
        let snapshot_base = || {
            [("%Y-%m-%d", 10), ("%Y%m%d", 8)]
                .into_iter()
                .find_map(|(format, len)| {
                    let split = model.len().checked_sub(len + 1)?;
                    let (base, date) = (model.get(..split)?, model.get(split + 1..)?);
                    (model.get(split..=split)? == "-"
                        && chrono::NaiveDate::parse_from_str(date, format).is_ok())
                    .then_some(base)
                })
        };
        self.0
            .get(&format!("{provider}/{model}"))
            .or_else(|| snapshot_base().and_then(|base| self.0.get(&format!("{provider}/{base}"))))
    }

    /// The cost of `tokens` on `provider/model`.
    pub fn cost(&self, provider: &str, model: &str, tokens: Tokens) -> Result<Money, PriceError> {
        let price = self
            .price_of(provider, model)
            .ok_or_else(|| PriceError::NoPrice {
                provider: provider.to_string(),
                model: model.to_string(),
            })?;
        let per_million = Decimal::from(1_000_000u32);
        let cached_price = price.cached_input.unwrap_or(price.input);
        let part = |count: u64, price: Decimal| Decimal::from(count).checked_mul(price);
        let total = part(tokens.input, price.input)
            .zip(part(tokens.output, price.output))
            .and_then(|(a, b)| a.checked_add(b))
            .zip(part(tokens.cached, cached_price))
            .and_then(|(a, b)| a.checked_add(b))
            .ok_or_else(|| PriceError::OutOfRange {
                provider: provider.to_string(),
                model: model.to_string(),
            })?;
        Ok(Money::new(total / per_million, price.currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn book() -> PriceBook {
        let mut m = BTreeMap::new();
        m.insert(
            "openai/gpt-4o".to_string(),
            Price {
                currency: Currency::USD,
                input: dec!(2.50),
                output: dec!(10.00),
                cached_input: Some(dec!(1.25)),
            },
        );
        m.insert(
            "anthropic/claude-sonnet".to_string(),
            Price {
                currency: Currency::USD,
                input: dec!(3),
                output: dec!(15),
                cached_input: None,
            },
        );
        PriceBook(m)
    }

    #[test]
    fn prices_input_output_and_cached_tokens_exactly() {
        let tokens = Tokens {
            input: 1_000,
            output: 500,
            cached: 2_000,
        };
        // 1000*2.5 + 500*10 + 2000*1.25 = 2500 + 5000 + 2500 = 10000 per million
        let cost = book().cost("openai", "gpt-4o", tokens).unwrap();
        assert_eq!(cost, Money::new(dec!(0.01), Currency::USD));
    }

    #[test]
    fn cached_tokens_fall_back_to_the_input_price() {
        let tokens = Tokens {
            input: 0,
            output: 0,
            cached: 1_000_000,
        };
        let cost = book().cost("anthropic", "claude-sonnet", tokens).unwrap();
        assert_eq!(cost.amount, dec!(3));
    }

    #[test]
    fn a_dated_snapshot_is_priced_at_its_base_model_unless_it_has_its_own_price() {
        let mut book = book();
        book.0.insert(
            "anthropic/claude-sonnet-4-5".to_string(),
            Price {
                currency: Currency::USD,
                input: dec!(3),
                output: dec!(15),
                cached_input: None,
            },
        );
        let gpt_4o = book.price_of("openai", "gpt-4o").cloned();
        assert_eq!(
            book.price_of("openai", "gpt-4o-2024-08-06").cloned(),
            gpt_4o
        );
        assert_eq!(
            book.price_of("anthropic", "claude-sonnet-4-5-20250929")
                .map(|p| p.input),
            Some(dec!(3))
        );
        // the snapshot's own price first
        let mut snapshot = gpt_4o.clone().unwrap();
        snapshot.input = dec!(5);
        book.0
            .insert("openai/gpt-4o-2024-05-13".to_string(), snapshot.clone());
        assert_eq!(
            book.price_of("openai", "gpt-4o-2024-05-13"),
            Some(&snapshot)
        );
        // only a trailing date is a snapshot: neither a version nor a partial date
        assert_eq!(book.price_of("openai", "gpt-4o-mini"), None);
        assert_eq!(book.price_of("openai", "gpt-4o-2024"), None);
        assert_eq!(book.price_of("openai", "gpt-4o-2024-13-45"), None);
    }

    #[test]
    fn unknown_model_says_how_to_fix_it() {
        let err = book().cost("openai", "o9", Tokens::default()).unwrap_err();
        assert!(err.to_string().contains("[prices.\"openai/o9\"]"));
    }
}
