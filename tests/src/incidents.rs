//! The incident lifecycle, checked against a reference model (issue 20 §3). Random sequences of
//! spend that crosses budgets at nested scopes (org, project, key), budget checks, deliveries of
//! the emergencies they publish (duplicated and late), manual kills, restores, provider failures
//! and timeouts, invocations that crash after any store write, and pairs of invocations at once,
//! run through the real budget check and key-guard on a real store. A deterministic scheduler
//! lets one store, provider or bus call happen at a time, in an order the case chooses, so every
//! interleaving a case names is reproducible and shrinks.
//!
//! After each sequence settles (Lambda's retries, an operator finishing a restore that failed,
//! leases running out), these must hold:
//! 1. a key is stopped at its provider exactly when an engaged switch covers it, and its record
//!    says so (no intent left, never "disabled elsewhere");
//! 2. every crossing was alerted (published, under its one alert id) and its incident is held by
//!    its switch or was released by a restore; no alert was raised for a budget that did not cross;
//!    an alert is published a second time only after an invocation crashed (at least once,
//!    and exactly once when nothing crashes: fan-out delivers each alert id once);
//! 3. the audit log names every incident that joined a switch, and replaying its switch entries
//!    through the reference state machine is legal and ends in the switch as stored;
//! 4. a withheld secret is back on its original version when no switch covers it, never a marker;
//! 5. an opted-in resource is stopped exactly when an engaged switch covering it holds an
//!    incident that ordered a shutdown, a provider's spend limit exactly when an engaged switch
//!    covers it; each is otherwise back in the state it had before.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use rust_decimal::Decimal;
use serde_json::Value;
use spendguard_app::flows::check::{CheckOptions, Checker};
use spendguard_app::flows::guard::KeyGuard;
use spendguard_app::flows::ingest::ingest_usage;
use spendguard_app::ports::bus::{AlertBus, BusError};
use spendguard_app::ports::clock::{Clock, FixedClock};
use spendguard_app::ports::keys::{KeyProvider, ProviderError};
use spendguard_app::ports::secret_versions::SecretVersions;
use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};
use spendguard_app::ports::sources::SpendSource;
use spendguard_app::ports::store::StoreResult;
use spendguard_app::sources::counters::UsageCounters;
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::alert::{AlertEvent, AlertKind};
use spendguard_domain::budget::{
    Action, Basis, Budget, Severity, SourceSpec, Threshold, Tier, Window,
};
use spendguard_domain::keys::is_marker;
use spendguard_domain::keys::{Credential, KeyRecord, KeySpec, KeyStatus, ProviderKind};
use spendguard_domain::money::{Currency, Money};
use spendguard_domain::period::{WindowKind, YearMonth, Zone};
use spendguard_domain::pricing::Tokens;
use spendguard_domain::records::{
    Acknowledgement, AuditEntry, Claim, ClaimOutcome, KillSwitch, Observation, OpenAlert,
    SourceDay, SwitchState, Versioned,
};
use spendguard_domain::resources::{Resource, ResourceKind, ResourceState};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::{PolicySet, RestorePolicy, Settings};
use spendguard_domain::usage::{
    CounterKey, HourCounters, HourKey, IngestOutcome, MonthCounters, UsageEntry, UsageRecord,
};
use tokio::sync::{Notify, oneshot};

use crate::conformance::Store;
use spendguard_app::ports::store::AckOutcome;
use spendguard_app::ports::store::AlertStore;
use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::ClaimStore;
use spendguard_app::ports::store::FreshCounters;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::MarkerStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::SpendStore;
use spendguard_app::ports::store::{ReservationRequest, ReservationStore, Reserved};

// ---- the scheduler --------------------------------------------------------------------------

#[derive(Default)]
struct SchedState {
    /// Calls waiting for their turn, in the order they arrived: waiter id -> its go-ahead.
    waiting: BTreeMap<usize, oneshot::Sender<()>>,
    /// A call was let through and has not returned yet.
    in_flight: bool,
    next_waiter: usize,
}

/// Lets one gated call happen at a time, chosen by the case.
#[derive(Default)]
pub struct Sched {
    state: Mutex<SchedState>,
    changed: Notify,
}

impl Sched {
    async fn gate(&self) {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.state.lock().unwrap();
            let id = s.next_waiter;
            s.next_waiter += 1;
            s.waiting.insert(id, tx);
        }
        self.changed.notify_one();
        // a dropped sender (the case is over) never lets it through
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn returned(&self) {
        self.state.lock().unwrap().in_flight = false;
        self.changed.notify_one();
    }

    /// Runs `invocations` to completion, one gated call at a time; `choices` picks which of the
    /// waiting calls goes next. An invocation that crashed never finishes: `None`.
    async fn run<T>(
        &self,
        invocations: Vec<Pin<Box<dyn Future<Output = T> + '_>>>,
        choices: &[u8],
    ) -> Vec<Option<T>> {
        let mut results: Vec<Option<T>> = invocations.iter().map(|_| None).collect();
        let mut running: FuturesUnordered<_> = invocations
            .into_iter()
            .enumerate()
            .map(|(i, f)| async move { (i, f.await) })
            .collect();
        let mut turn = 0usize;
        loop {
            // let everything run until each invocation waits at a gate, crashed or is done
            loop {
                tokio::select! {
                    biased;
                    Some((i, r)) = running.next(), if !running.is_empty() => {
                        results[i] = Some(r);
                    }
                    _ = self.changed.notified() => {}
                    _ = tokio::task::yield_now(), if !self.state.lock().unwrap().in_flight => break,
                }
            }
            let next = {
                let mut s = self.state.lock().unwrap();
                if s.waiting.is_empty() {
                    None
                } else {
                    let pick = choices
                        .get(turn % choices.len().max(1))
                        .copied()
                        .unwrap_or(0) as usize
                        % s.waiting.len();
                    let id = *s.waiting.keys().nth(pick).unwrap();
                    s.in_flight = true;
                    s.waiting.remove(&id)
                }
            };
            turn += 1;
            match next {
                Some(go) => {
                    if go.send(()).is_err() {
                        self.returned();
                    }
                }
                // nothing waits: the rest crashed (they never finish)
                None => break,
            }
        }
        results
    }
}

/// One invocation's view of the world: its gate, and whether it has crashed.
pub struct Invocation {
    sched: Arc<Sched>,
    /// It dies right after this many more successful store writes.
    crash_after_writes: Mutex<Option<usize>>,
    crashed: AtomicBool,
}

impl Invocation {
    fn new(sched: Arc<Sched>, crash_after_writes: Option<usize>) -> Arc<Self> {
        Arc::new(Invocation {
            sched,
            crash_after_writes: Mutex::new(crash_after_writes),
            crashed: AtomicBool::new(false),
        })
    }

    async fn turn(&self) {
        if self.crashed.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.sched.gate().await;
    }

    fn done(&self, wrote: bool) {
        if wrote {
            let mut left = self.crash_after_writes.lock().unwrap();
            if let Some(n) = left.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.crashed.store(true, Ordering::SeqCst);
                }
            }
        }
        self.sched.returned();
    }

    async fn call<T, F: Future<Output = T>>(&self, f: F) -> T {
        self.turn().await;
        let r = f.await;
        self.done(false);
        r
    }

    async fn write<T, F: Future<Output = StoreResult<T>>>(&self, f: F) -> StoreResult<T> {
        self.turn().await;
        let r = f.await;
        self.done(r.is_ok());
        r
    }
}

// ---- the store, providers, secrets and bus as one invocation sees them ----------------------

/// The store under test, every call gated; writes count toward the invocation's crash.
struct GatedStore {
    inner: Store,
    inv: Arc<Invocation>,
}

#[async_trait]
impl PolicyStore for GatedStore {
    async fn put_policy(&self, set: &PolicySet) -> StoreResult<()> {
        self.inv.write(self.inner.put_policy(set)).await
    }

    async fn load_policy(&self) -> StoreResult<PolicySet> {
        self.inv.call(self.inner.load_policy()).await
    }

    async fn policy_version(&self) -> StoreResult<String> {
        self.inv.call(self.inner.policy_version()).await
    }

    async fn put_budget(&self, budget: &Budget) -> StoreResult<()> {
        self.inv.write(self.inner.put_budget(budget)).await
    }

    async fn get_budget(&self, id: &str) -> StoreResult<Option<Budget>> {
        self.inv.call(self.inner.get_budget(id)).await
    }

    async fn delete_budget(&self, id: &str) -> StoreResult<bool> {
        self.inv.write(self.inner.delete_budget(id)).await
    }

    async fn put_settings(&self, settings: &Settings) -> StoreResult<()> {
        self.inv.write(self.inner.put_settings(settings)).await
    }

    async fn settings(&self) -> StoreResult<Settings> {
        self.inv.call(self.inner.settings()).await
    }
}

#[async_trait]
impl ReservationStore for GatedStore {
    async fn outstanding(
        &self,
        windows: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Decimal>> {
        self.inv.call(self.inner.outstanding(windows, now)).await
    }

    async fn reserve(
        &self,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Reserved> {
        self.inv.write(self.inner.reserve(request, now)).await
    }
}

#[async_trait]
impl SpendStore for GatedStore {
    async fn ingest_usage(
        &self,
        entries: &[UsageEntry],
        now: DateTime<Utc>,
        marker_ttl: Duration,
    ) -> StoreResult<IngestOutcome> {
        self.inv
            .write(self.inner.ingest_usage(entries, now, marker_ttl))
            .await
    }

    async fn scopes_with_counters(&self, month: YearMonth) -> StoreResult<Vec<Scope>> {
        self.inv.call(self.inner.scopes_with_counters(month)).await
    }

    async fn read_fresh(
        &self,
        months: &[CounterKey],
        hours: &[HourKey],
        fresh_pending: &[String],
    ) -> StoreResult<FreshCounters> {
        self.inv
            .call(self.inner.read_fresh(months, hours, fresh_pending))
            .await
    }

    async fn roll_up(&self, leaves: &[Scope], now: DateTime<Utc>) -> StoreResult<usize> {
        self.inv.write(self.inner.roll_up(leaves, now)).await
    }

    async fn late_spend(&self) -> StoreResult<spendguard_app::ports::store::LateSpend> {
        self.inv.call(self.inner.late_spend()).await
    }

    async fn settle_late_spend(
        &self,
        evaluated: &spendguard_app::ports::store::LateSpend,
        until: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inv
            .write(self.inner.settle_late_spend(evaluated, until))
            .await
    }

    async fn pending_leaves(
        &self,
        limit: usize,
    ) -> StoreResult<spendguard_app::ports::store::PendingLeaves> {
        self.inv.call(self.inner.pending_leaves(limit)).await
    }

    async fn put_summaries(&self, summaries: &[DailySummary]) -> StoreResult<()> {
        self.inv.write(self.inner.put_summaries(summaries)).await
    }

    async fn summaries(
        &self,
        scope: &Scope,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<DailySummary>> {
        self.inv.call(self.inner.summaries(scope, from, to)).await
    }

    async fn read_counters(
        &self,
        keys: &[CounterKey],
    ) -> StoreResult<BTreeMap<CounterKey, MonthCounters>> {
        self.inv.call(self.inner.read_counters(keys)).await
    }

    async fn read_hours(&self, keys: &[HourKey]) -> StoreResult<BTreeMap<HourKey, HourCounters>> {
        self.inv.call(self.inner.read_hours(keys)).await
    }

    async fn put_observations(&self, observations: &[Observation]) -> StoreResult<()> {
        self.inv
            .write(self.inner.put_observations(observations))
            .await
    }

    async fn observations(&self, budget_id: &str) -> StoreResult<Vec<Observation>> {
        self.inv.call(self.inner.observations(budget_id)).await
    }

    async fn put_source_days(&self, days: &[SourceDay]) -> StoreResult<()> {
        self.inv.write(self.inner.put_source_days(days)).await
    }

    async fn source_days(
        &self,
        budget_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<SourceDay>> {
        self.inv
            .call(self.inner.source_days(budget_id, from, to))
            .await
    }
}

#[async_trait]
impl ClaimStore for GatedStore {
    async fn claim(&self, claim: &Claim, now: DateTime<Utc>) -> StoreResult<ClaimOutcome> {
        self.inv.write(self.inner.claim(claim, now)).await
    }

    async fn claims_done(&self, claims: &[Claim]) -> StoreResult<Vec<bool>> {
        self.inv.call(self.inner.claims_done(claims)).await
    }

    async fn finish_claim(&self, claim: &Claim) -> StoreResult<()> {
        self.inv.write(self.inner.finish_claim(claim)).await
    }

    async fn release_claim(&self, claim: &Claim) -> StoreResult<()> {
        self.inv.write(self.inner.release_claim(claim)).await
    }
}

#[async_trait]
impl AlertStore for GatedStore {
    async fn put_open_alert(&self, alert: &OpenAlert) -> StoreResult<()> {
        self.inv.write(self.inner.put_open_alert(alert)).await
    }

    async fn open_alerts(&self) -> StoreResult<Vec<OpenAlert>> {
        self.inv.call(self.inner.open_alerts()).await
    }

    async fn acknowledge_alert(
        &self,
        alert_id: &str,
        ack: &Acknowledgement,
    ) -> StoreResult<AckOutcome> {
        self.inv
            .write(self.inner.acknowledge_alert(alert_id, ack))
            .await
    }

    async fn set_escalation_level(&self, alert_id: &str, level: u32) -> StoreResult<()> {
        self.inv
            .write(self.inner.set_escalation_level(alert_id, level))
            .await
    }

    async fn close_alert(&self, alert_id: &str) -> StoreResult<()> {
        self.inv.write(self.inner.close_alert(alert_id)).await
    }

    async fn queue_digest(
        &self,
        channel: &str,
        event: &AlertEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inv
            .write(self.inner.queue_digest(channel, event, now))
            .await
    }

    async fn digest_queue(&self, channel: &str) -> StoreResult<Vec<(DateTime<Utc>, AlertEvent)>> {
        self.inv.call(self.inner.digest_queue(channel)).await
    }

    async fn remove_from_digest(&self, channel: &str, alert_ids: &[String]) -> StoreResult<()> {
        self.inv
            .write(self.inner.remove_from_digest(channel, alert_ids))
            .await
    }
}

#[async_trait]
impl KeyStore for GatedStore {
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.inv.call(self.inner.keys()).await
    }

    async fn key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>> {
        self.inv.call(self.inner.key(key_id)).await
    }

    async fn put_key_status(
        &self,
        key_id: &str,
        status: &KeyStatus,
        expected: u64,
    ) -> StoreResult<u64> {
        self.inv
            .write(self.inner.put_key_status(key_id, status, expected))
            .await
    }

    async fn kill_switch(&self, scope: &Scope) -> StoreResult<Option<Versioned<KillSwitch>>> {
        self.inv.call(self.inner.kill_switch(scope)).await
    }

    async fn active_kill_switches(&self) -> StoreResult<Vec<Versioned<KillSwitch>>> {
        self.inv.call(self.inner.active_kill_switches()).await
    }

    async fn kill_switches(&self, scopes: &[Scope]) -> StoreResult<Vec<Versioned<KillSwitch>>> {
        self.inv.call(self.inner.kill_switches(scopes)).await
    }

    async fn put_kill_switch(
        &self,
        switch: &KillSwitch,
        expected: Option<u64>,
        audit: &AuditEntry,
    ) -> StoreResult<u64> {
        self.inv
            .write(self.inner.put_kill_switch(switch, expected, audit))
            .await
    }
}

#[async_trait]
impl AuditLog for GatedStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.inv.write(self.inner.append_audit(entry)).await
    }

    async fn audit_log(&self, month: YearMonth, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.inv.call(self.inner.audit_log(month, limit)).await
    }
}

#[async_trait]
impl MarkerStore for GatedStore {
    async fn put_marker(
        &self,
        namespace: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.inv
            .write(self.inner.put_marker(namespace, id, now, ttl))
            .await
    }

    async fn has_marker(&self, namespace: &str, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        self.inv
            .call(self.inner.has_marker(namespace, id, now))
            .await
    }

    async fn get_cached(&self, key: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        self.inv.call(self.inner.get_cached(key, now)).await
    }

    async fn put_cached(
        &self,
        key: &str,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inv
            .write(self.inner.put_cached(key, value, expires_at))
            .await
    }
}

/// How the next provider call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused: nothing happens at the provider.
    Refused,
    /// The call is carried out, but its answer is lost (a timeout).
    Timeout,
}

/// A provider's keys (Anthropic's semantics: active or inactive, reversibly).
#[derive(Default)]
pub struct ProviderKeys {
    active: Mutex<BTreeMap<String, bool>>,
    fail_next: Mutex<Vec<Failure>>,
}

impl ProviderKeys {
    fn is_on(&self, key_id: &str) -> bool {
        self.active
            .lock()
            .unwrap()
            .get(key_id)
            .copied()
            .unwrap_or(true)
    }

    fn set(&self, key: &KeySpec, on: bool) -> Result<(), ProviderError> {
        let failure = self.fail_next.lock().unwrap().pop();
        let err = |what: &str| ProviderError::Unavailable {
            provider: ProviderKind::Anthropic,
            message: what.into(),
        };
        if failure == Some(Failure::Refused) {
            return Err(err("HTTP 500: overloaded"));
        }
        self.active
            .lock()
            .unwrap()
            .insert(key.key_id.clone().unwrap_or_default(), on);
        if failure == Some(Failure::Timeout) {
            return Err(err("timed out"));
        }
        Ok(())
    }
}

struct GatedProvider {
    keys: Arc<ProviderKeys>,
    inv: Arc<Invocation>,
}

#[async_trait]
impl KeyProvider for GatedProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }
    async fn is_active(&self, key: &KeySpec) -> Result<bool, ProviderError> {
        self.inv
            .call(async { Ok(self.keys.is_on(key.key_id.as_deref().unwrap_or_default())) })
            .await
    }
    async fn disable(&self, key: &KeySpec) -> Result<(), ProviderError> {
        self.inv.call(async { self.keys.set(key, false) }).await
    }
    async fn enable(&self, key: &KeySpec) -> Result<(), ProviderError> {
        self.inv.call(async { self.keys.set(key, true) }).await
    }
    async fn test(&self, _credential: &Credential) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Opted-in cloud resources and their states (what a shutdown stops and a restore puts back).
pub struct Cloud {
    states: Mutex<BTreeMap<String, ResourceState>>,
}

impl Default for Cloud {
    fn default() -> Self {
        Cloud {
            states: Mutex::new(
                RESOURCES
                    .iter()
                    .map(|r| (r.0.to_string(), original(r.1)))
                    .collect(),
            ),
        }
    }
}

fn original(kind: ResourceKind) -> ResourceState {
    match kind {
        ResourceKind::LambdaFunction => ResourceState::Concurrency { reserved: Some(7) },
        ResourceKind::OpenaiSpendLimit => ResourceState::SpendLimit {
            cents: Some(50_000),
        },
        _ => ResourceState::Instance { running: true },
    }
}

fn resources() -> Vec<Resource> {
    RESOURCES
        .iter()
        .map(|(id, kind, scope)| Resource {
            kind: *kind,
            id: id.to_string(),
            scope: Scope::parse(scope).unwrap(),
        })
        .collect()
}

/// The cloud as one invocation sees it: every call gated; `set` fails as the next queued
/// provider failure says (one queue for keys and resources). `with_keys`: the target of the
/// providers' spend limits (stopped with the keys), otherwise of the shutdown resources.
struct GatedCloud {
    cloud: Arc<Cloud>,
    failures: Arc<ProviderKeys>,
    inv: Arc<Invocation>,
    with_keys: bool,
}

#[async_trait]
impl ShutdownTarget for GatedCloud {
    async fn opted_in(
        &self,
        _policy: &PolicySet,
        _scope: &Scope,
    ) -> Result<Vec<Resource>, ShutdownError> {
        let with_keys = self.with_keys;
        self.inv
            .call(async move {
                Ok(resources()
                    .into_iter()
                    .filter(|r| (r.kind == ResourceKind::OpenaiSpendLimit) == with_keys)
                    .collect())
            })
            .await
    }
    fn stops_with_keys(&self) -> bool {
        self.with_keys
    }
    async fn state(&self, resource: &Resource) -> Result<ResourceState, ShutdownError> {
        self.inv
            .call(async { Ok(self.cloud.states.lock().unwrap()[&resource.id].clone()) })
            .await
    }
    async fn set(&self, resource: &Resource, to: &ResourceState) -> Result<(), ShutdownError> {
        self.inv
            .call(async {
                let failure = self.failures.fail_next.lock().unwrap().pop();
                if failure == Some(Failure::Refused) {
                    return Err(ShutdownError("HTTP 500: service unavailable".into()));
                }
                self.cloud
                    .states
                    .lock()
                    .unwrap()
                    .insert(resource.id.clone(), to.clone());
                if failure == Some(Failure::Timeout) {
                    return Err(ShutdownError("timed out".into()));
                }
                Ok(())
            })
            .await
    }
}

/// Secrets with versions and the AWSCURRENT and AWSPREVIOUS stages, as Secrets Manager keeps
/// them: a new current version moves the old one to previous.
#[derive(Default)]
pub struct Secrets {
    /// arn -> (version -> value, current, previous, token -> version)
    secrets: Mutex<BTreeMap<String, SecretState>>,
}

#[derive(Default, Clone)]
struct SecretState {
    versions: BTreeMap<String, String>,
    current: String,
    previous: Option<String>,
    tokens: BTreeMap<String, String>,
}

impl Secrets {
    fn add(&self, arn: &str, value: &str) {
        let mut s = SecretState::default();
        s.versions.insert("v0".into(), value.into());
        s.current = "v0".into();
        self.secrets.lock().unwrap().insert(arn.into(), s);
    }

    fn current(&self, arn: &str) -> (String, String) {
        let all = self.secrets.lock().unwrap();
        let s = &all[arn];
        (s.current.clone(), s.versions[&s.current].clone())
    }
}

struct GatedSecrets {
    secrets: Arc<Secrets>,
    inv: Arc<Invocation>,
}

fn secret_err(m: &str) -> ProviderError {
    ProviderError::Unavailable {
        provider: ProviderKind::SecretOnly,
        message: m.into(),
    }
}

#[async_trait]
impl SecretVersions for GatedSecrets {
    async fn current(&self, arn: &str) -> Result<(String, String), ProviderError> {
        self.inv.call(async { Ok(self.secrets.current(arn)) }).await
    }
    async fn previous(&self, arn: &str) -> Result<Option<String>, ProviderError> {
        self.inv
            .call(async { Ok(self.secrets.secrets.lock().unwrap()[arn].previous.clone()) })
            .await
    }
    async fn put_current(&self, arn: &str, token: &str, value: &str) -> Result<(), ProviderError> {
        self.inv
            .call(async {
                let mut all = self.secrets.secrets.lock().unwrap();
                let s = all
                    .get_mut(arn)
                    .ok_or_else(|| secret_err("no such secret"))?;
                if let Some(v) = s.tokens.get(token) {
                    // Secrets Manager: the same token and value is the same version
                    return if s.versions[v] == value {
                        Ok(())
                    } else {
                        Err(secret_err("ResourceExistsException"))
                    };
                }
                let id = format!("v{}", s.versions.len());
                s.versions.insert(id.clone(), value.into());
                s.tokens.insert(token.into(), id.clone());
                s.previous = Some(std::mem::replace(&mut s.current, id));
                Ok(())
            })
            .await
    }
    async fn move_current(&self, arn: &str, to: &str, from: &str) -> Result<(), ProviderError> {
        self.inv
            .call(async {
                let mut all = self.secrets.secrets.lock().unwrap();
                let s = all
                    .get_mut(arn)
                    .ok_or_else(|| secret_err("no such secret"))?;
                if s.current != from || !s.versions.contains_key(to) {
                    return Err(secret_err(
                        "InvalidParameterException: stage not on that version",
                    ));
                }
                s.previous = Some(std::mem::replace(&mut s.current, to.into()));
                Ok(())
            })
            .await
    }
    async fn start_rotation(&self, _arn: &str) -> Result<(), ProviderError> {
        Err(secret_err("rotation is not part of this model"))
    }
}

/// Every alert published, in order.
#[derive(Default)]
pub struct Published(Mutex<Vec<AlertEvent>>);

struct GatedBus {
    published: Arc<Published>,
    inv: Arc<Invocation>,
}

#[async_trait]
impl AlertBus for GatedBus {
    async fn publish(&self, event: &AlertEvent) -> Result<(), BusError> {
        self.inv
            .call(async {
                self.published.0.lock().unwrap().push(event.clone());
                Ok(())
            })
            .await
    }
}

// ---- the world and the operations ---------------------------------------------------------

const LIMIT: i64 = 10;
/// (budget id, scope): an org cap, a project cap and a key cap, nested.
const BUDGETS: [(&str, &str); 3] = [("org", "ai"), ("team", "ai/prod"), ("key", "ai/prod/k1")];
/// Where spend lands: each rolls up to the budgets above it.
const SPEND_SCOPES: [&str; 3] = ["ai/prod/k1", "ai/prod/k2", "ai/dev/k3"];
/// Where an operator kills or restores.
const SWITCH_SCOPES: [&str; 3] = ["ai", "ai/prod", "ai/prod/k1"];
/// (key id, provider key id or secret, scope): k2's secret is withheld (a secret-only key).
const KEYS: [(&str, &str, &str); 3] = [
    ("k1", "p1", "ai/prod/k1"),
    ("k2", "arn:k2", "ai/prod/k2"),
    ("k3", "p3", "ai/dev/k3"),
];
const K2_ORIGINAL: &str = "sk-k2-original";
/// (id, kind, scope): resources that opted in to shutdowns, and a provider's spend limit that
/// every stop covering it sets.
const RESOURCES: [(&str, ResourceKind, &str); 3] = [
    ("fn-prod", ResourceKind::LambdaFunction, "ai/prod"),
    ("vm-dev", ResourceKind::Ec2Instance, "ai/dev"),
    (
        "openai:project:proj_m",
        ResourceKind::OpenaiSpendLimit,
        "ai/prod",
    ),
];

#[derive(Debug, Clone)]
pub enum Op {
    /// $11 of usage at `SPEND_SCOPES[scope]` (every covering daily budget crosses), then a
    /// budget check.
    Spend {
        scope: u8,
        crash: Option<u8>,
    },
    Check {
        crash: Option<u8>,
    },
    /// key-guard receives the `event`-th emergency published so far (again, or late).
    Deliver {
        event: u8,
        crash: Option<u8>,
    },
    Kill {
        scope: u8,
        crash: Option<u8>,
    },
    /// An operator's shutdown: a kill, then the opted-in resources under the scope.
    Shutdown {
        scope: u8,
        crash: Option<u8>,
    },
    Restore {
        scope: u8,
        crash: Option<u8>,
    },
    /// The next provider call fails.
    Fail(Failure),
    /// Two operations at once, their calls interleaved as `choices` says.
    Together(Box<Op>, Box<Op>, Vec<u8>),
    /// Minutes pass (leases of crashed invocations run out after 2 and 5).
    Tick {
        minutes: u8,
    },
    /// The rest of the day (its scheduled checks), then the next day: daily budgets can
    /// cross again.
    NextDay,
}

/// What an invocation was, for the bookkeeping of how it ended.
#[derive(Debug, Clone)]
enum Tag {
    Spend(Scope),
    Check,
    /// key-guard acting on an incident (an emergency delivered, or a manual kill).
    Stop(String),
    Restore(Scope),
}

pub struct World {
    store: Store,
    clock: Arc<FixedClock>,
    sched: Arc<Sched>,
    provider: Arc<ProviderKeys>,
    secrets: Arc<Secrets>,
    cloud: Arc<Cloud>,
    published: Arc<Published>,
    next_invocation: usize,
    spent: usize,
    /// Restores that did not finish: the operator runs them again (unless interrupted).
    unfinished: Vec<Scope>,
    /// Every incident key-guard was asked to act on, with its scope.
    incidents: BTreeMap<String, Scope>,
    /// The incidents that ordered a shutdown (their resources stop too).
    shutdowns: BTreeSet<String>,
    /// Incidents key-guard finished acting on once (Lambda retries only what failed).
    stopped: BTreeSet<String>,
    /// Whether key-guard also holds a provider's spend limit (stopped with the keys).
    provider_limits: bool,
    /// (budget, day) pairs whose spend reached the limit.
    crossings: BTreeSet<(String, NaiveDate)>,
    /// Crossings a check evaluated: a check is "as of now", so a daily crossing whose day ended
    /// before any check finished after its spend was counted is not evaluated (the limitation
    /// docs/keys.md states); every other crossing is owed its alert.
    owed: BTreeSet<(String, NaiveDate)>,
    /// Spend per scope and day, as the model counts it.
    spend: BTreeMap<(String, NaiveDate), i64>,
    /// Invocations that crashed: only a crash (between a publish and the finish of its claim)
    /// may publish an alert a second time.
    crashed: usize,
    log: Vec<String>,
}

fn policy() -> PolicySet {
    let budgets = BUDGETS
        .iter()
        .map(|(id, scope)| Budget {
            id: id.to_string(),
            description: None,
            scope: Scope::parse(scope).unwrap(),
            currency: Currency::USD,
            zone: Zone::UTC,
            windows: vec![Window {
                provider_cap: false,
                kind: WindowKind::Daily,
                limit: Decimal::from(LIMIT),
                tiers: vec![Tier {
                    name: "emergency".into(),
                    threshold: Threshold::Percent(Decimal::ONE_HUNDRED),
                    basis: Basis::Actual,
                    severity: Severity::Emergency,
                    actions: vec![Action::Notify, Action::DisableKeys],
                }],
            }],
            source: SourceSpec::Usage,
            routing: BTreeMap::new(),
        })
        .collect();
    let keys = KEYS
        .iter()
        .map(|(id, reference, scope)| KeySpec {
            id: id.to_string(),
            provider: if reference.starts_with("arn:") {
                ProviderKind::SecretOnly
            } else {
                ProviderKind::Anthropic
            },
            scope: Scope::parse(scope).unwrap(),
            secret_arn: reference.starts_with("arn:").then(|| reference.to_string()),
            key_id: (!reference.starts_with("arn:")).then(|| reference.to_string()),
            project_id: None,
            user: None,
            rotation: None,
            allow_delete: false,
        })
        .collect();
    let mut settings = Settings::default();
    settings.security.enabled = false;
    PolicySet {
        settings,
        budgets,
        keys,
    }
}

impl World {
    pub async fn new(store: Store) -> World {
        World::with_provider_limits(store, true).await
    }

    /// A world whose key-guard holds a provider's spend limit or not (cases found before
    /// provider limits existed replay their interleavings without them).
    pub async fn with_provider_limits(store: Store, provider_limits: bool) -> World {
        store.put_policy(&policy()).await.unwrap();
        let secrets = Arc::new(Secrets::default());
        secrets.add("arn:k2", K2_ORIGINAL);
        World {
            store,
            clock: Arc::new(FixedClock::new("2026-11-20T10:00:00Z".parse().unwrap())),
            sched: Arc::new(Sched::default()),
            provider: Arc::new(ProviderKeys::default()),
            secrets,
            cloud: Arc::new(Cloud::default()),
            published: Arc::new(Published::default()),
            next_invocation: 0,
            spent: 0,
            unfinished: Vec::new(),
            incidents: BTreeMap::new(),
            shutdowns: BTreeSet::new(),
            stopped: BTreeSet::new(),
            provider_limits,
            crossings: BTreeSet::new(),
            owed: BTreeSet::new(),
            spend: BTreeMap::new(),
            crashed: 0,
            log: Vec::new(),
        }
    }

    fn invocation(&mut self, crash: Option<u8>) -> Arc<Invocation> {
        self.next_invocation += 1;
        // crash after the n-th write, n in 1..=12 (a larger n usually means: no crash)
        Invocation::new(self.sched.clone(), crash.map(|c| usize::from(c % 12) + 1))
    }

    fn guard(&self, inv: &Arc<Invocation>) -> KeyGuard {
        let store: Store = Arc::new(GatedStore {
            inner: self.store.clone(),
            inv: inv.clone(),
        });
        let mut guard = KeyGuard::new(
            store,
            vec![Arc::new(GatedProvider {
                keys: self.provider.clone(),
                inv: inv.clone(),
            })],
            Some(Arc::new(GatedSecrets {
                secrets: self.secrets.clone(),
                inv: inv.clone(),
            })),
            self.clock.clone(),
            [false, true]
                .into_iter()
                .filter(|with_keys| !with_keys || self.provider_limits)
                .map(|with_keys| {
                    Arc::new(GatedCloud {
                        cloud: self.cloud.clone(),
                        failures: self.provider.clone(),
                        inv: inv.clone(),
                        with_keys,
                    }) as Arc<dyn ShutdownTarget>
                })
                .collect(),
        );
        // a busy key or resource is reported at once; the settle step retries (as Lambda does)
        guard.lease_waits = &[];
        guard
    }

    fn checker(&self, inv: &Arc<Invocation>) -> Checker {
        let store: Store = Arc::new(GatedStore {
            inner: self.store.clone(),
            inv: inv.clone(),
        });
        Checker {
            store: store.clone(),
            bus: Arc::new(GatedBus {
                published: self.published.clone(),
                inv: inv.clone(),
            }),
            sources: vec![Arc::new(UsageCounters::new(store)) as Arc<dyn SpendSource>],
            key_usage: Vec::new(),
            clock: self.clock.clone(),
            claim_lease: spendguard_app::flows::check::DEFAULT_CLAIM_LEASE,
            provider_caps: Vec::new(),
            pending_age: None,
        }
    }

    fn emergencies(&self) -> Vec<AlertEvent> {
        let mut seen = BTreeSet::new();
        self.published
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == AlertKind::Budget && e.actions.contains(&Action::DisableKeys))
            .filter(|e| seen.insert(e.alert_id.clone()))
            .cloned()
            .collect()
    }

    /// The invocation an operation makes (its future), and what to remember of it.
    fn start(&mut self, op: &Op) -> Option<(Tag, Invoked)> {
        let now = self.clock.now();
        match op {
            Op::Spend { scope, crash } => {
                let scope = SPEND_SCOPES[usize::from(*scope) % SPEND_SCOPES.len()];
                self.spent += 1;
                let record = UsageRecord {
                    id: format!("u{}", self.spent),
                    scope: Scope::parse(scope).unwrap(),
                    provider: "anthropic".into(),
                    model: None,
                    tokens: Tokens::default(),
                    requests: 1,
                    cost: Money::new(Decimal::from(11), Currency::USD),
                    timestamp: now,
                    covers_minutes: 1,
                    user: None,
                    endpoint: None,
                    feature: None,
                };
                let day = now.date_naive();
                for s in Scope::parse(scope).unwrap().rollup() {
                    let total = self.spend.entry((s.to_string(), day)).or_default();
                    *total += 11;
                    if *total >= LIMIT
                        && let Some((id, _)) = BUDGETS.iter().find(|(_, b)| *b == s.as_str())
                    {
                        self.crossings.insert((id.to_string(), day));
                    }
                }
                let inv = self.invocation(*crash);
                let checker = self.checker(&inv);
                let budgets = policy().budgets;
                let leaf = Scope::parse(scope).unwrap();
                let tag = Tag::Spend(leaf.clone());
                Some((
                    tag,
                    Box::pin(async move {
                        // the webhook counts it, the table's stream rolls it up (ADR 031),
                        // then it evaluates (as budget-check does)
                        ingest_usage(checker.store.as_ref(), &budgets, &[record], None, now)
                            .await
                            .map_err(|e| e.to_string())?;
                        checker
                            .store
                            .roll_up(&[leaf], now)
                            .await
                            .map_err(|e| e.to_string())?;
                        checker
                            .run(&CheckOptions::default())
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(failed_if_incomplete)
                    }),
                ))
            }
            Op::Check { crash } => {
                let inv = self.invocation(*crash);
                let checker = self.checker(&inv);
                Some((
                    Tag::Check,
                    Box::pin(async move {
                        checker
                            .run(&CheckOptions::default())
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(failed_if_incomplete)
                    }),
                ))
            }
            Op::Deliver { event, crash } => {
                let all = self.emergencies();
                let e = all.get(usize::from(*event) % all.len().max(1))?.clone();
                Some(self.stop(&e.scope, &e.alert_id, *crash))
            }
            Op::Kill { scope, crash } => {
                let scope = Scope::parse(SWITCH_SCOPES[usize::from(*scope) % 3]).unwrap();
                let incident = format!("manual-{}", self.next_invocation + 1);
                Some(self.stop(&scope, &incident, *crash))
            }
            Op::Shutdown { scope, crash } => {
                let scope = Scope::parse(SWITCH_SCOPES[usize::from(*scope) % 3]).unwrap();
                let incident = format!("shutdown-{}", self.next_invocation + 1);
                self.shutdowns.insert(incident.clone());
                Some(self.stop(&scope, &incident, *crash))
            }
            Op::Restore { scope, crash } => {
                let scope = Scope::parse(SWITCH_SCOPES[usize::from(*scope) % 3]).unwrap();
                let inv = self.invocation(*crash);
                let guard = self.guard(&inv);
                let tag = Tag::Restore(scope.clone());
                Some((
                    tag,
                    Box::pin(async move {
                        match guard.restore(&scope, "op", &RestorePolicy::default()).await {
                            Ok(_) => Ok(()),
                            Err(spendguard_app::flows::guard::GuardError::NotEngaged(_)) => Ok(()),
                            Err(spendguard_app::flows::guard::GuardError::Interrupted(..)) => {
                                Ok(())
                            }
                            Err(e) => Err(format!("restore {scope}: {e}")),
                        }
                    }),
                ))
            }
            Op::Fail(_) | Op::Tick { .. } | Op::NextDay | Op::Together(..) => None,
        }
    }

    /// Runs one operation (two, for `Together`); returns how each invocation ended.
    pub async fn apply(&mut self, op: &Op) -> Vec<Option<Outcome>> {
        self.log.push(format!("{op:?}"));
        match op {
            Op::Fail(f) => {
                self.provider.fail_next.lock().unwrap().push(*f);
                Vec::new()
            }
            Op::Tick { minutes } => {
                self.clock.advance(Duration::minutes(i64::from(*minutes)));
                Vec::new()
            }
            Op::NextDay => {
                // the day's remaining scheduled checks run (every 5 minutes: one after the
                // leases of crashed runs have run out), then the day ends
                self.clock.advance(Duration::minutes(6));
                let results = Box::pin(self.apply(&Op::Check { crash: None })).await;
                let next = self.clock.now().date_naive() + Duration::days(1);
                self.clock
                    .set(next.and_hms_opt(10, 0, 0).unwrap().and_utc());
                results
            }
            Op::Together(a, b, choices) => {
                let before = self.crossings.clone();
                let started: Vec<(Tag, Invoked)> =
                    [a, b].iter().filter_map(|o| self.start(o)).collect();
                self.run(started, choices, &before).await
            }
            single => {
                let before = self.crossings.clone();
                let started: Vec<(Tag, Invoked)> = self.start(single).into_iter().collect();
                self.run(started, &[0], &before).await
            }
        }
    }

    /// key-guard acting on `incident` at `scope` (an emergency, or a manual kill).
    fn stop(&mut self, scope: &Scope, incident: &str, crash: Option<u8>) -> (Tag, Invoked) {
        self.incidents.insert(incident.to_string(), scope.clone());
        let inv = self.invocation(crash);
        let guard = self.guard(&inv);
        let (scope, incident) = (scope.clone(), incident.to_string());
        let tag = Tag::Stop(incident.clone());
        let shutdown = self.shutdowns.contains(&incident);
        (
            tag,
            Box::pin(async move {
                if shutdown {
                    guard.shut_down(&scope, "shutdown", "op", &incident).await
                } else {
                    guard
                        .disable(&scope, "emergency", "budget-check", &incident)
                        .await
                }
                .map(|_| ())
                .map_err(|e| e.to_string())
            }),
        )
    }

    async fn run(
        &mut self,
        started: Vec<(Tag, Invoked)>,
        choices: &[u8],
        before: &BTreeSet<(String, NaiveDate)>,
    ) -> Vec<Option<Outcome>> {
        let (tags, futures): (Vec<Tag>, Vec<Invoked>) = started.into_iter().unzip();
        let results = self.sched.clone().run(futures, choices).await;
        self.crashed += results.iter().filter(|r| r.is_none()).count();
        for (tag, result) in tags.iter().zip(&results) {
            let ended = match result {
                None => "crashed".to_string(),
                Some(Ok(())) => "ok".to_string(),
                Some(Err(e)) => format!("failed: {e}"),
            };
            self.log.push(format!("  {tag:?}: {ended}"));
        }
        self.remember(&tags, &results, before);
        results
    }

    /// What finished invocations leave the model: a check that ran to its end owes an alert
    /// to every crossing counted before it started, and a spend's own check to the crossings
    /// of its own spend; a stop that finished is not retried; a restore that did not finish is
    /// for the operator to run again.
    fn remember(
        &mut self,
        tags: &[Tag],
        results: &[Option<Outcome>],
        before: &BTreeSet<(String, NaiveDate)>,
    ) {
        let today = self.clock.now().date_naive();
        let earlier: Vec<(String, NaiveDate)> = before
            .iter()
            .filter(|(_, d)| *d == today)
            .cloned()
            .collect();
        for (tag, result) in tags.iter().zip(results) {
            let finished = matches!(result, Some(Ok(())));
            match tag {
                Tag::Spend(spent) if finished => {
                    let own = BUDGETS
                        .iter()
                        .filter(|(_, b)| spent.rollup().iter().any(|s| s.as_str() == *b))
                        .map(|(id, _)| (id.to_string(), today));
                    self.owed.extend(own);
                    self.owed.extend(earlier.iter().cloned());
                }
                Tag::Check if finished => self.owed.extend(earlier.iter().cloned()),
                Tag::Stop(incident) if finished => {
                    self.stopped.insert(incident.clone());
                }
                Tag::Restore(scope) if !finished => self.unfinished.push(scope.clone()),
                _ => {}
            }
        }
    }

    /// Lambda's retries, an operator finishing restores that failed, leases running out:
    /// until a round fails nothing.
    pub async fn settle(&mut self) -> Result<(), String> {
        self.provider.fail_next.lock().unwrap().clear();
        // the table's stream delivers every pending item, whichever invocation wrote it and
        // whether or not it crashed after its ingest (ADR 031), and Lambda retries the roll-up
        // until it succeeds: here, once, before the scheduled checks
        let leaves: Vec<Scope> = SPEND_SCOPES
            .iter()
            .map(|s| Scope::parse(s).unwrap())
            .collect();
        self.store
            .roll_up(&leaves, self.clock.now())
            .await
            .map_err(|e| e.to_string())?;
        for round in 0..8 {
            self.clock.advance(Duration::minutes(6));
            let mut failed = Vec::new();
            if let Some(Err(e)) = self.apply(&Op::Check { crash: None }).await.pop().flatten() {
                failed.push(e);
            }
            // a restore that failed is run again by the operator, unless an emergency
            // engaged the switch again meanwhile (the restore was interrupted)
            for scope in std::mem::take(&mut self.unfinished) {
                let interrupted = self
                    .store
                    .kill_switch(&scope)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some_and(|v| matches!(v.value.state, SwitchState::Engaged { .. }));
                if !interrupted {
                    let i = SWITCH_SCOPES
                        .iter()
                        .position(|s| *s == scope.as_str())
                        .unwrap();
                    let restore = Op::Restore {
                        scope: i as u8,
                        crash: None,
                    };
                    if let Some(Err(e)) = self.apply(&restore).await.pop().flatten() {
                        failed.push(e);
                    }
                }
            }
            // every emergency reaches key-guard at least once (SNS), and whatever failed or
            // crashed is retried (Lambda); an operator runs a failed kill again
            let emergencies: Vec<(Scope, String)> = self
                .emergencies()
                .into_iter()
                .map(|e| (e.scope, e.alert_id))
                .collect();
            let manual: Vec<(Scope, String)> = self
                .incidents
                .iter()
                .filter(|(i, _)| i.starts_with("manual-") || i.starts_with("shutdown-"))
                .map(|(i, s)| (s.clone(), i.clone()))
                .collect();
            for (scope, incident) in emergencies.into_iter().chain(manual) {
                if self.stopped.contains(&incident) {
                    continue;
                }
                self.log.push(format!("(retry) stop {incident} at {scope}"));
                let started = vec![self.stop(&scope, &incident, None)];
                if let Some(Some(Err(e))) = self.run(started, &[0], &BTreeSet::new()).await.pop() {
                    failed.push(e);
                }
            }
            if failed.is_empty() && self.unfinished.is_empty() {
                return Ok(());
            }
            if round == 7 {
                return Err(format!("did not settle: {failed:?}"));
            }
        }
        Ok(())
    }

    /// The invariants and the reference model (module docs).
    pub async fn check(&self) -> Result<(), String> {
        let switches = self.switches().await?;
        let keys = self.store.keys().await.map_err(|e| e.to_string())?;
        let covered = |scope: &Scope| {
            switches
                .values()
                .any(|s| s.value.state.stops() && s.value.scope.contains(scope))
        };
        // 1. a key is off exactly when an engaged switch covers it
        for k in &keys {
            let off = match &k.spec.secret_arn {
                Some(arn) => is_marker(&self.secrets.current(arn).1),
                None => !self
                    .provider
                    .is_on(k.spec.key_id.as_deref().unwrap_or_default()),
            };
            let should = covered(&k.spec.scope);
            if off != should {
                return Err(format!(
                    "key {} is {} but {} switch covers it; its record: {:?}",
                    k.spec.id,
                    if off { "off" } else { "on" },
                    if should { "an engaged" } else { "no engaged" },
                    k.status
                ));
            }
            let recorded = match &k.status {
                KeyStatus::DisabledBySpendguard { .. } => true,
                KeyStatus::Active => false,
                other => return Err(format!("key {} was left {other:?}", k.spec.id)),
            };
            if recorded != off {
                return Err(format!(
                    "key {} is {} but recorded {:?}",
                    k.spec.id,
                    if off { "off" } else { "on" },
                    k.status
                ));
            }
        }
        for s in switches.values() {
            if matches!(s.value.state, SwitchState::Releasing { .. }) {
                return Err(format!("switch {} was left releasing", s.value.scope));
            }
        }
        // 5. a resource is stopped exactly when an engaged switch covering it holds an incident
        // that ordered a shutdown (a spend limit: any incident); otherwise it is as it was
        for r in resources() {
            let with_keys = r.kind == ResourceKind::OpenaiSpendLimit;
            if with_keys && !self.provider_limits {
                continue;
            }
            let state = self.cloud.states.lock().unwrap()[&r.id].clone();
            let should = switches.values().any(|s| {
                s.value.state.stops()
                    && s.value.scope.contains(&r.scope)
                    && (with_keys
                        || s.value
                            .state
                            .holding()
                            .iter()
                            .any(|i| self.shutdowns.contains(i)))
            });
            let expected = if should {
                r.kind.stopped()
            } else {
                original(r.kind)
            };
            if state != expected {
                return Err(format!(
                    "resource {} is {state} but should be {expected}",
                    r.id
                ));
            }
        }
        // 4. the withheld secret is back on its own version
        let (version, value) = self.secrets.current("arn:k2");
        let k2 = Scope::parse("ai/prod/k2").unwrap();
        if !covered(&k2) && (version != "v0" || value != K2_ORIGINAL) {
            return Err(format!(
                "k2's secret is on {version} ({value}) with no switch covering it"
            ));
        }
        // 2. every crossing alerted, its incident held or released; nothing else alerted
        let emergencies = self.emergencies();
        let mut alerted: BTreeSet<(String, NaiveDate)> = BTreeSet::new();
        for e in &emergencies {
            let day = e.period_start.date_naive();
            if !self.crossings.contains(&(e.budget_id.clone(), day)) {
                return Err(format!(
                    "alert for {} on {day}, which did not cross",
                    e.budget_id
                ));
            }
            alerted.insert((e.budget_id.clone(), day));
            let switch = switches.get(e.scope.as_str());
            let kept = switch.is_some_and(|s| {
                s.value.state.holding().contains(&e.alert_id) || s.value.was_released(&e.alert_id)
            });
            if !kept {
                return Err(format!(
                    "incident {} ({} {day}) was lost: switch {:?}",
                    e.alert_id,
                    e.budget_id,
                    switch.map(|s| &s.value)
                ));
            }
        }
        if let Some(missed) = self.owed.difference(&alerted).next() {
            return Err(format!(
                "crossing {missed:?} was evaluated but never alerted"
            ));
        }
        // ... and exactly once: a second publish of an alert only follows a crash
        if self.crashed == 0 {
            let mut publishes: BTreeMap<String, usize> = BTreeMap::new();
            for e in self.published.0.lock().unwrap().iter() {
                *publishes.entry(e.alert_id.clone()).or_default() += 1;
            }
            if let Some((id, n)) = publishes.iter().find(|(_, n)| **n > 1) {
                return Err(format!(
                    "alert {id} was published {n} times and no invocation crashed"
                ));
            }
        }
        // 3. the audit log replayed through the reference model ends in the stored switches
        let audit = self.audit().await?;
        for (scope, stored) in &switches {
            let entries: Vec<&AuditEntry> = audit
                .iter()
                .filter(|e| {
                    e.scope.as_ref().is_some_and(|s| s.as_str() == scope)
                        && e.detail.get("version").is_some()
                })
                .collect();
            let model = Reference::replay(scope, &entries)?;
            model.matches(&stored.value, stored.version)?;
            for incident in stored
                .value
                .state
                .holding()
                .iter()
                .chain(stored.value.released.iter().map(|r| &r.incident))
            {
                if !entries
                    .iter()
                    .any(|e| e.detail["incident"].as_str() == Some(incident))
                {
                    return Err(format!("incident {incident} holds {scope} unaudited"));
                }
            }
        }
        Ok(())
    }

    async fn switches(&self) -> Result<BTreeMap<String, Versioned<KillSwitch>>, String> {
        let mut out = BTreeMap::new();
        for s in SWITCH_SCOPES {
            if let Some(v) = self
                .store
                .kill_switch(&Scope::parse(s).unwrap())
                .await
                .map_err(|e| e.to_string())?
            {
                out.insert(s.to_string(), v);
            }
        }
        Ok(out)
    }

    async fn audit(&self) -> Result<Vec<AuditEntry>, String> {
        let start = "2026-11-20".parse::<NaiveDate>().unwrap();
        let end = self.clock.now().date_naive();
        let mut months = BTreeSet::new();
        for d in start.iter_days().take_while(|d| *d <= end) {
            months.insert(YearMonth::of(d));
        }
        let mut out = Vec::new();
        for m in months {
            out.extend(
                self.store
                    .audit_log(m, 100_000)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(out)
    }

    pub fn log(&self) -> &[String] {
        &self.log
    }
}

/// How one invocation ended.
pub type Outcome = Result<(), String>;

/// An invocation, ready to run.
type Invoked = Pin<Box<dyn Future<Output = Outcome>>>;

fn failed_if_incomplete(r: spendguard_app::flows::check::CheckReport) -> Outcome {
    if r.failures.is_empty() {
        Ok(())
    } else {
        Err(r.failures.join("; "))
    }
}

// ---- the reference model of one switch ------------------------------------------------------

/// The state machine of docs/keys.md, small enough to be obviously right.
#[derive(Debug, Default, PartialEq)]
enum Modelled {
    #[default]
    Absent,
    Open,
    Engaged(Vec<String>),
    Releasing(Vec<String>, String),
    Restoring,
}

#[derive(Debug, Default)]
struct Reference {
    state: Modelled,
    released: BTreeSet<String>,
    version: u64,
}

fn list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Reference {
    fn replay(scope: &str, entries: &[&AuditEntry]) -> Result<Reference, String> {
        let mut by_version: Vec<&&AuditEntry> = entries.iter().collect();
        by_version.sort_by_key(|e| e.detail["version"].as_u64());
        let mut m = Reference::default();
        for e in by_version {
            let version = e.detail["version"].as_u64().unwrap_or(0);
            if version != m.version + 1 {
                return Err(format!(
                    "{scope}: switch version {version} follows {} in the audit log",
                    m.version
                ));
            }
            let incident = e.detail["incident"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let fresh = !incident.is_empty() && !m.released.contains(&incident);
            m.state = match (e.action.as_str(), std::mem::take(&mut m.state)) {
                (
                    "kill_switch_engaged",
                    Modelled::Absent | Modelled::Open | Modelled::Restoring,
                ) if fresh => Modelled::Engaged(vec![incident]),
                ("incident_joined", Modelled::Engaged(mut held))
                    if fresh && !held.contains(&incident) =>
                {
                    held.push(incident);
                    Modelled::Engaged(held)
                }
                ("restore_interrupted", Modelled::Releasing(mut held, _))
                    if fresh && !held.contains(&incident) =>
                {
                    held.push(incident);
                    Modelled::Engaged(held)
                }
                ("restore_started", Modelled::Engaged(held) | Modelled::Releasing(held, _))
                    if list(&e.detail["incidents"]) == held =>
                {
                    Modelled::Releasing(
                        held,
                        e.detail["restore"].as_str().unwrap_or_default().into(),
                    )
                }
                ("restore_finished", Modelled::Releasing(held, restore))
                    if list(&e.detail["released"]) == held
                        && e.detail["restore"].as_str() == Some(restore.as_str()) =>
                {
                    m.released.extend(held);
                    Modelled::Restoring
                }
                ("limit_ramp_step", Modelled::Restoring) => {
                    if e.detail["state"] == "open" {
                        Modelled::Open
                    } else {
                        Modelled::Restoring
                    }
                }
                (action, state) => {
                    return Err(format!(
                        "{scope}: `{action}` (v{version}, {}) is not a transition from {state:?}",
                        e.detail
                    ));
                }
            };
            m.version = version;
        }
        Ok(m)
    }

    fn matches(&self, stored: &KillSwitch, version: u64) -> Result<(), String> {
        let held = stored.state.holding();
        let same = match (&self.state, &stored.state) {
            (Modelled::Open, SwitchState::Open)
            | (Modelled::Restoring, SwitchState::Restoring { .. }) => true,
            (Modelled::Engaged(m), SwitchState::Engaged { .. }) => *m == held,
            (Modelled::Releasing(m, r), SwitchState::Releasing { restore, .. }) => {
                *m == held && r == restore
            }
            _ => false,
        };
        let released: BTreeSet<String> =
            stored.released.iter().map(|r| r.incident.clone()).collect();
        if !same || self.version != version || released != self.released {
            return Err(format!(
                "switch {}: the audit log replays to {:?} v{} released {:?}, the store holds {:?} v{version} released {released:?}",
                stored.scope, self.state, self.version, self.released, stored.state
            ));
        }
        Ok(())
    }
}

// ---- generating cases -----------------------------------------------------------------------

pub mod strategy {
    use super::{Failure, Op};
    use proptest::prelude::*;

    fn crash() -> impl Strategy<Value = Option<u8>> {
        prop_oneof![4 => Just(None), 1 => any::<u8>().prop_map(Some)]
    }

    fn invocation() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, crash()).prop_map(|(scope, crash)| Op::Spend { scope, crash }),
            1 => crash().prop_map(|crash| Op::Check { crash }),
            4 => deliver(),
            1 => kill(),
            1 => shutdown(),
            3 => restore(),
        ]
    }

    fn shutdown() -> impl Strategy<Value = Op> {
        (0u8..3, crash()).prop_map(|(scope, crash)| Op::Shutdown { scope, crash })
    }

    fn restore() -> impl Strategy<Value = Op> {
        (0u8..3, crash()).prop_map(|(scope, crash)| Op::Restore { scope, crash })
    }

    fn deliver() -> impl Strategy<Value = Op> {
        (any::<u8>(), crash()).prop_map(|(event, crash)| Op::Deliver { event, crash })
    }

    fn kill() -> impl Strategy<Value = Op> {
        (0u8..3, crash()).prop_map(|(scope, crash)| Op::Kill { scope, crash })
    }

    /// The pairs that race for the same keys: an emergency and a restore, two emergencies, a
    /// kill and a restore.
    fn rival() -> impl Strategy<Value = (Op, Op)> {
        prop_oneof![
            3 => (restore(), deliver()),
            2 => (deliver(), deliver()),
            1 => (kill(), restore()),
            2 => (shutdown(), restore()),
            1 => (shutdown(), deliver()),
        ]
    }

    pub fn op() -> impl Strategy<Value = Op> {
        let choices = || prop::collection::vec(any::<u8>(), 1..16);
        prop_oneof![
            8 => invocation(),
            3 => (invocation(), invocation(), choices())
                .prop_map(|(a, b, c)| Op::Together(Box::new(a), Box::new(b), c)),
            4 => (rival(), choices())
                .prop_map(|((a, b), c)| Op::Together(Box::new(a), Box::new(b), c)),
            1 => prop_oneof![Just(Failure::Refused), Just(Failure::Timeout)].prop_map(Op::Fail),
            1 => (1u8..8).prop_map(|minutes| Op::Tick { minutes }),
            1 => Just(Op::NextDay),
        ]
    }

    pub fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(op(), 1..14)
    }
}

/// The longest one case may take (settling included) before it counts as hung.
pub const CASE_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one case on a fresh store: the operations, then the settle step, then the checks.
pub async fn run_case(store: Store, ops: &[Op]) -> Result<(), String> {
    run_case_in(World::new(store).await, ops).await
}

/// [`run_case`] in a world built by the caller.
pub async fn run_case_in(mut world: World, ops: &[Op]) -> Result<(), String> {
    for op in ops {
        world.apply(op).await;
    }
    world
        .settle()
        .await
        .and(world.check().await)
        .map_err(|e| format!("{e}\n  after: {}", world.log().join("\n         ")))
}

/// Turns the model into a proptest of `$cases` cases on the store `$make` builds (an async
/// expression), each case on a fresh store in a runtime of its own.
#[macro_export]
macro_rules! incident_model {
    ($name:ident, $make:expr, $cases:expr) => {
        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig {
                cases: $cases,
                failure_persistence: None,
                max_shrink_time: 60_000,
                ..proptest::prelude::ProptestConfig::default()
            })]
            #[test]
            fn $name(ops in $crate::incidents::strategy::ops()) {
                // one runtime for every case: connections the AWS SDK pools must not outlive it
                thread_local! {
                    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                }
                let result = RUNTIME.with(|runtime| runtime.block_on(async {
                    let store = $make;
                    // a case that hangs (a deadlock the scheduler cannot break) fails, shrunk,
                    // instead of stalling CI; a case takes milliseconds to about a second
                    tokio::time::timeout(
                        $crate::incidents::CASE_TIME_LIMIT,
                        $crate::incidents::run_case(store, &ops),
                    )
                    .await
                    .unwrap_or_else(|_| Err(format!(
                        "the case did not finish within {:?}",
                        $crate::incidents::CASE_TIME_LIMIT
                    )))
                }));
                proptest::prop_assert!(result.is_ok(), "{}", result.unwrap_err());
            }
        }
    };
}

// ---- a throttle and its recovery at once ----------------------------------------------------

/// A `reduce_limits(0.5)` alert and its recovery delivered to key-guard at the same time, their
/// store calls interleaved as `choices` says (one at a time, as in the model above); `replay`
/// delivers the alert once more afterwards. Returns the limit factor of the alert's scope once
/// both are done: the recovery was seen, so nothing may stay lowered (1).
pub async fn throttle_racing_its_recovery(store: Store, choices: &[u8], replay: bool) -> Decimal {
    let scope = Scope::parse("ai/batch").unwrap();
    let clock: Arc<FixedClock> = Arc::new(FixedClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
    let sched = Arc::new(Sched::default());
    let guard = |inv: Arc<Invocation>| {
        let gated: Store = Arc::new(GatedStore {
            inner: store.clone(),
            inv,
        });
        KeyGuard::new(gated, Vec::new(), None, clock.clone(), Vec::new())
    };
    let lowering = guard(Invocation::new(sched.clone(), None));
    let lifting = guard(Invocation::new(sched.clone(), None));
    let factor = Decimal::new(5, 1);
    let (alert, s) = ("alert-throttle", &scope);
    let invocations: Vec<Pin<Box<dyn Future<Output = Outcome> + '_>>> = vec![
        Box::pin(async {
            lowering
                .reduce_limits(alert, s, factor, "key-guard")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        Box::pin(async {
            lifting
                .lift_limits(alert, s, factor, "key-guard")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    ];
    for result in sched.run(invocations, choices).await {
        result.expect("both finish").expect("both succeed");
    }
    if replay {
        let again = guard(Invocation::new(sched.clone(), None));
        let late: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = vec![Box::pin(async {
            again
                .reduce_limits(alert, s, factor, "key-guard")
                .await
                .expect("replay");
        })];
        sched.run(late, &[0]).await;
    }
    store
        .kill_switch(&scope)
        .await
        .unwrap()
        .map_or(Decimal::ONE, |v| v.value.limit_factor)
}
