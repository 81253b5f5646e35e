//! The check report as a table a person can read at a glance.

use std::fmt::Write;
use std::path::Path;

use spendguard_app::flows::check::{AlertOutcome, BudgetReport, CheckReport, WindowReport};
use spendguard_domain::alert::{AlertEvent, AlertKind};
use spendguard_domain::forecast::Forecast;
use spendguard_domain::money::display_amount;
use spendguard_domain::period::Period;

const HEADERS: [&str; 11] = [
    "BUDGET",
    "WINDOW",
    "PERIOD",
    "RESETS",
    "SPEND",
    "LIMIT",
    "USED",
    "FORECAST",
    "FCST USED",
    "TIER REACHED",
    "ACTIONS ORDERED",
];

/// The columns of numbers: right-aligned.
const NUMBERS: std::ops::RangeInclusive<usize> = 4..=8;

/// Every window of a report, the worst first: the most severe tier reached, then the share of
/// the limit spent; windows that could not be evaluated after those that could.
pub fn worst_first(report: &CheckReport) -> Vec<(&BudgetReport, &WindowReport)> {
    let mut windows: Vec<(&BudgetReport, &WindowReport)> = report
        .budgets
        .iter()
        .flat_map(|b| b.windows.iter().map(move |w| (b, w)))
        .collect();
    windows.sort_by(|(a_budget, a), (b_budget, b)| {
        b.highest_severity
            .cmp(&a.highest_severity)
            .then(b.percent.cmp(&a.percent))
            .then(a_budget.budget_id.cmp(&b_budget.budget_id))
    });
    windows
}

/// When a window's period resets, in its budget's zone (`1 Dec 00:00 EST`).
pub fn resets(budget: &BudgetReport, window: &WindowReport) -> String {
    Period::from_key(&window.period, budget.timezone)
        .map_or_else(|| window.period_end.to_rfc3339(), |p| p.resets_label())
}

/// How many security findings of a run ended with `outcome`.
fn security_findings(report: &CheckReport, outcome: &str) -> usize {
    report
        .security
        .findings
        .iter()
        .filter(|f| f.outcome == outcome)
        .count()
}

/// How many alerts were raised, by kind when there is more than one kind
/// (`7 raised now (6 budget, 1 security)`).
fn alert_count(published: &[AlertEvent]) -> String {
    let mut kinds: Vec<(AlertKind, usize)> = Vec::new();
    for e in published {
        match kinds.iter_mut().find(|(k, _)| *k == e.kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((e.kind, 1)),
        }
    }
    if kinds.len() < 2 {
        return format!("{} raised now", published.len());
    }
    let parts: Vec<String> = kinds
        .iter()
        .map(|(k, n)| {
            let name = serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{n} {}", name.replace('_', " "))
        })
        .collect();
    format!("{} raised now ({})", published.len(), parts.join(", "))
}

/// What to do about a source this run could not read.
fn hint(kind: &str) -> &'static str {
    match kind {
        "aws_budgets" => "pass --aws-account-id (AWS credentials from the environment)",
        "cost_explorer" => {
            "deployed only (SPENDGUARD_COST_EXPLORER=enabled): every request costs $0.01"
        }
        "openai" => "pass --openai-admin-key-file",
        "anthropic" => "pass --anthropic-admin-key-file",
        _ => "see docs/budgets.md#sources",
    }
}

pub fn render(report: &CheckReport, published: &[AlertEvent], store: &Path) -> String {
    let mut rows: Vec<[String; 11]> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for (b, w) in worst_first(report) {
        let (spend, used, forecast) = match (&w.spend, &w.error, &w.note) {
            (Some(s), _, _) => (
                display_amount(s.amount),
                w.percent.map(|p| format!("{p}%")).unwrap_or_default(),
                match w.forecast {
                    Some(Forecast::Projected(f)) => display_amount(f),
                    Some(Forecast::TooEarly) => "too early".into(),
                    Some(Forecast::Implausible(f)) => format!("implausible ({f:.0})"),
                    None => String::new(),
                },
            ),
            (None, Some(e), _) => {
                errors.push(format!("{} {}: {e}", b.budget_id, w.window));
                ("error".into(), "-".into(), "-".into())
            }
            (None, None, Some(n)) => {
                // budgets of an unconfigured source get one note for the source, below
                if !report.unconfigured.contains(&b.source) {
                    notes.push(format!("{} {}: not checked: {n}", b.budget_id, w.window));
                }
                ("-".into(), "-".into(), "-".into())
            }
            (None, None, None) => ("-".into(), "-".into(), "-".into()),
        };
        rows.push([
            b.budget_id.clone(),
            w.window.to_string(),
            w.period_label.clone(),
            resets(b, w),
            spend,
            w.limit.to_string(),
            used,
            forecast,
            w.forecast_percent
                .map(|p| format!("{p}%"))
                .unwrap_or_else(|| "-".into()),
            w.highest_tier.clone().unwrap_or_else(|| "-".into()),
            if w.actions.is_empty() {
                "-".into()
            } else {
                w.actions.join(", ")
            },
        ]);
    }
    let mut widths = HEADERS.map(str::len);
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // numbers right-aligned, text left-aligned
                if NUMBERS.contains(&i) {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, &HEADERS.map(String::from));
    for r in &rows {
        line(&mut out, r);
    }

    let _ = writeln!(out);
    if report.dry_run {
        let findings = security_findings(report, "would_publish");
        let _ = writeln!(
            out,
            "Dry run: {} alerts would be raised{}; nothing was claimed or recorded.",
            report.alerts.would_publish + findings,
            if findings > 0 {
                format!(
                    " ({} budget, {findings} security)",
                    report.alerts.would_publish
                )
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            out,
            "Alerts: {}, {} already raised earlier in their period.",
            alert_count(published),
            report.alerts.already_raised + security_findings(report, "already_raised")
        );
    }
    for e in published {
        // the summary names the period by its store key; people read dates
        let summary = e
            .summary
            .replace(&e.period_key, &Period::label_of_key(&e.period_key));
        let _ = writeln!(out, "  ▲ {summary}");
    }
    if !report.security.price_book_drift.is_empty() {
        let _ = writeln!(
            out,
            "\nPrice book drift (the price book prices these models above what the provider charged: fix [prices]):"
        );
        for d in &report.security.price_book_drift {
            let _ = writeln!(out, "  ! {}", d.summary());
        }
    }
    let stuck = report
        .budgets
        .iter()
        .flat_map(|b| &b.windows)
        .flat_map(|w| &w.alerts)
        .filter(|a| a.outcome == AlertOutcome::HeldByOther)
        .count();
    if stuck > 0 {
        let _ = writeln!(
            out,
            "  {stuck} alerts are being raised by another run right now."
        );
    }
    for kind in &report.unconfigured {
        let budgets: Vec<&str> = report
            .budgets
            .iter()
            .filter(|b| &b.source == kind)
            .map(|b| b.budget_id.as_str())
            .collect();
        notes.push(format!(
            "{} not checked: source `{kind}` is not read by this run: {}",
            budgets.join(", "),
            hint(kind)
        ));
    }
    let anthropic_costs: Vec<&str> = report
        .budgets
        .iter()
        .filter(|b| b.source == "anthropic" && !report.unconfigured.contains(&b.source))
        .map(|b| b.budget_id.as_str())
        .collect();
    if !anthropic_costs.is_empty() {
        notes.push(format!(
            "{}: Anthropic's cost report excludes Priority Tier costs: they are not in these figures",
            anthropic_costs.join(", ")
        ));
    }
    if !errors.is_empty() {
        let _ = writeln!(
            out,
            "\nCannot be evaluated (nobody hears of their spend until fixed):"
        );
        for e in errors {
            let _ = writeln!(out, "  ✗ {e}");
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:");
        for n in notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    let _ = writeln!(
        out,
        "\nState: {} (run again: replayed usage counts once, alerts are not repeated)",
        store.display()
    );
    out
}
