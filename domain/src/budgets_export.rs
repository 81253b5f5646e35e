//! A policy written back as a budgets file (`spendguard budgets export`): the store keeps the
//! parsed policy, not the file, so the file is rebuilt from it. Every value is written out
//! (currencies, zones, severities, actions), so reading the result gives the same policy.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use toml::{Table, Value};

use crate::budget::{Action, Budget, SourceSpec, Threshold, Tier, Window};
use crate::budgets_file::SUPPORTED_VERSION;
use crate::keys::{KeySpec, RotationStrategy};
use crate::period::WindowKind;
use crate::settings::{PolicySet, SecurityPolicy, Settings};

/// The budgets file that reads back as `set`.
pub fn to_budgets_file(set: &PolicySet) -> String {
    let mut file = Table::new();
    file.insert("version".into(), Value::Integer(SUPPORTED_VERSION));
    settings(&set.settings, &mut file);
    let budgets = set
        .budgets
        .iter()
        .map(|b| Value::Table(budget(b, &set.settings.routing)))
        .collect();
    file.insert("budget".into(), Value::Array(budgets));
    file.insert(
        "key".into(),
        Value::Array(set.keys.iter().map(key).collect()),
    );
    // a table of plain values serialises; the error case cannot occur
    toml::to_string(&file).unwrap_or_default()
}

/// Decimals as strings, with their scale: "2000.00" stays "2000.00", so a plan of the
/// exported file shows no change.
fn decimal(d: Decimal) -> Value {
    Value::String(d.to_string())
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

fn texts<'a>(list: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(list.into_iter().map(|s| text(s)).collect())
}

fn time(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn table<const N: usize>(entries: [(&str, Value); N]) -> Table {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn action(a: &Action) -> Value {
    match a {
        Action::ReduceLimits { factor } => {
            Value::Table(table([("reduce_limits", decimal(*factor))]))
        }
        other => text(other.name()),
    }
}

fn actions(list: &[Action]) -> Value {
    Value::Array(list.iter().map(action).collect())
}

fn routing(map: &BTreeMap<String, Vec<String>>) -> Value {
    Value::Table(map.iter().map(|(k, v)| (k.clone(), texts(v))).collect())
}

fn settings(s: &Settings, file: &mut Table) {
    if let Some(url) = &s.runbook_url {
        file.insert(
            "defaults".into(),
            Value::Table(table([("runbook_url", text(url))])),
        );
    }
    let f = &s.forecast;
    file.insert(
        "forecast".into(),
        Value::Table(table([
            ("min_elapsed_percent", decimal(f.min_elapsed_percent)),
            ("max_multiple_of_limit", decimal(f.max_multiple_of_limit)),
            ("recent_weight", decimal(f.recent_weight)),
        ])),
    );
    let rates: Table = s
        .rates
        .iter()
        .map(|(from, to, rate)| (format!("{from}/{to}"), decimal(rate)))
        .collect();
    file.insert("currency_rates".into(), Value::Table(rates));
    let channels: Table = s
        .channels
        .iter()
        .map(|(name, c)| {
            let mut t = Table::new();
            t.insert(
                "kind".into(),
                Value::try_from(c.kind).unwrap_or_else(|_| text("log")),
            );
            if let Some(secret) = &c.secret {
                t.insert("secret".into(), text(secret));
            }
            if let Some(m) = c.digest_minutes {
                t.insert("digest_minutes".into(), Value::Integer(m.into()));
            }
            (name.clone(), Value::Table(t))
        })
        .collect();
    file.insert("channels".into(), Value::Table(channels));
    file.insert("routing".into(), routing(&s.routing));
    let prices: Table = s
        .prices
        .0
        .iter()
        .map(|(model, p)| {
            let mut t = table([
                ("currency", text(p.currency.as_str())),
                ("input", decimal(p.input)),
                ("output", decimal(p.output)),
            ]);
            for (name, v) in [
                ("cached_input", p.cached_input),
                ("cache_write", p.cache_write),
                ("batch_percent", p.batch_percent),
            ] {
                if let Some(v) = v {
                    t.insert(name.into(), decimal(v));
                }
            }
            if let Some(l) = &p.long_context {
                let mut long = table([
                    (
                        "above_input_tokens",
                        Value::Integer(i64::try_from(l.above_input_tokens).unwrap_or(i64::MAX)),
                    ),
                    ("input", decimal(l.input)),
                    ("output", decimal(l.output)),
                ]);
                for (name, v) in [
                    ("cached_input", l.cached_input),
                    ("cache_write", l.cache_write),
                ] {
                    if let Some(v) = v {
                        long.insert(name.into(), decimal(v));
                    }
                }
                t.insert("long_context".into(), Value::Table(long));
            }
            (model.clone(), Value::Table(t))
        })
        .collect();
    file.insert("prices".into(), Value::Table(prices));
    if !s.escalation.levels.is_empty() {
        let levels = s
            .escalation
            .levels
            .iter()
            .map(|l| {
                Value::Table(table([
                    ("after_minutes", Value::Integer(l.after_minutes.into())),
                    ("channels", texts(&l.channels)),
                ]))
            })
            .collect();
        file.insert(
            "escalation".into(),
            Value::Table(table([("levels", Value::Array(levels))])),
        );
    }
    file.insert(
        "restore".into(),
        Value::Table(table([
            (
                "steps",
                Value::Array(s.restore.steps.iter().copied().map(decimal).collect()),
            ),
            (
                "step_minutes",
                Value::Integer(s.restore.step_minutes.into()),
            ),
        ])),
    );
    let a = &s.anomaly;
    file.insert(
        "anomaly".into(),
        Value::Table(table([
            ("cost_factor", decimal(a.cost_factor)),
            ("requests_factor", decimal(a.requests_factor)),
            ("tokens_factor", decimal(a.tokens_factor)),
            (
                "min_history_days",
                Value::Integer(a.min_history_days.into()),
            ),
            ("min_daily_cost", decimal(a.min_daily_cost)),
            ("min_daily_requests", count(a.min_daily_requests)),
        ])),
    );
    file.insert("security".into(), Value::Table(security(&s.security)));
    let shutdown = &s.shutdown;
    let gcp = shutdown
        .gcp
        .iter()
        .map(|g| {
            Value::Table(table([
                ("project", text(&g.project)),
                ("scope", text(&g.scope.to_string())),
                ("unlink_billing", Value::Boolean(g.unlink_billing)),
                ("service_accounts", texts(&g.service_accounts)),
            ]))
        })
        .collect();
    file.insert(
        "shutdown".into(),
        Value::Table(table([
            ("regions", texts(&shutdown.regions)),
            ("deny_roles", texts(&shutdown.deny_roles)),
            ("gcp", Value::Array(gcp)),
        ])),
    );
}

/// Counts are bounded far below `i64::MAX` by the validation that admitted them.
fn count(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn security(p: &SecurityPolicy) -> Table {
    let levels: Table = p
        .levels
        .iter()
        .map(|(d, l)| (d.as_str().to_string(), text(l.as_str())))
        .collect();
    let level_actions: Table = p
        .actions
        .iter()
        .map(|(l, list)| (l.as_str().to_string(), actions(list)))
        .collect();
    let planned = p
        .planned
        .iter()
        .map(|w| {
            Value::Table(table([
                ("key", text(&w.key)),
                ("from", time(w.from)),
                ("to", time(w.to)),
                ("reason", text(&w.reason)),
            ]))
        })
        .collect();
    table([
        ("enabled", Value::Boolean(p.enabled)),
        ("spike_factor", decimal(p.spike_factor)),
        ("burst_per_minute", count(p.burst_per_minute)),
        (
            "min_history_days",
            Value::Integer(p.min_history_days.into()),
        ),
        ("baseline_days", Value::Integer(p.baseline_days.into())),
        ("dormant_days", Value::Integer(p.dormant_days.into())),
        ("min_hourly_cost", decimal(p.min_hourly_cost)),
        ("min_hourly_requests", count(p.min_hourly_requests)),
        ("min_hourly_tokens", count(p.min_hourly_tokens)),
        (
            "provider_lateness_hours",
            Value::Integer(p.provider_lateness_hours.into()),
        ),
        ("unreported_ratio", decimal(p.unreported_ratio)),
        ("min_unreported_cost", decimal(p.min_unreported_cost)),
        ("price_book_drift_ratio", decimal(p.price_book_drift_ratio)),
        ("currency", text(p.currency.as_str())),
        ("levels", Value::Table(levels)),
        ("actions", Value::Table(level_actions)),
        ("planned", Value::Array(planned)),
    ])
}

fn tier(t: &Tier) -> Value {
    let (name, value) = match t.threshold {
        Threshold::Percent(p) => ("percent", p),
        Threshold::Amount(a) => ("amount", a),
    };
    Value::Table(table([
        ("name", text(&t.name)),
        (name, decimal(value)),
        ("basis", text(&t.basis.to_string())),
        ("severity", text(t.severity.as_str())),
        ("actions", actions(&t.actions)),
    ]))
}

fn window(w: &Window) -> Value {
    let mut t = table([
        ("period", text(w.kind.as_str())),
        ("limit", decimal(w.limit)),
        ("tiers", Value::Array(w.tiers.iter().map(tier).collect())),
    ]);
    if let WindowKind::Rolling { minutes } = w.kind {
        t.insert("minutes".into(), Value::Integer(minutes.into()));
    }
    if w.provider_cap {
        t.insert("provider_cap".into(), Value::Boolean(true));
    }
    Value::Table(t)
}

/// A budget's routing holds the file's defaults with its own entries over them: only the
/// entries that differ from the defaults are its own.
fn budget(b: &Budget, default_routing: &BTreeMap<String, Vec<String>>) -> Table {
    let mut t = table([
        ("id", text(&b.id)),
        ("scope", text(&b.scope.to_string())),
        ("currency", text(b.currency.as_str())),
        ("timezone", text(b.zone.name())),
    ]);
    if let Some(d) = &b.description {
        t.insert("description".into(), text(d));
    }
    if b.source != SourceSpec::Usage {
        t.insert(
            "source".into(),
            Value::try_from(&b.source).unwrap_or_else(|_| Value::Table(Table::new())),
        );
    }
    let own: BTreeMap<String, Vec<String>> = b
        .routing
        .iter()
        .filter(|(tier, channels)| default_routing.get(*tier) != Some(*channels))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !own.is_empty() {
        t.insert("routing".into(), routing(&own));
    }
    t.insert(
        "window".into(),
        Value::Array(b.windows.iter().map(window).collect()),
    );
    t
}

fn key(k: &KeySpec) -> Value {
    let mut t = table([
        ("id", text(&k.id)),
        ("provider", text(k.provider.as_str())),
        ("scope", text(&k.scope.to_string())),
    ]);
    for (name, value) in [
        ("secret", &k.secret_arn),
        ("key_id", &k.key_id),
        ("project_id", &k.project_id),
        ("user", &k.user),
    ] {
        if let Some(v) = value {
            t.insert(name.into(), text(v));
        }
    }
    if let Some(r) = k.rotation {
        let name = match r {
            RotationStrategy::Generated => "generated",
            RotationStrategy::Staged => "staged",
        };
        t.insert("rotation".into(), text(name));
    }
    if k.allow_delete {
        t.insert("allow_delete".into(), Value::Boolean(true));
    }
    Value::Table(t)
}
