//! Theft detection as it runs every scheduled check (ADR 016): reads each key's hour counters and
//! the providers' own counts, learns and caches baselines, raises findings once, acts on them,
//! and lifts throttles after a quiet hour. The rules themselves are pure (domain::security).

use crate::lease::{Once, OnceError, once};
use crate::ports::bus::AlertBus;
use crate::ports::key_usage::KeyUsageSource;
use crate::ports::store::{StateStore, StoreError};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use spendguard_domain::alert::{AlertDetails, AlertEvent};
use spendguard_domain::budget::Action;
use spendguard_domain::ids::KeyId;
use spendguard_domain::key_hours::HourFigures;
use spendguard_domain::key_hours::{KeyHours, ProviderHour};
use spendguard_domain::keys::{KeyRecord, KeyStatus, ProviderKind};
use spendguard_domain::ledger::{
    ProviderSpend, comparable, day_drift, provider_spend, unreported_spend,
};
use spendguard_domain::period::{YearMonth, Zone};
use spendguard_domain::records::{AuditEntry, Claim, Lease};
use spendguard_domain::scope::Scope;
use spendguard_domain::security::Baseline;
use spendguard_domain::security::Finding;
use spendguard_domain::security::FindingReport;
use spendguard_domain::security::ScanReport;
use spendguard_domain::security::ack_id;
use spendguard_domain::security::detect;
use spendguard_domain::settings::Settings;
use spendguard_domain::usage::{CounterKey, HourKey, Metric, start_of_hour};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::{info, warn};

/// Where `spendguard ack` records that a finding was expected (per key, detector and day).
pub const ACK_NAMESPACE: &str = "security-ack";

const BASELINE_CACHE: &str = "security-baseline";

const FINDING_CACHE: &str = "security-finding";

/// The finding that throttled a key (`reduce_limits`), until its recovery lifts the throttle.
const THROTTLE_CACHE: &str = "security-throttle";

/// Security claims are kept this long (a finding is claimed per key, hour and level).
const CLAIM_RETENTION: Duration = Duration::days(35);

/// Each provider's watermark: the current hour of the last run that read its usage per key
/// and judged it to the end.
const WATERMARK_CACHE: &str = "security-provider-watermark";

/// Where the days whose price-book drift was reported are marked (per provider and day).
const DRIFT_NAMESPACE: &str = "price-book-drift";

/// Checks that did not run for longer than this are not caught up further back: with the
/// current hour, 169 hourly buckets (two pages of 168).
const MAX_CATCH_UP_HOURS: i64 = 168;

/// Each provider's usage per key, the first hour to judge, and the providers read in full
/// (whose watermarks may advance).
type ProviderReads = (
    BTreeMap<ProviderKind, KeyHours>,
    DateTime<Utc>,
    Vec<ProviderKind>,
);

/// The provider's usage of a key's hour and its spend at the price book.
type ProviderLedger<'p> = (ProviderSpend, &'p ProviderHour);

/// How far back a key's last use is looked for when its baseline window saw none.
const DORMANCY_LOOKBACK_MONTHS: usize = 6;

fn watermark_key(provider: ProviderKind) -> String {
    format!("{WATERMARK_CACHE}#{}", provider.as_str())
}

fn provider_hour<'m>(
    by_provider: &'m BTreeMap<ProviderKind, KeyHours>,
    key: &KeyRecord,
    hour: DateTime<Utc>,
) -> Option<&'m ProviderHour> {
    let key_id = key.spec.key_id.clone()?;
    by_provider.get(&key.spec.provider)?.get(&(key_id, hour))
}

/// Marks a published finding as expected: its detectors stay quiet for that key for the rest
/// of the finding's day. False when no finding with that alert id is known.
pub async fn acknowledge(
    store: &dyn StateStore,
    alert_id: &str,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(doc) = store
        .get_cached(&format!("{FINDING_CACHE}#{alert_id}"), now)
        .await?
    else {
        return Ok(false);
    };
    let finding: Finding = crate::ports::store::from_doc("finding", &doc)?;
    let day = finding.hour.date_naive();
    let until = day
        .succ_opt()
        .unwrap_or(day)
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    for s in &finding.signals {
        store
            .put_marker(
                ACK_NAMESPACE,
                &ack_id(&finding.key_id, s.detector, day),
                now,
                until - now,
            )
            .await?;
    }
    store
        .append_audit(&AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: now,
            actor: actor.into(),
            action: "security_finding_acknowledged".into(),
            scope: Some(finding.scope.clone()),
            detail: json!({"alert_id": alert_id, "key": finding.key_id, "day": day,
                "detectors": finding.detectors(), "reason": reason}),
        })
        .await?;
    Ok(true)
}

/// The scan a scheduled check runs over every active key.
pub struct SecurityScan<'a> {
    pub store: &'a dyn StateStore,
    pub bus: &'a dyn AlertBus,
    /// The providers' own usage per key (OpenAI, Anthropic), where configured.
    pub key_usage: &'a [Arc<dyn KeyUsageSource>],
    pub settings: &'a Settings,
    pub now: DateTime<Utc>,
    pub run_id: &'a str,
    pub dry_run: bool,
    pub lease: Duration,
}

impl SecurityScan<'_> {
    /// Looks at every hour of the trailing window (ADR 026) of every active key: one read of
    /// their hour counters, one read per provider of its usage per key since its watermark
    /// less its lateness, a baseline per key in use (learned once a day, then cached), and a
    /// claim per finding so that each is raised once per key, hour and level however often
    /// its hour is re-read.
    pub async fn run(&self) -> Result<ScanReport, StoreError> {
        let policy = &self.settings.security;
        let mut report = ScanReport::default();
        if !policy.enabled {
            return Ok(report);
        }
        let keys: Vec<KeyRecord> = self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|k| k.status == KeyStatus::Active)
            .collect();
        report.keys_watched = keys.len();
        let current = start_of_hour(self.now);
        // once per run and provider: what it counted for every registered key since its window
        let (provider_hours, first, read_providers) =
            self.provider_hours(&keys, current, &mut report).await?;
        let hours: Vec<DateTime<Utc>> = (0..)
            .map(|n| first + Duration::hours(n))
            .take_while(|h| *h <= current)
            .collect();
        let wanted: Vec<HourKey> = keys
            .iter()
            .flat_map(|k| {
                hours.iter().map(|h| HourKey {
                    scope: k.spec.scope.clone(),
                    hour: *h,
                })
            })
            .collect();
        let counters = self.store.read_hours(&wanted).await?;
        // per key, the latest hour a finding was made for
        let mut found: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for key in &keys {
            // a stored hour that cannot be read is a blind spot: the run says so
            for h in &hours {
                let hour_key = HourKey {
                    scope: key.spec.scope.clone(),
                    hour: *h,
                };
                if let Some(why) = counters.get(&hour_key).and_then(|c| c.unreadable.as_ref()) {
                    report.failures.push(format!(
                        "theft detection of key {} at {}: {why}",
                        key.spec.id,
                        h.format("%Y-%m-%d %H:00 UTC")
                    ));
                }
            }
            let in_use: Vec<(DateTime<Utc>, HourFigures, Option<ProviderLedger>)> = hours
                .iter()
                .map(|h| {
                    let mut figures = counters
                        .get(&HourKey {
                            scope: key.spec.scope.clone(),
                            hour: *h,
                        })
                        .map(|c| HourFigures::of(c, policy.currency, &self.settings.rates))
                        .unwrap_or_default();
                    let provider = provider_hour(&provider_hours, key, *h).map(|p| {
                        figures.merge_provider(p);
                        let spend = provider_spend(
                            key.spec.provider.as_str(),
                            p,
                            &self.settings.prices,
                            policy.currency,
                            &self.settings.rates,
                        );
                        figures.provider_spend = spend.amount;
                        (spend, p)
                    });
                    (*h, figures, provider)
                })
                .filter(|(_, f, _)| f.used())
                .collect();
            if in_use.is_empty() {
                continue;
            }
            // each hour against the baseline of its own day: learned from the days before it,
            // so a late hour of an earlier day is never part of its own baseline
            let mut baselines: BTreeMap<NaiveDate, Baseline> = BTreeMap::new();
            for day in in_use.iter().map(|(h, _, _)| h.date_naive()) {
                if let Entry::Vacant(vacant) = baselines.entry(day) {
                    vacant.insert(self.baseline(key, day).await?);
                }
            }
            let aggregated_days: BTreeSet<NaiveDate> = in_use
                .iter()
                .filter(|(_, f, _)| f.aggregated)
                .map(|(h, _, _)| h.date_naive())
                .collect();
            for (hour, figures, provider) in in_use {
                let Some(baseline) = baselines.get(&hour.date_naive()) else {
                    continue;
                };
                let mut signals = detect(hour, &figures, baseline, policy);
                let aggregated =
                    baseline.aggregated || aggregated_days.contains(&hour.date_naive());
                if let Some((spend, p)) = provider
                    && comparable(hour, self.now, aggregated)
                {
                    signals.extend(unreported_spend(figures.spend, &spend, p, policy));
                }
                if let Some(finding) = Finding::of(key, hour, figures, signals) {
                    let latest = found.entry(key.spec.id.clone()).or_insert(hour);
                    *latest = (*latest).max(hour);
                    let outcome = self.act(&finding).await;
                    if outcome == "failed" {
                        report
                            .failures
                            .push(format!("security finding for key {}", finding.key_id));
                    }
                    report.findings.push(FindingReport {
                        key_id: finding.key_id.clone(),
                        hour: finding.hour,
                        level: finding.level,
                        detectors: finding.detectors(),
                        outcome,
                    });
                }
            }
        }
        if !self.dry_run {
            self.lift_throttles(&keys, &found, &mut report).await?;
        }
        self.price_book_drift(&mut report).await?;
        // only now are the providers' hours judged: a run that stopped earlier leaves them to
        // the next one
        if !self.dry_run {
            for provider in read_providers {
                self.store
                    .put_cached(
                        &watermark_key(provider),
                        &crate::ports::store::to_doc(&current)?,
                        self.now + CLAIM_RETENTION,
                    )
                    .await?;
            }
        }
        Ok(report)
    }

    /// Compares the price book with each provider's own charges of the last day whose
    /// charges have had `provider_lateness_hours` to settle, once per provider and day: the
    /// models priced well above what the provider charged are reported and audited.
    async fn price_book_drift(&self, report: &mut ScanReport) -> Result<(), StoreError> {
        let policy = &self.settings.security;
        let settled = self.now - Duration::hours(policy.provider_lateness_hours.into());
        let day = settled.date_naive() - Duration::days(1);
        for source in self.key_usage {
            let provider = source.provider().as_str();
            let marker = format!("{provider}#{day}");
            if self
                .store
                .has_marker(DRIFT_NAMESPACE, &marker, self.now)
                .await?
            {
                continue;
            }
            let ledger = match source.day_ledger(day).await {
                Ok(Some(ledger)) => ledger,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "the provider's ledger of the day unavailable");
                    report.failures.push(e.to_string());
                    continue;
                }
            };
            let drift = day_drift(
                provider,
                day,
                &ledger,
                &self.settings.prices,
                policy,
                &self.settings.rates,
            );
            if self.dry_run {
                report.price_book_drift.extend(drift);
                continue;
            }
            // the first run to mark the day reports it
            if !self
                .store
                .put_marker(DRIFT_NAMESPACE, &marker, self.now, CLAIM_RETENTION)
                .await?
            {
                continue;
            }
            for d in &drift {
                warn!(model = %d.model, scope = %d.scope, day = %d.day, "price book drift");
                self.store
                    .append_audit(&AuditEntry {
                        id: uuid::Uuid::new_v4().to_string(),
                        at: self.now,
                        actor: "budget-check".into(),
                        action: "price_book_drift".into(),
                        scope: None,
                        detail: json!({"drift": d, "summary": d.summary()}),
                    })
                    .await?;
            }
            report.price_book_drift.extend(drift);
        }
        Ok(())
    }

    /// Each provider's usage of the registry's keys, one walk per provider, from its watermark
    /// (the current hour of the last run that judged it) less `provider_lateness_hours`, so that an hour the
    /// provider delivers late is read again until it has had time to arrive, and hours missed
    /// while checks did not run are caught up (at most `MAX_CATCH_UP_HOURS`). Returns the usage
    /// and the first hour to evaluate. A usage kind that fails is reported and keeps its
    /// provider's watermark (the hours are read again next run); the provider's other kinds
    /// still count. The watermarks of the providers read in full are saved by `run` once it
    /// has judged their hours. While a provider keeps failing the window grows to
    /// `MAX_CATCH_UP_HOURS` (169 hour counters per key a run, two pages per kind).
    async fn provider_hours(
        &self,
        keys: &[KeyRecord],
        current: DateTime<Utc>,
        report: &mut ScanReport,
    ) -> Result<ProviderReads, StoreError> {
        let lateness = Duration::hours(self.settings.security.provider_lateness_hours.into());
        let earliest = current - Duration::hours(MAX_CATCH_UP_HOURS);
        let mut first = current - lateness;
        let mut out = BTreeMap::new();
        let mut complete = Vec::new();
        for source in self.key_usage {
            let ids: Vec<String> = keys
                .iter()
                .filter(|k| k.spec.provider == source.provider())
                .filter_map(|k| k.spec.key_id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let watermark = match self
                .store
                .get_cached(&watermark_key(source.provider()), self.now)
                .await?
            {
                Some(doc) => crate::ports::store::from_doc::<DateTime<Utc>>("watermark", &doc)?,
                None => current,
            };
            let from = (watermark.min(current) - lateness).max(earliest);
            first = first.min(from);
            let read = source
                .hourly(from, current + Duration::hours(1), &ids)
                .await;
            if read.failures.is_empty() {
                complete.push(source.provider());
            }
            for (kind, e) in read.failures {
                warn!(error = %e, kind, "provider usage per key unavailable");
                report.failures.push(format!("{kind} usage per key: {e}"));
            }
            out.insert(source.provider(), read.hours);
        }
        Ok((out, first, complete))
    }

    /// A key throttled by a finding gets its limit back once a whole hour after the finding's
    /// hour has passed without a finding: the finding's recovery is published once (key-guard
    /// lifts the factor the finding set). Only keys whose switch is throttled are looked up.
    async fn lift_throttles(
        &self,
        keys: &[KeyRecord],
        found: &BTreeMap<String, DateTime<Utc>>,
        report: &mut ScanReport,
    ) -> Result<(), StoreError> {
        let scopes: Vec<Scope> = keys.iter().map(|k| k.spec.scope.clone()).collect();
        let throttled: BTreeSet<Scope> = self
            .store
            .kill_switches(&scopes)
            .await?
            .into_iter()
            .filter(|s| s.value.limit_factor < Decimal::ONE)
            .map(|s| s.value.scope)
            .collect();
        let last_complete_hour = start_of_hour(self.now) - Duration::hours(1);
        for key in keys.iter().filter(|k| throttled.contains(&k.spec.scope)) {
            let cache_key = format!("{THROTTLE_CACHE}#{}", key.spec.id);
            let Some(doc) = self.store.get_cached(&cache_key, self.now).await? else {
                continue;
            };
            let throttling: AlertEvent = crate::ports::store::from_doc("throttling finding", &doc)?;
            let AlertDetails::Security { hour, .. } = &throttling.details else {
                continue;
            };
            let hour = *hour;
            // the throttling finding's own hour re-read is no new finding; a later one is
            let found_later = found.get(&key.spec.id).is_some_and(|f| *f > hour);
            if last_complete_hour <= hour || found_later {
                continue;
            }
            let mut recovery = throttling.recovery("", self.now);
            recovery.summary = format!(
                "RECOVERED: key {} ({}) used as usual for a whole hour after its {} finding: limits lifted",
                key.spec.id, key.spec.scope, throttling.tier
            );
            let claim = Claim::key(
                &KeyId::new(&key.spec.id),
                &format!("security-recovery#{}", throttling.alert_id),
                Lease::new(self.run_id, self.lease, self.now + CLAIM_RETENTION),
            );
            match once(self.store, claim, self.now, || self.bus.publish(&recovery)).await {
                Ok(Once::Did(())) => {}
                Ok(Once::Done | Once::Busy) => continue,
                Err(OnceError::Store(e)) => return Err(e),
                Err(OnceError::Work(e)) => {
                    warn!(error = %e, key = %key.spec.id, "throttle recovery not published");
                    report
                        .failures
                        .push(format!("throttle recovery for key {}: {e}", key.spec.id));
                    continue;
                }
            }
            self.store.put_cached(&cache_key, "", self.now).await?;
            report.throttles_lifted.push(key.spec.id.clone());
        }
        Ok(())
    }

    /// The key's baseline for `today` (the day of the hours it judges), learned from its hour
    /// counters and the provider's usage of the days before; cached until the end of the next
    /// day, while that day's late hours are still judged.
    async fn baseline(&self, key: &KeyRecord, today: NaiveDate) -> Result<Baseline, StoreError> {
        let policy = &self.settings.security;
        let cache_key = format!("{BASELINE_CACHE}#{}#{today}", key.spec.id);
        if let Some(doc) = self.store.get_cached(&cache_key, self.now).await? {
            return crate::ports::store::from_doc("baseline", &doc);
        }
        let start = today - Duration::days(policy.baseline_days.into());
        let hours: Vec<HourKey> = start
            .iter_days()
            .take_while(|d| *d < today)
            .flat_map(|d| (0..24).filter_map(move |h| d.and_hms_opt(h, 0, 0).map(|t| t.and_utc())))
            .map(|hour| HourKey {
                scope: key.spec.scope.clone(),
                hour,
            })
            .collect();
        let mut history: BTreeMap<DateTime<Utc>, HourFigures> = self
            .store
            .read_hours(&hours)
            .await?
            .into_iter()
            // an unreadable hour of the history is left out of the medians, not guessed
            .filter(|(k, c)| match &c.unreadable {
                Some(why) => {
                    warn!(key = %key.spec.id, hour = %k.hour, %why, "hour left out of the baseline");
                    false
                }
                None => true,
            })
            .map(|(k, c)| {
                (
                    k.hour,
                    HourFigures::of(&c, policy.currency, &self.settings.rates),
                )
            })
            .collect();
        // the provider's count of the same hours: a baseline of what the key really does
        let mut complete = true;
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        if let (Some(source), Some(key_id), Some(from), Some(to)) = (
            self.key_usage
                .iter()
                .find(|s| s.provider() == key.spec.provider),
            &key.spec.key_id,
            midnight(start),
            midnight(today),
        ) {
            let read = source.hourly(from, to, std::slice::from_ref(key_id)).await;
            for ((_, hour), p) in &read.hours {
                history.entry(*hour).or_default().merge_provider(p);
            }
            for (kind, e) in &read.failures {
                warn!(error = %e, kind, key = %key.spec.id, "baseline learned without some of the provider's usage");
                complete = false;
            }
        }
        let mut baseline = Baseline::learn(&history, today, policy.baseline_days);
        if baseline.last_used.is_none() {
            baseline.last_used = self.last_use_before(key, today).await?;
        }
        if !self.dry_run && complete {
            let after_tomorrow = (today + Duration::days(2))
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or(self.now);
            self.store
                .put_cached(
                    &cache_key,
                    &crate::ports::store::to_doc(&baseline)?,
                    after_tomorrow.max(self.now + Duration::hours(1)),
                )
                .await?;
        }
        Ok(baseline)
    }

    /// The last day before `today` the key was used, from its UTC month counters of the last
    /// six months (one batched read): a key idle for longer than the baseline's window is
    /// still known to be dormant.
    async fn last_use_before(
        &self,
        key: &KeyRecord,
        today: NaiveDate,
    ) -> Result<Option<NaiveDate>, StoreError> {
        let mut months = Vec::new();
        let mut month = YearMonth::of(today);
        for _ in 0..DORMANCY_LOOKBACK_MONTHS {
            months.push(CounterKey {
                scope: key.spec.scope.clone(),
                zone: Zone::UTC,
                month,
            });
            month = YearMonth::of(month.first_day() - Duration::days(1));
        }
        let counters = self.store.read_counters(&months).await?;
        Ok(counters
            .iter()
            .flat_map(|(k, m)| {
                m.days
                    .iter()
                    .filter(|(_, t)| !t.get(Metric::Records).is_zero())
                    .filter_map(move |(day, _)| k.month.first_day().with_day(*day))
            })
            .filter(|d| *d < today)
            .max())
    }

    /// Suppresses a planned or acknowledged finding; raises the rest once.
    async fn act(&self, finding: &Finding) -> String {
        let policy = &self.settings.security;
        if let Some(w) = policy.planned_for(&finding.key_id, finding.hour) {
            return format!("planned: {}", w.reason);
        }
        let day = finding.hour.date_naive();
        let mut acknowledged = true;
        for s in &finding.signals {
            let id = ack_id(&finding.key_id, s.detector, day);
            match self.store.has_marker(ACK_NAMESPACE, &id, self.now).await {
                Ok(true) => {}
                Ok(false) => acknowledged = false,
                Err(e) => {
                    warn!(error = %e, "acknowledgements unreadable: acting on the finding");
                    acknowledged = false;
                }
            }
        }
        if acknowledged {
            return "acknowledged".into();
        }
        if self.dry_run {
            return "would_publish".into();
        }
        let event = finding.event(self.settings, self.now);
        let claim = Claim::key(
            &KeyId::new(&finding.key_id),
            &format!(
                "security#{}#{}",
                finding.hour.format("%Y-%m-%dT%H"),
                finding.level.as_str()
            ),
            Lease::new(self.run_id, self.lease, finding.hour + CLAIM_RETENTION),
        );
        let throttles = event
            .actions
            .iter()
            .any(|a| matches!(a, Action::ReduceLimits { .. }));
        // kept for `spendguard ack` until the day after the finding's, and for two days after
        // it is raised: a finding caught up days late is acknowledged after it is raised
        let kept_until = (finding.hour + Duration::days(2)).max(self.now + Duration::days(2));
        // the throttle waits for its recovery at least as long after it is set
        let throttled_until = (finding.hour + Duration::days(7)).max(self.now + Duration::days(7));
        let raise = || async {
            let doc = crate::ports::store::to_doc(finding).map_err(|e| e.to_string())?;
            self.store
                .put_cached(
                    &format!("{FINDING_CACHE}#{}", event.alert_id),
                    &doc,
                    kept_until,
                )
                .await
                .map_err(|e| e.to_string())?;
            if throttles {
                let doc = crate::ports::store::to_doc(&event).map_err(|e| e.to_string())?;
                self.store
                    .put_cached(
                        &format!("{THROTTLE_CACHE}#{}", finding.key_id),
                        &doc,
                        throttled_until,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            self.bus.publish(&event).await.map_err(|e| e.to_string())
        };
        match once(self.store, claim, self.now, raise).await {
            Ok(Once::Did(())) => {}
            Ok(Once::Done) => return "already_raised".into(),
            Ok(Once::Busy) => return "held_by_other".into(),
            Err(e) => {
                warn!(error = %e, key = %finding.key_id, "security alert not published");
                return "failed".into();
            }
        }
        let audit = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: self.now,
            actor: "budget-check".into(),
            action: "security_finding".into(),
            scope: Some(finding.scope.clone()),
            detail: json!({"alert_id": event.alert_id, "finding": finding}),
        };
        if let Err(e) = self.store.append_audit(&audit).await {
            warn!(error = %e, key = %finding.key_id, "security finding not audited");
        }
        info!(key = %finding.key_id, level = finding.level.as_str(), detectors = ?finding.detectors(), "security finding raised");
        "published".into()
    }
}
