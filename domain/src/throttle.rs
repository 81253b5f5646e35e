//! Throttling at the provider: a `reduce_limits{factor}` on a scope that covers an OpenAI
//! project (an Anthropic workspace) scales its per-model (per-group) rate limits by the
//! factor, after recording what they were; the alert's recovery puts back exactly those, entry
//! by entry, unless someone changed an entry's limits since (then they are left, and reported).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::scope::Scope;

/// The `max_*` fields of an OpenAI project rate limit (a model has the ones that apply to it).
pub const OPENAI_RATE_LIMIT_FIELDS: [&str; 6] = [
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_images_per_1_minute",
    "max_audio_megabytes_per_1_minute",
    "max_requests_per_1_day",
    "batch_1_day_max_input_tokens",
];

/// The rate-limit groups of an Anthropic workspace a throttle lowers: those that spend (the
/// models, batches, web search); files, skills and token counting cost nothing.
pub const ANTHROPIC_THROTTLED_GROUPS: [&str; 3] = ["model_group", "batch", "web_search"];

/// One model's rate limits in a project (one group's in an Anthropic workspace): the id the
/// provider writes them under, and each limit in force (`max_requests_per_1_minute` → 500,
/// `requests_per_minute` → 50, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRateLimit {
    pub id: String,
    pub model: String,
    pub limits: BTreeMap<String, u64>,
    /// The limits that are the organisation's, not the workspace's own (Anthropic): putting
    /// them back clears the workspace's override instead of storing the value as one.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub inherited: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    #[error("factor: {0} is outside (0, 1]")]
    Factor(Decimal),
}

/// A factor a throttle takes: above 0 (0 is the kill switch's job) and at most 1.
pub fn check_factor(factor: Decimal) -> Result<Decimal, ThrottleError> {
    if factor > Decimal::ZERO && factor <= Decimal::ONE {
        Ok(factor)
    } else {
        Err(ThrottleError::Factor(factor))
    }
}

impl ModelRateLimit {
    /// Every limit times `factor`, rounded down and at least 1 (a limit of 0 would stop the
    /// model, which is the kill switch's job, not a throttle's); each is then the entry's own.
    pub fn scaled(&self, factor: Decimal) -> Result<ModelRateLimit, ThrottleError> {
        let factor = check_factor(factor)?;
        let limits = self
            .limits
            .iter()
            .map(|(field, &value)| {
                // value ≤ u64::MAX and factor ≤ 1: the product fits a Decimal and a u64
                let scaled = Decimal::from(value)
                    .checked_mul(factor)
                    .and_then(|d| u64::try_from(d.floor()).ok())
                    .unwrap_or(value);
                (field.clone(), scaled.max(1))
            })
            .collect();
        Ok(ModelRateLimit {
            limits,
            inherited: BTreeSet::new(),
            ..self.clone()
        })
    }
}

/// What a throttle of one project recorded before it changed anything. Kept until the lift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleRecord {
    /// The factor each scope's alerts ordered (the strictest per scope, as its limit factor):
    /// the strictest of all is in force.
    pub factors: BTreeMap<Scope, Decimal>,
    /// Every factor the limits were set to during this throttle: a model at any of them is as
    /// spendguard left it (a stricter throttle refused half-way leaves some at the milder one).
    pub applied_factors: Vec<Decimal>,
    /// Every model's limits before the first throttle.
    pub previous: Vec<ModelRateLimit>,
    pub at: DateTime<Utc>,
    /// The limits were set to the factor in force (written first, then set, then this): a
    /// redelivery sets nothing twice, a retry after a crash sets them again.
    pub applied: bool,
    /// Put back by the last lift: a later throttle records afresh.
    pub lifted: bool,
}

impl ThrottleRecord {
    /// The factor in force: the strictest any scope ordered.
    pub fn factor(&self) -> Option<Decimal> {
        self.factors.values().min().copied()
    }
}

/// What a lift does to one model's limits, given what the provider has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutBack {
    /// As spendguard left it: set this (the recorded limits, or those of a milder factor
    /// still in force).
    Set(ModelRateLimit),
    /// Already as wanted (a lift that was cut short).
    AlreadyBack,
    /// Changed since the throttle: left as it is.
    ChangedByHand {
        id: String,
        model: String,
        now: BTreeMap<String, u64>,
    },
    /// The model's rate limit is gone at the provider.
    Gone { id: String, model: String },
}

/// A lift, model by model, against the limits now: to the recorded limits (`to` is `None`),
/// or to `to` × them (another scope's throttle is still in force). A model is spendguard's
/// own when it is at the recorded limits or at any factor this throttle applied.
pub fn put_back(
    record: &ThrottleRecord,
    now: &[ModelRateLimit],
    to: Option<Decimal>,
) -> Result<Vec<PutBack>, ThrottleError> {
    record
        .previous
        .iter()
        .map(|before| {
            let Some(current) = now.iter().find(|n| n.id == before.id) else {
                return Ok(PutBack::Gone {
                    id: before.id.clone(),
                    model: before.model.clone(),
                });
            };
            let wanted = match to {
                Some(f) => before.scaled(f)?,
                None => before.clone(),
            };
            // an organisation's value stored as the workspace's own is not back yet
            if current.limits == wanted.limits && current.inherited == wanted.inherited {
                return Ok(PutBack::AlreadyBack);
            }
            let mut ours = current.limits == before.limits;
            for f in &record.applied_factors {
                ours |= current.limits == before.scaled(*f)?.limits;
            }
            Ok(if ours {
                PutBack::Set(wanted)
            } else {
                PutBack::ChangedByHand {
                    id: before.id.clone(),
                    model: before.model.clone(),
                    now: current.limits.clone(),
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn limit(id: &str, limits: &[(&str, u64)]) -> ModelRateLimit {
        ModelRateLimit {
            id: id.into(),
            model: format!("model-{id}"),
            limits: limits.iter().map(|(f, v)| (f.to_string(), *v)).collect(),
            inherited: BTreeSet::new(),
        }
    }

    #[test]
    fn scaling_rounds_down_and_never_reaches_zero() {
        let l = limit(
            "a",
            &[
                ("max_requests_per_1_minute", 5),
                ("max_images_per_1_minute", 1),
            ],
        );
        let half = l.scaled(dec!(0.5)).unwrap();
        assert_eq!(half.limits["max_requests_per_1_minute"], 2);
        assert_eq!(half.limits["max_images_per_1_minute"], 1);
        assert_eq!(l.scaled(dec!(1)).unwrap(), l);
        let huge = limit("b", &[("max_tokens_per_1_minute", u64::MAX)]);
        assert_eq!(
            huge.scaled(dec!(0.5)).unwrap().limits["max_tokens_per_1_minute"],
            u64::MAX / 2
        );
    }

    #[test]
    fn a_factor_outside_zero_to_one_is_refused() {
        let l = limit("a", &[("max_requests_per_1_minute", 5)]);
        for f in [dec!(0), dec!(-0.5), dec!(1.01), dec!(2)] {
            assert_eq!(l.scaled(f), Err(ThrottleError::Factor(f)));
        }
    }

    #[test]
    fn the_lift_puts_back_what_the_throttle_left_and_leaves_what_a_person_changed() {
        let before = vec![
            limit("a", &[("max_requests_per_1_minute", 500)]),
            limit("b", &[("max_requests_per_1_minute", 60)]),
            limit("c", &[("max_requests_per_1_minute", 10)]),
            limit("d", &[("max_requests_per_1_minute", 8)]),
        ];
        let record = ThrottleRecord {
            factors: [(Scope::root(), dec!(0.5))].into(),
            applied_factors: vec![dec!(0.5)],
            previous: before.clone(),
            at: Utc::now(),
            applied: true,
            lifted: false,
        };
        let now = vec![
            limit("a", &[("max_requests_per_1_minute", 250)]), // as the throttle left it
            limit("b", &[("max_requests_per_1_minute", 45)]),  // a person's value
            limit("c", &[("max_requests_per_1_minute", 10)]),  // already back
        ];
        let plan = put_back(&record, &now, None).unwrap();
        assert_eq!(plan[0], PutBack::Set(before[0].clone()));
        assert!(matches!(&plan[1], PutBack::ChangedByHand { now, .. }
            if now["max_requests_per_1_minute"] == 45));
        assert_eq!(plan[2], PutBack::AlreadyBack);
        assert!(matches!(&plan[3], PutBack::Gone { id, .. } if id == "d"));
    }

    #[test]
    fn a_model_left_at_an_earlier_factor_is_still_spendguards() {
        let before = vec![limit("a", &[("max_requests_per_1_minute", 400)])];
        let record = ThrottleRecord {
            factors: [(Scope::root(), dec!(0.25))].into(),
            applied_factors: vec![dec!(0.5), dec!(0.25)],
            previous: before.clone(),
            at: Utc::now(),
            applied: false,
            lifted: false,
        };
        // the stricter throttle was refused before reaching this model: it is at 0.5
        let now = vec![limit("a", &[("max_requests_per_1_minute", 200)])];
        assert_eq!(
            put_back(&record, &now, None).unwrap(),
            vec![PutBack::Set(before[0].clone())]
        );
        // relaxed to another scope's 0.5 instead: already there
        assert_eq!(
            put_back(&record, &now, Some(dec!(0.5))).unwrap(),
            vec![PutBack::AlreadyBack]
        );
    }

    #[test]
    fn an_inherited_limit_is_lowered_as_the_entrys_own_and_put_back_as_inherited() {
        let before = ModelRateLimit {
            inherited: ["requests_per_minute".to_string()].into(),
            ..limit(
                "g",
                &[
                    ("requests_per_minute", 50),
                    ("output_tokens_per_minute", 8000),
                ],
            )
        };
        let lowered = before.scaled(dec!(0.5)).unwrap();
        assert!(
            lowered.inherited.is_empty(),
            "every lowered value is an override"
        );
        let record = ThrottleRecord {
            factors: [(Scope::root(), dec!(0.5))].into(),
            applied_factors: vec![dec!(0.5)],
            previous: vec![before.clone()],
            at: Utc::now(),
            applied: true,
            lifted: false,
        };
        assert_eq!(
            put_back(&record, &[lowered], None).unwrap(),
            vec![PutBack::Set(before.clone())]
        );
        // the organisation's value, stored as an override (a throttle at factor 1): not back
        let stored = ModelRateLimit {
            inherited: BTreeSet::new(),
            ..before.clone()
        };
        assert_eq!(
            put_back(&record, &[stored], None).unwrap(),
            vec![PutBack::Set(before.clone())]
        );
        assert_eq!(
            put_back(&record, std::slice::from_ref(&before), None).unwrap(),
            vec![PutBack::AlreadyBack]
        );
    }

    proptest! {
        /// Lowering then lifting with nothing changed in between gives back every limit.
        #[test]
        fn a_lift_after_an_untouched_throttle_restores_every_limit(
            values in proptest::collection::vec(1u64..=u64::MAX, 1..6),
            factor_millis in 1u32..=1000,
        ) {
            let factor = Decimal::new(factor_millis.into(), 3);
            let before: Vec<ModelRateLimit> = values
                .iter()
                .enumerate()
                .map(|(i, v)| limit(&i.to_string(), &[("max_tokens_per_1_minute", *v)]))
                .collect();
            let record = ThrottleRecord { factors: [(Scope::root(), factor)].into(), applied_factors: vec![factor], previous: before.clone(), at: Utc::now(), applied: true, lifted: false };
            let now: Vec<_> = before.iter().map(|b| b.scaled(factor).unwrap()).collect();
            for (put, b) in put_back(&record, &now, None).unwrap().into_iter().zip(&before) {
                let restored = match put {
                    PutBack::Set(l) => l,
                    PutBack::AlreadyBack => b.clone(),
                    other => panic!("{other:?}"),
                };
                prop_assert_eq!(&restored, b);
                prop_assert!(b.scaled(factor).unwrap().limits.values().all(|v| *v >= 1));
            }
        }
    }
}
