//! What the benchmark programs share: a loopback Lambda Runtime API that hosts a function
//! process, and a recording proxy in front of moto.

pub mod recorder;
pub mod runtime_api;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, Utc};

use spendguard_app::ports::store::SpendStore;
use spendguard_domain::period::{YearMonth, Zone};
use spendguard_domain::usage::{CounterKey, MonthCounters};
use spendguard_local::sqlite::SqliteStore;

/// The instant the benchmarks' data are dated at and their checks run at (the README checks
/// the example usage then): figures must not move with the calendar — on the 1st of a month a
/// steady check also reads the month before, and in another month the example's usage lies
/// outside every monthly window.
pub fn fixed_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T18:00:00Z")
        .expect("a fixed instant")
        .with_timezone(&Utc)
}

/// `at` moved by whole months into the month of `now`, same day and time: for the function
/// processes the benchmark cold-starts, which read the system clock. The example's days (1–20)
/// exist in every month, so its whole month of spend is in their monthly windows whatever the
/// date.
pub fn into_month_of(at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let month_index = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
    let shift = month_index(now) - month_index(at);
    let months = Months::new(u32::try_from(shift.unsigned_abs()).expect("a sane calendar"));
    if shift >= 0 {
        at.checked_add_months(months)
    } else {
        at.checked_sub_months(months)
    }
    .expect("the example's days (1-20) exist in every month")
}

/// The median of some durations (the upper one of the two middles; zero when empty).
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Every counter the embedded store holds for `months` in `zones` (to copy into a table whole:
/// moto copies its tables in every transaction, so ingesting there record by record is slow).
pub async fn all_counters(
    store: &SqliteStore,
    months: &BTreeSet<YearMonth>,
    zones: &[Zone],
) -> BTreeMap<CounterKey, MonthCounters> {
    let mut keys = Vec::new();
    for month in months {
        for scope in store.scopes_with_counters(*month).await.expect("scopes") {
            for zone in zones {
                keys.push(CounterKey {
                    scope: scope.clone(),
                    zone: *zone,
                    month: *month,
                });
            }
        }
    }
    store.read_counters(&keys).await.expect("counters")
}

/// CPU time this process has used so far, all its threads (exited ones included):
/// `CLOCK_PROCESS_CPUTIME_ID`, one system call. (Summing each thread's `/proc/.../sched`
/// cost a file read per thread, and that work landed inside the measured interval: about a
/// tenth of a one-record batch's CPU was the measuring.)
pub fn process_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// This process's peak resident set size (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Starts the peak-RSS count afresh (Linux: `5` into clear_refs), so that what set-up used
/// is not counted.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_instant_moves_into_the_month_of_now_keeping_day_and_time() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(
            into_month_of(fixed_now(), at("2027-02-01T00:05:00Z")),
            at("2027-02-20T18:00:00Z")
        );
        assert_eq!(
            into_month_of(at("2026-11-01T09:00:00Z"), at("2026-03-31T23:00:00Z")),
            at("2026-03-01T09:00:00Z")
        );
        assert_eq!(into_month_of(fixed_now(), fixed_now()), fixed_now());
    }
}
