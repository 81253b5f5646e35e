//! `GET /metrics`: Prometheus (OpenMetrics text). The figures the Lambda functions emit as
//! CloudWatch metrics — daily-aggregate's EMF lines (`DailyCost`, `MonthToDate`, `Forecast`,
//! `PercentOfBudget` by scope and currency) — and what the deployment's dashboards read from
//! CloudWatch's own metrics: spend, limit and percent per budget window after each check,
//! alerts published, kill switches engaged, requests and usage records with their latencies.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;
use spendguard_app::flows::check::CheckReport;
use spendguard_app::flows::nightly::MetricsSink;
use spendguard_domain::alert::AlertEvent;

type Labels = Vec<(String, String)>;
type Ratio = Gauge<f64, AtomicU64>;
type Latencies = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 0.25 ms .. ~4 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub struct Metrics {
    registry: Registry,
    window_spend: Family<Labels, Ratio>,
    window_limit: Family<Labels, Ratio>,
    window_percent: Family<Labels, Ratio>,
    daily: Family<Labels, Ratio>,
    alerts: Family<Labels, Counter>,
    switches_engaged: Gauge,
    switches_engaged_by_guard: Counter,
    deliveries_failed: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
    outbox_pending: Family<Labels, Gauge>,
    requests: Family<Labels, Counter>,
    request_seconds: Latencies,
    usage_records: Family<Labels, Counter>,
    checks: Family<Labels, Counter>,
    check_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("spendguard");
        let m = Metrics {
            window_spend: Family::default(),
            window_limit: Family::default(),
            window_percent: Family::default(),
            daily: Family::default(),
            alerts: Family::default(),
            switches_engaged: Gauge::default(),
            switches_engaged_by_guard: Counter::default(),
            deliveries_failed: Family::default(),
            dead_lettered: Family::default(),
            outbox_pending: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_buckets),
            usage_records: Family::default(),
            checks: Family::default(),
            check_seconds: latency_buckets(),
            registry: Registry::default(),
        };
        registry.register(
            "budget_spend",
            "Spend of a budget window at the last check (window currency)",
            m.window_spend.clone(),
        );
        registry.register(
            "budget_limit",
            "Limit of a budget window",
            m.window_limit.clone(),
        );
        registry.register(
            "budget_percent",
            "Spend as a percentage of the limit at the last check",
            m.window_percent.clone(),
        );
        registry.register(
            "daily",
            "daily-aggregate's CloudWatch metrics (metric=DailyCost|MonthToDate|Forecast|PercentOfBudget) of the last night",
            m.daily.clone(),
        );
        registry.register(
            "alerts_published",
            "Alerts published on the in-process alerts topic",
            m.alerts.clone(),
        );
        registry.register(
            "kill_switches_engaged",
            "Kill switches engaged now",
            m.switches_engaged.clone(),
        );
        registry.register(
            "key_guard_switches_engaged",
            "Kill switches key-guard engaged on an alert",
            m.switches_engaged_by_guard.clone(),
        );
        registry.register(
            "alert_deliveries_failed",
            "Alert deliveries that failed (retried from the outbox)",
            m.deliveries_failed.clone(),
        );
        registry.register(
            "outbox_dead_lettered",
            "Outbox rows set aside in outbox_dead (not alerts), by subscriber",
            m.dead_lettered.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox rows waiting for delivery, by subscriber (read at each scrape)",
            m.outbox_pending.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            m.request_seconds.clone(),
        );
        registry.register(
            "usage_records",
            "Usage records received on /usage (outcome=accepted|duplicate)",
            m.usage_records.clone(),
        );
        registry.register(
            "checks",
            "Scheduled budget checks (outcome=ok|failed)",
            m.checks.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Time a scheduled budget check took",
            m.check_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self, engaged_now: i64) -> String {
        self.switches_engaged.set(engaged_now);
        let mut text = String::new();
        // writing to a String cannot fail
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub fn request(&self, route: &str, status: u16, seconds: f64, body: &Value) {
        let status = status.to_string();
        self.requests
            .get_or_create(&labels(&[("route", route), ("status", &status)]))
            .inc();
        self.request_seconds
            .get_or_create(&labels(&[("route", route)]))
            .observe(seconds);
        if route == "/usage" {
            for (field, outcome) in [("accepted", "accepted"), ("duplicates", "duplicate")] {
                if let Some(n) = body[field].as_u64() {
                    self.usage_records
                        .get_or_create(&labels(&[("outcome", outcome)]))
                        .inc_by(n);
                }
            }
        }
    }

    pub fn alert_published(&self, alert: &AlertEvent) {
        let kind = serde_json::to_value(alert.kind).unwrap_or_default();
        self.alerts
            .get_or_create(&labels(&[
                ("kind", kind.as_str().unwrap_or("other")),
                ("severity", alert.severity.as_str()),
            ]))
            .inc();
    }

    /// Counts the switches a key-guard report says it engaged.
    pub fn switches_from(&self, report: &Value) {
        let engaged = report["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["switch"] == "engaged")
            .count();
        self.switches_engaged_by_guard.inc_by(engaged as u64);
    }

    pub fn delivery_failed(&self, subscriber: &str) {
        self.deliveries_failed
            .get_or_create(&labels(&[("subscriber", subscriber)]))
            .inc();
    }

    pub fn outbox(&self, pending: &std::collections::BTreeMap<String, i64>) {
        for (subscriber, rows) in pending {
            self.outbox_pending
                .get_or_create(&labels(&[("subscriber", subscriber)]))
                .set(*rows);
        }
    }

    pub fn dead_lettered(&self, subscriber: &str) {
        self.dead_lettered
            .get_or_create(&labels(&[("subscriber", subscriber)]))
            .inc();
    }

    pub fn check(&self, seconds: f64, report: Option<&CheckReport>) {
        self.check_seconds.observe(seconds);
        let outcome = if report.is_some() { "ok" } else { "failed" };
        self.checks
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc();
        let Some(report) = report else { return };
        // only the periods of this check: an ended period's series goes
        self.window_spend.clear();
        self.window_limit.clear();
        self.window_percent.clear();
        for budget in &report.budgets {
            for w in &budget.windows {
                let currency = w.limit.currency.to_string();
                let window = w.window.to_string();
                let series = labels(&[
                    ("budget", &budget.budget_id),
                    ("scope", &budget.scope),
                    ("window", &window),
                    ("period", &w.period),
                    ("currency", &currency),
                ]);
                let f = |d: rust_decimal::Decimal| d.to_f64().unwrap_or(f64::NAN);
                self.window_limit
                    .get_or_create(&series)
                    .set(f(w.limit.amount));
                if let Some(spend) = &w.spend {
                    self.window_spend
                        .get_or_create(&series)
                        .set(f(spend.amount));
                }
                if let Some(p) = w.percent {
                    self.window_percent.get_or_create(&series).set(f(p));
                }
            }
        }
    }
}

/// daily-aggregate's EMF lines, kept as gauges (and not printed).
pub struct EmfGauges(pub Arc<Metrics>);

impl MetricsSink for EmfGauges {
    fn emit(&self, line: String) {
        let Ok(doc) = serde_json::from_str::<Value>(&line) else {
            return;
        };
        let scope = doc["Scope"].as_str().unwrap_or_default();
        let currency = doc["Currency"].as_str().unwrap_or_default();
        let source = doc["Source"].as_str().unwrap_or("usage");
        for metric in ["DailyCost", "MonthToDate", "Forecast", "PercentOfBudget"] {
            if let Some(v) = doc[metric].as_f64() {
                self.0
                    .daily
                    .get_or_create(&labels(&[
                        ("metric", metric),
                        ("scope", scope),
                        ("currency", currency),
                        ("source", source),
                    ]))
                    .set(v);
            }
        }
    }
}
