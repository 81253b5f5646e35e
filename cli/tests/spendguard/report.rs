//! `spendguard report` of a scope that has both app-reported usage and a provider-sourced
//! budget: each series labelled by its source, in the JSON and on the page, never summed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use chrono::NaiveDate;
use serde_json::Value;
use spendguard_app::ports::store::{PolicyStore, SpendStore};
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::money::Currency;
use spendguard_domain::period::Zone;
use spendguard_domain::scope::Scope;
use spendguard_local::sqlite::SqliteStore;

const BUDGETS: &str = r#"
version = 1
[defaults]
currency = "USD"
timezone = "UTC"

[[budget]]
id = "openai-usage"
scope = "openai"

[[budget.window]]
period = "monthly"
limit = "1000"
tiers = [{ name = "warning", percent = 80 }]

[[budget]]
id = "openai-costs"
scope = "openai"
source = { kind = "openai" }

[[budget.window]]
period = "monthly"
limit = "500"
tiers = [{ name = "warning", percent = 80 }]
"#;

/// Three November days of the `openai` scope: the apps report 3 USD a day, OpenAI's costs
/// say 5 USD a day (it also counts calls no app reports).
async fn seed(path: &Path) {
    let store = SqliteStore::open(path).unwrap();
    store
        .put_policy(&parse_budgets("budgets.toml", BUDGETS).unwrap())
        .await
        .unwrap();
    let summaries: Vec<DailySummary> = ["usage", "openai"]
        .iter()
        .flat_map(|source| {
            let per_day = if *source == "usage" { 3 } else { 5 };
            (1..=3).map(move |day| DailySummary {
                scope: Scope::parse("openai").unwrap(),
                zone: Zone::UTC,
                date: NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
                source: source.to_string(),
                day: BTreeMap::from([("cost.USD".to_string(), per_day.to_string())]),
                month_to_date: BTreeMap::from([(Currency::USD, (per_day * day).to_string())]),
                forecast: None,
                anomalies: Vec::new(),
            })
        })
        .collect();
    store.put_summaries(&summaries).await.unwrap();
}

fn report(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(dir)
        .args(["report", "--scope", "openai", "--month", "2026-11"])
        .args(extra)
        .args(["--store", "state.db"])
        .env_remove("SPENDGUARD_TABLE")
        .output()
        .expect("run spendguard report")
}

fn figures(days: &Value) -> Vec<(String, String, String)> {
    days.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_string(),
                d["spend"].as_str().unwrap().to_string(),
                d["month_to_date"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// An OpenAI-sourced budget's spend was absent from the report, or mixed into the usage days
/// once summarised: now `days` stays the app-reported usage and `provider_series` holds what
/// OpenAI reported, labelled, with its own budget; the page draws and names both.
#[tokio::test]
async fn a_scope_shows_its_usage_and_its_providers_series_labelled_and_apart() {
    let dir = tempfile::tempdir().unwrap();
    seed(&dir.path().join("state.db")).await;

    let out = report(dir.path(), &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let day = |n: u32, spend: &str, mtd: &str| {
        (format!("2026-11-0{n}"), spend.to_string(), mtd.to_string())
    };
    assert_eq!(
        figures(&doc["days"]),
        [day(1, "3", "3"), day(2, "3", "6"), day(3, "3", "9")],
        "the app-reported usage, alone: {doc:#}"
    );
    assert_eq!(doc["budget_id"], "openai-usage", "the usage series' budget");
    let series = doc["provider_series"].as_array().expect("provider_series");
    assert_eq!(series.len(), 1, "{doc:#}");
    assert_eq!(series[0]["source"], "openai");
    assert_eq!(series[0]["budget_id"], "openai-costs");
    assert_eq!(series[0]["limit"], "500");
    assert_eq!(
        figures(&series[0]["days"]),
        [day(1, "5", "5"), day(2, "5", "10"), day(3, "5", "15")]
    );

    let page = report(dir.path(), &["--out", "report.html"]);
    assert_eq!(
        page.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    for legend in [
        ">month to date — app-reported usage</text>",
        ">month to date — openai</text>",
        ">spend per day — app-reported usage</text>",
        ">spend per day — openai</text>",
    ] {
        assert!(html.contains(legend), "the legend names `{legend}`: {html}");
    }
    assert_eq!(
        html.matches("class=\"day-bar").count(),
        6,
        "three days of each series"
    );
    // each total is its own: 9 USD reported by the apps, 15 USD by OpenAI, never 24
    assert!(html.contains("9 USD") && html.contains("15 USD"), "{html}");
    assert!(!html.contains("24 USD"), "{html}");
}
