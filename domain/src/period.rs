//! Budget periods: calendar periods (day, ISO week, month) in a configured time zone, DST
//! included, and the sub-daily ones (the UTC clock hour, the last N minutes).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The length of a budget window.
/// Stored and reported by its name: `daily`, …, `hourly`, `rolling_60m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WindowKind {
    Daily,
    Weekly,
    Monthly,
    /// The current UTC clock hour.
    Hourly,
    /// The last `minutes` minutes, ending now (ADR 027).
    Rolling {
        minutes: u16,
    },
}

impl WindowKind {
    /// The calendar kinds: periods of whole local days.
    pub const CALENDAR: [WindowKind; 3] =
        [WindowKind::Daily, WindowKind::Weekly, WindowKind::Monthly];
    /// Every period name the budgets file accepts.
    pub const NAMES: [&'static str; 5] = ["daily", "weekly", "monthly", "hourly", "rolling"];
    /// The lengths a rolling window may have, in minutes: at least five (minute buckets are
    /// the resolution), at most a day (a longer one is a daily window's job).
    pub const ROLLING_MINUTES: std::ops::RangeInclusive<u16> = 5..=1440;

    /// The period's name in the budgets file (`rolling` without its length).
    pub fn as_str(&self) -> &'static str {
        match self {
            WindowKind::Daily => "daily",
            WindowKind::Weekly => "weekly",
            WindowKind::Monthly => "monthly",
            WindowKind::Hourly => "hourly",
            WindowKind::Rolling { .. } => "rolling",
        }
    }

    /// Shorter than a day: evaluated from hour counters' minute buckets, not day buckets.
    pub fn is_sub_daily(&self) -> bool {
        matches!(self, WindowKind::Hourly | WindowKind::Rolling { .. })
    }

    /// The kind a period name and (for `rolling`) a length in minutes name.
    pub fn parse(name: &str, minutes: Option<i64>) -> Result<WindowKind, String> {
        let kind: WindowKind = match name {
            "daily" => WindowKind::Daily,
            "weekly" => WindowKind::Weekly,
            "monthly" => WindowKind::Monthly,
            "hourly" => WindowKind::Hourly,
            "rolling" => {
                let (low, high) = (Self::ROLLING_MINUTES.start(), Self::ROLLING_MINUTES.end());
                return match minutes {
                    None => Err(format!(
                        "a rolling window needs `minutes` ({low} to {high}): the length of the window"
                    )),
                    Some(m) => u16::try_from(m)
                        .ok()
                        .filter(|m| Self::ROLLING_MINUTES.contains(m))
                        .map(|minutes| WindowKind::Rolling { minutes })
                        .ok_or_else(|| format!("`minutes` must be {low} to {high} (got {m})")),
                };
            }
            other => {
                return Err(format!(
                    "`{other}` is not a window period: use daily, weekly, monthly, hourly or rolling"
                ));
            }
        };
        match minutes {
            Some(_) => Err(format!(
                "`minutes` is the length of a rolling window; {name} windows have none"
            )),
            None => Ok(kind),
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::Rolling { minutes } => write!(f, "rolling_{minutes}m"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for WindowKind {
    type Err = String;
    /// Reads back what `Display` writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let minutes = s
            .strip_prefix("rolling_")
            .and_then(|m| m.strip_suffix('m'))
            .map(|m| {
                m.parse::<i64>()
                    .map_err(|_| format!("`{s}` is not a window"))
            })
            .transpose()?;
        let name = if minutes.is_some() { "rolling" } else { s };
        WindowKind::parse(name, minutes)
    }
}

impl Serialize for WindowKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WindowKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IANA time zone such as `Europe/Berlin`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Zone(pub Tz);

impl Zone {
    pub const UTC: Zone = Zone(Tz::UTC);

    pub fn parse(name: &str) -> Result<Self, String> {
        Tz::from_str(name).map(Zone).map_err(|_| {
            format!("`{name}` is not an IANA time zone (for example UTC, Europe/Berlin, America/New_York)")
        })
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The local calendar date of `instant` in this zone.
    pub fn date_of(&self, instant: DateTime<Utc>) -> NaiveDate {
        instant.with_timezone(&self.0).date_naive()
    }

    /// The instant the local day `date` begins. Where midnight falls in a DST gap, the day
    /// begins at the first local time that exists.
    pub fn start_of_day(&self, date: NaiveDate) -> DateTime<Utc> {
        let mut local = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        for _ in 0..=24 * 4 {
            match self.0.from_local_datetime(&local) {
                LocalResult::Single(t) => return t.with_timezone(&Utc),
                LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
                LocalResult::None => local += Duration::minutes(15),
            }
        }
        // Unreachable for real zones (no gap exceeds a day); fall back to UTC midnight.
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
    }
}

impl Ord for Zone {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for Zone {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name())
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Zone::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One calendar period of a window: `[start, end)` in UTC, with its local first and last day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Period {
    pub kind: WindowKind,
    pub zone: Zone,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// The period of `kind` in `zone` that contains `instant`. Sub-daily periods are UTC:
    /// the clock hour of `instant`, or the `minutes` whole minutes up to and including the
    /// minute of `instant`.
    pub fn containing(kind: WindowKind, zone: Zone, instant: DateTime<Utc>) -> Period {
        let sub_daily = match kind {
            WindowKind::Hourly => {
                let start = truncate(instant, Duration::hours(1));
                Some((start, start + Duration::hours(1)))
            }
            WindowKind::Rolling { minutes } => {
                let end = truncate(instant, Duration::minutes(1)) + Duration::minutes(1);
                Some((end - Duration::minutes(minutes.into()), end))
            }
            _ => None,
        };
        if let Some((start, end)) = sub_daily {
            return Period {
                kind,
                zone: Zone::UTC,
                first_day: start.date_naive(),
                last_day: (end - Duration::seconds(1)).date_naive(),
                start,
                end,
            };
        }
        let today = zone.date_of(instant);
        let (first_day, last_day) = match kind {
            WindowKind::Daily => (today, today),
            WindowKind::Weekly => {
                let monday = today - Duration::days(today.weekday().num_days_from_monday() as i64);
                (monday, monday + Duration::days(6))
            }
            _ => {
                let first = today.with_day(1).unwrap_or(today);
                (first, last_day_of_month(first))
            }
        };
        Period {
            kind,
            zone,
            first_day,
            last_day,
            start: zone.start_of_day(first_day),
            end: zone.start_of_day(last_day + Duration::days(1)),
        }
    }

    /// The period an alert that a window of `kind` cannot be evaluated is raised once in: the
    /// window's own period, for a rolling window (a new one every minute) the UTC hour.
    pub fn for_unevaluable(kind: WindowKind, zone: Zone, instant: DateTime<Utc>) -> Period {
        match kind {
            WindowKind::Rolling { .. } => Period::containing(WindowKind::Hourly, zone, instant),
            _ => Period::containing(kind, zone, instant),
        }
    }

    /// The calendar periods of `kind` in `zone` that hold instants from `since` on and have
    /// ended by `now`, oldest first, the latest `limit` of them: what spend recorded at
    /// `since` but counted only now could have crossed unseen. None for a rolling window
    /// (its period follows `now`, which the present evaluation reads).
    pub fn ended_since(
        kind: WindowKind,
        zone: Zone,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Vec<Period> {
        if matches!(kind, WindowKind::Rolling { .. }) || limit == 0 {
            return Vec::new();
        }
        let mut ended = Vec::new();
        let mut period = Period::containing(kind, zone, now).previous();
        while period.end > since && ended.len() < limit {
            ended.push(period.clone());
            period = period.previous();
        }
        ended.reverse();
        ended
    }

    /// The period right after this one (a rolling window: the one a minute later).
    pub fn next(&self) -> Period {
        Period::containing(self.kind, self.zone, self.end)
    }

    /// The period right before this one (a rolling window: the one a minute earlier).
    pub fn previous(&self) -> Period {
        let before = match self.kind {
            WindowKind::Rolling { .. } => self.end - Duration::minutes(1),
            _ => self.start,
        };
        Period::containing(self.kind, self.zone, before - Duration::seconds(1))
    }

    /// A rolling window of `minutes` that starts at `start` (a crossing's window, ADR 027).
    pub fn rolling_from(minutes: u16, start: DateTime<Utc>) -> Period {
        let end = start + Duration::minutes(minutes.into());
        Period::containing(
            WindowKind::Rolling { minutes },
            Zone::UTC,
            end - Duration::seconds(1),
        )
    }

    /// A stable label: `D#2026-11-22`, `W#2026-W47`, `M#2026-11`, `H#2026-11-22T03`,
    /// `R60#2026-11-22T03:17` (a rolling window by its first minute).
    pub fn key(&self) -> String {
        match self.kind {
            WindowKind::Hourly => format!("H#{}", self.start.format("%Y-%m-%dT%H")),
            WindowKind::Rolling { minutes } => {
                format!("R{minutes}#{}", self.start.format("%Y-%m-%dT%H:%M"))
            }
            WindowKind::Daily => format!("D#{}", self.first_day.format("%Y-%m-%d")),
            WindowKind::Weekly => {
                let w = self.first_day.iso_week();
                format!("W#{}-W{:02}", w.year(), w.week())
            }
            WindowKind::Monthly => format!("M#{}", self.first_day.format("%Y-%m")),
        }
    }

    /// The period as people read it: `20 Nov 2026`, `16–22 Nov 2026`, `30 Nov – 6 Dec 2026`,
    /// `Nov 2026`, `the hour from 03:00 UTC`, `the last 60 minutes`. Shown instead of the
    /// store's keys (`D#…`, `W#…`, `M#…`, `H#…`, `R…#…`).
    pub fn label(&self) -> String {
        let (a, b) = (self.first_day, self.last_day);
        match self.kind {
            WindowKind::Hourly => format!("the hour from {}", self.start.format("%H:%M UTC")),
            WindowKind::Rolling { minutes } => format!("the last {minutes} minutes"),
            WindowKind::Daily => a.format("%-d %b %Y").to_string(),
            WindowKind::Monthly => a.format("%b %Y").to_string(),
            WindowKind::Weekly if a.month() == b.month() => {
                format!("{}–{}", a.format("%-d"), b.format("%-d %b %Y"))
            }
            WindowKind::Weekly if a.year() == b.year() => {
                format!("{} – {}", a.format("%-d %b"), b.format("%-d %b %Y"))
            }
            WindowKind::Weekly => format!("{} – {}", a.format("%-d %b %Y"), b.format("%-d %b %Y")),
        }
    }

    /// When the period resets, in its zone as people read it: `1 Dec 00:00 UTC`,
    /// `23 Nov 00:00 CET` (the year only when it is not the period's own).
    /// A rolling window never resets: it moves on every minute.
    pub fn resets_label(&self) -> String {
        if let WindowKind::Rolling { .. } = self.kind {
            return "rolls every minute".to_string();
        }
        let local = self.end.with_timezone(&self.zone.0);
        let format = if local.year() == self.first_day.year() {
            "%-d %b %H:%M %Z"
        } else {
            "%-d %b %Y %H:%M %Z"
        };
        local.format(format).to_string()
    }

    /// The period a stored key names (`D#2026-11-22`, `W#2026-W47`, `M#2026-11` in `zone`;
    /// `H#…` and `R…#…` in UTC); `None` for anything else.
    pub fn from_key(key: &str, zone: Zone) -> Option<Period> {
        if let Some(sub_daily) = Self::sub_daily_from_key(key) {
            return (sub_daily.key() == key).then_some(sub_daily);
        }
        let (kind, day) = if let Some(d) = key.strip_prefix("D#") {
            (
                WindowKind::Daily,
                NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?,
            )
        } else if let Some(w) = key.strip_prefix("W#") {
            let (year, week) = w.split_once("-W")?;
            let monday = NaiveDate::from_isoywd_opt(
                year.parse().ok()?,
                week.parse().ok()?,
                chrono::Weekday::Mon,
            )?;
            (WindowKind::Weekly, monday)
        } else if let Some(m) = key.strip_prefix("M#") {
            (
                WindowKind::Monthly,
                NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok()?,
            )
        } else {
            return None;
        };
        let period = Period::containing(kind, zone, zone.start_of_day(day));
        (period.key() == key).then_some(period)
    }

    fn sub_daily_from_key(key: &str) -> Option<Period> {
        let utc = |text: &str, format: &str| {
            chrono::NaiveDateTime::parse_from_str(text, format)
                .ok()
                .map(|t| t.and_utc())
        };
        if let Some(hour) = key.strip_prefix("H#") {
            let start = utc(&format!("{hour}:00"), "%Y-%m-%dT%H:%M")?;
            return Some(Period::containing(WindowKind::Hourly, Zone::UTC, start));
        }
        let (minutes, start) = key.strip_prefix('R')?.split_once('#')?;
        let minutes = minutes
            .parse()
            .ok()
            .filter(|m| WindowKind::ROLLING_MINUTES.contains(m))?;
        Some(Period::rolling_from(minutes, utc(start, "%Y-%m-%dT%H:%M")?))
    }

    /// A stored key's label (see [`Period::label`]); anything that is not a period key as is.
    pub fn label_of_key(key: &str) -> String {
        Period::from_key(key, Zone::UTC).map_or_else(|| key.to_string(), |p| p.label())
    }

    /// Every local day of the period, in order.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.first_day
            .iter_days()
            .take_while(move |d| *d <= self.last_day)
    }

    pub fn length(&self) -> Duration {
        self.end - self.start
    }

    /// Time from the start of the period to `now`, clamped to the period.
    pub fn elapsed(&self, now: DateTime<Utc>) -> Duration {
        (now.clamp(self.start, self.end)) - self.start
    }

    pub fn remaining(&self, now: DateTime<Utc>) -> Duration {
        self.end - now.clamp(self.start, self.end)
    }
}

/// `instant` truncated to a whole `unit` (an hour, a minute) since the epoch.
fn truncate(instant: DateTime<Utc>, unit: Duration) -> DateTime<Utc> {
    chrono::DurationRound::duration_trunc(instant, unit).unwrap_or(instant)
}

/// The calendar month `(year, month)` of a local date: the unit counters are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct YearMonth {
    pub year: i32,
    pub month: u32,
}

impl YearMonth {
    pub fn of(date: NaiveDate) -> Self {
        YearMonth {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default()
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

pub fn last_day_of_month(date: NaiveDate) -> NaiveDate {
    let (y, m) = if date.month() == 12 {
        (date.year() + 1, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .map(|next| next - Duration::days(1))
        .unwrap_or(date)
}

/// The quarter-hour of UTC that holds `at` (its first instant). Every calendar period in
/// every zone starts on one (zones are offset from UTC by whole quarter-hours; hourly windows
/// are UTC hours), so spend recorded at `at` but counted only at `now` can belong to a
/// period that ended uncounted only if their quarter-hours differ ([`counted_late`]).
pub fn quarter_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp();
    DateTime::from_timestamp(seconds - seconds.rem_euclid(900), 0).unwrap_or(at)
}

/// Spend recorded at `at` and counted at `now` may fall in a calendar period that ended in
/// between: the periods that ended since its quarter-hour must be evaluated again (ADR 031).
pub fn counted_late(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    quarter_hour(at) < quarter_hour(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_ended_since_a_late_record() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        let keys = |kind, since, now, limit| {
            Period::ended_since(kind, Zone::UTC, at(since), at(now), limit)
                .iter()
                .map(Period::key)
                .collect::<Vec<_>>()
        };
        let (crossed, after) = ("2026-12-07T23:58:00Z", "2026-12-08T00:00:30Z");
        assert_eq!(
            keys(WindowKind::Daily, crossed, after, 48),
            ["D#2026-12-07"]
        );
        assert!(keys(WindowKind::Monthly, crossed, after, 48).is_empty());
        assert_eq!(
            keys(
                WindowKind::Hourly,
                "2026-12-08T01:10:00Z",
                "2026-12-08T03:05:00Z",
                48
            ),
            ["H#2026-12-08T01", "H#2026-12-08T02"]
        );
        // the latest ones when there are more than the limit
        assert_eq!(
            keys(WindowKind::Daily, "2026-12-01T12:00:00Z", after, 2),
            ["D#2026-12-06", "D#2026-12-07"]
        );
        assert!(keys(WindowKind::Rolling { minutes: 60 }, crossed, after, 48).is_empty());
        assert!(keys(WindowKind::Daily, after, after, 48).is_empty());
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn zone(name: &str) -> Zone {
        Zone::parse(name).unwrap()
    }

    #[test]
    fn daily_period_rolls_over_at_local_midnight() {
        let berlin = zone("Europe/Berlin");
        // 22:59 UTC on 21 Nov is 23:59 in Berlin (CET, +1): still the 21st
        let p = Period::containing(WindowKind::Daily, berlin, utc("2026-11-21T22:59:59Z"));
        assert_eq!(p.key(), "D#2026-11-21");
        // one second later it is midnight in Berlin: the 22nd
        let p = Period::containing(WindowKind::Daily, berlin, utc("2026-11-21T23:00:00Z"));
        assert_eq!(p.key(), "D#2026-11-22");
        assert_eq!(p.start, utc("2026-11-21T23:00:00Z"));
        assert_eq!(p.end, utc("2026-11-22T23:00:00Z"));
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long() {
        let ny = zone("America/New_York");
        // spring forward: 8 March 2026
        let p = Period::containing(WindowKind::Daily, ny, utc("2026-03-08T12:00:00Z"));
        assert_eq!(p.length(), Duration::hours(23));
        assert_eq!(p.start, utc("2026-03-08T05:00:00Z"));
        // fall back: 1 November 2026
        let p = Period::containing(WindowKind::Daily, ny, utc("2026-11-01T12:00:00Z"));
        assert_eq!(p.length(), Duration::hours(25));
        assert_eq!(p.next().start, utc("2026-11-02T05:00:00Z"));
    }

    #[test]
    fn daily_roll_over_in_berlin_on_the_spring_dst_day() {
        let berlin = zone("Europe/Berlin");
        // 29 March 2026: clocks jump 02:00 -> 03:00; the day is 23 hours long
        let p = Period::containing(WindowKind::Daily, berlin, utc("2026-03-29T12:00:00Z"));
        assert_eq!(p.start, utc("2026-03-28T23:00:00Z")); // midnight CET (+1)
        assert_eq!(p.end, utc("2026-03-29T22:00:00Z")); // midnight CEST (+2)
        assert_eq!(p.length(), Duration::hours(23));
        let before = Period::containing(WindowKind::Daily, berlin, utc("2026-03-29T21:59:59Z"));
        let after = Period::containing(WindowKind::Daily, berlin, utc("2026-03-29T22:00:00Z"));
        assert_eq!(
            (before.key(), after.key()),
            ("D#2026-03-29".to_string(), "D#2026-03-30".to_string())
        );
    }

    #[test]
    fn midnight_in_a_dst_gap_starts_the_day_at_the_first_real_instant() {
        // Santiago moved clocks from 24:00 to 01:00 on 2026-09-06 (no local midnight).
        let santiago = zone("America/Santiago");
        let date = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        let midnight = date.and_hms_opt(0, 0, 0).unwrap();
        assert!(
            matches!(santiago.0.from_local_datetime(&midnight), LocalResult::None),
            "midnight does not exist that day"
        );
        let start = santiago.start_of_day(date);
        assert_eq!(start, utc("2026-09-06T04:00:00Z")); // 01:00 local, UTC-3
        assert_eq!(santiago.date_of(start), date);
        assert_eq!(
            santiago.date_of(start - Duration::seconds(1)),
            date.pred_opt().unwrap()
        );
    }

    #[test]
    fn months_have_their_true_length() {
        let cases = [
            ("2026-02-10T00:00:00Z", 28),
            ("2028-02-10T00:00:00Z", 29), // leap year
            ("2026-04-10T00:00:00Z", 30),
            ("2026-12-31T23:59:59Z", 31),
        ];
        for (instant, days) in cases {
            let p = Period::containing(WindowKind::Monthly, Zone::UTC, utc(instant));
            assert_eq!(p.days().count(), days, "{instant}");
            assert_eq!(p.length(), Duration::days(days as i64));
        }
    }

    #[test]
    fn leap_day_is_its_own_day_and_february_ends_after_it() {
        let p = Period::containing(WindowKind::Daily, Zone::UTC, utc("2028-02-29T10:00:00Z"));
        assert_eq!(p.key(), "D#2028-02-29");
        let m = Period::containing(WindowKind::Monthly, Zone::UTC, utc("2028-02-29T23:00:00Z"));
        assert_eq!(m.key(), "M#2028-02");
        assert_eq!(m.next().key(), "M#2028-03");
    }

    #[test]
    fn iso_weeks_start_monday_and_belong_to_the_iso_year() {
        // Thursday 1 January 2026 is in ISO week 2026-W01, which starts Monday 29 Dec 2025
        let p = Period::containing(WindowKind::Weekly, Zone::UTC, utc("2026-01-01T12:00:00Z"));
        assert_eq!(p.key(), "W#2026-W01");
        assert_eq!(p.first_day, NaiveDate::from_ymd_opt(2025, 12, 29).unwrap());
        // Sunday 3 January 2027 is still in 2026-W53
        let p = Period::containing(WindowKind::Weekly, Zone::UTC, utc("2027-01-03T12:00:00Z"));
        assert_eq!(p.key(), "W#2026-W53");
        assert_eq!(p.days().count(), 7);
        assert_eq!(p.next().key(), "W#2027-W01");
    }

    #[test]
    fn week_across_dst_change_is_one_hour_longer() {
        let berlin = zone("Europe/Berlin");
        // clocks go back on Sunday 25 October 2026
        let p = Period::containing(WindowKind::Weekly, berlin, utc("2026-10-22T12:00:00Z"));
        assert_eq!(p.length(), Duration::hours(7 * 24 + 1));
    }

    #[test]
    fn previous_and_next_are_adjacent() {
        let tokyo = zone("Asia/Tokyo");
        for kind in WindowKind::CALENDAR {
            let p = Period::containing(kind, tokyo, utc("2026-11-22T15:30:00Z"));
            assert_eq!(p.next().start, p.end);
            assert_eq!(p.previous().end, p.start);
        }
    }

    #[test]
    fn elapsed_is_clamped_to_the_period() {
        let p = Period::containing(WindowKind::Daily, Zone::UTC, utc("2026-11-22T06:00:00Z"));
        assert_eq!(p.elapsed(utc("2026-11-22T06:00:00Z")), Duration::hours(6));
        assert_eq!(p.elapsed(utc("2026-11-30T06:00:00Z")), Duration::hours(24));
        assert_eq!(
            p.remaining(utc("2026-11-22T06:00:00Z")),
            Duration::hours(18)
        );
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert!(Zone::parse("Europe/Berlin").is_ok());
    }

    #[test]
    fn periods_are_labelled_as_people_read_dates_and_keys_map_back() {
        let at = utc("2026-11-20T12:00:00Z");
        let label = |kind| Period::containing(kind, Zone::UTC, at).label();
        assert_eq!(label(WindowKind::Daily), "20 Nov 2026");
        assert_eq!(label(WindowKind::Weekly), "16–22 Nov 2026");
        assert_eq!(label(WindowKind::Monthly), "Nov 2026");
        let across = |t| Period::containing(WindowKind::Weekly, Zone::UTC, utc(t)).label();
        assert_eq!(across("2026-12-01T00:00:00Z"), "30 Nov – 6 Dec 2026");
        assert_eq!(across("2026-12-31T00:00:00Z"), "28 Dec 2026 – 3 Jan 2027");
        for kind in WindowKind::CALENDAR {
            for t in [
                "2026-11-20T12:00:00Z",
                "2027-01-01T00:30:00Z",
                "2026-03-29T01:30:00Z",
            ] {
                let p = Period::containing(kind, zone("Europe/Berlin"), utc(t));
                assert_eq!(Period::from_key(&p.key(), p.zone), Some(p.clone()));
            }
        }
        assert_eq!(Period::label_of_key("W#2026-W47"), "16–22 Nov 2026");
        assert_eq!(Period::label_of_key("M#2026-13"), "M#2026-13");
        assert_eq!(Period::label_of_key("D#2026-02-30"), "D#2026-02-30");
        assert_eq!(Period::label_of_key("W#2026-W54"), "W#2026-W54");
        assert_eq!(Period::label_of_key("anything"), "anything");
    }

    #[test]
    fn a_period_resets_at_midnight_of_its_own_zone() {
        let at = utc("2026-11-20T12:00:00Z");
        let resets = |kind, z| Period::containing(kind, zone(z), at).resets_label();
        assert_eq!(resets(WindowKind::Monthly, "UTC"), "1 Dec 00:00 UTC");
        assert_eq!(
            resets(WindowKind::Weekly, "Europe/Berlin"),
            "23 Nov 00:00 CET"
        );
        assert_eq!(
            resets(WindowKind::Daily, "America/New_York"),
            "21 Nov 00:00 EST"
        );
        let december =
            Period::containing(WindowKind::Monthly, Zone::UTC, utc("2026-12-05T00:00:00Z"));
        assert_eq!(december.resets_label(), "1 Jan 2027 00:00 UTC");
    }

    #[test]
    fn the_hourly_period_is_the_utc_clock_hour_whatever_the_zone() {
        let at = utc("2026-11-20T03:17:42Z");
        let p = Period::containing(WindowKind::Hourly, zone("Asia/Kolkata"), at);
        assert_eq!(
            (p.start, p.end),
            (utc("2026-11-20T03:00:00Z"), utc("2026-11-20T04:00:00Z"))
        );
        assert_eq!(p.key(), "H#2026-11-20T03");
        assert_eq!(p.label(), "the hour from 03:00 UTC");
        assert_eq!(p.resets_label(), "20 Nov 04:00 UTC");
        assert_eq!(p.next().start, p.end);
        assert_eq!(p.previous().end, p.start);
        assert_eq!(Period::from_key("H#2026-11-20T03", Zone::UTC), Some(p));
        assert_eq!(Period::label_of_key("H#2026-11-20T25"), "H#2026-11-20T25");
    }

    #[test]
    fn a_rolling_period_is_the_last_whole_minutes_up_to_now() {
        let rolling = WindowKind::Rolling { minutes: 60 };
        let p = Period::containing(rolling, Zone::UTC, utc("2026-11-20T03:17:42Z"));
        // the minute now is in counts whole: 02:18 to 03:17 inclusive
        assert_eq!(
            (p.start, p.end),
            (utc("2026-11-20T02:18:00Z"), utc("2026-11-20T03:18:00Z"))
        );
        assert_eq!(p.key(), "R60#2026-11-20T02:18");
        assert_eq!(p.label(), "the last 60 minutes");
        assert_eq!(p.resets_label(), "rolls every minute");
        assert_eq!(p.next().start, p.start + Duration::minutes(1));
        assert_eq!(p.previous().end, p.end - Duration::minutes(1));
        assert_eq!(Period::rolling_from(60, p.start), p);
        assert_eq!(Period::from_key(&p.key(), Zone::UTC), Some(p));
        // across midnight the window spans two days
        let q = Period::containing(rolling, Zone::UTC, utc("2026-11-21T00:10:00Z"));
        assert_eq!(
            (q.first_day, q.last_day),
            (
                NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
                NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
            )
        );
        assert_eq!(
            Period::label_of_key("R0#2026-11-20T02:18"),
            "R0#2026-11-20T02:18"
        );
    }

    #[test]
    fn window_kinds_parse_with_their_length_and_name_what_is_wrong() {
        assert_eq!(WindowKind::parse("hourly", None), Ok(WindowKind::Hourly));
        assert_eq!(
            WindowKind::parse("rolling", Some(60)),
            Ok(WindowKind::Rolling { minutes: 60 })
        );
        assert_eq!(
            WindowKind::parse("rolling", Some(1440)),
            Ok(WindowKind::Rolling { minutes: 1440 })
        );
        for (name, minutes, says) in [
            ("rolling", None, "needs `minutes`"),
            ("rolling", Some(4), "`minutes` must be 5 to 1440 (got 4)"),
            ("rolling", Some(1441), "(got 1441)"),
            ("rolling", Some(-60), "(got -60)"),
            ("rolling", Some(70_000), "(got 70000)"),
            ("hourly", Some(60), "hourly windows have none"),
            ("daily", Some(60), "daily windows have none"),
            (
                "minutely",
                None,
                "use daily, weekly, monthly, hourly or rolling",
            ),
        ] {
            let err = WindowKind::parse(name, minutes).unwrap_err();
            assert!(err.contains(says), "{name} {minutes:?}: {err}");
        }
    }

    proptest::proptest! {
        /// Spend recorded just before any period's end (any zone, offsets of :30 and :45,
        /// daylight saving; any calendar kind) and counted just after it is counted late:
        /// `counted_late` never misses an ended period.
        #[test]
        fn spend_counted_across_a_period_end_is_always_counted_late(
            at in 1_700_000_000i64..1_900_000_000,
            before in 1i64..900,
            after in 0i64..900,
            zone in proptest::sample::select(vec![
                "UTC", "Asia/Kathmandu", "Asia/Kolkata", "Australia/Lord_Howe",
                "America/St_Johns", "Pacific/Chatham", "Europe/Berlin",
            ]),
            kind in proptest::sample::select(vec![
                WindowKind::Hourly, WindowKind::Daily, WindowKind::Weekly, WindowKind::Monthly,
            ]),
        ) {
            let zone = Zone::parse(zone).unwrap();
            let end = Period::containing(kind, zone, DateTime::from_timestamp(at, 0).unwrap()).end;
            let recorded = end - Duration::seconds(before);
            let counted = end + Duration::seconds(after);
            proptest::prop_assert!(counted_late(recorded, counted), "{recorded} -> {counted}");
        }
    }

    #[test]
    fn quarter_hours_start_on_the_quarter() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            quarter_hour(at("2026-12-07T23:59:50Z")),
            at("2026-12-07T23:45:00Z")
        );
        assert_eq!(
            quarter_hour(at("2026-12-08T00:00:00Z")),
            at("2026-12-08T00:00:00Z")
        );
        assert!(counted_late(
            at("2026-12-07T23:59:50Z"),
            at("2026-12-08T00:00:10Z")
        ));
        assert!(!counted_late(
            at("2026-12-07T23:46:00Z"),
            at("2026-12-07T23:59:59Z")
        ));
    }
}
