//! The pre-flight check (`POST /authorize`, ADR 028): before an operation spends, its estimate
//! is held against the headroom of every window of the usage budgets covering its scope, and
//! the caller is told allow or deny. The usage record that follows with the same id reconciles
//! the hold; a hold never reconciled stops counting when it expires.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::budget::{Budget, SourceSpec};
use crate::money::{Currency, FxRates, Money};
use crate::period::{Period, WindowKind};
use crate::scope::Scope;
use crate::settings::PolicySet;
use crate::spend::BudgetSpend;
use crate::usage::{UsageError, bounded_cost, json_decimal, record_id, usage_scope};

/// How long an unreconciled hold counts against the headroom (`SPENDGUARD_RESERVATION_TTL_MINUTES`).
pub mod bounds {
    use chrono::Duration;

    /// Long enough for an LLM call and its usage report, short enough that a caller that
    /// crashed before reporting does not block the budget for long.
    pub const DEFAULT_RESERVATION_TTL: Duration = Duration::minutes(15);
    pub const MIN_RESERVATION_TTL: Duration = Duration::minutes(1);
    /// A hold outliving an hour would outlive the hourly windows it may be checked against.
    pub const MAX_RESERVATION_TTL: Duration = Duration::minutes(60);
}

/// How long a decision is remembered for a replayed request id: as long as usage record ids
/// are, so a late replay cannot be decided (and held) again.
pub const DECISION_MEMORY: Duration = crate::usage::USAGE_MARKER_TTL;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeWire {
    scope: String,
    estimate: EstimateWire,
    request_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EstimateWire {
    /// A decimal string or a JSON number, read from its exact text (like a usage cost).
    amount: Box<RawValue>,
    currency: String,
}

/// A validated `/authorize` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The id the usage record of the operation will carry (`UsageRecord.id`).
    pub request_id: String,
    pub scope: Scope,
    pub estimate: Money,
}

/// Parses and bounds an `/authorize` body against `policy`: every field as a usage record's
/// (scope, id, cost), the estimate positive and convertible into every covering budget's
/// currency.
pub fn parse_request(body: &[u8], policy: &PolicySet) -> Result<AuthorizeRequest, UsageError> {
    let wire: AuthorizeWire = serde_json::from_slice(body).map_err(|e| {
        UsageError::new(
            "body",
            format!(
                "expected {{\"scope\": ..., \"estimate\": {{\"amount\": ..., \"currency\": ...}}, \"request_id\": ...}}: {e}"
            ),
        )
    })?;
    let scope = usage_scope("scope", &wire.scope)?;
    record_id("request_id", &wire.request_id)?;
    let amount =
        json_decimal(&wire.estimate.amount).map_err(|m| UsageError::new("estimate.amount", m))?;
    let amount = bounded_cost("estimate.amount", amount)?;
    if amount.is_zero() {
        return Err(UsageError::new(
            "estimate.amount",
            "must be positive: an operation that costs nothing needs no authorization",
        ));
    }
    let currency = Currency::parse(&wire.estimate.currency)
        .map_err(|e| UsageError::new("estimate.currency", e.to_string()))?;
    if let Some(b) = covering_budgets(&policy.budgets, &scope)
        .into_iter()
        .find(|b| !policy.settings.rates.can_convert(currency, b.currency))
    {
        return Err(UsageError::new(
            "estimate.currency",
            format!(
                "{currency} cannot be held against budget `{}` ({}): no exchange rate is configured; estimate in {} or add \"{currency}/{}\" to [currency_rates]",
                b.id, b.currency, b.currency, b.currency
            ),
        ));
    }
    Ok(AuthorizeRequest {
        request_id: wire.request_id,
        scope,
        estimate: Money::new(amount, currency),
    })
}

/// The usage budgets whose counters the operation's usage record will add to: those whose
/// scope contains the request's (dimension budgets need the record's model or user, which a
/// request does not carry).
pub fn covering_budgets<'a>(budgets: &'a [Budget], scope: &Scope) -> Vec<&'a Budget> {
    budgets
        .iter()
        .filter(|b| b.source == SourceSpec::Usage && b.scope.contains(scope))
        .collect()
}

/// What a store holds a reservation against: one window of one budget in its current period
/// (`daily-cap#daily#D#2026-11-20`). Each window kind names its own period, so kinds added
/// later slot in.
pub fn window_key(budget: &Budget, window: &crate::budget::Window, now: DateTime<Utc>) -> String {
    format!(
        "{}#{}#{}",
        budget.id,
        window.kind,
        period_key(budget, window, now)
    )
}

fn period_key(budget: &Budget, window: &crate::budget::Window, now: DateTime<Utc>) -> String {
    match window.kind {
        // no period: a hold counts until its usage record reconciles it or it expires
        WindowKind::Rolling { minutes } => format!("R{minutes}"),
        kind => Period::containing(kind, budget.zone, now).key(),
    }
}

/// The windows `budgets` hold reservations against at `now`, in the order [`holds`] uses.
pub fn window_keys(budgets: &[&Budget], now: DateTime<Utc>) -> Vec<String> {
    budgets
        .iter()
        .flat_map(|b| b.windows.iter().map(move |w| window_key(b, w, now)))
        .collect()
}

/// One window's share of a reservation, in its budget's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// What stores hold it against: [`window_key`].
    pub window: String,
    pub budget: String,
    /// The budget's scope. A hold recorded before it was kept reads as the root's: released
    /// with the spend's roll-up, never before it (ADR 031).
    #[serde(default = "Scope::root")]
    pub scope: Scope,
    pub kind: WindowKind,
    /// The period's key (`D#2026-11-20`).
    pub period: String,
    pub currency: Currency,
    /// The estimate, converted.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The window's limit minus what it has spent (negative once over): what outstanding
    /// holds and this one must fit in.
    #[serde(with = "rust_decimal::serde::str")]
    pub cap: Decimal,
}

/// Why the holds of a request cannot be computed (the request is answered 503: retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HoldError(pub String);

/// The hold of `estimate` on every window of `budgets`, from each window's spend so far
/// (`spend`, by budget id, as the usage counters report it).
pub fn holds(
    budgets: &[&Budget],
    spend: &BTreeMap<String, BudgetSpend>,
    estimate: Money,
    rates: &FxRates,
    now: DateTime<Utc>,
) -> Result<Vec<Hold>, HoldError> {
    let mut out = Vec::new();
    for budget in budgets {
        let amount = rates
            .convert(estimate, budget.currency)
            .map_err(|e| HoldError(format!("budget `{}`: {e}", budget.id)))?
            .amount;
        for window in &budget.windows {
            let spent = match spend.get(&budget.id).and_then(|s| s.get(&window.kind)) {
                Some(Ok(s)) => s.actual,
                Some(Err(e)) => {
                    return Err(HoldError(format!(
                        "budget `{}` {} window: {e}",
                        budget.id, window.kind
                    )));
                }
                None => {
                    return Err(HoldError(format!(
                        "budget `{}` {} window: no spend was read",
                        budget.id, window.kind
                    )));
                }
            };
            let cap = window.limit.checked_sub(spent).ok_or_else(|| {
                HoldError(format!(
                    "budget `{}` {} window: spend out of range",
                    budget.id, window.kind
                ))
            })?;
            out.push(Hold {
                window: window_key(budget, window, now),
                budget: budget.id.clone(),
                scope: budget.scope.clone(),
                kind: window.kind,
                period: period_key(budget, window, now),
                currency: budget.currency,
                amount,
                cap,
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// The window with the least room left, after this request's hold when it was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headroom {
    pub budget: String,
    pub window: WindowKind,
    /// The period's key (`D#2026-11-20`).
    pub period: String,
    pub remaining: Money,
}

/// A decision and the tightest window's headroom (none when no budget covers the scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    pub tightest: Option<Headroom>,
}

/// Allow when every hold fits beside its window's `outstanding` holds (same order as `holds`):
/// outstanding + amount <= cap.
pub fn decide(holds: &[Hold], outstanding: &[Decimal]) -> Verdict {
    let fits = |h: &Hold, o: &Decimal| o.checked_add(h.amount).is_some_and(|t| t <= h.cap);
    let decision = if holds.iter().zip(outstanding).all(|(h, o)| fits(h, o)) {
        Decision::Allow
    } else {
        Decision::Deny
    };
    verdict(decision, holds, outstanding)
}

/// `decision` with its tightest window, from the `outstanding` holds it was decided beside
/// (an allowed request's own hold added). The tightest window is the one where the fewest more
/// such requests would fit (remaining / amount), which compares windows in different
/// currencies. An allowed request never reports less than nothing left, even when
/// `outstanding` is a slightly older figure than the one its store checked.
pub fn verdict(decision: Decision, holds: &[Hold], outstanding: &[Decimal]) -> Verdict {
    let allowed = decision == Decision::Allow;
    let tightest = holds
        .iter()
        .zip(outstanding)
        .filter_map(|(h, o)| {
            let taken = if allowed {
                o.checked_add(h.amount)?
            } else {
                *o
            };
            let mut remaining = h.cap.checked_sub(taken)?;
            if allowed {
                remaining = remaining.max(Decimal::ZERO);
            }
            Some((remaining.checked_div(h.amount)?, h, remaining))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, h, remaining)| Headroom {
            budget: h.budget.clone(),
            window: h.kind,
            period: h.period.clone(),
            remaining: Money::new(remaining, h.currency),
        });
    Verdict { decision, tightest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Basis, Severity, Threshold, Tier, Window};
    use crate::evaluate::WindowSpend;
    use crate::period::Zone;
    use crate::settings::Settings;
    use rust_decimal_macros::dec;

    /// A rolling window has no period: a hold made a minute ago still counts against it until
    /// its usage record reconciles it or it expires (keyed per minute, the next minute's
    /// decisions would not see it and a loop could reserve past the limit).
    #[test]
    fn a_rolling_windows_holds_share_one_key_across_minutes() {
        let b = budget(
            "loop",
            "agents",
            "USD",
            &[
                (WindowKind::Rolling { minutes: 60 }, dec!(50)),
                (WindowKind::Hourly, dec!(50)),
            ],
        );
        let at = |m: i64| {
            DateTime::parse_from_rfc3339("2026-11-20T10:00:30Z")
                .unwrap()
                .with_timezone(&Utc)
                + Duration::minutes(m)
        };
        assert_eq!(window_keys(&[&b], at(0))[0], window_keys(&[&b], at(7))[0]);
        // an hourly window's holds belong to their hour
        assert_eq!(window_keys(&[&b], at(0))[1], window_keys(&[&b], at(7))[1]);
        assert_ne!(window_keys(&[&b], at(0))[1], window_keys(&[&b], at(60))[1]);
    }

    fn budget(id: &str, scope: &str, currency: &str, windows: &[(WindowKind, Decimal)]) -> Budget {
        Budget {
            id: id.into(),
            description: None,
            scope: Scope::parse(scope).unwrap(),
            currency: Currency::parse(currency).unwrap(),
            zone: Zone::UTC,
            windows: windows
                .iter()
                .map(|(kind, limit)| Window {
                    kind: *kind,
                    limit: *limit,
                    tiers: vec![Tier {
                        name: "warning".into(),
                        threshold: Threshold::Percent(dec!(80)),
                        basis: Basis::Actual,
                        severity: Severity::Warning,
                        actions: vec![],
                    }],
                    provider_cap: false,
                })
                .collect(),
            source: SourceSpec::Usage,
            routing: BTreeMap::new(),
        }
    }

    fn policy(budgets: Vec<Budget>) -> PolicySet {
        PolicySet {
            budgets,
            settings: Settings::default(),
            keys: Vec::new(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse().unwrap()
    }

    fn hold(budget: &str, amount: Decimal, cap: Decimal) -> Hold {
        Hold {
            window: format!("{budget}#daily#D#2026-11-20"),
            budget: budget.into(),
            scope: Scope::root(),
            kind: WindowKind::Daily,
            period: "D#2026-11-20".into(),
            currency: Currency::USD,
            amount,
            cap,
        }
    }

    #[test]
    fn a_valid_request_is_read_exactly() {
        let p = policy(vec![budget(
            "b",
            "openai",
            "USD",
            &[(WindowKind::Daily, dec!(10))],
        )]);
        let r = parse_request(
            br#"{"scope": "openai/prod", "estimate": {"amount": "0.125", "currency": "USD"}, "request_id": "call-1"}"#,
            &p,
        )
        .unwrap();
        assert_eq!(r.scope.as_str(), "openai/prod");
        assert_eq!(r.estimate, Money::new(dec!(0.125), Currency::USD));
        assert_eq!(r.request_id, "call-1");
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = policy(vec![budget(
            "b",
            "openai",
            "EUR",
            &[(WindowKind::Daily, dec!(10))],
        )]);
        let cases: [(&str, &str); 10] = [
            (r#"{"scope": "openai"}"#, "body"),
            (
                r#"{"scope": "openai", "estimate": {"amount": "1", "currency": "EUR"}, "request_id": "a", "x": 1}"#,
                "body",
            ),
            (
                r#"{"scope": "*", "estimate": {"amount": "1", "currency": "EUR"}, "request_id": "a"}"#,
                "scope",
            ),
            (
                r#"{"scope": "a/b/c/d/e/f/g", "estimate": {"amount": "1", "currency": "EUR"}, "request_id": "a"}"#,
                "scope",
            ),
            (
                r#"{"scope": "openai", "estimate": {"amount": "1", "currency": "EUR"}, "request_id": "a b"}"#,
                "request_id",
            ),
            (
                r#"{"scope": "openai", "estimate": {"amount": "0", "currency": "EUR"}, "request_id": "a"}"#,
                "estimate.amount",
            ),
            (
                r#"{"scope": "openai", "estimate": {"amount": "-1", "currency": "EUR"}, "request_id": "a"}"#,
                "estimate.amount",
            ),
            (
                r#"{"scope": "openai", "estimate": {"amount": "1000000001", "currency": "EUR"}, "request_id": "a"}"#,
                "estimate.amount",
            ),
            (
                r#"{"scope": "openai", "estimate": {"amount": "1", "currency": "XYZ"}, "request_id": "a"}"#,
                "estimate.currency",
            ),
            // no EUR/USD rate for the EUR budget
            (
                r#"{"scope": "openai", "estimate": {"amount": "1", "currency": "USD"}, "request_id": "a"}"#,
                "estimate.currency",
            ),
        ];
        for (body, field) in cases {
            let e = parse_request(body.as_bytes(), &p).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        let id = format!(
            r#"{{"scope": "openai", "estimate": {{"amount": "1", "currency": "EUR"}}, "request_id": "{}"}}"#,
            "x".repeat(129)
        );
        assert_eq!(
            parse_request(id.as_bytes(), &p).unwrap_err().field,
            "request_id"
        );
    }

    #[test]
    fn only_usage_budgets_above_the_scope_cover_it() {
        let mut aws = budget("aws", "openai", "USD", &[(WindowKind::Daily, dec!(1))]);
        aws.source = SourceSpec::AwsBudgets {
            budget_name: "x".into(),
        };
        let budgets = vec![
            budget("root", "*", "USD", &[(WindowKind::Monthly, dec!(1))]),
            budget(
                "team",
                "openai/prod",
                "USD",
                &[(WindowKind::Daily, dec!(1))],
            ),
            budget(
                "other",
                "openai/dev",
                "USD",
                &[(WindowKind::Daily, dec!(1))],
            ),
            budget(
                "deeper",
                "openai/prod/key-1",
                "USD",
                &[(WindowKind::Daily, dec!(1))],
            ),
            aws,
        ];
        let scope = Scope::parse("openai/prod").unwrap();
        let ids: Vec<&str> = covering_budgets(&budgets, &scope)
            .iter()
            .map(|b| b.id.as_str())
            .collect();
        assert_eq!(ids, ["root", "team"]);
    }

    #[test]
    fn holds_convert_the_estimate_and_subtract_spend_per_window() {
        let b = budget(
            "b",
            "openai",
            "EUR",
            &[
                (WindowKind::Daily, dec!(10)),
                (WindowKind::Monthly, dec!(100)),
            ],
        );
        let mut rates = FxRates::default();
        rates.insert(Currency::USD, Currency::parse("EUR").unwrap(), dec!(0.5));
        let spend = BTreeMap::from([(
            "b".to_string(),
            BTreeMap::from([
                (WindowKind::Daily, Ok(WindowSpend::actual(dec!(4)))),
                (WindowKind::Monthly, Ok(WindowSpend::actual(dec!(97)))),
            ]),
        )]);
        let estimate = Money::new(dec!(2), Currency::USD);
        let got = holds(&[&b], &spend, estimate, &rates, now()).unwrap();
        assert_eq!(
            got.iter()
                .map(|h| (h.window.as_str(), h.amount, h.cap))
                .collect::<Vec<_>>(),
            [
                ("b#daily#D#2026-11-20", dec!(1.0), dec!(6)),
                ("b#monthly#M#2026-11", dec!(1.0), dec!(3)),
            ]
        );
        let unreadable = BTreeMap::from([(
            "b".to_string(),
            BTreeMap::from([(
                WindowKind::Daily,
                Err(crate::spend::WindowError::Unevaluable("bad counter".into())),
            )]),
        )]);
        let e = holds(&[&b], &unreadable, estimate, &rates, now()).unwrap_err();
        assert!(e.0.contains("bad counter"), "{e}");
    }

    #[test]
    fn allowed_only_when_every_window_fits_and_the_tightest_is_reported() {
        let hs = [
            hold("day", dec!(1), dec!(10)),
            hold("month", dec!(1), dec!(5)),
        ];
        let v = decide(&hs, &[dec!(2), dec!(3)]);
        assert_eq!(v.decision, Decision::Allow);
        let t = v.tightest.unwrap();
        assert_eq!((t.budget.as_str(), t.remaining.amount), ("month", dec!(1)));
        // exactly full still fits; one cent more does not
        assert_eq!(decide(&hs, &[dec!(0), dec!(4)]).decision, Decision::Allow);
        let v = decide(&hs, &[dec!(0), dec!(4.01)]);
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.tightest.unwrap().remaining.amount, dec!(0.99));
        // a window already over its limit denies
        assert_eq!(
            decide(&[hold("day", dec!(1), dec!(-2))], &[dec!(0)]).decision,
            Decision::Deny
        );
        let none = decide(&[], &[]);
        assert_eq!((none.decision, none.tightest), (Decision::Allow, None));
    }
}
