//! Throttling at the provider, checked against a reference model (issue 22 part 2). Random
//! sequences of `reduce_limits` alerts at several factors, their recoveries, deliveries twice
//! at once, writes the provider refuses part-way (then Lambda's retry) and people changing a
//! model's limits by hand, run through the real throttle flow on a real store against an
//! in-memory provider. After every step the provider's limits must be what the model says:
//!
//! - a throttle in force at factor `f` leaves every model at `f` × the limits recorded when the
//!   first throttle began (rounded down, at least 1) — except models changed by hand since;
//! - the recovery of the alert in force puts back each model still as the throttle left it,
//!   and leaves the others as they are;
//! - replays and concurrent deliveries change nothing more than one delivery does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use proptest::prelude::*;
use rust_decimal::Decimal;
use spendguard_app::flows::throttle::{Order, Throttle, ThrottleOutcome};
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::keys::ProviderError;
use spendguard_app::ports::rate_limits::ProviderRateLimits;
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::throttle::ModelRateLimit;

use crate::conformance::Store;

const PROJECT: &str = "proj_m";
const MODELS: [&str; 3] = ["gpt-4o", "dall-e-3", "tts-1"];
/// Two scopes whose alerts both cover the project (an organisation's and a team's budget).
const SCOPES: [&str; 2] = ["ai", "ai/batch"];
/// The factors alerts order (as budgets files set them).
pub const FACTORS: [(i64, u32); 4] = [(5, 1), (25, 2), (1, 1), (1, 0)];

fn factor(i: usize) -> Decimal {
    let (m, s) = FACTORS[i % FACTORS.len()];
    Decimal::new(m, s)
}

#[derive(Debug, Clone)]
pub enum Op {
    /// A `reduce_limits(factor)` alert, delivered once or twice at once; the provider refuses
    /// the write after `fail_after` successful ones (then the delivery is retried: at once, or
    /// with `retry_later` only after the next alert has been handled).
    Lower {
        scope: usize,
        factor: usize,
        twice: bool,
        fail_after: Option<usize>,
        retry_later: bool,
    },
    /// The recovery of a `reduce_limits(factor)` alert on a scope.
    Lift {
        scope: usize,
        factor: usize,
        twice: bool,
        fail_after: Option<usize>,
    },
    /// A person sets a model's requests per minute at the provider.
    ByHand { model: usize, rpm: u64 },
}

pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    let fail = proptest::option::weighted(0.25, 0usize..3);
    let op = prop_oneof![
        4 => (0..SCOPES.len(), 0..FACTORS.len(), any::<bool>(), fail.clone(), any::<bool>())
            .prop_map(|(scope, factor, twice, fail_after, retry_later)| Op::Lower { scope, factor, twice, fail_after, retry_later }),
        3 => (0..SCOPES.len(), 0..FACTORS.len(), any::<bool>(), fail)
            .prop_map(|(scope, factor, twice, fail_after)| Op::Lift { scope, factor, twice, fail_after }),
        2 => (0..MODELS.len(), 1u64..2000).prop_map(|(model, rpm)| Op::ByHand { model, rpm }),
    ];
    proptest::collection::vec(op, 1..12)
}

/// The provider: each model's limits, and writes it refuses after a countdown.
#[derive(Default)]
struct Provider {
    limits: Mutex<BTreeMap<String, ModelRateLimit>>,
    /// Writes still accepted before the next one is refused (`usize::MAX`: all).
    accept: AtomicUsize,
}

#[async_trait]
impl ProviderRateLimits for Provider {
    fn provider(&self) -> ProviderKind {
        ProviderKind::Openai
    }

    async fn rate_limits(&self, project: &str) -> Result<Vec<ModelRateLimit>, ProviderError> {
        assert_eq!(project, PROJECT);
        Ok(self.limits.lock().unwrap().values().cloned().collect())
    }

    async fn set_rate_limit(
        &self,
        project: &str,
        limit: &ModelRateLimit,
    ) -> Result<(), ProviderError> {
        assert_eq!(project, PROJECT);
        if self
            .accept
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(ProviderError::Unavailable {
                provider: ProviderKind::Openai,
                message: "refused by the model's provider".into(),
            });
        }
        let mut limits = self.limits.lock().unwrap();
        let known = limits
            .get_mut(&limit.id)
            .ok_or_else(|| ProviderError::Refused {
                provider: ProviderKind::Openai,
                message: format!("no rate limit {}", limit.id),
            })?;
        assert_eq!(
            known.limits.keys().collect::<Vec<_>>(),
            limit.limits.keys().collect::<Vec<_>>(),
            "only the fields the model has"
        );
        known.limits = limit.limits.clone();
        Ok(())
    }
}

fn limits_of(rpm: u64, tpm: u64) -> BTreeMap<String, u64> {
    [
        ("max_requests_per_1_minute".to_string(), rpm),
        ("max_tokens_per_1_minute".to_string(), tpm),
    ]
    .into()
}

/// Each model's limits, by rate limit id.
type Limits = BTreeMap<String, BTreeMap<String, u64>>;

/// What the provider must hold: each model's limits, and the throttle: each scope's order,
/// every factor applied, the limits when it began.
#[derive(Debug, Clone, Default)]
struct Model {
    expected: Limits,
    factors: BTreeMap<usize, Decimal>,
    applied: Vec<Decimal>,
    base: Option<Limits>,
}

fn scaled(limits: &BTreeMap<String, u64>, factor: Decimal) -> BTreeMap<String, u64> {
    limits
        .iter()
        .map(|(k, v)| {
            let s = (Decimal::from(*v) * factor).floor();
            (k.clone(), u64::try_from(s).unwrap().max(1))
        })
        .collect()
}

impl Model {
    fn in_force(&self) -> Option<Decimal> {
        self.factors.values().min().copied()
    }

    fn lower(&mut self, scope: usize, f: Decimal) {
        let base = self
            .base
            .get_or_insert_with(|| self.expected.clone())
            .clone();
        let before = self.in_force();
        let ordered = self.factors.get(&scope).map_or(f, |g| (*g).min(f));
        self.factors.insert(scope, ordered);
        let to = self.in_force().unwrap();
        if before != Some(to) {
            self.expected = base
                .iter()
                .map(|(m, l)| (m.clone(), scaled(l, to)))
                .collect();
            self.applied.push(to);
        }
    }

    fn lift(&mut self, scope: usize, f: Decimal) {
        let Some(base) = self.base.clone() else {
            return;
        };
        if self.factors.get(&scope) != Some(&f) {
            return;
        }
        self.factors.remove(&scope);
        let to = self.in_force();
        for (m, l) in &base {
            let wanted = to.map_or_else(|| l.clone(), |t| scaled(l, t));
            let ours = self.expected[m] == *l
                || self
                    .applied
                    .iter()
                    .any(|a| self.expected[m] == scaled(l, *a));
            if ours {
                self.expected.insert(m.clone(), wanted);
            }
        }
        match to {
            Some(t) => self.applied.push(t),
            None => {
                self.base = None;
                self.applied.clear();
            }
        }
    }
}

/// Runs `ops` on `store`; `Err` names the first step where the provider differs from the model.
pub async fn run_case(store: Store, ops: &[Op]) -> Result<(), String> {
    let provider = Arc::new(Provider::default());
    provider.accept.store(usize::MAX, Ordering::SeqCst);
    let mut model = Model::default();
    for (i, m) in MODELS.iter().enumerate() {
        let limits = limits_of(100 * (i as u64 + 1) + 7, 30_000 * (i as u64 + 1));
        provider.limits.lock().unwrap().insert(
            format!("rl-{m}"),
            ModelRateLimit {
                id: format!("rl-{m}"),
                model: m.to_string(),
                limits: limits.clone(),
                inherited: Default::default(),
            },
        );
        model.expected.insert(format!("rl-{m}"), limits);
    }
    let policy = PolicySet {
        keys: vec![KeySpec {
            id: "k".into(),
            provider: ProviderKind::Openai,
            scope: Scope::parse("ai/batch/k").unwrap(),
            secret_arn: None,
            key_id: Some("key_k".into()),
            project_id: Some(PROJECT.into()),
            user: None,
            rotation: None,
            allow_delete: false,
        }],
        ..PolicySet::default()
    };
    let scopes: Vec<Scope> = SCOPES.iter().map(|s| Scope::parse(s).unwrap()).collect();
    let throttle = Throttle {
        store,
        clock: Arc::new(FixedClock::new(Utc::now())),
        targets: vec![provider.clone()],
        lease_waits: &[1, 2, 4, 8, 16, 32, 64],
    };
    let actual = || -> Limits {
        provider
            .limits
            .lock()
            .unwrap()
            .iter()
            .map(|(id, l)| (id.clone(), l.limits.clone()))
            .collect()
    };
    let deliver = |lift: bool, s: usize, f: Decimal| {
        let (throttle, policy, scope) = (&throttle, &policy, &scopes[s]);
        async move {
            let order = if lift { Order::Lift } else { Order::Lower };
            let reports = throttle.apply(order, policy, scope, f, "model").await;
            reports.into_iter().map(|r| r.outcome).collect::<Vec<_>>()
        }
    };
    let unfinished = |outcomes: &[ThrottleOutcome]| {
        outcomes
            .iter()
            .any(|o| matches!(o, ThrottleOutcome::Failed(_) | ThrottleOutcome::InProgress))
    };
    // Lambda retries a delivery that failed (or found another at work) until it succeeds
    let provider_ref = &provider;
    let deliver = &deliver;
    let unfinished = &unfinished;
    let retry = |lift: bool, s: usize, f: Decimal| async move {
        provider_ref.accept.store(usize::MAX, Ordering::SeqCst);
        for _ in 0..5 {
            let outcomes = deliver(lift, s, f).await;
            if !unfinished(&outcomes) {
                return Ok(outcomes);
            }
        }
        Err(format!(
            "still failing after 5 retries: lift {lift} scope {s} factor {f}"
        ))
    };
    // a lower whose retry waits for the next alert
    let mut pending: Option<(usize, Decimal)> = None;
    for (step, op) in ops.iter().enumerate() {
        let (lift, sc, f, twice, fail_after, retry_later) = match op {
            Op::ByHand { model: m, rpm } => {
                if let Some((ps, pf)) = pending.take() {
                    retry(false, ps, pf).await?;
                }
                let id = format!("rl-{}", MODELS[*m]);
                let mut limits = provider.limits.lock().unwrap();
                let l = limits.get_mut(&id).unwrap();
                l.limits.insert("max_requests_per_1_minute".into(), *rpm);
                model.expected.insert(id, l.limits.clone());
                continue;
            }
            Op::Lower {
                scope,
                factor: f,
                twice,
                fail_after,
                retry_later,
            } => (false, *scope, factor(*f), *twice, *fail_after, *retry_later),
            Op::Lift {
                scope,
                factor: f,
                twice,
                fail_after,
            } => (true, *scope, factor(*f), *twice, *fail_after, false),
        };
        // a recovery comes after the retry of what it recovers from
        if lift && let Some((ps, pf)) = pending.take() {
            retry(false, ps, pf).await?;
        }
        provider
            .accept
            .store(fail_after.unwrap_or(usize::MAX), Ordering::SeqCst);
        let mut outcomes = if twice {
            let (a, b) = tokio::join!(deliver(lift, sc, f), deliver(lift, sc, f));
            a.into_iter().chain(b).collect()
        } else {
            deliver(lift, sc, f).await
        };
        provider.accept.store(usize::MAX, Ordering::SeqCst);
        if lift {
            model.lift(sc, f);
        } else {
            model.lower(sc, f);
        }
        let earlier = pending.take();
        if unfinished(&outcomes) {
            if retry_later && earlier.is_none() {
                // checked once the retry has run, after the next alert
                pending = Some((sc, f));
                continue;
            }
            outcomes = retry(lift, sc, f)
                .await
                .map_err(|e| format!("step {step}: {e}"))?;
        }
        // the earlier lower is in force already, before its retry: never loosened by this one
        if actual() != model.expected {
            return Err(format!(
                "step {step} {op:?} ({outcomes:?}), before the retry of the lower at {earlier:?}:\n  provider {:?}\n  model    {:?}",
                actual(),
                model.expected
            ));
        }
        if let Some((ps, pf)) = earlier {
            retry(false, ps, pf)
                .await
                .map_err(|e| format!("step {step}: {e}"))?;
        }
        if actual() != model.expected {
            return Err(format!(
                "step {step} {op:?} ({outcomes:?}):\n  provider {:?}\n  model    {:?}",
                actual(),
                model.expected
            ));
        }
    }
    if let Some((ps, pf)) = pending {
        retry(false, ps, pf).await?;
        if actual() != model.expected {
            return Err(format!(
                "after the last retry:\n  provider {:?}\n  model    {:?}",
                actual(),
                model.expected
            ));
        }
    }
    Ok(())
}

/// The model as a proptest of `$cases` cases on stores `$make` builds.
#[macro_export]
macro_rules! throttle_model {
    ($name:ident, $make:expr, $cases:expr) => {
        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig {
                cases: $cases,
                failure_persistence: None,
                max_shrink_time: 30_000,
                ..proptest::prelude::ProptestConfig::default()
            })]
            #[test]
            fn $name(ops in $crate::throttle_model::ops()) {
                thread_local! {
                    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                }
                let result = RUNTIME.with(|runtime| runtime.block_on(async {
                    tokio::time::timeout(
                        std::time::Duration::from_secs(20),
                        $crate::throttle_model::run_case($make, &ops),
                    )
                    .await
                    .unwrap_or_else(|_| Err("the case did not finish within 20 s".into()))
                }));
                proptest::prop_assert!(result.is_ok(), "{}", result.unwrap_err());
            }
        }
    };
}
