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
    /// Cache-write (cache-creation) input tokens; the input price applies when absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cache_write: Option<Decimal>,
    /// What a batch call costs, in percent of the price (the providers' batch APIs: 50); the
    /// full price when absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub batch_percent: Option<Decimal>,
    /// The long-context tier: the prices of a request whose prompt is larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
}

/// Prices for requests whose prompt (input, cached and cache-write tokens) is above
/// `above_input_tokens`: they apply to all of such a request's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongContext {
    pub above_input_tokens: u64,
    #[serde(with = "rust_decimal::serde::str")]
    pub input: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub output: Decimal,
    /// The tier's input price when absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cached_input: Option<Decimal>,
    /// The tier's input price when absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cache_write: Option<Decimal>,
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

/// Token counts of a record. `input` excludes cached and cache-write tokens, which are counted
/// in `cached` and `cache_write`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub cache_write: u64,
}

/// What a record priced: its tokens, over how many requests, and whether through a batch API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub tokens: Tokens,
    /// A record of several requests is priced at its average prompt per request.
    pub requests: u64,
    pub batch: bool,
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

    /// The cost of `call` on `provider/model`, every step checked.
    pub fn cost(&self, provider: &str, model: &str, call: Call) -> Result<Money, PriceError> {
        let price = self
            .price_of(provider, model)
            .ok_or_else(|| PriceError::NoPrice {
                provider: provider.to_string(),
                model: model.to_string(),
            })?;
        let out = || PriceError::OutOfRange {
            provider: provider.to_string(),
            model: model.to_string(),
        };
        let t = call.tokens;
        let prompt = u128::from(t.input) + u128::from(t.cached) + u128::from(t.cache_write);
        let long = price.long_context.as_ref().filter(|l| {
            prompt > u128::from(l.above_input_tokens) * u128::from(call.requests.max(1))
        });
        let (input, output, cached, cache_write) = match long {
            Some(l) => (l.input, l.output, l.cached_input, l.cache_write),
            None => (
                price.input,
                price.output,
                price.cached_input,
                price.cache_write,
            ),
        };
        let mut total = Decimal::ZERO;
        for (count, per_million) in [
            (t.input, input),
            (t.output, output),
            (t.cached, cached.unwrap_or(input)),
            (t.cache_write, cache_write.unwrap_or(input)),
        ] {
            total = Decimal::from(count)
                .checked_mul(per_million)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(out)?;
        }
        if let Some(percent) = price.batch_percent.filter(|_| call.batch) {
            total = total.checked_mul(percent).ok_or_else(out)? / Decimal::ONE_HUNDRED;
        }
        Ok(Money::new(
            total / Decimal::from(1_000_000u32),
            price.currency,
        ))
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
                cache_write: None,
                batch_percent: Some(dec!(50)),
                long_context: None,
            },
        );
        m.insert(
            "anthropic/claude-sonnet".to_string(),
            Price {
                currency: Currency::USD,
                input: dec!(3),
                output: dec!(15),
                cached_input: None,
                cache_write: Some(dec!(3.75)),
                batch_percent: None,
                long_context: Some(LongContext {
                    above_input_tokens: 200_000,
                    input: dec!(6),
                    output: dec!(22.50),
                    cached_input: Some(dec!(0.60)),
                    cache_write: None,
                }),
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
            cache_write: 0,
        };
        // 1000*2.5 + 500*10 + 2000*1.25 = 2500 + 5000 + 2500 = 10000 per million
        let cost = book().cost("openai", "gpt-4o", one(tokens)).unwrap();
        assert_eq!(cost, Money::new(dec!(0.01), Currency::USD));
    }

    #[test]
    fn cached_tokens_fall_back_to_the_input_price() {
        let tokens = Tokens {
            cached: 100_000,
            ..Tokens::default()
        };
        let cost = book()
            .cost("anthropic", "claude-sonnet", one(tokens))
            .unwrap();
        assert_eq!(cost.amount, dec!(0.3));
    }

    fn one(tokens: Tokens) -> Call {
        Call {
            tokens,
            requests: 1,
            batch: false,
        }
    }

    #[test]
    fn cache_writes_have_their_own_price_or_the_input_price() {
        let writes = Tokens {
            cache_write: 100_000,
            ..Tokens::default()
        };
        let sonnet = book()
            .cost("anthropic", "claude-sonnet", one(writes))
            .unwrap();
        assert_eq!(sonnet.amount, dec!(0.375));
        let gpt = book().cost("openai", "gpt-4o", one(writes)).unwrap();
        assert_eq!(
            gpt.amount,
            dec!(0.25),
            "no cache-write price: the input price"
        );
    }

    #[test]
    fn batch_calls_cost_their_percent_and_full_price_without_one() {
        let tokens = Tokens {
            input: 100_000,
            output: 100_000,
            ..Tokens::default()
        };
        let batch = Call {
            batch: true,
            ..one(tokens)
        };
        assert_eq!(
            book().cost("openai", "gpt-4o", batch).unwrap().amount,
            dec!(0.625)
        );
        assert_eq!(
            book().cost("openai", "gpt-4o", one(tokens)).unwrap().amount,
            dec!(1.25)
        );
        assert_eq!(
            book()
                .cost("anthropic", "claude-sonnet", batch)
                .unwrap()
                .amount,
            dec!(1.8),
            "no batch percent: full price"
        );
    }

    #[test]
    fn a_prompt_above_the_long_context_threshold_prices_the_whole_request_at_the_tier() {
        let at = |input: u64, cached: u64, requests: u64| {
            let call = Call {
                tokens: Tokens {
                    input,
                    output: 1_000,
                    cached,
                    cache_write: 0,
                },
                requests,
                batch: false,
            };
            book()
                .cost("anthropic", "claude-sonnet", call)
                .unwrap()
                .amount
        };
        // exactly at the threshold: the base prices (200000*3 + 1000*15) / 1e6
        assert_eq!(at(200_000, 0, 1), dec!(0.615));
        // one token above, counting cached tokens: the tier for all tokens
        // (150001*6 + 1000*22.5 + 50000*0.6) / 1e6
        assert_eq!(at(150_001, 50_000, 1), dec!(0.952506));
        // a record of two requests is priced at its average prompt: 2 x 150000 is below
        assert_eq!(at(300_000, 0, 2), dec!(0.915));
        // the OpenAI model has no tier: any prompt at the base price
        let big = one(Tokens {
            input: 1_000_000,
            ..Tokens::default()
        });
        assert_eq!(
            book().cost("openai", "gpt-4o", big).unwrap().amount,
            dec!(2.5)
        );
    }

    #[test]
    fn prices_too_large_for_an_amount_are_refused_not_wrapped() {
        let mut b = book();
        if let Some(p) = b.0.get_mut("openai/gpt-4o") {
            p.input = Decimal::MAX;
        }
        let tokens = Tokens {
            input: u64::MAX,
            ..Tokens::default()
        };
        let err = b.cost("openai", "gpt-4o", one(tokens)).unwrap_err();
        assert!(matches!(err, PriceError::OutOfRange { .. }), "{err}");
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
                cache_write: None,
                batch_percent: None,
                long_context: None,
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
        let err = book()
            .cost("openai", "o9", one(Tokens::default()))
            .unwrap_err();
        assert!(err.to_string().contains("[prices.\"openai/o9\"]"));
    }
}
