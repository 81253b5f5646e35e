//! Money: an exact decimal amount and an ISO 4217 currency. Never `f64`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Active ISO 4217 codes (plus XXX-style funds excluded): the currencies a budget may be kept in.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP",
    "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY",
    "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD",
    "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK",
    "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG",
    "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS",
    "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO 4217 currency code (for example USD, EUR, GBP)")]
pub struct UnknownCurrency(pub String);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    /// Parses a code case-insensitively (OpenAI reports `usd`).
    pub fn parse(code: &str) -> Result<Self, UnknownCurrency> {
        let upper = code.trim().to_ascii_uppercase();
        if ISO_4217.binary_search(&upper.as_str()).is_ok() {
            let b = upper.as_bytes();
            Ok(Currency([b[0], b[1], b[2]]))
        } else {
            Err(UnknownCurrency(code.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from an ASCII code in ISO_4217.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An exact amount in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Money::new(Decimal::ZERO, currency)
    }

    /// Amount given in minor units of 1/100 (Anthropic reports cents).
    pub fn from_cents(cents: Decimal, currency: Currency) -> Self {
        Money::new(cents / Decimal::ONE_HUNDRED, currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", display_amount(self.amount), self.currency)
    }
}

/// An amount as people read it: two decimals, half away from zero (`1580` -> `1580.00`).
pub fn display_amount(amount: Decimal) -> String {
    let mut rounded =
        amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded.to_string()
}

/// Parses a decimal written as text (`"12.50"`, `"1e-3"`), as providers send amounts.
pub fn parse_decimal(text: &str) -> Result<Decimal, rust_decimal::Error> {
    let t = text.trim();
    Decimal::from_str_exact(t).or_else(|_| Decimal::from_scientific(t))
}

/// A sum, product or quotient of amounts that `Decimal` cannot hold: input beyond its bounds,
/// or a stored figure that was never valid. Named so the window it spoils can say why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: the amount is out of range")]
pub struct OutOfRange(pub String);

/// `a + b`, or what overflowed.
pub fn checked_add(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, OutOfRange> {
    checked_add_with(a, b, || what.to_string())
}

/// [`checked_add`] naming what overflowed only when it does: for sums in hot loops, where
/// formatting the name of every addition cost more than the addition.
pub fn checked_add_with(
    a: Decimal,
    b: Decimal,
    what: impl FnOnce() -> String,
) -> Result<Decimal, OutOfRange> {
    a.checked_add(b)
        .ok_or_else(|| OutOfRange(format!("{} ({a} + {b})", what())))
}

/// `a * b`, or what overflowed.
pub fn checked_mul(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, OutOfRange> {
    a.checked_mul(b)
        .ok_or_else(|| OutOfRange(format!("{what} ({a} x {b})")))
}

/// Why an amount could not be converted into another currency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error(
        "no exchange rate from {from} to {to} is configured: add `\"{from}/{to}\" = \"<rate>\"` to [currency_rates]"
    )]
    MissingRate { from: Currency, to: Currency },
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
}

/// Exchange rates an operator configured explicitly. Nothing is converted without one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxRates {
    /// (from, to) -> units of `to` per unit of `from`.
    #[serde(with = "rates_as_strings")]
    rates: BTreeMap<(Currency, Currency), Decimal>,
}

impl FxRates {
    pub fn insert(&mut self, from: Currency, to: Currency, rate: Decimal) {
        self.rates.insert((from, to), rate);
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// Every rate as written: (from, to, units of `to` per unit of `from`).
    pub fn iter(&self) -> impl Iterator<Item = (Currency, Currency, Decimal)> + '_ {
        self.rates
            .iter()
            .map(|(&(from, to), &rate)| (from, to, rate))
    }

    /// Whether amounts in `from` can be converted into `to`.
    pub fn can_convert(&self, from: Currency, to: Currency) -> bool {
        from == to
            || self.rates.contains_key(&(from, to))
            || self.rates.get(&(to, from)).is_some_and(|r| !r.is_zero())
    }

    /// Converts `money` into `to`, using the direct rate or the inverse of the reverse rate.
    pub fn convert(&self, money: Money, to: Currency) -> Result<Money, ConversionError> {
        if money.currency == to {
            return Ok(money);
        }
        let what = || format!("{money} in {to}");
        if let Some(rate) = self.rates.get(&(money.currency, to)) {
            return Ok(Money::new(checked_mul(money.amount, *rate, &what())?, to));
        }
        if let Some(rate) = self.rates.get(&(to, money.currency))
            && !rate.is_zero()
        {
            let amount = money
                .amount
                .checked_div(*rate)
                .ok_or_else(|| OutOfRange(what()))?;
            return Ok(Money::new(amount, to));
        }
        Err(ConversionError::MissingRate {
            from: money.currency,
            to,
        })
    }
}

mod rates_as_strings {
    use super::*;

    pub fn serialize<S: Serializer>(
        rates: &BTreeMap<(Currency, Currency), Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let flat: BTreeMap<String, String> = rates
            .iter()
            .map(|((from, to), rate)| (format!("{from}/{to}"), rate.to_string()))
            .collect();
        flat.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(Currency, Currency), Decimal>, D::Error> {
        use serde::de::Error;
        let flat = BTreeMap::<String, String>::deserialize(d)?;
        flat.into_iter()
            .map(|(pair, rate)| {
                let (from, to) = pair
                    .split_once('/')
                    .ok_or_else(|| D::Error::custom(format!("rate key `{pair}` is not FROM/TO")))?;
                let from = Currency::parse(from).map_err(D::Error::custom)?;
                let to = Currency::parse(to).map_err(D::Error::custom)?;
                let rate = parse_decimal(&rate).map_err(D::Error::custom)?;
                Ok(((from, to), rate))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn currency_codes_are_sorted_for_binary_search() {
        let mut sorted = ISO_4217.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, ISO_4217);
    }

    #[test]
    fn currency_parse_is_case_insensitive_and_strict() {
        assert_eq!(Currency::parse("usd").unwrap(), Currency::USD);
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("DOLLARS").is_err());
    }

    #[test]
    fn amounts_display_with_two_decimals() {
        assert_eq!(display_amount(dec!(1580)), "1580.00");
        assert_eq!(display_amount(dec!(2476.755)), "2476.76");
        assert_eq!(display_amount(dec!(0.004)), "0.00");
        assert_eq!(
            Money::new(dec!(11.2), Currency::USD).to_string(),
            "11.20 USD"
        );
    }

    #[test]
    fn cents_become_dollars_exactly() {
        let m = Money::from_cents(dec!(1234.5), Currency::USD);
        assert_eq!(m.amount, dec!(12.345));
    }

    #[test]
    fn parse_decimal_accepts_plain_and_scientific() {
        assert_eq!(parse_decimal("0.06").unwrap(), dec!(0.06));
        assert_eq!(parse_decimal(" 12 ").unwrap(), dec!(12));
        assert_eq!(parse_decimal("1.5e-3").unwrap(), dec!(0.0015));
        assert!(parse_decimal("twelve").is_err());
    }

    #[test]
    fn conversion_needs_an_explicit_rate() {
        let eur = Currency::parse("EUR").unwrap();
        let mut rates = FxRates::default();
        let ten_eur = Money::new(dec!(10), eur);
        assert_eq!(
            rates.convert(ten_eur, Currency::USD),
            Err(ConversionError::MissingRate {
                from: eur,
                to: Currency::USD
            })
        );
        rates.insert(eur, Currency::USD, dec!(1.25));
        assert_eq!(
            rates.convert(ten_eur, Currency::USD).unwrap(),
            Money::new(dec!(12.50), Currency::USD)
        );
        // the inverse direction uses the same configured rate
        let back = rates
            .convert(Money::new(dec!(12.5), Currency::USD), eur)
            .unwrap();
        assert_eq!(back.amount, dec!(10));
    }

    #[test]
    fn conversion_that_overflows_is_an_error_not_a_panic() {
        let eur = Currency::parse("EUR").unwrap();
        let mut rates = FxRates::default();
        rates.insert(eur, Currency::USD, dec!(1000));
        let huge = Money::new(Decimal::MAX, eur);
        assert!(matches!(
            rates.convert(huge, Currency::USD),
            Err(ConversionError::OutOfRange(_))
        ));
        // the inverse: dividing by a tiny rate overflows too
        let mut tiny = FxRates::default();
        tiny.insert(Currency::USD, eur, dec!(0.0000000000000000000000000001));
        assert!(tiny.convert(huge, Currency::USD).is_err());
        assert!(checked_add(Decimal::MAX, Decimal::ONE, "sum").is_err());
        assert!(checked_mul(Decimal::MIN, dec!(2), "product").is_err());
    }

    #[test]
    fn rates_round_trip_through_json() {
        let mut rates = FxRates::default();
        rates.insert(Currency::parse("GBP").unwrap(), Currency::USD, dec!(1.27));
        let json = serde_json::to_string(&rates).unwrap();
        assert_eq!(json, r#"{"rates":{"GBP/USD":"1.27"}}"#);
        assert_eq!(serde_json::from_str::<FxRates>(&json).unwrap(), rates);
    }
}
