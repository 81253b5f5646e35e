//! What the nightly run finds, as its alerts carry it: the spikes of a scope's day and the
//! parts of the daily report.

use crate::money::Currency;
use crate::period::Zone;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A value far above what the scope usually does on such a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spike {
    pub metric: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub value: Decimal,
    /// The expected day: the larger of the trailing median and the same-weekday median.
    #[serde(with = "rust_decimal::serde::str")]
    pub expected: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub factor: Decimal,
}

/// The parts of a daily report (the `details` of a `report` alert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyReport {
    pub date: NaiveDate,
    pub zone: Zone,
    /// Total cost per currency (all scopes).
    pub total: BTreeMap<Currency, String>,
    pub top_scopes: Vec<(String, String)>,
    pub top_models: Vec<(String, String)>,
    /// Scopes that moved most above their expected day: (scope, day, expected).
    pub movers: Vec<(String, String, String)>,
    /// Budgets whose month is forecast at 90 % or more of the limit: (budget, percent).
    pub at_risk: Vec<(String, String)>,
    pub anomalies: usize,
}

impl DailyReport {
    /// A report of nothing (what a report alert without its figures shows).
    pub fn empty() -> DailyReport {
        DailyReport {
            date: NaiveDate::default(),
            zone: Zone::UTC,
            total: BTreeMap::new(),
            top_scopes: Vec::new(),
            top_models: Vec::new(),
            movers: Vec::new(),
            at_risk: Vec::new(),
            anomalies: 0,
        }
    }
}
