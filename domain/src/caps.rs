//! Caps as code: a monthly window with `provider_cap = true` keeps the provider's own hard
//! spend limit (OpenAI's project or organisation limit, Anthropic's workspace or organisation
//! limit) equal to the window's limit, so the cap
//! holds even when spendguard is down. `budgets apply` shows and sets it; every budget-check run
//! keeps it; a limit changed at the provider by hand is one drift finding per change, then set
//! back (the budgets file is the source of truth). A stop (ADR 020) takes precedence: a limit a
//! stop holds is left to the stop's restore, which puts the cap back.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::budget::{Budget, SourceSpec, Window};
use crate::money::Currency;
use crate::period::WindowKind;
use crate::resources::{
    MIN_OPENAI_LIMIT_CENTS, Resource, ResourceKind, anthropic_limit_id, openai_limit_id,
};

/// A provider limit a budget keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCap {
    pub resource: Resource,
    pub cents: u64,
    pub budget_id: String,
}

/// Why a window cannot carry `provider_cap` (checked when the budgets file is read).
pub fn cap_refusal(
    window: &Window,
    source: Option<&SourceSpec>,
    currency: Option<Currency>,
) -> Option<String> {
    if window.kind != WindowKind::Monthly {
        return Some(format!(
            "providers' hard limits are monthly: put provider_cap on the monthly window, not the {} one",
            window.kind
        ));
    }
    if !matches!(
        source,
        None | Some(SourceSpec::Openai { .. } | SourceSpec::Anthropic { .. })
    ) {
        return Some(format!(
            "provider_cap needs source = {{ kind = \"openai\" }} (optionally with project_id) or {{ kind = \"anthropic\" }} (optionally with workspace_id); this budget's source is `{}`",
            source.map(SourceSpec::kind).unwrap_or("?")
        ));
    }
    // without a source its own error is reported
    source?;
    if currency.is_some_and(|c| c != Currency::USD) {
        return Some(
            "the providers' hard limits are in USD: give this budget currency = \"USD\"".into(),
        );
    }
    match cents(window.limit) {
        Some(_) => None,
        None => Some(format!(
            "limit {} is not a whole number of cents of at least {MIN_OPENAI_LIMIT_CENTS}",
            window.limit.normalize()
        )),
    }
}

/// `amount` dollars in whole cents (at least OpenAI's minimum), if it is one.
fn cents(amount: Decimal) -> Option<u64> {
    let c = amount.checked_mul(Decimal::ONE_HUNDRED)?;
    (c.fract().is_zero())
        .then(|| u64::try_from(c).ok())
        .flatten()
        .filter(|c| *c >= MIN_OPENAI_LIMIT_CENTS)
}

/// The provider limit a budget reading `source` can keep: its kind and id.
pub fn capped_limit(source: &SourceSpec) -> Option<(ResourceKind, String)> {
    match source {
        SourceSpec::Openai { project_id } => Some((
            ResourceKind::OpenaiSpendLimit,
            openai_limit_id(project_id.as_deref()),
        )),
        SourceSpec::Anthropic { workspace_id } => Some((
            ResourceKind::AnthropicSpendLimit,
            anthropic_limit_id(workspace_id.as_deref()),
        )),
        _ => None,
    }
}

/// Every provider limit the budgets keep; two budgets keeping the same limit is refused.
pub fn provider_caps(budgets: &[Budget]) -> Result<Vec<ProviderCap>, String> {
    let mut caps: Vec<ProviderCap> = Vec::new();
    for b in budgets {
        let Some((kind, id)) = capped_limit(&b.source) else {
            continue;
        };
        for w in b.windows.iter().filter(|w| w.provider_cap) {
            let Some(cents) = cents(w.limit) else {
                continue;
            };
            if let Some(other) = caps.iter().find(|c| c.resource.id == id) {
                return Err(format!(
                    "budgets `{}` and `{}` both keep the limit {id}: keep it in one",
                    other.budget_id, b.id
                ));
            }
            caps.push(ProviderCap {
                resource: Resource {
                    kind,
                    id: id.clone(),
                    scope: b.scope.clone(),
                },
                cents,
                budget_id: b.id.clone(),
            });
        }
    }
    Ok(caps)
}

/// What spendguard last set a provider limit to, and how many times (each set starts a new
/// generation: a hand change after it is a new drift).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapRecord {
    pub cents: u64,
    pub generation: u64,
    pub at: DateTime<Utc>,
}

/// What keeping one cap does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapStep {
    /// The provider has the budget's limit.
    InPlace,
    /// Set it to the budget's limit; `drift` is the value a person set since spendguard did
    /// (0: they removed the limit; OpenAI's smallest is 1 cent).
    Set { drift: Option<u64> },
}

/// The step for a cap of `expected` cents, the provider holding `now`, spendguard having last
/// set `record`.
pub fn cap_step(expected: u64, now: Option<u64>, record: Option<&CapRecord>) -> CapStep {
    if now == Some(expected) {
        return CapStep::InPlace;
    }
    let drift = match record {
        // spendguard set it, and it is no longer that: someone changed (or removed) it
        Some(r) if now != Some(r.cents) => Some(now.unwrap_or(0)),
        _ => None,
    };
    CapStep::Set { drift }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn record(cents: u64) -> CapRecord {
        CapRecord {
            cents,
            generation: 1,
            at: Utc::now(),
        }
    }

    #[test]
    fn a_cap_is_set_once_kept_and_a_hand_change_is_drift() {
        assert_eq!(cap_step(50_000, None, None), CapStep::Set { drift: None });
        assert_eq!(
            cap_step(50_000, Some(9), None),
            CapStep::Set { drift: None }
        );
        assert_eq!(
            cap_step(50_000, Some(50_000), Some(&record(50_000))),
            CapStep::InPlace
        );
        // the budget's limit changed: spendguard's own value is replaced, no drift
        assert_eq!(
            cap_step(70_000, Some(50_000), Some(&record(50_000))),
            CapStep::Set { drift: None }
        );
        assert_eq!(
            cap_step(50_000, Some(90_000), Some(&record(50_000))),
            CapStep::Set {
                drift: Some(90_000)
            }
        );
        // deleted by hand
        assert_eq!(
            cap_step(50_000, None, Some(&record(50_000))),
            CapStep::Set { drift: Some(0) }
        );
    }

    #[test]
    fn only_whole_cents_of_at_least_one_cent() {
        assert_eq!(cents(dec!(500)), Some(50_000));
        assert_eq!(cents(dec!(0.01)), Some(1));
        assert_eq!(cents(dec!(0.015)), None);
        assert_eq!(cents(dec!(0.001)), None);
    }
}
