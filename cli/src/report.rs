//! The month report of one scope: an HTML page with an SVG chart of spend vs budget vs forecast
//! per day, the budget's tier lines, and the moments keys were stopped and restored. Built
//! from what the store holds (nightly summaries, the budget, key-guard's audit log), so
//! `spendguard demo` and `spendguard report` against a deployment draw the same page.

use std::fmt::Write;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use spendguard_app::ports::store::{StateStore, StoreError};
use spendguard_domain::budget::Basis;
use spendguard_domain::forecast::Forecast;
use spendguard_domain::period::{WindowKind, YearMonth, last_day_of_month};
use spendguard_domain::scope::Scope;

/// A day of the chart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Day {
    pub date: NaiveDate,
    pub spend: Decimal,
    pub month_to_date: Decimal,
    pub forecast: Option<Decimal>,
}

/// A tier line: the spend at which the tier is reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TierLine {
    pub name: String,
    pub amount: Decimal,
    pub severity: String,
}

/// Something that happened to the scope's keys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Marker {
    pub at: DateTime<Utc>,
    /// `kill` (switch engaged), `restore` (restore started)
    pub kind: String,
    pub label: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MonthReport {
    pub scope: Scope,
    pub month: String,
    pub currency: String,
    pub budget_id: Option<String>,
    pub limit: Option<Decimal>,
    pub tiers: Vec<TierLine>,
    pub days: Vec<Day>,
    pub markers: Vec<Marker>,
}

pub async fn gather(
    store: &dyn StateStore,
    scope: &Scope,
    month: YearMonth,
) -> Result<MonthReport, StoreError> {
    let first = month.first_day();
    let last = last_day_of_month(first);
    let policy = store.load_policy().await?;
    let budget = policy
        .budgets
        .iter()
        .find(|b| &b.scope == scope && b.window(WindowKind::Monthly).is_some());
    let window = budget.and_then(|b| b.window(WindowKind::Monthly));
    let summaries = store.summaries(scope, first, last).await?;
    let currency = budget
        .map(|b| b.currency.to_string())
        .or_else(|| summaries.last().map(|s| s.main_currency().to_string()))
        .unwrap_or_else(|| "USD".into());
    let amount = |text: Option<&String>| {
        text.and_then(|t| t.parse::<Decimal>().ok())
            .unwrap_or_default()
    };
    let days = summaries
        .iter()
        .map(|s| Day {
            date: s.date,
            spend: amount(s.day.get(&format!("cost.{currency}"))),
            month_to_date: amount(
                s.month_to_date
                    .iter()
                    .find(|(c, _)| c.to_string() == currency)
                    .map(|(_, v)| v),
            ),
            forecast: match &s.forecast {
                Some(Forecast::Projected(v)) => Some(*v),
                _ => None,
            },
        })
        .collect();
    let tiers = window
        .map(|w| {
            w.tiers
                .iter()
                .filter(|t| t.basis == Basis::Actual)
                .map(|t| TierLine {
                    name: t.name.clone(),
                    amount: t.threshold_amount(w.limit),
                    severity: t.severity.as_str().into(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut markers = store
        .audit_log(month, 10_000)
        .await?
        .into_iter()
        .filter(|e| {
            e.scope
                .as_ref()
                .is_some_and(|s| s.contains(scope) || scope.contains(s))
        })
        .filter_map(|e| {
            let (kind, verb) = match e.action.as_str() {
                "kill_switch_engaged" => ("kill", "keys stopped"),
                "restore_started" => ("restore", "restore started"),
                _ => return None,
            };
            let on = e.scope.as_ref().map(|s| s.to_string()).unwrap_or_default();
            Some(Marker {
                at: e.at,
                kind: kind.into(),
                label: format!("{verb} on {on} by {}", e.actor),
            })
        })
        .collect::<Vec<_>>();
    markers.sort_by_key(|m| m.at);
    Ok(MonthReport {
        scope: scope.clone(),
        month: format!("{}-{:02}", month.year, month.month),
        currency,
        budget_id: budget.map(|b| b.id.clone()),
        limit: window.map(|w| w.limit),
        tiers,
        days,
        markers,
    })
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn f(d: Decimal) -> f64 {
    // drawing only: every figure shown as text is printed from the decimal
    d.to_f64().unwrap_or(0.0)
}

fn tier_colour(severity: &str) -> &'static str {
    match severity {
        "emergency" => "#b00020",
        "critical" => "#e8590c",
        "warning" => "#f2a900",
        _ => "#6c757d",
    }
}

pub const KILL_COLOUR: &str = "#d6336c";
pub const RESTORE_COLOUR: &str = "#2b8a3e";

/// The chart: days of the month on x, money on y.
pub fn svg(r: &MonthReport) -> String {
    let (w, h) = (960.0, 420.0);
    let (left, right, top, bottom) = (70.0, 150.0, 20.0, 40.0);
    let days_in_month = r
        .days
        .first()
        .map(|d| last_day_of_month(d.date).day())
        .unwrap_or(30) as f64;
    let mut top_value = r.limit.map(f).unwrap_or(0.0);
    for d in &r.days {
        top_value = top_value
            .max(f(d.month_to_date))
            .max(d.forecast.map(f).unwrap_or(0.0));
    }
    // a round step for the grid, and the top at a whole number of steps
    let raw_step = (top_value * 1.1).max(1.0) / 5.0;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw_step)
        .unwrap_or(raw_step);
    let grid_lines = (top_value * 1.1 / step).ceil().max(1.0) as usize;
    let top_value = step * grid_lines as f64;
    let x = |day: f64| left + (day / days_in_month) * (w - left - right);
    let y = |v: f64| top + (1.0 - v / top_value) * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="spend vs budget vs forecast"><rect width="{w}" height="{h}" fill="#ffffff"/>"##
    );
    // axes and grid
    for i in 0..=grid_lines {
        let v = step * i as f64;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e9ecef"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#495057">{v:.0}</text>"##,
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    for day in (1..=days_in_month as u32).filter(|d| *d == 1 || d % 5 == 0) {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#495057">{day}</text>"##,
            x(day as f64),
            h - bottom + 16.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" font-size="11" fill="#495057">day of {} ({})</text>"##,
        left,
        h - 6.0,
        esc(&r.month),
        esc(&r.currency)
    );
    // tier lines and the limit, crisp so that a screenshot shows their exact colours
    for t in &r.tiers {
        let ty = y(f(t.amount));
        let colour = tier_colour(&t.severity);
        let _ = write!(
            s,
            r##"<line class="tier tier-{sev}" x1="{left}" x2="{x2}" y1="{ty:.0}" y2="{ty:.0}" stroke="{colour}" stroke-width="3" stroke-dasharray="8 4" shape-rendering="crispEdges"/><text x="{tx}" y="{ly:.1}" font-size="12" fill="{colour}">{name} {amount}</text>"##,
            sev = esc(&t.severity),
            x2 = w - right,
            tx = w - right + 6.0,
            // a tier at the limit is labelled below the line, the limit above it
            ly = if Some(t.amount) == r.limit {
                ty + 16.0
            } else {
                ty + 4.0
            },
            name = esc(&t.name),
            amount = t.amount.round_dp(2).normalize()
        );
    }
    if let Some(limit) = r.limit {
        let ly = y(f(limit));
        let _ = write!(
            s,
            r##"<line class="limit" x1="{left}" x2="{x2}" y1="{ly:.0}" y2="{ly:.0}" stroke="#212529" stroke-width="2" shape-rendering="crispEdges"/><text x="{tx}" y="{ty:.1}" font-size="12" fill="#212529">budget {limit}</text>"##,
            x2 = w - right,
            tx = w - right + 6.0,
            ty = ly - 6.0,
            limit = limit.normalize()
        );
    }
    // forecast (dashed) and month-to-date spend
    let line = |points: Vec<(f64, f64)>, colour: &str, dash: &str, class: &str| {
        if points.is_empty() {
            return String::new();
        }
        let path: Vec<String> = points
            .iter()
            .map(|(d, v)| format!("{:.1},{:.1}", x(*d), y(*v)))
            .collect();
        format!(
            r##"<polyline class="{class}" fill="none" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}" points="{}"/>"##,
            path.join(" ")
        )
    };
    let forecast: Vec<(f64, f64)> = r
        .days
        .iter()
        .filter_map(|d| d.forecast.map(|v| (d.date.day() as f64, f(v))))
        .collect();
    s.push_str(&line(forecast, "#7048e8", "5 4", "forecast"));
    let mut spend = vec![(0.0, 0.0)];
    spend.extend(
        r.days
            .iter()
            .map(|d| (d.date.day() as f64, f(d.month_to_date))),
    );
    s.push_str(&line(spend, "#1971c2", "none", "spend"));
    // the moments keys were stopped and restored
    for m in &r.markers {
        let day =
            f64::from(m.at.day() - 1) + f64::from(m.at.num_seconds_from_midnight()) / 86_400.0;
        let mx = x(day);
        let colour = if m.kind == "kill" {
            KILL_COLOUR
        } else {
            RESTORE_COLOUR
        };
        let _ = write!(
            s,
            r##"<line class="marker marker-{kind}" x1="{mx:.0}" x2="{mx:.0}" y1="{top}" y2="{b}" stroke="{colour}" stroke-width="3" shape-rendering="crispEdges"/><text x="{tx:.1}" y="{ty}" font-size="12" fill="{colour}">{label}</text>"##,
            kind = esc(&m.kind),
            b = h - bottom,
            tx = mx + 4.0,
            ty = top + 14.0 + if m.kind == "kill" { 0.0 } else { 16.0 },
            label = if m.kind == "kill" {
                "keys stopped"
            } else {
                "restored"
            }
        );
    }
    // legend
    let legend = [
        ("#1971c2", "month to date"),
        ("#7048e8", "forecast (end of month)"),
        (KILL_COLOUR, "keys stopped"),
        (RESTORE_COLOUR, "restore"),
    ];
    for (i, (colour, text)) in legend.iter().enumerate() {
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{ry:.1}" width="12" height="4" fill="{colour}"/><text x="{tx}" y="{ly:.1}" font-size="11" fill="#212529">{text}</text>"##,
            lx = left + 10.0,
            ry = ly - 4.0,
            tx = left + 26.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A section of extra content below the chart (the demo's timeline, what Slack received).
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
}

pub fn html(r: &MonthReport, intro: &str, sections: &[Section]) -> String {
    let mut page = String::new();
    let title = format!("spendguard — {} — {}", r.scope, r.month);
    let _ = write!(
        page,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212529;max-width:1000px}}
h1{{font-size:22px;margin:0 0 4px}} h2{{font-size:17px;margin:28px 0 8px}} p{{margin:4px 0 12px;color:#495057}}
table{{border-collapse:collapse;font-size:13px;width:100%}} td{{border-top:1px solid #dee2e6;padding:4px 8px;vertical-align:top}}
td:first-child{{white-space:nowrap;color:#495057;width:170px}} .figures td:first-child{{width:auto}}
</style></head><body><h1>{t}</h1><p>{intro}</p>"#,
        t = esc(&title),
        intro = esc(intro)
    );
    let last = r.days.last();
    let _ = write!(
        page,
        "<table class=\"figures\"><tr><td>budget</td><td>{}</td><td>limit</td><td>{}</td><td>month to date</td><td>{}</td><td>forecast</td><td>{}</td></tr></table>",
        esc(r.budget_id.as_deref().unwrap_or("(none on this scope)")),
        r.limit
            .map(|l| format!("{} {}", l.normalize(), r.currency))
            .unwrap_or_else(|| "-".into()),
        last.map(|d| format!("{} {}", d.month_to_date.round_dp(2), r.currency))
            .unwrap_or_else(|| "-".into()),
        last.and_then(|d| d.forecast)
            .map(|v| format!("{} {}", v.round_dp(2), r.currency))
            .unwrap_or_else(|| "-".into()),
    );
    page.push_str("<h2>Spend vs budget vs forecast</h2>");
    page.push_str(&svg(r));
    let days = Section {
        title: "Days".into(),
        rows: r
            .days
            .iter()
            .map(|d| {
                (
                    d.date.to_string(),
                    format!(
                        "spent {} · month to date {}{}",
                        d.spend.round_dp(2),
                        d.month_to_date.round_dp(2),
                        d.forecast
                            .map(|f| format!(" · forecast {}", f.round_dp(2)))
                            .unwrap_or_default()
                    ),
                )
            })
            .collect(),
    };
    for section in sections.iter().chain([&days]) {
        let _ = write!(page, "<h2>{}</h2><table>", esc(&section.title));
        for (when, what) in &section.rows {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(when),
                esc(what)
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    page
}
