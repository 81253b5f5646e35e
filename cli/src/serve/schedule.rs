//! What the deployment's EventBridge schedules run (template.yaml), on timers: budget-check
//! every `--check-every`, fan-out's digest flush every 5 minutes, key-guard's drill and
//! daily-aggregate once a day at their hours (UTC). A run in progress when shutdown begins
//! finishes; the timers stop.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, Utc};
use serde_json::json;
use spendguard_app::flows::check::Checker;
use spendguard_app::flows::nightly::Nightly;
use tokio::sync::watch;
use tracing::{info, warn};

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

pub async fn nightly(nightly: &Nightly) {
    match daily_aggregate::handler::handle(nightly, json!({})).await {
        Ok(result) => info!(result = %result, "daily aggregate"),
        Err(e) => warn!(error = %e, "daily aggregate failed"),
    }
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

    #[test]
    fn the_next_daily_run_is_today_when_its_hour_is_still_ahead_else_tomorrow() {
        let at = NaiveTime::from_hms_opt(1, 15, 0).unwrap();
        let before = Utc.with_ymd_and_hms(2026, 12, 7, 0, 15, 0).unwrap();
        assert_eq!(until_next(at, before), Duration::from_secs(3600));
        let after = Utc.with_ymd_and_hms(2026, 12, 7, 1, 15, 0).unwrap();
        assert_eq!(until_next(at, after), Duration::from_secs(24 * 3600));
    }
}
