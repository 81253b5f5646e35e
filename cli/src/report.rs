//! The month report of one scope: an HTML page with an SVG chart of spend vs budget vs forecast
//! on one time axis (days as bars, month to date as a line, the budget's tier lines, the
//! moments keys were stopped and restored, and what the month would have cost had they not
//! been), then the days as a table. Built from what the store holds (nightly summaries, hour
//! counters, the budget, key-guard's audit log), so `spendguard demo` and `spendguard report`
//! against a deployment draw the same page. The app-reported usage and what each provider or
//! cloud source of a budget on the scope reported are separate series, labelled by source and
//! never added up: they may count the same calls.

use std::fmt::Write;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use spendguard_app::ports::store::{StateStore, StoreError};
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::budget::{Basis, Budget, SourceSpec};
use spendguard_domain::evaluate;
use spendguard_domain::forecast::{Forecast, continued};
use spendguard_domain::format::grouped;
use spendguard_domain::money::{Currency, checked_add};
use spendguard_domain::period::{WindowKind, YearMonth, last_day_of_month};
use spendguard_domain::scope::Scope;
use spendguard_domain::usage::{HourKey, Metric, start_of_hour};

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

/// The month had keys not been stopped: the scope's spend in the last full hour before the
/// first stop, continued every hour to the end of the month.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Projection {
    /// When keys were first stopped this month.
    pub from: DateTime<Utc>,
    /// The month to date then: the day before's nightly summary plus the hours of that day
    /// that began before the stop.
    pub spent_by_then: Decimal,
    /// The start of the last full hour before the stop, and what the scope spent in it.
    pub rate_hour: DateTime<Utc>,
    pub hourly: Decimal,
    /// The end of the month, and the spend by then at that rate.
    pub until: DateTime<Utc>,
    pub month_end: Decimal,
}

/// What a provider or cloud source reported for one budget on the scope, day by day (the
/// nightly summaries labelled with its source).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderSeries {
    /// The source kind (`openai`, `aws_budgets`, ...).
    pub source: String,
    pub budget_id: String,
    /// The budget's monthly limit, when it has a monthly window.
    pub limit: Option<Decimal>,
    pub days: Vec<Day>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MonthReport {
    pub scope: Scope,
    pub month: String,
    pub currency: String,
    /// The budget the header, tier lines and limits are of: the scope's usage budget, else a
    /// provider-sourced one.
    pub budget_id: Option<String>,
    pub limit: Option<Decimal>,
    /// The limit of the budget's daily window, when it has one.
    pub daily_limit: Option<Decimal>,
    pub tiers: Vec<TierLine>,
    /// The app-reported usage, day by day.
    pub days: Vec<Day>,
    /// Each provider-sourced budget's series, apart from `days` and from each other.
    pub provider_series: Vec<ProviderSeries>,
    pub markers: Vec<Marker>,
    pub without_spendguard: Option<Projection>,
}

/// The first instant of `month` and of the month after it (UTC, as the chart draws them).
fn month_span(month: YearMonth) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = month.first_day();
    let next = last_day_of_month(first) + Duration::days(1);
    (
        first.and_time(NaiveTime::MIN).and_utc(),
        next.and_time(NaiveTime::MIN).and_utc(),
    )
}

pub async fn gather(
    store: &dyn StateStore,
    scope: &Scope,
    month: YearMonth,
) -> Result<MonthReport, StoreError> {
    let first = month.first_day();
    let last = last_day_of_month(first);
    let policy = store.load_policy().await?;
    let monthly_on_scope =
        |b: &&Budget| &b.scope == scope && b.window(WindowKind::Monthly).is_some();
    let budget = policy
        .budgets
        .iter()
        .filter(monthly_on_scope)
        .find(|b| b.source == SourceSpec::Usage)
        .or_else(|| policy.budgets.iter().find(monthly_on_scope));
    let window = budget.and_then(|b| b.window(WindowKind::Monthly));
    let summaries = store.summaries(scope, first, last).await?;
    let (usage, provided): (Vec<&DailySummary>, Vec<&DailySummary>) =
        summaries.iter().partition(|s| s.is_usage());
    let currency = budget
        .map(|b| b.currency)
        .or_else(|| usage.last().map(|s| s.main_currency()))
        .unwrap_or(Currency::USD);
    let days_of = |series: &[&DailySummary]| -> Vec<Day> {
        let amount = |text: Option<&String>| {
            text.and_then(|t| t.parse::<Decimal>().ok())
                .unwrap_or_default()
        };
        series
            .iter()
            .map(|s| Day {
                date: s.date,
                spend: amount(s.day.get(&format!("cost.{currency}"))),
                month_to_date: amount(s.month_to_date.get(&currency)),
                forecast: match &s.forecast {
                    Some(Forecast::Projected(v)) => Some(*v),
                    _ => None,
                },
            })
            .collect()
    };
    let days = days_of(&usage);
    // one series per source kind, as the nightly run keeps them (the first budget by id)
    let mut kinds: Vec<&str> = provided.iter().map(|s| s.source.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let provider_series = kinds
        .into_iter()
        .filter_map(|kind| {
            let budget = policy
                .budgets
                .iter()
                .filter(|b| &b.scope == scope && b.source.kind() == kind)
                .min_by(|a, b| a.id.cmp(&b.id))?;
            let series: Vec<&DailySummary> = provided
                .iter()
                .copied()
                .filter(|s| s.source == kind)
                .collect();
            Some(ProviderSeries {
                source: kind.to_string(),
                budget_id: budget.id.clone(),
                limit: budget.window(WindowKind::Monthly).map(|w| w.limit),
                days: days_of(&series),
            })
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
    let first_stop = markers.iter().find(|m| m.kind == "kill").map(|m| m.at);
    let without_spendguard = match first_stop {
        Some(stop) => projection(store, scope, currency, &days, stop, month_span(month).1).await?,
        None => None,
    };
    Ok(MonthReport {
        scope: scope.clone(),
        month: format!("{}-{:02}", month.year, month.month),
        currency: currency.to_string(),
        budget_id: budget.map(|b| b.id.clone()),
        limit: window.map(|w| w.limit),
        daily_limit: budget
            .and_then(|b| b.window(WindowKind::Daily))
            .map(|w| w.limit),
        tiers,
        days,
        provider_series,
        markers,
        without_spendguard,
    })
}

/// The "without spendguard" line from the stop at `stop` (none when the hour before it spent
/// nothing: there was no pace to continue). Hour counters are kept 60 days, so a month's
/// report has them.
async fn projection(
    store: &dyn StateStore,
    scope: &Scope,
    currency: Currency,
    days: &[Day],
    stop: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<Projection>, StoreError> {
    let stop_day = stop.date_naive();
    let rate_hour = start_of_hour(stop) - Duration::hours(1);
    let mut hours: Vec<DateTime<Utc>> =
        std::iter::successors(Some(stop_day.and_time(NaiveTime::MIN).and_utc()), |h| {
            Some(*h + Duration::hours(1))
        })
        .take_while(|h| *h < stop)
        .collect();
    if !hours.contains(&rate_hour) {
        hours.push(rate_hour);
    }
    let keys: Vec<HourKey> = hours
        .iter()
        .map(|h| HourKey {
            scope: scope.clone(),
            hour: *h,
        })
        .collect();
    let counted = store.read_hours(&keys).await?;
    let cost_in = |hour: DateTime<Utc>| {
        counted
            .iter()
            .find(|(k, _)| k.hour == hour)
            .map(|(_, c)| c.total.get(Metric::Cost(currency)))
            .unwrap_or_default()
    };
    let hourly = cost_in(rate_hour);
    if hourly.is_zero() {
        return Ok(None);
    }
    let before_the_day = days
        .iter()
        .rev()
        .find(|d| d.date < stop_day)
        .map(|d| d.month_to_date)
        .unwrap_or_default();
    let spent_by_then = hours
        .iter()
        .filter(|h| h.date_naive() == stop_day)
        .map(|h| cost_in(*h))
        .try_fold(before_the_day, |sum, cost| {
            checked_add(sum, cost, "the month to date at the stop")
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let month_end = continued(spent_by_then, hourly, stop, until)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Some(Projection {
        from: stop,
        spent_by_then,
        rate_hour,
        hourly,
        until,
        month_end,
    }))
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

/// `1234.5` -> `1,234.50`, `1000` -> `1,000`.
fn amount_text(amount: Decimal) -> String {
    let text = grouped(amount);
    text.strip_suffix(".00")
        .map_or(text.clone(), str::to_string)
}

/// `~9,900`: two significant digits, for a figure that is an estimate.
fn about(amount: Decimal) -> String {
    let whole = amount.round();
    let digits = whole.abs().to_string().len() as u32;
    // 10^(digits - 2): at most 10^26 for a Decimal's 28 digits, never an overflow
    let unit = Decimal::from_i128_with_scale(10i128.pow(digits.saturating_sub(2)), 0);
    let rounded = amount
        .checked_div(unit)
        .and_then(|units| units.round().checked_mul(unit))
        .unwrap_or(whole);
    format!("~{}", amount_text(rounded))
}

/// A tier's line colour and the colour of its label: the light severity colours stay on the
/// lines, their labels take a darker shade of the same hue to reach WCAG AA (4.5:1) on white.
fn tier_colours(severity: &str) -> (&'static str, &'static str) {
    match severity {
        "emergency" => ("#b00020", "#b00020"),
        "critical" => ("#e8590c", "#ad4000"),
        "warning" => ("#f2a900", "#8a6100"),
        _ => ("#6c757d", MUTED),
    }
}

pub const KILL_COLOUR: &str = "#d6336c";
pub const RESTORE_COLOUR: &str = "#2b8a3e";
const RESTORE_TEXT: &str = "#237a37";
const MONTH_TO_DATE: &str = "#1971c2";
const FORECAST: &str = "#7048e8";
const WITHOUT_SPENDGUARD: &str = "#868e96";
const DAY_BAR: &str = "#a5d8ff";
/// Each provider series' month-to-date line and day bars, in the order the series come.
const PROVIDER_COLOURS: [(&str, &str); 3] = [
    ("#099268", "#96f2d7"),
    ("#9c36b5", "#eebefa"),
    ("#5c940d", "#c0eb75"),
];
const INK: &str = "#212529";
const MUTED: &str = "#495057";
const GRID: &str = "#e9ecef";

const WIDTH: f64 = 960.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 150.0;
const PLOT_HEIGHT: f64 = 280.0;
const DAILY_HEIGHT: f64 = 100.0;

/// How a legend entry is drawn.
enum Swatch {
    Line(&'static str, &'static str),
    Bar(&'static str),
}

/// The grid of a money axis: a round step and the top at a whole number of steps.
fn money_grid(highest: f64, lines: f64) -> (f64, usize) {
    let raw_step = (highest * 1.1).max(1.0) / lines;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw_step)
        .unwrap_or(raw_step);
    let count = (highest * 1.1 / step).ceil().max(1.0) as usize;
    (step, count)
}

fn label_of(kind: &str) -> &'static str {
    if kind == "kill" {
        "keys stopped"
    } else {
        "restored"
    }
}

/// The chart: two panels on one time axis (the month's first instant at the left edge, the
/// next month's at the right; day d spans its own midnights), month to date above, spend per
/// day below, and the moments keys were stopped and restored across both.
pub fn svg(r: &MonthReport) -> String {
    let month = NaiveDate::parse_from_str(&format!("{}-01", r.month), "%Y-%m-%d")
        .map(YearMonth::of)
        .unwrap_or(YearMonth {
            year: 1970,
            month: 1,
        });
    let (from, to) = month_span(month);
    let plot_width = WIDTH - LEFT - RIGHT;
    let x = |at: DateTime<Utc>| {
        LEFT + (at - from).num_seconds() as f64 / (to - from).num_seconds() as f64 * plot_width
    };
    let midnight = |day: NaiveDate| day.and_time(NaiveTime::MIN).and_utc();

    // the legend: what is drawn, in the words the chart uses, in its own rows above the plot;
    // with provider series beside it, the usage series is named as what it is
    let providers = &r.provider_series;
    let draws_usage = !r.days.is_empty() || providers.is_empty();
    let usage_label = |what: &str| {
        if providers.is_empty() {
            what.to_string()
        } else {
            format!("{what} — app-reported usage")
        }
    };
    let mut legend: Vec<(Swatch, String)> = Vec::new();
    if draws_usage {
        legend.push((
            Swatch::Line(MONTH_TO_DATE, "none"),
            usage_label("month to date"),
        ));
    }
    if r.days.iter().any(|d| d.forecast.is_some()) {
        legend.push((
            Swatch::Line(FORECAST, "5 4"),
            "forecast (end of month)".into(),
        ));
    }
    if r.without_spendguard.is_some() {
        legend.push((
            Swatch::Line(WITHOUT_SPENDGUARD, "2 3"),
            "without spendguard".into(),
        ));
    }
    if !r.days.is_empty() {
        legend.push((Swatch::Bar(DAY_BAR), usage_label("spend per day")));
    }
    for (p, (line, bar)) in providers.iter().zip(PROVIDER_COLOURS.iter().cycle()) {
        legend.push((
            Swatch::Line(line, "none"),
            format!("month to date — {}", p.source),
        ));
        legend.push((Swatch::Bar(bar), format!("spend per day — {}", p.source)));
    }
    for kind in ["kill", "restore"] {
        if r.markers.iter().any(|m| m.kind == kind) {
            let colour = if kind == "kill" {
                KILL_COLOUR
            } else {
                RESTORE_COLOUR
            };
            legend.push((Swatch::Line(colour, "none"), label_of(kind).into()));
        }
    }
    let mut placed = Vec::new();
    let (mut lx, mut row) = (LEFT, 0.0);
    for (swatch, text) in &legend {
        let entry_width = 34.0 + 6.5 * text.chars().count() as f64;
        if lx + entry_width > WIDTH - 10.0 && lx > LEFT {
            (lx, row) = (LEFT, row + 1.0);
        }
        placed.push((lx, 18.0 + 18.0 * row, swatch, text.as_str()));
        lx += entry_width;
    }
    let legend_height = 18.0 * (row + 1.0) + 6.0;
    let plot_top = 4.0 + legend_height + 14.0;
    let plot_bottom = plot_top + PLOT_HEIGHT;
    let daily_top = plot_bottom + 24.0;
    let daily_bottom = daily_top + DAILY_HEIGHT;
    let height = daily_bottom + 30.0;

    let mut highest = r.limit.map(f).unwrap_or(0.0);
    let all_days = || r.days.iter().chain(providers.iter().flat_map(|p| &p.days));
    for d in all_days() {
        highest = highest
            .max(f(d.month_to_date))
            .max(d.forecast.map(f).unwrap_or(0.0));
    }
    let (step, lines) = money_grid(highest, 5.0);
    let top_value = step * lines as f64;
    let y = |v: f64| plot_top + (1.0 - v / top_value) * PLOT_HEIGHT;
    let mut highest_day = r.daily_limit.map(f).unwrap_or(0.0);
    for d in all_days() {
        highest_day = highest_day.max(f(d.spend));
    }
    let (day_step, day_lines) = money_grid(highest_day, 2.0);
    let day_top = day_step * day_lines as f64;
    let day_y = |v: f64| daily_top + (1.0 - v / day_top) * DAILY_HEIGHT;

    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="spend vs budget vs forecast"><rect width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = write!(
        s,
        r##"<rect id="plot" x="{LEFT}" y="{plot_top}" width="{plot_width}" height="{PLOT_HEIGHT}" fill="none" data-from="{}" data-to="{}"/><rect id="daily-plot" x="{LEFT}" y="{daily_top}" width="{plot_width}" height="{DAILY_HEIGHT}" fill="none"/>"##,
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    // the money axes: grid, ticks and the currency
    let grid = |s: &mut String, step: f64, lines: usize, y: &dyn Fn(f64) -> f64| {
        for i in 0..=lines {
            let v = step * i as f64;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{x2}" y1="{gy:.1}" y2="{gy:.1}" stroke="{GRID}"/><text class="y-tick" x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="{MUTED}">{v}</text>"##,
                x2 = WIDTH - RIGHT,
                gy = y(v),
                tx = LEFT - 6.0,
                ty = y(v) + 4.0,
                v = amount_text(Decimal::from_f64_retain(v).unwrap_or_default().round_dp(2)),
            );
        }
    };
    grid(&mut s, step, lines, &y);
    grid(&mut s, day_step, day_lines, &day_y);
    for (title, middle) in [
        ("month to date", (plot_top + plot_bottom) / 2.0),
        ("per day", (daily_top + daily_bottom) / 2.0),
    ] {
        let _ = write!(
            s,
            r##"<text class="axis-title" x="16" y="{middle}" transform="rotate(-90 16 {middle})" font-size="11" text-anchor="middle" fill="{MUTED}">{title} ({})</text>"##,
            esc(&r.currency)
        );
    }
    // the time axis: a tick at every midnight; dates at the days of the markers, then weekly,
    // where they do not crowd each other
    let days_of_month: Vec<NaiveDate> =
        std::iter::successors(Some(from.date_naive()), |d| d.succ_opt())
            .take_while(|d| midnight(*d) < to)
            .collect();
    for day in &days_of_month {
        let _ = write!(
            s,
            r##"<line class="tick" data-at="{at}" x1="{tx:.2}" x2="{tx:.2}" y1="{daily_bottom}" y2="{y2}" stroke="{MUTED}"/>"##,
            at = midnight(*day).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            tx = x(midnight(*day)),
            y2 = daily_bottom + 4.0
        );
    }
    let mut labelled: Vec<NaiveDate> = Vec::new();
    let wanted = r
        .markers
        .iter()
        .map(|m| m.at.date_naive())
        .chain(days_of_month.iter().copied().filter(|d| d.day() % 7 == 1));
    for day in wanted {
        if labelled
            .iter()
            .all(|l| (x(midnight(*l)) - x(midnight(day))).abs() >= 44.0)
        {
            labelled.push(day);
        }
    }
    labelled.sort();
    for day in labelled {
        let tx = x(midnight(day));
        let _ = write!(
            s,
            r##"<line x1="{tx:.2}" x2="{tx:.2}" y1="{plot_top}" y2="{daily_bottom}" stroke="{GRID}"/><text class="tick-label" data-at="{at}" x="{tx:.2}" y="{ty}" font-size="11" text-anchor="middle" fill="{MUTED}">{label}</text>"##,
            at = midnight(day).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ty = daily_bottom + 17.0,
            label = day.format("%b %-d"),
        );
    }
    // tier lines and the limits, crisp so that a screenshot shows their exact colours
    for t in &r.tiers {
        let ty = y(f(t.amount));
        let (line, text) = tier_colours(&t.severity);
        let _ = write!(
            s,
            r##"<line class="tier tier-{sev}" x1="{LEFT}" x2="{x2}" y1="{ty:.0}" y2="{ty:.0}" stroke="{line}" stroke-width="3" stroke-dasharray="8 4" shape-rendering="crispEdges"/><text x="{tx}" y="{ly:.1}" font-size="12" fill="{text}">{name} {amount}</text>"##,
            sev = esc(&t.severity),
            x2 = WIDTH - RIGHT,
            tx = WIDTH - RIGHT + 6.0,
            // a tier at the limit is labelled below the line, the limit above it
            ly = if Some(t.amount) == r.limit {
                ty + 16.0
            } else {
                ty + 4.0
            },
            name = esc(&t.name),
            amount = amount_text(t.amount.round_dp(2))
        );
    }
    let limits = [
        (r.limit, "limit", "budget", y(r.limit.map(f).unwrap_or(0.0))),
        (
            r.daily_limit,
            "daily-limit",
            "daily limit",
            day_y(r.daily_limit.map(f).unwrap_or(0.0)),
        ),
    ];
    for (limit, class, name, ly) in limits {
        if let Some(limit) = limit {
            let _ = write!(
                s,
                r##"<line class="{class}" x1="{LEFT}" x2="{x2}" y1="{ly:.0}" y2="{ly:.0}" stroke="{INK}" stroke-width="2" shape-rendering="crispEdges"/><text class="{class}-label" x="{tx}" y="{ty:.1}" font-size="12" fill="{INK}">{name} {limit}</text>"##,
                x2 = WIDTH - RIGHT,
                tx = WIDTH - RIGHT + 6.0,
                ty = ly - 6.0,
                limit = amount_text(limit.round_dp(2))
            );
        }
    }
    // spend per day: a bar across each day, the day shared side by side between the series
    let mut bar_series: Vec<(&str, &str, &[Day])> = Vec::new();
    if !r.days.is_empty() {
        bar_series.push(("usage", DAY_BAR, &r.days));
    }
    for (p, (_, bar)) in providers.iter().zip(PROVIDER_COLOURS.iter().cycle()) {
        bar_series.push((&p.source, bar, &p.days));
    }
    let shares = bar_series.len().max(1) as f64;
    for (i, (source, colour, days)) in bar_series.iter().enumerate() {
        for d in days.iter() {
            let (start, next) = (x(midnight(d.date)), x(midnight(d.date) + Duration::days(1)));
            let width = (next - start) / shares;
            let bx = start + width * i as f64;
            let top = day_y(f(d.spend));
            let _ = write!(
                s,
                r##"<rect class="day-bar" data-day="{}" data-source="{}" x="{bx:.2}" y="{top:.1}" width="{width:.2}" height="{:.1}" fill="{colour}" stroke="#ffffff" stroke-width="1"/>"##,
                d.date,
                esc(source),
                daily_bottom - top
            );
        }
    }
    // forecast (dashed) and month to date, each day's figure at the midnight after it
    let line = |points: Vec<(f64, f64)>, colour: &str, dash: &str, class: &str| {
        if points.is_empty() {
            return String::new();
        }
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.2},{py:.1}"))
            .collect();
        format!(
            r##"<polyline class="{class}" fill="none" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}" points="{}"/>"##,
            path.join(" ")
        )
    };
    let end_of = |day: NaiveDate| x(midnight(day) + Duration::days(1));
    let forecast: Vec<(f64, f64)> = r
        .days
        .iter()
        .filter_map(|d| d.forecast.map(|v| (end_of(d.date), y(f(v)))))
        .collect();
    s.push_str(&line(forecast, FORECAST, "5 4", "forecast"));
    let month_to_date = |days: &[Day]| {
        let mut points = vec![(x(from), y(0.0))];
        points.extend(days.iter().map(|d| (end_of(d.date), y(f(d.month_to_date)))));
        points
    };
    if draws_usage {
        s.push_str(&line(
            month_to_date(&r.days),
            MONTH_TO_DATE,
            "none",
            "spend",
        ));
    }
    for (p, (colour, _)) in providers.iter().zip(PROVIDER_COLOURS.iter().cycle()) {
        s.push_str(&line(
            month_to_date(&p.days),
            colour,
            "none",
            &format!("spend-{}", esc(&p.source)),
        ));
    }
    // without spendguard: from the stop at the last full hour's pace, cut at the plot's top
    if let Some(p) = &r.without_spendguard {
        let (spent, hourly) = (f(p.spent_by_then), f(p.hourly));
        let hours_to_top = ((top_value - spent) / hourly).max(0.0);
        let end = (p.from + Duration::seconds((hours_to_top * 3_600.0) as i64)).min(p.until);
        let end_value = spent + hourly * (end - p.from).num_seconds() as f64 / 3_600.0;
        s.push_str(&line(
            vec![(x(p.from), y(spent)), (x(end), y(end_value))],
            WITHOUT_SPENDGUARD,
            "2 3",
            "without-spendguard",
        ));
        let text = format!(
            "without spendguard: {} {} by {}",
            about(p.month_end),
            r.currency,
            (p.until - Duration::days(1)).format("%b %-d")
        );
        // below the marker labels, clear of the budget's and the tiers' lines
        let taken: Vec<f64> = r
            .tiers
            .iter()
            .map(|t| t.amount)
            .chain(r.limit)
            .map(|v| y(f(v)))
            .collect();
        let label_y = (0..)
            .map(|i| (y(end_value) + 4.0).max(plot_top + 50.0) + 10.0 * f64::from(i))
            .take_while(|ly| *ly < plot_bottom)
            .find(|ly| taken.iter().all(|t| (t - (ly - 4.0)).abs() > 12.0))
            .unwrap_or(plot_top + 50.0);
        let width = 6.5 * text.chars().count() as f64;
        let (tx, anchor) = if x(end) + 6.0 + width <= WIDTH - RIGHT {
            (x(end) + 6.0, "start")
        } else {
            (x(end) - 6.0, "end")
        };
        let _ = write!(
            s,
            r##"<text class="without-spendguard-label" data-total="{total}" x="{tx:.1}" y="{ty:.1}" font-size="12" text-anchor="{anchor}" fill="{MUTED}" stroke="#ffffff" stroke-width="3" paint-order="stroke">{}</text>"##,
            esc(&text),
            total = p.month_end.round_dp(2),
            ty = label_y,
        );
    }
    // the moments keys were stopped and restored, across both panels
    for (i, m) in r.markers.iter().enumerate() {
        let mx = x(m.at);
        let (colour, text) = if m.kind == "kill" {
            (KILL_COLOUR, KILL_COLOUR)
        } else {
            (RESTORE_COLOUR, RESTORE_TEXT)
        };
        let _ = write!(
            s,
            r##"<line class="marker marker-{kind}" data-at="{at}" x1="{mx:.2}" x2="{mx:.2}" y1="{plot_top}" y2="{daily_bottom}" stroke="{colour}" stroke-width="3" shape-rendering="crispEdges"/><text class="marker-label marker-{kind}" x="{tx:.1}" y="{ty}" font-size="12" fill="{text}" stroke="#ffffff" stroke-width="3" paint-order="stroke">{label}</text>"##,
            kind = esc(&m.kind),
            at = m.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            tx = mx + 4.0,
            ty = plot_top + 14.0 + 16.0 * (i % 2) as f64,
            label = label_of(&m.kind)
        );
    }
    let _ = write!(
        s,
        r##"<rect id="legend-area" x="{LEFT}" y="4" width="{}" height="{legend_height}" fill="none"/>"##,
        WIDTH - 10.0 - LEFT
    );
    for (lx, ly, swatch, text) in placed {
        let _ = match swatch {
            Swatch::Line(colour, dash) => write!(
                s,
                r##"<line x1="{lx}" x2="{x2}" y1="{sy}" y2="{sy}" stroke="{colour}" stroke-width="3" stroke-dasharray="{dash}"/>"##,
                x2 = lx + 22.0,
                sy = ly - 4.0
            ),
            Swatch::Bar(colour) => write!(
                s,
                r##"<rect x="{lx}" y="{sy}" width="22" height="10" fill="{colour}"/>"##,
                sy = ly - 10.0
            ),
        };
        let _ = write!(
            s,
            r##"<text class="legend-entry" x="{tx}" y="{ly}" font-size="11" fill="{INK}">{text}</text>"##,
            tx = lx + 28.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A section of extra content below the chart (the demo's timeline, what Slack received):
/// rows of a time and what happened.
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
}

/// `65.6 %` of `whole` (none without a whole).
fn percent_of(part: Decimal, whole: Option<Decimal>) -> Option<String> {
    whole
        .filter(|w| !w.is_zero())
        .and_then(|w| evaluate::percent_of(part, w).ok())
        .map(|p| format!("{p} %"))
}

pub fn html(r: &MonthReport, intro: &str, sections: &[Section]) -> String {
    let mut page = String::new();
    let month = NaiveDate::parse_from_str(&format!("{}-01", r.month), "%Y-%m-%d")
        .map_or_else(|_| r.month.clone(), |d| d.format("%b %Y").to_string());
    let title = format!("spendguard — {} — {month}", r.scope);
    let _ = write!(
        page,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:{INK};max-width:1000px}}
h1{{font-size:22px;margin:0 0 4px}} h2{{font-size:17px;margin:28px 0 8px}} p{{margin:4px 0 12px;color:{MUTED}}}
table{{border-collapse:collapse;font-size:13px;width:100%}} td,th{{border-top:1px solid #dee2e6;padding:4px 8px;vertical-align:top;text-align:left}}
th{{color:{MUTED};font-weight:600}} td:first-child{{white-space:nowrap;color:{MUTED};width:170px}}
.figures td:first-child,.days td:first-child{{width:auto}} .figures td,.figures th{{white-space:nowrap}} .figures td:last-child{{white-space:normal}} .figures td{{color:{INK};font-size:15px}}
td.num,th.num{{text-align:right;font-variant-numeric:tabular-nums}} .days{{width:auto;min-width:60%}}
</style></head><body><h1>{t}</h1><p>{intro}</p>"#,
        t = esc(&title),
        intro = esc(intro)
    );
    let money = |v: Decimal| format!("{} {}", amount_text(v.round_dp(2)), r.currency);
    let last = r.days.last();
    let spent = last.map(|d| d.month_to_date);
    let forecast = last.and_then(|d| d.forecast);
    let dash = || "-".to_string();
    let mut figures: Vec<(String, String)> = vec![
        (
            "budget".into(),
            r.budget_id
                .clone()
                .unwrap_or_else(|| "(none on this scope)".into()),
        ),
        ("limit".into(), r.limit.map(money).unwrap_or_else(dash)),
        (
            "month to date".into(),
            spent.map(money).unwrap_or_else(dash),
        ),
        (
            "% used".into(),
            spent
                .and_then(|s| percent_of(s, r.limit))
                .unwrap_or_else(dash),
        ),
        ("forecast".into(), forecast.map(money).unwrap_or_else(dash)),
        (
            "forecast % of budget".into(),
            forecast
                .and_then(|v| percent_of(v, r.limit))
                .unwrap_or_else(dash),
        ),
    ];
    // each provider series against its own budget, never added to the usage above
    for p in &r.provider_series {
        let spent = p.days.last().map(|d| d.month_to_date);
        figures.push((
            format!("month to date — {}", p.source),
            spent
                .map(|s| match percent_of(s, p.limit) {
                    Some(percent) => format!("{} ({percent} of {})", money(s), p.budget_id),
                    None => money(s),
                })
                .unwrap_or_else(dash),
        ));
    }
    if let Some(daily) = r.daily_limit {
        let busiest = r.days.iter().max_by_key(|d| d.spend);
        figures.push((
            "daily window".into(),
            format!(
                "{} a day{}",
                money(daily),
                busiest
                    .map(|d| format!(
                        "; busiest {}: {} ({})",
                        d.date.format("%b %-d"),
                        money(d.spend),
                        percent_of(d.spend, Some(daily)).unwrap_or_default()
                    ))
                    .unwrap_or_default()
            ),
        ));
    }
    page.push_str("<table class=\"figures\"><tr>");
    for (name, _) in &figures {
        let _ = write!(page, "<th>{}</th>", esc(name));
    }
    page.push_str("</tr><tr>");
    for (_, value) in &figures {
        let _ = write!(page, "<td>{}</td>", esc(value));
    }
    page.push_str("</tr></table>");
    page.push_str("<h2>Spend vs budget vs forecast</h2>");
    page.push_str(&svg(r));
    if let Some(p) = &r.without_spendguard {
        let _ = write!(
            page,
            "<p>Without spendguard: keys were stopped at {} with {} spent this month. The scope spent {} in the hour from {}; at that pace to the end of the month it would have spent {} by {} (the dotted grey line).</p>",
            p.from.format("%b %-d %H:%M UTC"),
            money(p.spent_by_then),
            money(p.hourly),
            p.rate_hour.format("%H:%M"),
            money(p.month_end),
            (p.until - Duration::days(1)).format("%b %-d")
        );
    }
    for section in sections {
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
    let _ = write!(
        page,
        "<h2>Days ({})</h2><table class=\"days\"><tr><th>Day</th><th class=\"num\">Spent</th><th class=\"num\">Month to date</th><th class=\"num\">Forecast</th><th class=\"num\">% of budget</th>",
        esc(&r.currency)
    );
    for p in &r.provider_series {
        let _ = write!(
            page,
            "<th class=\"num\">Spent ({source})</th><th class=\"num\">Month to date ({source})</th>",
            source = esc(&p.source)
        );
    }
    page.push_str("</tr>");
    // every day any series has, the usage columns first
    let mut dates: Vec<NaiveDate> = r
        .days
        .iter()
        .chain(r.provider_series.iter().flat_map(|p| &p.days))
        .map(|d| d.date)
        .collect();
    dates.sort_unstable();
    dates.dedup();
    let num = |text: String| format!("<td class=\"num\">{text}</td>");
    for date in dates {
        let _ = write!(page, "<tr><td>{}</td>", date.format("%a %b %-d"));
        match r.days.iter().find(|d| d.date == date) {
            Some(d) => {
                for text in [
                    grouped(d.spend),
                    grouped(d.month_to_date),
                    d.forecast.map(grouped).unwrap_or_else(dash),
                    percent_of(d.month_to_date, r.limit).unwrap_or_else(dash),
                ] {
                    page.push_str(&num(text));
                }
            }
            None => page.push_str(&num(dash()).repeat(4)),
        }
        for p in &r.provider_series {
            match p.days.iter().find(|d| d.date == date) {
                Some(d) => {
                    page.push_str(&num(grouped(d.spend)));
                    page.push_str(&num(grouped(d.month_to_date)));
                }
                None => page.push_str(&num(dash()).repeat(2)),
            }
        }
        page.push_str("</tr>");
    }
    page.push_str("</table></body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rust_decimal_macros::dec;
    use spendguard_app::ports::store::{AuditLog, PolicyStore, SpendStore};
    use spendguard_domain::aggregate::DailySummary;
    use spendguard_domain::budgets_file::parse_budgets;
    use spendguard_domain::money::Money;
    use spendguard_domain::period::Zone;
    use spendguard_domain::pricing::Tokens;
    use spendguard_domain::records::AuditEntry;
    use spendguard_domain::usage::{UsageEntry, UsageRecord};
    use spendguard_local::sqlite::SqliteStore;

    use super::*;

    const BUDGETS: &str = r#"
version = 1
[defaults]
currency = "USD"
timezone = "UTC"

[[budget]]
id = "research"
scope = "anthropic/research"

[[budget.window]]
period = "monthly"
limit = "1000"
tiers = [
  { name = "warning", percent = 50 },
  { name = "critical", percent = 80 },
  { name = "emergency", percent = 100 },
]

[[budget.window]]
period = "daily"
limit = "150"
tiers = [{ name = "daily", percent = 100 }]
"#;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn research() -> Scope {
        Scope::parse("anthropic/research").unwrap()
    }

    /// November: 20 USD a day through the 17th; on the 18th 1.25 USD in the hour from 00:00,
    /// 30.50 USD in the hour from 01:00, keys stopped at 02:00, 5 USD more at 03:00 (after
    /// the stop) and restored the next morning.
    async fn fixture() -> SqliteStore {
        let store = SqliteStore::in_memory().unwrap();
        store
            .put_policy(&parse_budgets("budgets.toml", BUDGETS).unwrap())
            .await
            .unwrap();
        let summaries: Vec<DailySummary> = (1..=17)
            .map(|day| DailySummary {
                scope: research(),
                zone: Zone::UTC,
                date: NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
                source: "usage".into(),
                day: BTreeMap::from([("cost.USD".to_string(), "20".to_string())]),
                month_to_date: BTreeMap::from([(Currency::USD, (20 * day).to_string())]),
                forecast: None,
                anomalies: Vec::new(),
            })
            .collect();
        store.put_summaries(&summaries).await.unwrap();
        let usage: Vec<UsageEntry> = [
            ("early", "2026-11-18T00:10:00Z", dec!(1.25)),
            ("loop", "2026-11-18T01:30:00Z", dec!(30.50)),
            ("after", "2026-11-18T03:10:00Z", dec!(5)),
        ]
        .iter()
        .map(|(id, when, cost)| {
            let record = UsageRecord {
                id: (*id).into(),
                scope: Scope::parse("anthropic/research/key-r1").unwrap(),
                provider: "anthropic".into(),
                model: None,
                tokens: Tokens::default(),
                requests: 1,
                cost: Money::new(*cost, Currency::USD),
                timestamp: at(when),
                covers_minutes: 1,
                user: None,
                endpoint: None,
                feature: None,
            };
            UsageEntry::of(&record, &[Zone::UTC])
        })
        .collect();
        store
            .ingest_usage(&usage, at("2026-11-18T04:00:00Z"), Duration::days(1))
            .await
            .unwrap();
        for (id, when, action) in [
            ("a1", "2026-11-18T02:00:00Z", "kill_switch_engaged"),
            ("a2", "2026-11-19T10:00:00Z", "restore_started"),
        ] {
            store
                .append_audit(&AuditEntry {
                    id: id.into(),
                    at: at(when),
                    actor: "key-guard".into(),
                    action: action.into(),
                    scope: Some(Scope::parse("anthropic/research/key-r1").unwrap()),
                    detail: serde_json::Value::Null,
                })
                .await
                .unwrap();
        }
        store
    }

    async fn november() -> MonthReport {
        gather(
            &fixture().await,
            &research(),
            YearMonth {
                year: 2026,
                month: 11,
            },
        )
        .await
        .unwrap()
    }

    /// Issue 25 §5.3: the page shows what the runaway would have cost had keys not been
    /// stopped: the month to date at the stop, then the last full hour's spend every hour
    /// to the end of November.
    #[tokio::test]
    async fn without_spendguard_continues_the_last_hour_before_the_stop_to_the_month_end() {
        let report = november().await;
        let p = report
            .without_spendguard
            .as_ref()
            .expect("a projection: keys were stopped");
        // 17 days of 20, the two hours of the 18th before 02:00; then 30.50 an hour for the
        // 22 hours left of the 18th and the 12 days after it
        let spent_by_then = 17.0 * 20.0 + 1.25 + 30.50;
        let hours_left = 22.0 + 12.0 * 24.0;
        let expected = spent_by_then + 30.50 * hours_left;
        assert_eq!(f(p.spent_by_then), spent_by_then);
        assert_eq!(f(p.month_end), expected);
        assert_eq!(p.from, at("2026-11-18T02:00:00Z"));
        let chart = svg(&report);
        assert!(
            chart.contains(&format!("data-total=\"{expected:.2}\"")),
            "{chart}"
        );
        // 9,826.75: about 9,800
        assert!(
            chart.contains(">without spendguard: ~9,800 USD by Nov 30</text>"),
            "{chart}"
        );
        assert_eq!(report.daily_limit, Some(dec!(150)));
    }

    #[tokio::test]
    async fn without_a_stop_there_is_no_projection_and_no_legend_for_it() {
        let store = fixture().await;
        let december = gather(
            &store,
            &research(),
            YearMonth {
                year: 2026,
                month: 12,
            },
        )
        .await
        .unwrap();
        assert!(december.without_spendguard.is_none());
        let chart = svg(&december);
        for absent in ["without spendguard", "keys stopped", "restored"] {
            assert!(!chart.contains(absent), "{absent} is not drawn: {chart}");
        }
    }

    /// WCAG 2.x relative luminance of `#rrggbb`.
    fn luminance(hex: &str) -> f64 {
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }

    fn contrast(a: &str, b: &str) -> f64 {
        let (la, lb) = (luminance(a), luminance(b));
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn contrast_is_computed_as_wcag_defines_it() {
        assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
        assert!((contrast("#777777", "#ffffff") - 4.48).abs() < 0.01);
    }

    /// Issue 25 §5.10: every text on the page reads at WCAG AA (4.5:1) on its white
    /// background: the chart's labels (the warning tier's #f2a900 was 2:1) and the page's.
    #[tokio::test]
    async fn every_text_colour_on_the_page_reaches_wcag_aa_on_white() {
        let report = november().await;
        let page = html(&report, "intro", &[]);
        let chart = svg(&report);
        let doc = roxmltree::Document::parse(&chart).unwrap();
        let background = doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("rect"))
            .and_then(|n| n.attribute("fill"))
            .unwrap();
        assert_eq!(background, "#ffffff");
        let mut colours: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| {
                n.attribute("fill")
                    .expect("every text has a colour")
                    .to_string()
            })
            .collect();
        assert!(
            colours.contains(&"#8a6100".to_string()),
            "the warning label is drawn"
        );
        let style = &page[page.find("<style>").unwrap()..page.find("</style>").unwrap()];
        colours.extend(
            style
                .split("color:")
                .skip(1)
                .map(|rest| rest[..7].to_string()),
        );
        assert!(colours.len() > 20, "{colours:?}");
        for colour in colours {
            let ratio = contrast(&colour, background);
            assert!(ratio >= 4.5, "{colour} on {background}: {ratio:.2}:1");
        }
    }

    /// A scope whose only budget is provider-sourced: the page is that series', named by its
    /// source, with no empty usage line in the chart or the legend.
    #[tokio::test]
    async fn a_scope_with_only_a_provider_series_draws_that_series_alone() {
        let store = SqliteStore::in_memory().unwrap();
        let budgets = BUDGETS.replace(
            "scope = \"anthropic/research\"",
            "scope = \"anthropic/research\"\nsource = { kind = \"anthropic\" }",
        );
        store
            .put_policy(&parse_budgets("budgets.toml", &budgets).unwrap())
            .await
            .unwrap();
        store
            .put_summaries(&[DailySummary {
                scope: research(),
                zone: Zone::UTC,
                date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
                source: "anthropic".into(),
                day: BTreeMap::from([("cost.USD".to_string(), "42".to_string())]),
                month_to_date: BTreeMap::from([(Currency::USD, "42".to_string())]),
                forecast: None,
                anomalies: Vec::new(),
            }])
            .await
            .unwrap();
        let report = gather(
            &store,
            &research(),
            YearMonth {
                year: 2026,
                month: 11,
            },
        )
        .await
        .unwrap();
        assert!(report.days.is_empty());
        assert_eq!(report.budget_id.as_deref(), Some("research"));
        assert_eq!(report.provider_series.len(), 1);
        assert_eq!(report.provider_series[0].source, "anthropic");
        let chart = svg(&report);
        assert!(
            chart.contains(">month to date — anthropic</text>"),
            "{chart}"
        );
        assert!(!chart.contains("app-reported usage"), "{chart}");
        assert!(
            !chart.contains(r#"class="spend""#),
            "no usage line: {chart}"
        );
        assert_eq!(chart.matches(r#"data-source="anthropic""#).count(), 1);
    }

    #[test]
    fn figures_of_any_size_are_rounded_and_shown_without_overflow() {
        assert_eq!(about(dec!(9990.09)), "~10,000");
        assert_eq!(about(dec!(42)), "~42");
        // 10^(digits - 2) overflowed u64 from 10^21 on; a Decimal holds 28 digits
        assert!(about(Decimal::MAX).starts_with('~'));
        assert_eq!(
            percent_of(dec!(656.41), Some(dec!(1000))).as_deref(),
            Some("65.6 %")
        );
        assert_eq!(
            percent_of(Decimal::MAX, Some(dec!(0.5))),
            None,
            "too large to show"
        );
        assert_eq!(percent_of(dec!(1), Some(Decimal::ZERO)), None);
    }
}
