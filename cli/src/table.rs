//! The check report as a table a person can read at a glance.

use std::fmt::Write;
use std::path::Path;

use spendguard_app::flows::check::{AlertOutcome, CheckReport};
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::forecast::Forecast;
use spendguard_domain::money::display_amount;

const HEADERS: [&str; 9] = [
    "BUDGET",
    "WINDOW",
    "PERIOD",
    "SPEND",
    "LIMIT",
    "USED",
    "FORECAST",
    "TIER REACHED",
    "ACTIONS ORDERED",
];

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
    let mut rows: Vec<[String; 9]> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for b in &report.budgets {
        for w in &b.windows {
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
                w.period.clone(),
                spend,
                w.limit.to_string(),
                used,
                forecast,
                w.highest_tier.clone().unwrap_or_else(|| "-".into()),
                if w.actions.is_empty() {
                    "-".into()
                } else {
                    w.actions.join(", ")
                },
            ]);
        }
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
                if (3..=6).contains(&i) {
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
        let _ = writeln!(
            out,
            "Dry run: {} alerts would be raised; nothing was claimed or recorded.",
            report.alerts.would_publish
        );
    } else {
        let _ = writeln!(
            out,
            "Alerts: {} raised now, {} already raised earlier in their period.",
            report.alerts.published, report.alerts.already_raised
        );
    }
    for e in published {
        let _ = writeln!(out, "  ▲ {}", e.summary);
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
