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
use serde_json::{Value, json};
use spendguard_app::flows::nightly::StdoutMetrics;
use spendguard_app::ports::clock::SystemClock;
use spendguard_domain::period::YearMonth;
use spendguard_domain::scope::Scope;

use crate::Failure;
use crate::local::{Function, Local, Target};
use crate::output::{json_document, outln};
use crate::report;

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
}

impl On {
    pub(crate) async fn local(&self) -> Result<Local, Failure> {
        match (&self.table, &self.store) {
            (Some(table), _) => {
                Local::new(
                    &Target::Aws,
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

pub(crate) fn run_err(e: impl std::fmt::Display) -> Failure {
    Failure::Run(e.to_string())
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
    eprint!("{question} [y/N] ");
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
                "raised_at": a.event.raised_at,
                "acknowledged": a.acknowledged.is_some(),
                "escalation_level": a.escalation_level,
            })
        })
        .collect();
    if as_json {
        outln!(
            "{}",
            json_document(
                &json!({"target": on.name(), "kill_switches": switches, "keys": keys, "open_alerts": alerts})
            )
        );
        return Ok(());
    }
    outln!("{}", on.name());
    outln!("\nKILL SWITCHES (not open)");
    if switches.is_empty() {
        outln!("  none: every scope is open");
    }
    for s in &switches {
        outln!(
            "  {:<32} {:<10} limit factor {}",
            s["scope"].as_str().unwrap_or_default(),
            s["state"].as_str().unwrap_or_default(),
            s["limit_factor"].as_str().unwrap_or_default()
        );
    }
    outln!("\nKEYS");
    if keys.is_empty() {
        outln!("  none registered (add [[key]] entries to the budgets file)");
    }
    for k in &keys {
        outln!(
            "  {:<28} {:<10} {:<32} {}",
            k["id"].as_str().unwrap_or_default(),
            k["provider"].as_str().unwrap_or_default(),
            k["scope"].as_str().unwrap_or_default(),
            k["status"]["status"].as_str().unwrap_or("active")
        );
    }
    outln!("\nOPEN PAGING ALERTS");
    if alerts.is_empty() {
        outln!("  none");
    }
    for a in &alerts {
        outln!(
            "  {} {:<9} {} {} {}{}",
            a["alert_id"].as_str().unwrap_or_default(),
            a["severity"].as_str().unwrap_or_default(),
            a["budget_id"].as_str().unwrap_or_default(),
            a["window"].as_str().unwrap_or_default(),
            a["period"].as_str().unwrap_or_default(),
            if a["acknowledged"] == json!(true) {
                " (acknowledged)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Runs one function's handler on the chosen store and prints its answer.
/// Invokes `function` on the target `on` names; a refusal names the target too.
async fn act(on: &On, local: &Local, function: Function, event: Value) -> Result<Value, Failure> {
    match local
        .invoke(function, event, Arc::new(StdoutMetrics))
        .await?
    {
        Ok(v) => Ok(v),
        Err(e) => Err(Failure::Run(format!(
            "{} in the {} refused: {}: {}",
            function.name(),
            on.name(),
            e.error_type,
            e.error_message
        ))),
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

pub async fn kill(on: &On, scope_text: &str, reason: &str, yes: bool) -> Result<(), Failure> {
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
    print_guard(on, report, Stop::Yes)
}

/// Shows what a shutdown would stop (key-guard's dry run), then, once confirmed, does it.
pub async fn shutdown(
    on: &On,
    scope_text: &str,
    reason: &str,
    dry_run: bool,
    yes: bool,
) -> Result<(), Failure> {
    let target = scope(scope_text)?;
    let local = on.local().await?;
    let plan = act(
        on,
        &local,
        Function::KeyGuard,
        json!({"action": "shutdown", "scope": target, "actor": actor(), "dry_run": true}),
    )
    .await?;
    let mut plan = plan;
    plan["target"] = json!(on.name());
    outln!("{}", json_document(&plan));
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
    print_guard(on, report, Stop::Yes)
}

pub async fn restore(on: &On, scope_text: &str, yes: bool) -> Result<(), Failure> {
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
    print_guard(on, report, Stop::No)
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

/// How many keys and resources of a key-guard report are off after it.
fn stopped(report: &Value) -> usize {
    ["keys", "resources"]
        .iter()
        .flat_map(|part| report[part].as_array().into_iter().flatten())
        .filter(|entry| entry["outcome"].as_str().is_some_and(|o| OFF.contains(&o)))
        .count()
}

fn has_failures(report: &Value) -> bool {
    ["keys", "resources"]
        .iter()
        .flat_map(|part| report[part].as_array().into_iter().flatten())
        .any(|entry| entry["outcome"] == json!("failed"))
}

/// Whether a command was meant to stop something (a kill, a shutdown).
#[derive(PartialEq)]
enum Stop {
    Yes,
    No,
}

fn print_guard(on: &On, report: Result<Value, Failure>, stop: Stop) -> Result<(), Failure> {
    let mut report = report?;
    report["target"] = json!(on.name());
    outln!("{}", json_document(&report));
    if stop == Stop::Yes && stopped(&report) == 0 && !has_failures(&report) {
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

pub async fn ack(on: &On, alert_id: &str, reason: Option<&str>) -> Result<(), Failure> {
    let local = on.local().await?;
    let mut event = json!({"action": "ack", "alert_id": alert_id, "actor": actor()});
    if let Some(reason) = reason {
        event["reason"] = json!(reason);
    }
    let mut answer = act(on, &local, Function::AlertFanout, event).await?;
    answer["target"] = json!(on.name());
    outln!("{}", json_document(&answer));
    Ok(())
}

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
    if data.days.is_empty() && data.markers.is_empty() {
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
    if data.days.is_empty() {
        eprintln!(
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
