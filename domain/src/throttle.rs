//! Throttling at the provider: a `reduce_limits{factor}` on a scope that covers an OpenAI
//! project scales the project's per-model rate limits by the factor, after recording what they
//! were; the alert's recovery puts back exactly those, model by model, unless someone changed
//! a model's limits since (then they are left, and reported).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The `max_*` fields of an OpenAI project rate limit (a model has the ones that apply to it).
pub const OPENAI_RATE_LIMIT_FIELDS: [&str; 6] = [
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_images_per_1_minute",
    "max_audio_megabytes_per_1_minute",
    "max_requests_per_1_day",
    "batch_1_day_max_input_tokens",
];

/// One model's rate limits in a project: the id OpenAI writes them under, and each limit the
/// model has (`max_requests_per_1_minute` → 500, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRateLimit {
    pub id: String,
    pub model: String,
    pub limits: BTreeMap<String, u64>,
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
    /// model, which is the kill switch's job, not a throttle's).
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
            ..self.clone()
        })
    }
}

/// What a throttle of one project recorded before it changed anything. Kept until the lift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleRecord {
    /// The factor in force: the strictest of the alerts that lowered it.
    pub factor: Decimal,
    /// Every model's limits before the first throttle.
    pub previous: Vec<ModelRateLimit>,
    pub at: DateTime<Utc>,
    /// The limits were set (written first, then set, then this): a redelivery sets nothing
    /// twice, a retry after a crash sets them again.
    pub applied: bool,
    /// Put back by a lift: a later throttle records afresh.
    pub lifted: bool,
}

/// What a lift does to one model's limits, given what the provider has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutBack {
    /// Still as the throttle left them: set these (the recorded ones).
    Set(ModelRateLimit),
    /// Already as recorded (a lift that was cut short, or never lowered).
    AlreadyBack,
    /// Changed since the throttle: left as they are.
    ChangedByHand {
        id: String,
        model: String,
        now: BTreeMap<String, u64>,
        left: BTreeMap<String, u64>,
    },
    /// The model's rate limit is gone at the provider.
    Gone { id: String, model: String },
}

/// The lift of a throttle at `record.factor`, model by model, against the limits now.
pub fn put_back(
    record: &ThrottleRecord,
    now: &[ModelRateLimit],
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
            let left = before.scaled(record.factor)?;
            Ok(if current.limits == before.limits {
                PutBack::AlreadyBack
            } else if current.limits == left.limits {
                PutBack::Set(before.clone())
            } else {
                PutBack::ChangedByHand {
                    id: before.id.clone(),
                    model: before.model.clone(),
                    now: current.limits.clone(),
                    left: left.limits,
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
            factor: dec!(0.5),
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
        let plan = put_back(&record, &now).unwrap();
        assert_eq!(plan[0], PutBack::Set(before[0].clone()));
        assert!(matches!(&plan[1], PutBack::ChangedByHand { now, left, .. }
            if now["max_requests_per_1_minute"] == 45 && left["max_requests_per_1_minute"] == 30));
        assert_eq!(plan[2], PutBack::AlreadyBack);
        assert!(matches!(&plan[3], PutBack::Gone { id, .. } if id == "d"));
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
            let record = ThrottleRecord { factor, previous: before.clone(), at: Utc::now(), applied: true, lifted: false };
            let now: Vec<_> = before.iter().map(|b| b.scaled(factor).unwrap()).collect();
            for (put, b) in put_back(&record, &now).unwrap().into_iter().zip(&before) {
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
