//! The operator's commands: `status`, `kill`, `restore`, `ack`, `report` (`budgets` is in
//! budgets.rs).
//! Against a deployment (`--table`, with the user's AWS credentials; `AWS_ENDPOINT_URL` is
//! honoured) they read and write its table directly and run key-guard's and alert-fanout's own
//! code in process; without `--table` they act on the embedded store.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_app::flows::nightly::StdoutMetrics;
use spendguard_app::ports::clock::SystemClock;
use spendguard_app::ports::store::{AuditLog, StoreError};
use spendguard_domain::money::{Money, display_amount};
use spendguard_domain::period::{Period, YearMonth};
use spendguard_domain::records::AuditEntry;
use spendguard_domain::scope::Scope;

use crate::Failure;
use crate::aws::{Access, rejected_credentials};
use crate::local::{Function, Local, Target};
use crate::output::{err, errln, json_document, outln};
use crate::{check, report, table};

/// Where an operator command acts: always named, never guessed (a command that reached a
/// store nobody meant would say "engaged" and stop nothing).
#[derive(clap::Args, Clone)]
pub struct On {
    /// The deployment's DynamoDB table (its `StateTableName` output).
    #[arg(long, value_name = "NAME", env = "SPENDGUARD_TABLE")]
    pub table: Option<String>,
    /// An embedded store that exists (made by `spendguard check --store FILE` or the demo).
    #[arg(long, value_name = "FILE", conflicts_with = "table")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub aws: Access,
}

impl On {
    pub(crate) async fn local(&self) -> Result<Local, Failure> {
        match (&self.table, &self.store) {
            (Some(table), _) => {
                Local::new(
                    &Target::Aws(self.aws.clone()),
                    Arc::new(SystemClock),
                    BTreeMap::from([("SPENDGUARD_TABLE".to_string(), table.clone())]),
                )
                .await
            }
            (None, Some(store)) if store.is_file() => {
                Local::new(
                    &Target::Embedded {
                        store: store.clone(),
                    },
                    Arc::new(SystemClock),
                    BTreeMap::new(),
                )
                .await
            }
            (None, Some(store)) => Err(Failure::Invalid(format!(
                "--store {}: no such store (an operator command never creates one; `spendguard check --store FILE` does). Name a deployment with --table NAME instead",
                store.display()
            ))),
            (None, None) => Err(Failure::Invalid(
                "no target: name the deployment with --table NAME (or SPENDGUARD_TABLE), or an existing embedded store with --store FILE".into(),
            )),
        }
    }

    /// The flag that names this target again, for commands a result suggests.
    fn flag(&self) -> String {
        match (&self.table, &self.store) {
            (Some(t), _) => format!("--table {t}"),
            (None, Some(s)) => format!("--store {}", s.display()),
            (None, None) => String::new(),
        }
    }

    /// The target as every result names it.
    pub(crate) fn name(&self) -> String {
        match (&self.table, &self.store) {
            (Some(t), _) => format!("table {t}"),
            (None, Some(s)) => format!("embedded store {}", s.display()),
            (None, None) => "no target".into(),
        }
    }
}

fn scope(text: &str) -> Result<Scope, Failure> {
    Scope::parse(text).map_err(|e| Failure::Invalid(format!("--scope `{text}`: {e}")))
}

/// A failed run; AWS refusing the credentials themselves is said with the fix.
pub(crate) fn run_err(e: impl std::fmt::Display) -> Failure {
    let message = e.to_string();
    rejected_credentials(&message).unwrap_or(Failure::Run(message))
}

/// Who did it, for the audit log.
pub(crate) fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Asks before a change unless `--yes`; refuses when nobody can answer.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Invalid(format!(
            "{question} — not confirmed: stdin is not a terminal; pass --yes to proceed"
        )));
    }
    err!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(run_err)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::Invalid("cancelled: nothing was changed".into()))
    }
}

pub async fn status(on: &On, scope_text: Option<&str>, as_json: bool) -> Result<(), Failure> {
    let local = on.local().await?;
    let store = local.store();
    let filter = scope_text.map(scope).transpose()?;
    let under = |s: &Scope| {
        filter
            .as_ref()
            .is_none_or(|f| f.contains(s) || s.contains(f))
    };
    let switches: Vec<Value> = store
        .active_kill_switches()
        .await
        .map_err(run_err)?
        .into_iter()
        .filter(|v| under(&v.value.scope))
        .map(|v| serde_json::to_value(v.value).unwrap_or_default())
        .collect();
    let keys: Vec<Value> = store
        .keys()
        .await
        .map_err(run_err)?
        .into_iter()
        .filter(|k| under(&k.spec.scope))
        .map(|k| json!({"id": k.spec.id, "provider": k.spec.provider, "scope": k.spec.scope, "status": k.status}))
        .collect();
    let alerts: Vec<Value> = store
        .open_alerts()
        .await
        .map_err(run_err)?
        .into_iter()
        .filter(|a| under(&a.event.scope))
        .map(|a| {
            json!({
                "alert_id": a.event.alert_id,
                "severity": a.event.severity,
                "budget_id": a.event.budget_id,
                "window": a.event.window,
                "period": a.event.period_key,
                "period_label": Period::label_of_key(&a.event.period_key),
                "raised_at": a.event.raised_at,
                "acknowledged": a.acknowledged.is_some(),
                "escalation_level": a.escalation_level,
            })
        })
        .collect();
    let ledgers = ledger_events(store.as_ref(), &under).await?;
    let standing = check::standing(store.clone()).await?;
    let at_risk: Vec<_> = table::worst_first(&standing)
        .into_iter()
        .filter(|(b, w)| {
            w.highest_tier.is_some() && Scope::parse(&b.scope).is_ok_and(|s| under(&s))
        })
        .collect();
    if as_json {
        outln!(
            "{}",
            json_document(&json!({
                "target": on.name(),
                "kill_switches": switches,
                "keys": keys,
                "budgets_at_risk": at_risk.iter().map(|(b, w)| {
                    // the window as `check --json` reports it, with its budget
                    let mut window = serde_json::to_value(w).unwrap_or_default();
                    window["budget_id"] = json!(b.budget_id);
                    window["scope"] = json!(b.scope);
                    window["resets"] = json!(table::resets(b, w));
                    // what a dry run would raise says nothing about what was raised
                    if let Some(fields) = window.as_object_mut() {
                        fields.remove("alerts");
                    }
                    window
                }).collect::<Vec<_>>(),
                "budgets_not_read": standing.unconfigured,
                "open_alerts": alerts,
                "ledgers": ledgers,
            }))
        );
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    outln!("{}", on.name());
    outln!("\nKILL SWITCHES (not open)");
    if switches.is_empty() {
        outln!("  none: every scope is open");
    } else {
        outln!(
            "{}",
            columns(
                &["SCOPE", "STATE", "LIMIT FACTOR"],
                switches.iter().map(|s| {
                    vec![
                        text(&s["scope"]),
                        text(&s["state"]["state"]),
                        text(&s["limit_factor"]),
                    ]
                })
            )
        );
    }
    outln!("\nKEYS");
    if keys.is_empty() {
        outln!("  none registered (add [[key]] entries to the budgets file)");
    } else {
        outln!(
            "{}",
            columns(
                &["ID", "PROVIDER", "SCOPE", "STATUS"],
                keys.iter().map(|k| {
                    vec![
                        text(&k["id"]),
                        text(&k["provider"]),
                        text(&k["scope"]),
                        k["status"]["status"].as_str().unwrap_or("active").into(),
                    ]
                })
            )
        );
    }
    outln!("\nBUDGETS AT RISK (at or above a tier now)");
    if at_risk.is_empty() {
        outln!("  none");
    } else {
        outln!(
            "{}",
            columns(
                &[
                    "BUDGET",
                    "WINDOW",
                    "PERIOD",
                    "RESETS",
                    "SPEND",
                    "LIMIT",
                    "USED",
                    "FCST USED",
                    "TIER"
                ],
                at_risk.iter().map(|(b, w)| {
                    let money = |m: Option<&Money>| {
                        m.map_or("-".into(), |m| {
                            format!("{} {}", display_amount(m.amount), m.currency)
                        })
                    };
                    let percent = |p: Option<Decimal>| p.map_or("-".into(), |p| format!("{p}%"));
                    let tier = w.highest_tier.clone().unwrap_or_default();
                    let severity = w.highest_severity.map(|s| s.as_str()).unwrap_or_default();
                    vec![
                        b.budget_id.clone(),
                        w.window.to_string(),
                        w.period_label.clone(),
                        table::resets(b, w),
                        money(w.spend.as_ref()),
                        money(Some(&w.limit)),
                        percent(w.percent),
                        percent(w.forecast_percent),
                        if tier == severity {
                            tier
                        } else {
                            format!("{tier} ({severity})")
                        },
                    ]
                })
            )
        );
    }
    if !standing.unconfigured.is_empty() {
        outln!(
            "  not shown: budgets read from {} (their spend is read at each check: see `spendguard check`)",
            standing.unconfigured.join(", ")
        );
    }
    outln!(
        "\nLEDGERS (last {LEDGER_DAYS} days: spend the providers counted that nobody reported, price-book drift)"
    );
    if ledgers.is_empty() {
        outln!("  none");
    } else {
        outln!(
            "{}",
            columns(
                &["AT", "KIND", "SUBJECT", "DETAIL"],
                ledgers.iter().map(|l| {
                    vec![
                        text(&l["at"]),
                        text(&l["kind"]),
                        text(&l["subject"]),
                        text(&l["detail"]),
                    ]
                })
            )
        );
    }
    outln!("\nOPEN PAGING ALERTS");
    if alerts.is_empty() {
        outln!("  none");
    } else {
        let now = chrono::Utc::now();
        outln!(
            "{}",
            columns(
                &[
                    "ALERT", "SEVERITY", "BUDGET", "WINDOW", "PERIOD", "OPENED", "STATE"
                ],
                alerts.iter().map(|a| {
                    let opened = a["raised_at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map_or("-".into(), |t| age(now - t.with_timezone(&chrono::Utc)));
                    vec![
                        text(&a["alert_id"]),
                        text(&a["severity"]),
                        text(&a["budget_id"]),
                        text(&a["window"]),
                        text(&a["period_label"]),
                        opened,
                        if a["acknowledged"] == json!(true) {
                            "acknowledged".into()
                        } else {
                            format!("escalation level {}", a["escalation_level"])
                        },
                    ]
                })
            )
        );
        outln!(
            "  Acknowledge one to stop its escalation: spendguard ack <ALERT> --reason \"…\" {}",
            on.flag()
        );
    }
    Ok(())
}

/// How far back `status` lists the two ledgers' findings.
const LEDGER_DAYS: i64 = 7;

/// The audit log's entries from `since` to `now`, newest first.
async fn audit_since(
    log: &dyn AuditLog,
    since: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut entries = Vec::new();
    let mut month = YearMonth::of(now.date_naive());
    loop {
        // a month is read newest first in growing pages until one reaches past `since`: the
        // log only offers its newest entries, and a busy month is long
        let mut limit = AUDIT_FIRST_PAGE;
        let page = loop {
            let page = log.audit_log(month, limit).await?;
            if page.len() < limit || page.last().is_some_and(|e| e.at < since) {
                break page;
            }
            limit = limit.saturating_mul(2);
        };
        entries.extend(page.into_iter().filter(|e| e.at >= since));
        if month.first_day() <= since.date_naive() {
            return Ok(entries);
        }
        month = YearMonth::of(month.first_day() - chrono::Duration::days(1));
    }
}

/// The audit entries `status` reads first of a month; twice as many each time it needs more.
const AUDIT_FIRST_PAGE: usize = 64;

/// The two ledgers' findings of the last `LEDGER_DAYS` days, newest first, from the audit log
/// (ADR 026): `unreported_spend` security findings under the scope filter, and price-book drift
/// (a provider's scope, shown whatever the filter).
async fn ledger_events(
    store: &dyn spendguard_app::ports::store::StateStore,
    under: &dyn Fn(&Scope) -> bool,
) -> Result<Vec<Value>, Failure> {
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::days(LEDGER_DAYS);
    let entries = audit_since(store, since, now).await.map_err(run_err)?;
    Ok(entries
        .into_iter()
        .filter_map(|e| match e.action.as_str() {
            "security_finding" if e.scope.as_ref().is_some_and(under) => {
                let finding = &e.detail["finding"];
                let signal = finding["signals"]
                    .as_array()?
                    .iter()
                    .find(|s| s["detector"] == "unreported_spend")?;
                Some(json!({
                    "at": e.at,
                    "kind": "unreported_spend",
                    "subject": finding["key_id"],
                    "hour": finding["hour"],
                    "detail": signal["evidence"],
                }))
            }
            "price_book_drift" => Some(json!({
                "at": e.at,
                "kind": "price_book_drift",
                "subject": e.detail["drift"]["model"],
                "day": e.detail["drift"]["day"],
                "detail": e.detail["summary"],
            })),
            _ => None,
        })
        .collect())
}

/// Rows under a header, each column as wide as its widest cell, indented by two spaces.
fn columns(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t.lines()
        .map(|l| format!(" {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long ago, as a person says it: `just now`, `12 min ago`, `3 h ago`, `5 d ago`.
fn age(elapsed: chrono::Duration) -> String {
    match elapsed {
        e if e < chrono::Duration::minutes(1) => "just now".into(),
        e if e < chrono::Duration::hours(1) => format!("{} min ago", e.num_minutes()),
        e if e < chrono::Duration::hours(48) => format!("{} h ago", e.num_hours()),
        e => format!("{} d ago", e.num_days()),
    }
}

/// Runs one function's handler on the chosen store and prints its answer.
/// Invokes `function` on the target `on` names; a refusal names the target too.
async fn act(on: &On, local: &Local, function: Function, event: Value) -> Result<Value, Failure> {
    // a store a `serve` holds: its key-guard acts, with the admin keys it was given
    let in_serve = match (&on.table, &on.store) {
        (None, Some(store)) if function == Function::KeyGuard => {
            crate::serve::key_guard_in_serve(store, &event).await
        }
        _ => None,
    };
    let outcome = match in_serve {
        Some(outcome) => outcome?,
        None => {
            local
                .invoke(function, event, Arc::new(StdoutMetrics))
                .await?
        }
    };
    match outcome {
        Ok(v) => Ok(v),
        Err(e) => Err(
            rejected_credentials(&e.error_message).unwrap_or(Failure::Run(format!(
                "{} in the {} refused: {}: {}",
                function.name(),
                on.name(),
                e.error_type,
                e.error_message
            ))),
        ),
    }
}

/// The stop-path drill on the target: prints what it checked and each problem with its fix.
pub async fn drill(on: &On, json: bool) -> Result<(), Failure> {
    let local = on.local().await?;
    let mut report = act(on, &local, Function::KeyGuard, json!({"action": "drill"})).await?;
    report["target"] = json!(on.name());
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    if json {
        outln!("{}", json_document(&report));
    } else {
        outln!(
            "drill of the {}: {} checks, {} problem(s)",
            on.name(),
            report["checked"],
            problems.len()
        );
        for p in &problems {
            outln!(
                "error: {}: {}\n  help: {}",
                p["subject"].as_str().unwrap_or_default(),
                p["problem"].as_str().unwrap_or_default(),
                p["fix"].as_str().unwrap_or_default()
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::StopsBroken(format!(
            "error: {} stop(s) could not be carried out now (nothing was changed)",
            problems.len()
        )))
    }
}

pub async fn kill(
    on: &On,
    scope_text: &str,
    reason: &str,
    yes: bool,
    as_json: bool,
) -> Result<(), Failure> {
    let target = scope(scope_text)?;
    let local = on.local().await?;
    let keys: Vec<String> = local
        .store()
        .keys()
        .await
        .map_err(run_err)?
        .into_iter()
        .filter(|k| target.contains(&k.spec.scope))
        .map(|k| format!("{} ({})", k.spec.id, k.spec.scope))
        .collect();
    confirm(
        &format!(
            "Engage the kill switch on {target} in the {} and stop {} key(s){}{}?",
            on.name(),
            keys.len(),
            if keys.is_empty() { "" } else { ": " },
            keys.join(", ")
        ),
        yes,
    )?;
    let report = act(
        on,
        &local,
        Function::KeyGuard,
        json!({"action": "disable", "scope": target, "reason": reason, "actor": actor()}),
    )
    .await;
    print_guard(on, report, Stop::Yes, as_json)
}

/// Shows what a shutdown would stop (key-guard's dry run), then, once confirmed, does it.
pub async fn shutdown(
    on: &On,
    scope_text: &str,
    reason: &str,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> Result<(), Failure> {
    let target = scope(scope_text)?;
    let local = on.local().await?;
    let mut plan = act(
        on,
        &local,
        Function::KeyGuard,
        json!({"action": "shutdown", "scope": target, "actor": actor(), "dry_run": true}),
    )
    .await?;
    plan["target"] = json!(on.name());
    if as_json && dry_run {
        outln!("{}", json_document(&plan));
    } else if !as_json {
        outln!(
            "Shutdown of {target} ({}) would engage its kill switch (now {}) and stop:",
            on.name(),
            plan["switch"].as_str().unwrap_or("open")
        );
        outln!("{}", entries(&plan));
    }
    if dry_run {
        return Ok(());
    }
    let resources = plan["resources"].as_array().map_or(0, Vec::len);
    let keys = plan["keys"].as_array().map_or(0, Vec::len);
    confirm(
        &format!(
            "Shut down {target} in the {}: engage its kill switch, stop {keys} key(s) and {resources} resource(s) as listed above?",
            on.name()
        ),
        yes,
    )?;
    let report = act(
        on,
        &local,
        Function::KeyGuard,
        json!({"action": "shutdown", "scope": target, "reason": reason, "actor": actor()}),
    )
    .await;
    print_guard(on, report, Stop::Shutdown, as_json)
}

pub async fn restore(on: &On, scope_text: &str, yes: bool, as_json: bool) -> Result<(), Failure> {
    let target = scope(scope_text)?;
    let local = on.local().await?;
    confirm(
        &format!(
            "Restore {target} in the {}: re-enable the keys and resources spendguard stopped and start the limit ramp?",
            on.name()
        ),
        yes,
    )?;
    let report = act(
        on,
        &local,
        Function::KeyGuard,
        json!({"action": "restore", "scope": target, "actor": actor()}),
    )
    .await;
    print_guard(on, report, Stop::No, as_json)
}

/// Outcomes after which a key or resource is off (whoever turned it off): what a kill or a
/// shutdown is for. `protected`, `released`, `in_progress` and `failed` are not.
const OFF: [&str; 8] = [
    "disabled",
    "already_disabled",
    "disabled_elsewhere",
    "stopped_unrecorded",
    "stopped",
    "already_stopped",
    "was_not_running",
    "would_stop",
];

/// Outcomes after which a key or resource runs again: what a restore is for.
const BACK: [&str; 2] = ["restored", "restored_with_notes"];

/// How many keys and resources of a key-guard report have one of `outcomes` after it.
fn counted(report: &Value, outcomes: &[&str]) -> usize {
    ["keys", "resources"]
        .iter()
        .flat_map(|part| report[part].as_array().into_iter().flatten())
        .filter(|entry| {
            entry["outcome"]
                .as_str()
                .is_some_and(|o| outcomes.contains(&o))
        })
        .count()
}

/// How many keys and resources of a key-guard report are off after it.
fn stopped(report: &Value) -> usize {
    counted(report, &OFF)
}

fn has_failures(report: &Value) -> bool {
    ["keys", "resources"]
        .iter()
        .flat_map(|part| report[part].as_array().into_iter().flatten())
        .any(|entry| entry["outcome"] == json!("failed"))
}

/// What a command was meant to do: stop (a kill, a shutdown) or not (a restore).
#[derive(PartialEq)]
enum Stop {
    Yes,
    Shutdown,
    No,
}

/// The keys and resources of a key-guard report or plan, one line each, then its problems
/// and notes.
fn entries(report: &Value) -> String {
    let detail = |entry: &Value| match &entry["detail"] {
        Value::String(d) => format!(": {d}"),
        Value::Array(held) if held.iter().all(Value::is_string) && !held.is_empty() => format!(
            ": {}",
            held.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    let mut lines = Vec::new();
    for key in report["keys"].as_array().into_iter().flatten() {
        lines.push(match key {
            // a plan lists the keys by name
            Value::String(name) => format!("  key {name}"),
            key => format!(
                "  key {} ({}): {}{}",
                key["key_id"].as_str().unwrap_or_default(),
                key["scope"].as_str().unwrap_or_default(),
                key["outcome"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('_', " "),
                detail(key)
            ),
        });
    }
    for resource in report["resources"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  resource {}: {}{}",
            resource["id"].as_str().unwrap_or_default(),
            resource["outcome"]
                .as_str()
                .unwrap_or_default()
                .replace('_', " "),
            detail(resource)
        ));
    }
    if lines.is_empty() {
        lines.push("  no key and no resource is registered under it".into());
    }
    for problem in report["problems"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  problem: {}",
            problem.as_str().unwrap_or_default()
        ));
    }
    for note in report["notes"].as_array().into_iter().flatten() {
        lines.push(format!("  note: {}", note.as_str().unwrap_or_default()));
    }
    lines.join("\n")
}

/// A key-guard report in words: what happened to the switch, how many keys and resources it
/// reached, then each of them.
fn summary(on: &On, report: &Value, stop: &Stop) -> String {
    let listed = ["keys", "resources"]
        .iter()
        .map(|part| report[part].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    let scope = report["scope"].as_str().unwrap_or_default();
    let switch = report["switch"].as_str().unwrap_or_default();
    let heading = match stop {
        Stop::Yes => format!(
            "Kill switch {switch} on {scope} ({}): {} of {listed} keys and resources stopped",
            on.name(),
            stopped(report)
        ),
        Stop::Shutdown => format!(
            "Shut down {scope} ({}): kill switch {switch}; {} of {listed} keys and resources stopped",
            on.name(),
            stopped(report)
        ),
        Stop::No => format!(
            "Restored {scope} ({}): kill switch {switch}{}; {} of {listed} keys and resources running again",
            on.name(),
            report["limit_factor"]
                .as_str()
                .map_or(String::new(), |f| format!(", limit factor {f}")),
            counted(report, &BACK)
        ),
    };
    format!("{heading}\n{}", entries(report))
}

fn print_guard(
    on: &On,
    report: Result<Value, Failure>,
    stop: Stop,
    as_json: bool,
) -> Result<(), Failure> {
    let mut report = report?;
    report["target"] = json!(on.name());
    if as_json {
        outln!("{}", json_document(&report));
    } else {
        outln!("{}", summary(on, &report, &stop));
    }
    if stop != Stop::No && stopped(&report) == 0 && !has_failures(&report) {
        let listed = ["keys", "resources"]
            .iter()
            .map(|part| report[part].as_array().map_or(0, Vec::len))
            .sum::<usize>();
        let why = if listed == 0 {
            "no key and no resource is registered under it".to_string()
        } else {
            format!(
                "none of the {listed} keys and resources under it is stopped (see each outcome)"
            )
        };
        return Err(Failure::NothingStopped(format!(
            "warning: the kill switch of {} in the {} is engaged, but it stopped nothing: {why}, so only applications that read the switch stop",
            report["scope"].as_str().unwrap_or_default(),
            on.name()
        )));
    }
    let failed: Vec<String> = ["keys", "resources"]
        .iter()
        .flat_map(|part| report[part].as_array().into_iter().flatten())
        .filter(|k| k["outcome"] == json!("failed"))
        .map(|k| format!("{}: {}", k.get("key_id").unwrap_or(&k["id"]), k["detail"]))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Run(format!(
            "some keys or resources failed: {}",
            failed.join("; ")
        )))
    }
}

pub async fn ack(
    on: &On,
    alert_id: &str,
    reason: Option<&str>,
    as_json: bool,
) -> Result<(), Failure> {
    let local = on.local().await?;
    let mut event = json!({"action": "ack", "alert_id": alert_id, "actor": actor()});
    if let Some(reason) = reason {
        event["reason"] = json!(reason);
    }
    let mut answer = match local
        .invoke(Function::AlertFanout, event, Arc::new(StdoutMetrics))
        .await?
    {
        Ok(answer) => answer,
        Err(e) if e.error_type == "UnknownAlert" => {
            return Err(Failure::Invalid(format!(
                "error: no open alert with id {alert_id} in the {} (see `spendguard status {}` for open alerts)",
                on.name(),
                on.flag()
            )));
        }
        Err(e) => {
            return Err(
                rejected_credentials(&e.error_message).unwrap_or(Failure::Run(format!(
                    "alert-fanout in the {} refused: {}",
                    on.name(),
                    e.error_message
                ))),
            );
        }
    };
    answer["target"] = json!(on.name());
    if as_json {
        outln!("{}", json_document(&answer));
        return Ok(());
    }
    let by = answer["by"].as_str().unwrap_or_default();
    if let Some(earlier) = answer["already_by"].as_str() {
        outln!(
            "Alert {alert_id} ({}) was already acknowledged by {earlier} at {}: nothing changed",
            on.name(),
            answer["at"].as_str().unwrap_or("an earlier time")
        );
        return Ok(());
    }
    match answer["expected"].as_str() {
        Some(reason) => outln!(
            "Acknowledged security finding {alert_id} ({}) as {by}: its pattern is expected for the rest of its day ({reason})",
            on.name()
        ),
        None => outln!(
            "Acknowledged alert {alert_id} ({}) as {by}: it escalates no further",
            on.name()
        ),
    }
    Ok(())
}

/// `spendguard audit`: which entries of the audit log to show.
#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only entries under (or above) this scope, e.g. `openai/prod` (entries without a scope,
    /// such as scheduled checks, are left out).
    #[arg(long)]
    pub scope: Option<String>,
    /// Only entries whose actor starts with this, e.g. `cli:` (any operator), `cli:alice`,
    /// `schedule`.
    #[arg(long, value_name = "ACTOR")]
    pub actor: Option<String>,
    /// From this time on: RFC 3339 (`2026-11-20T18:00:00Z`) or a day (`2026-11-20`, UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time: RFC 3339 or a day (that day is left out). Default: now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// One month, YYYY-MM (default: the months --since and --until span, else this month).
    #[arg(long, conflicts_with_all = ["since", "until"])]
    pub month: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// Print the entries as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub on: On,
}

/// A time as `--since`/`--until` take it: RFC 3339, or a day meaning its first instant (UTC).
fn instant(text: &str, flag: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| {
            Failure::Invalid(format!(
                "{flag} `{text}`: expected RFC 3339 (2026-11-20T18:00:00Z) or a day (2026-11-20)"
            ))
        })
}

pub async fn audit(args: &AuditArgs) -> Result<(), Failure> {
    let filter = args.scope.as_deref().map(scope).transpose()?;
    let now = chrono::Utc::now();
    let (since, until) = match &args.month {
        Some(month) => {
            let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
                .map_err(|_| Failure::Invalid(format!("--month `{month}`: expected YYYY-MM")))?;
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(first);
            (
                first.and_time(chrono::NaiveTime::MIN).and_utc(),
                next.and_time(chrono::NaiveTime::MIN).and_utc(),
            )
        }
        None => {
            let until = match &args.until {
                Some(t) => instant(t, "--until")?,
                None => now,
            };
            let since = match &args.since {
                Some(t) => instant(t, "--since")?,
                // the month of the last instant before `until` (`--until 2026-11-01`: October)
                None => YearMonth::of((until - chrono::Duration::nanoseconds(1)).date_naive())
                    .first_day()
                    .and_time(chrono::NaiveTime::MIN)
                    .and_utc(),
            };
            (since, until)
        }
    };
    if since >= until {
        return Err(Failure::Invalid(format!(
            "--since {} is not before --until {}",
            since.to_rfc3339(),
            until.to_rfc3339()
        )));
    }
    let local = args.on.local().await?;
    let store = local.store();
    let filtered = filter.is_some() || args.actor.is_some();
    let mut entries = Vec::new();
    // the log is kept by month, newest first: walk back from the last month
    let mut month = YearMonth::of((until - chrono::Duration::nanoseconds(1)).date_naive());
    while entries.len() < args.limit {
        // a month's newest entries are enough unless some are filtered out: by scope or actor,
        // or by an `--until` that falls inside the month (entries after it hide older ones)
        let month_end = month
            .first_day()
            .checked_add_months(chrono::Months::new(1))
            .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc());
        let cut_inside = args.until.is_some() && month_end.is_some_and(|end| end > until);
        let fetch = if filtered || cut_inside {
            usize::MAX
        } else {
            args.limit
        };
        let page = store.audit_log(month, fetch).await.map_err(run_err)?;
        entries.extend(page.into_iter().filter(|e| {
            e.at >= since
                && e.at < until
                && args.actor.as_ref().is_none_or(|a| e.actor.starts_with(a))
                && filter.as_ref().is_none_or(|f| {
                    e.scope
                        .as_ref()
                        .is_some_and(|s| f.contains(s) || s.contains(f))
                })
        }));
        let first = month.first_day();
        if first.and_time(chrono::NaiveTime::MIN).and_utc() <= since {
            break;
        }
        month = YearMonth::of(first.pred_opt().unwrap_or(first));
    }
    entries.truncate(args.limit);
    if args.json {
        outln!(
            "{}",
            json_document(&json!({
                "target": args.on.name(),
                "since": since,
                "until": until,
                "entries": entries,
            }))
        );
        return Ok(());
    }
    outln!(
        "Audit log of the {}, {} to {} (newest first)",
        args.on.name(),
        since.format("%-d %b %Y %H:%M UTC"),
        until.format("%-d %b %Y %H:%M UTC")
    );
    if entries.is_empty() {
        outln!("  no entries");
        return Ok(());
    }
    outln!(
        "{}",
        columns(
            &["TIME (UTC)", "ACTOR", "ACTION", "SCOPE", "DETAIL"],
            entries.iter().map(|e| {
                vec![
                    e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.actor.clone(),
                    e.action.clone(),
                    e.scope.as_ref().map_or("-".into(), |s| s.to_string()),
                    short_detail(&e.detail),
                ]
            })
        )
    );
    Ok(())
}

/// An audit entry's detail in one short line: its scalar fields, `reason` first.
fn short_detail(detail: &Value) -> String {
    const WIDTH: usize = 80;
    let Value::Object(fields) = detail else {
        return detail.to_string();
    };
    let mut parts: Vec<String> = fields
        .get("reason")
        .and_then(Value::as_str)
        .map(|r| format!("reason: {r}"))
        .into_iter()
        .collect();
    for (name, value) in fields {
        match value {
            Value::String(v) if name != "reason" => parts.push(format!("{name}: {v}")),
            Value::Number(v) => parts.push(format!("{name}: {v}")),
            Value::Bool(v) => parts.push(format!("{name}: {v}")),
            _ => {}
        }
    }
    let line = parts.join(", ");
    if line.chars().count() > WIDTH {
        format!("{}…", line.chars().take(WIDTH - 1).collect::<String>())
    } else {
        line
    }
}

/// Differences between two JSON documents, one line per changed leaf.
pub async fn month_report(
    on: &On,
    scope_text: &str,
    month: &str,
    out: &std::path::Path,
    as_json: bool,
) -> Result<(), Failure> {
    let target = scope(scope_text)?;
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map_err(|_| Failure::Invalid(format!("--month `{month}`: expected YYYY-MM")))?;
    let local = on.local().await?;
    let data = report::gather(local.store().as_ref(), &target, YearMonth::of(first))
        .await
        .map_err(run_err)?;
    if data.days.is_empty() && data.provider_series.is_empty() && data.markers.is_empty() {
        // nothing to draw: say which scopes have data instead of writing an empty chart
        let mut scopes = local
            .store()
            .scopes_with_counters(YearMonth::of(first))
            .await
            .map_err(run_err)?;
        // the scopes people name first; dimension scopes (`_model/…`) and `*` after them
        scopes.sort_by_key(|s| (s.as_str().starts_with(['_', '*']), s.to_string()));
        let shown: Vec<String> = scopes.iter().take(12).map(|s| s.to_string()).collect();
        let more = scopes.len().saturating_sub(shown.len());
        return Err(Failure::Invalid(format!(
            "error: no nightly summaries for {target} in {month}; scopes with data: {}{}",
            if shown.is_empty() {
                "none yet (daily-aggregate writes the summaries each night)".to_string()
            } else {
                shown.join(", ")
            },
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )));
    }
    if as_json {
        let mut figures = serde_json::to_value(&data).unwrap_or_default();
        figures["target"] = json!(on.name());
        outln!("{}", json_document(&figures));
        return Ok(());
    }
    if data.days.is_empty() && data.provider_series.is_empty() {
        errln!(
            "note: no nightly summaries for {target} in {month} yet (daily-aggregate writes them)"
        );
    }
    let page = report::html(&data, &format!("{} — from the {}.", target, on.name()), &[]);
    std::fs::write(out, page).map_err(|e| Failure::Run(format!("{}: {e}", out.display())))?;
    outln!("Report: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    /// An audit log of one entry an hour, newest first per month, that counts what it reads.
    struct HourlyAudit {
        entries: Vec<AuditEntry>,
        read: Mutex<usize>,
    }

    impl AuditLog for HourlyAudit {
        fn append_audit<'a, 'b, 'f>(
            &'a self,
            _: &'b AuditEntry,
        ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'f>>
        where
            'a: 'f,
            'b: 'f,
        {
            Box::pin(async { Ok(()) })
        }

        fn audit_log<'a, 'f>(
            &'a self,
            month: YearMonth,
            limit: usize,
        ) -> Pin<Box<dyn Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send + 'f>>
        where
            'a: 'f,
        {
            let page: Vec<AuditEntry> = self
                .entries
                .iter()
                .rev()
                .filter(|e| YearMonth::of(e.at.date_naive()) == month)
                .take(limit)
                .cloned()
                .collect();
            *self.read.lock().unwrap() += page.len();
            Box::pin(async move { Ok(page) })
        }
    }

    #[tokio::test]
    async fn the_last_days_of_the_audit_log_are_read_without_the_months_before() {
        // late in a month (this month alone holds 732 entries), and early in one (the 7 days
        // reach into the month before)
        for now in ["2026-12-31T12:00:00Z", "2026-12-03T12:00:00Z"] {
            let now: chrono::DateTime<chrono::Utc> = now.parse().unwrap();
            let entries = (0..24 * 50)
                .map(|h| AuditEntry {
                    id: format!("e{h}"),
                    at: now - chrono::Duration::hours(24 * 50 - h),
                    actor: "budget-check".into(),
                    action: "security_finding".into(),
                    scope: None,
                    detail: json!({}),
                })
                .collect();
            let log = HourlyAudit {
                entries,
                read: Mutex::new(0),
            };
            let since = now - chrono::Duration::days(7);
            let got = audit_since(&log, since, now).await.unwrap();
            assert_eq!(got.len(), 7 * 24, "{now}");
            assert!(got.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
            assert!(got.iter().all(|e| e.at >= since));
            let read = *log.read.lock().unwrap();
            // growing pages read less than four times what is wanted
            assert!(
                read < 4 * 7 * 24,
                "{now}: read {read} entries for 168 wanted"
            );
        }
    }

    #[test]
    fn an_age_reads_as_people_say_it() {
        let minutes = chrono::Duration::minutes;
        assert_eq!(age(chrono::Duration::seconds(20)), "just now");
        assert_eq!(age(minutes(12)), "12 min ago");
        assert_eq!(age(minutes(3 * 60 + 5)), "3 h ago");
        assert_eq!(age(minutes(47 * 60)), "47 h ago");
        assert_eq!(age(minutes(5 * 24 * 60 + 3)), "5 d ago");
    }

    #[test]
    fn a_kill_counts_only_what_is_off_after_it() {
        let report = |keys: Value, resources: Value| json!({"keys": keys, "resources": resources});
        assert_eq!(stopped(&report(json!([]), json!([]))), 0);
        let protected_only = report(
            json!([{"key_id": "k", "outcome": "released"}]),
            json!([{"id": "fn", "outcome": "protected", "detail": "spendguard itself"}]),
        );
        assert_eq!(stopped(&protected_only), 0);
        assert!(!has_failures(&protected_only));
        let held_elsewhere = report(
            json!([{"key_id": "k", "outcome": "already_disabled"}]),
            json!([{"id": "i-1", "outcome": "stopped"}, {"id": "fn", "outcome": "protected"}]),
        );
        assert_eq!(stopped(&held_elsewhere), 2);
        let failed = report(
            json!([{"key_id": "k", "outcome": "failed", "detail": "HTTP 500"}]),
            json!([]),
        );
        assert_eq!(stopped(&failed), 0);
        assert!(has_failures(&failed));
    }
}
