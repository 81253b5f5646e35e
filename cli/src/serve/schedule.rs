//! What the deployment's EventBridge schedules run (template.yaml), on timers: budget-check
//! every `--check-every`, fan-out's digest flush every 5 minutes, key-guard's drill and
//! daily-aggregate once a day at their hours (UTC). A run in progress when shutdown begins
//! finishes; the timers stop. Nightly runs missed while serve was stopped are caught up at
//! start ([`catch_up_nightly`]).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde_json::json;
use spendguard_app::flows::check::Checker;
use spendguard_app::flows::nightly::Nightly;
use spendguard_local::sqlite::SqliteStore;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::metrics::Metrics;

/// How fan-out's digests are flushed in the deployment (`FlushDigests`, rate(5 minutes)).
pub const DIGEST_FLUSH_EVERY: Duration = Duration::from_secs(300);

/// The last scheduled check, for `/health`.
#[derive(Clone, serde::Serialize)]
pub struct LastCheck {
    pub at: DateTime<Utc>,
    pub error: Option<String>,
}

#[derive(Default)]
pub struct Health(Mutex<Option<LastCheck>>);

impl Health {
    pub fn last_check(&self) -> Option<LastCheck> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn checked(&self, at: DateTime<Utc>, error: Option<String>) {
        if let Ok(mut c) = self.0.lock() {
            *c = Some(LastCheck { at, error });
        }
    }
}

/// Runs `job` at once and then every `every` until `shutdown` (a run in progress finishes).
pub async fn every<F, Fut>(every: Duration, mut shutdown: watch::Receiver<bool>, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        job().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// How long until `at` (UTC) next comes.
fn until_next(at: NaiveTime, now: DateTime<Utc>) -> Duration {
    let today = now.date_naive().and_time(at).and_utc();
    let next = if today > now {
        today
    } else {
        today + chrono::Duration::days(1)
    };
    (next - now).to_std().unwrap_or_default()
}

/// Runs `job` every day at `at` (UTC) until `shutdown`.
pub async fn daily<F, Fut>(at: NaiveTime, mut shutdown: watch::Receiver<bool>, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(until_next(at, Utc::now())) => {}
            _ = shutdown.changed() => return,
        }
        job().await;
    }
}

/// One scheduled budget check, as EventBridge Scheduler invokes budget-check.
pub async fn check(checker: &Checker, metrics: &Metrics, health: &Health) {
    let started = Instant::now();
    let at = Utc::now();
    match budget_check::handler::handle(
        checker,
        json!({"source": budget_check::handler::SCHEDULER_SOURCE}),
    )
    .await
    {
        Ok(report) => {
            metrics.check(started.elapsed().as_secs_f64(), Some(&report));
            info!(run = %report.run_id, published = report.alerts.published, ramps = report.alerts.ramps_advanced, "budget check");
            health.checked(at, None);
        }
        Err(e) => {
            metrics.check(started.elapsed().as_secs_f64(), None);
            warn!(error = %e, "budget check failed");
            health.checked(at, Some(e.to_string()));
        }
    }
}

/// Marks the days whose nightly run is done (by the day summarised, UTC).
const NIGHTLY_DONE: &str = "serve-nightly";
/// How far back a restart looks for the last nightly run, and catches up.
const CATCH_UP_DAYS: i64 = 7;
/// Longer than [`CATCH_UP_DAYS`]: a mark is read back for as long as it can matter.
const NIGHTLY_DONE_KEPT: chrono::Duration = chrono::Duration::days(40);

/// The day the latest nightly run due by `now` summarises: yesterday once today's run time
/// has passed, else the day before.
fn latest_due(nightly_at: NaiveTime, now: DateTime<Utc>) -> NaiveDate {
    let today = now.date_naive();
    if now.time() >= nightly_at {
        today - chrono::Duration::days(1)
    } else {
        today - chrono::Duration::days(2)
    }
}

/// The days to summarise again after a stop: every day after `last_done` up to the latest
/// due. None known done (a first start, or stopped longer than [`CATCH_UP_DAYS`]): none.
fn missed_days(
    last_done: Option<NaiveDate>,
    nightly_at: NaiveTime,
    now: DateTime<Utc>,
) -> Vec<NaiveDate> {
    let Some(last) = last_done else {
        return Vec::new();
    };
    last.iter_days()
        .skip(1)
        .take_while(|d| *d <= latest_due(nightly_at, now))
        .collect()
}

async fn nightly_done(nightly: &Nightly, day: NaiveDate) {
    let now = nightly.clock.now();
    if let Err(e) = nightly
        .store
        .put_marker(NIGHTLY_DONE, &day.to_string(), now, NIGHTLY_DONE_KEPT)
        .await
    {
        warn!(error = %e, %day, "the nightly run is done but cannot be marked: a restart may run it again");
    }
}

/// The scheduled nightly run (yesterday, as the deployment's schedule runs it).
pub async fn nightly(nightly: &Nightly) {
    match daily_aggregate::handler::handle(nightly, json!({})).await {
        Ok(result) => {
            info!(result = %result, "daily aggregate");
            let today = nightly.clock.now().date_naive();
            nightly_done(nightly, today - chrono::Duration::days(1)).await;
        }
        Err(e) => warn!(error = %e, "daily aggregate failed"),
    }
}

/// After the nightly run: the store's expired rows deleted, as DynamoDB's TTL deletes a
/// deployment's (without it every usage record serve counted would keep its row).
pub async fn prune(store: &SqliteStore, now: DateTime<Utc>) {
    match store.prune_expired(now).await {
        Ok(deleted) => info!(deleted, "expired rows pruned"),
        Err(e) => error!(error = %e, "expired rows cannot be pruned: the store keeps growing"),
    }
}

/// At start: the nightly runs missed since the last one serve did (at most a week back) —
/// the older days summarised again (daily-aggregate's backfill, nothing published), the most
/// recent run as the schedule would have run it (its alerts and report published once).
/// Returns the days caught up.
pub async fn catch_up_nightly(nightly: &Nightly, nightly_at: NaiveTime) -> Vec<NaiveDate> {
    let now = nightly.clock.now();
    let latest = latest_due(nightly_at, now);
    let mut last_done = None;
    for back in 0..=CATCH_UP_DAYS {
        let day = latest - chrono::Duration::days(back);
        match nightly
            .store
            .has_marker(NIGHTLY_DONE, &day.to_string(), now)
            .await
        {
            Ok(true) => {
                last_done = Some(day);
                break;
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "cannot read which nightly runs were done: none caught up");
                return Vec::new();
            }
        }
    }
    let missed = missed_days(last_done, nightly_at, now);
    let Some((newest, older)) = missed.split_last() else {
        if last_done.is_none() {
            info!(
                "no nightly run recorded in the last week: none caught up (backfill by hand: docs/serve.md)"
            );
        }
        return Vec::new();
    };
    if let (Some(from), Some(to)) = (older.first(), older.last()) {
        let range = json!({"from": from.to_string(), "to": to.to_string()});
        if let Err(e) = daily_aggregate::handler::handle(nightly, range).await {
            warn!(error = %e, %from, %to, "catching up missed nightly runs failed");
            return Vec::new();
        }
    }
    let date = json!({"date": newest.to_string()});
    if let Err(e) = daily_aggregate::handler::handle(nightly, date).await {
        warn!(error = %e, day = %newest, "catching up the last missed nightly run failed");
        return Vec::new();
    }
    for day in &missed {
        nightly_done(nightly, *day).await;
    }
    info!(from = %missed[0], to = %newest, "missed nightly runs caught up");
    missed
}

pub async fn flush_digests(fanout: &alert_fanout::handler::Handler) {
    if let Err(e) = fanout.handle(json!({"action": "flush_digests"})).await {
        warn!(error = %e, "digest flush failed");
    }
}

pub async fn drill(guard: &key_guard::handler::Handler) {
    match guard.handle(json!({"action": "drill"})).await {
        Ok(report) => {
            info!(checked = %report["checked"], problems = report["problems"].as_array().map_or(0, Vec::len), "drill")
        }
        Err(e) => warn!(error = %e, "drill failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::Arc;

    #[test]
    fn a_restart_catches_up_the_days_after_the_last_run_up_to_the_latest_due() {
        let at = NaiveTime::from_hms_opt(1, 15, 0).unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let before_run = Utc.with_ymd_and_hms(2026, 12, 7, 0, 15, 0).unwrap();
        let after_run = Utc.with_ymd_and_hms(2026, 12, 7, 1, 15, 0).unwrap();
        assert_eq!(
            missed_days(Some(day(3)), at, after_run),
            [day(4), day(5), day(6)]
        );
        assert_eq!(missed_days(Some(day(3)), at, before_run), [day(4), day(5)]);
        assert!(missed_days(Some(day(6)), at, after_run).is_empty());
        assert!(missed_days(None, at, after_run).is_empty());
    }

    #[tokio::test]
    async fn a_restart_runs_the_missed_nightly_days_once_and_a_first_start_none() {
        use spendguard_app::ports::clock::FixedClock;
        use spendguard_app::ports::store::StateStore;
        let dir = tempfile::tempdir().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 2, 0, 0).unwrap();
        let local = crate::local::Local::new(
            &crate::local::Target::Embedded {
                store: dir.path().join("state.db"),
            },
            Arc::new(FixedClock::new(now)),
            Default::default(),
        )
        .await
        .unwrap_or_else(|_| panic!("the embedded store opens"));
        let store: Arc<dyn StateStore> = local.store();
        let policy = spendguard_domain::budgets_file::parse_budgets(
            "budgets.toml",
            "version = 1\n[[budget]]\nid = \"all\"\nscope = \"*\"\n[[budget.window]]\nperiod = \"monthly\"\nlimit = \"100\"\ntiers = [{ name = \"warn\", percent = 80, actions = [\"notify\"] }]\n",
        )
        .unwrap();
        store.put_policy(&policy).await.unwrap();
        let nightly = local.nightly(Arc::new(
            spendguard_app::flows::nightly::MemoryMetrics::default(),
        ));
        let at = NaiveTime::from_hms_opt(1, 15, 0).unwrap();

        assert!(
            catch_up_nightly(&nightly, at).await.is_empty(),
            "nothing known done"
        );
        store
            .put_marker(NIGHTLY_DONE, "2026-12-03", now, NIGHTLY_DONE_KEPT)
            .await
            .unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert_eq!(
            catch_up_nightly(&nightly, at).await,
            [day(4), day(5), day(6)]
        );
        for d in 4..=6 {
            let marked = store
                .has_marker(NIGHTLY_DONE, &day(d).to_string(), now)
                .await
                .unwrap();
            assert!(marked, "2026-12-0{d} marked done");
        }
        assert!(catch_up_nightly(&nightly, at).await.is_empty(), "run once");
    }

    #[test]
    fn the_next_daily_run_is_today_when_its_hour_is_still_ahead_else_tomorrow() {
        let at = NaiveTime::from_hms_opt(1, 15, 0).unwrap();
        let before = Utc.with_ymd_and_hms(2026, 12, 7, 0, 15, 0).unwrap();
        assert_eq!(until_next(at, before), Duration::from_secs(3600));
        let after = Utc.with_ymd_and_hms(2026, 12, 7, 1, 15, 0).unwrap();
        assert_eq!(until_next(at, after), Duration::from_secs(24 * 3600));
    }
}
