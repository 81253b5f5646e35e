//! Rolling windows: the spend of the last N minutes from minute buckets, and which crossing of
//! a tier an evaluation belongs to, so that it is claimed once (ADR 027).
//!
//! The rule: a tier's crossing is a minute at which the window's spend rises to the threshold
//! (below it the minute before, at or above it now). A crossing alerts unless the spend already
//! rose to the threshold within the window's length before it: a burst that dips and climbs
//! back within one window is one crossing. The tier re-arms once a whole window length has
//! passed without a rise, that is once the window has moved on past the spend that crossed.
//! Every evaluation of a crossing names the same claim: the window that ended at its minute.

use rust_decimal::Decimal;

use crate::money::{OutOfRange, checked_add};

/// How many minutes of buckets an evaluation of a window of `minutes` reads: three window
/// lengths, so that the spend of every minute of the last two windows is known whole (a
/// crossing and the window before it).
pub fn lookback(minutes: u16) -> usize {
    3 * usize::from(minutes)
}

/// Which crossing of a tier the spend now belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The crossing that alerts: the spend rose to the threshold at this minute (an index into
    /// the minute buckets) and had not within the window's length before.
    Crossed(usize),
    /// Reached, as part of a crossing that alerted before (an earlier rise within a window's
    /// length, or a rise older than the buckets read).
    Before,
}

/// The window totals of `by_minute` (spend per minute, oldest first): entry `i` is the sum of
/// the `minutes` buckets ending at `i`, for every `i` with a whole window before it.
pub fn window_totals(by_minute: &[Decimal], minutes: u16) -> Result<Vec<Decimal>, OutOfRange> {
    let n = usize::from(minutes);
    if n == 0 || by_minute.len() < n {
        return Ok(Vec::new());
    }
    let mut total = Decimal::ZERO;
    for v in &by_minute[..n] {
        total = checked_add(total, *v, "rolling window")?;
    }
    let mut totals = vec![total];
    for i in n..by_minute.len() {
        total = checked_add(total, by_minute[i], "rolling window")?;
        total -= by_minute[i - n];
        totals.push(total);
    }
    Ok(totals)
}

/// Whether the last minute of `by_minute` reaches `threshold` in a rolling window of
/// `minutes`, and as which crossing; `None` below the threshold.
pub fn reached(
    by_minute: &[Decimal],
    minutes: u16,
    threshold: Decimal,
) -> Result<Option<Reached>, OutOfRange> {
    let totals = window_totals(by_minute, minutes)?;
    // totals[j] is the window ending at bucket j + first
    let first = usize::from(minutes) - 1;
    let Some(now) = totals.len().checked_sub(1) else {
        return Ok(None);
    };
    if totals[now] < threshold {
        return Ok(None);
    }
    let rose_at = |j: usize| j > 0 && totals[j - 1] < threshold && totals[j] >= threshold;
    // the minute this run at or above the threshold began
    let Some(start) = (1..=now).rev().find(|j| rose_at(*j)) else {
        return Ok(Some(Reached::Before));
    };
    let n = usize::from(minutes);
    // a rise within the window's length before it is known only if that much is read
    let Some(earliest) = (start + 1).checked_sub(n).filter(|e| *e >= 1) else {
        return Ok(Some(Reached::Before));
    };
    if (earliest..start).any(rose_at) {
        return Ok(Some(Reached::Before));
    }
    Ok(Some(Reached::Crossed(start + first)))
}

/// Whether the window's spend rose to `threshold` within the last `minutes` minutes, though
/// it may be below it now: the tier has not re-armed, so its alert stays open through a dip
/// (a climb back is the same crossing and would not alert again).
pub fn rose_within(
    by_minute: &[Decimal],
    minutes: u16,
    threshold: Decimal,
) -> Result<bool, OutOfRange> {
    let totals = window_totals(by_minute, minutes)?;
    let Some(now) = totals.len().checked_sub(1) else {
        return Ok(false);
    };
    let earliest = (now + 1).saturating_sub(usize::from(minutes)).max(1);
    Ok((earliest..=now).any(|j| totals[j - 1] < threshold && totals[j] >= threshold))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use std::collections::BTreeSet;

    /// Spend per minute: `(minute, amount)` at the given minutes, zero elsewhere.
    fn spend(len: usize, at: &[(usize, Decimal)]) -> Vec<Decimal> {
        let mut v = vec![Decimal::ZERO; len];
        for (m, a) in at {
            v[*m] += a;
        }
        v
    }

    #[test]
    fn window_totals_slide_over_the_buckets() {
        let v = spend(6, &[(0, dec!(1)), (2, dec!(2)), (5, dec!(4))]);
        assert_eq!(
            window_totals(&v, 3).unwrap(),
            [dec!(3), dec!(2), dec!(2), dec!(4)]
        );
        assert!(window_totals(&v[..2], 3).unwrap().is_empty());
        let huge = [Decimal::MAX, Decimal::MAX, Decimal::ZERO];
        assert!(window_totals(&huge, 2).is_err());
    }

    #[test]
    fn a_burst_is_reached_as_the_crossing_of_its_minute_until_the_window_moves_past() {
        let n = 5u16;
        // 30 at minute 20 against a threshold of 25, read at minutes 20..=24: one crossing
        let v = spend(40, &[(20, dec!(30))]);
        for now in 20..25 {
            let r = reached(&v[..=now], n, dec!(25)).unwrap();
            assert_eq!(r, Some(Reached::Crossed(20)), "minute {now}");
        }
        // at minute 25 the burst has left the window
        assert_eq!(reached(&v[..=25], n, dec!(25)).unwrap(), None);
        // too little read to know when the run began: raised before
        let sustained = vec![dec!(10); 40];
        assert_eq!(
            reached(&sustained, n, dec!(25)).unwrap(),
            Some(Reached::Before)
        );
    }

    #[test]
    fn a_dip_and_a_climb_back_within_the_window_is_the_same_crossing() {
        let n = 10u16;
        // 20 at 30 and 10 at 35: reached at 35; the 20 leaves at 40 (dip), 15 at 42 climbs back
        let v = spend(60, &[(30, dec!(20)), (35, dec!(10)), (42, dec!(15))]);
        assert_eq!(
            reached(&v[..=35], n, dec!(25)).unwrap(),
            Some(Reached::Crossed(35))
        );
        assert_eq!(reached(&v[..=40], n, dec!(25)).unwrap(), None);
        assert_eq!(
            reached(&v[..=42], n, dec!(25)).unwrap(),
            Some(Reached::Before)
        );
    }

    /// Through the dip of the same crossing the tier is held (its alert must not recover, or
    /// the climb back, which does not alert, would leave the overspend unpaged); a window
    /// length after the last rise it re-arms.
    #[test]
    fn a_tier_is_held_through_a_dip_until_a_window_length_after_its_last_rise() {
        let n = 10u16;
        let v = spend(60, &[(30, dec!(20)), (35, dec!(10)), (42, dec!(15))]);
        assert!(rose_within(&v[..=40], n, dec!(25)).unwrap());
        // the climb back at 42 is a rise too: held until 51, re-armed at 52
        assert!(rose_within(&v[..=51], n, dec!(25)).unwrap());
        assert!(!rose_within(&v[..=52], n, dec!(25)).unwrap());
        let burst = spend(40, &[(20, dec!(30))]);
        assert!(rose_within(&burst[..=29], n, dec!(25)).unwrap());
        assert!(!rose_within(&burst[..=30], n, dec!(25)).unwrap());
    }

    /// The rule, minute by minute over the whole timeline (no lookback): the minutes whose
    /// crossing alerts.
    fn reference(by_minute: &[Decimal], minutes: usize, threshold: Decimal) -> BTreeSet<usize> {
        let total =
            |m: usize| -> Decimal { by_minute[(m + 1).saturating_sub(minutes)..=m].iter().sum() };
        let rises: Vec<usize> = (0..by_minute.len())
            .filter(|m| total(*m) >= threshold && (*m == 0 || total(m - 1) < threshold))
            .collect();
        rises
            .iter()
            .copied()
            .filter(|x| !rises.iter().any(|r| r < x && x - r < minutes))
            .collect()
    }

    /// A timeline: bursts of calls at random minutes (each burst a few minutes of spend), and
    /// extra evaluations at random minutes besides the one after every record.
    fn timeline() -> impl Strategy<Value = (u16, Vec<(usize, u32)>, Vec<usize>, u32)> {
        (5u16..=30).prop_flat_map(|n| {
            let len = 8 * usize::from(n);
            (
                Just(n),
                proptest::collection::vec((0..len, 1u32..40), 0..25),
                proptest::collection::vec(0..len, 0..20),
                10u32..120,
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

        /// Evaluated after every record and at random other minutes, each seeing only its
        /// lookback: the crossings claimed are exactly the reference's: never two claims for
        /// one crossing, never none.
        #[test]
        fn claims_match_the_reference_model((n, records, extra, threshold) in timeline()) {
            let len = 8 * usize::from(n);
            // the timeline starts quiet for a lookback, as spend before it was nothing
            let pad = lookback(n);
            let mut by_minute = vec![Decimal::ZERO; pad + len];
            for (m, cents) in &records {
                by_minute[pad + m] += Decimal::new(i64::from(*cents), 0);
            }
            let threshold = Decimal::from(threshold);
            let evaluations: BTreeSet<usize> = records.iter().map(|(m, _)| *m).chain(extra).collect();
            let mut claimed = BTreeSet::new();
            let mut alerts = 0;
            for t in evaluations {
                let now = pad + t;
                let seen = &by_minute[now + 1 - lookback(n)..=now];
                if let Some(Reached::Crossed(i)) = reached(seen, n, threshold).unwrap() {
                    // the claim is the crossing's minute: a second evaluation of it is refused
                    if claimed.insert(now + 1 - lookback(n) + i - pad) {
                        alerts += 1;
                    }
                }
            }
            let expected: BTreeSet<usize> = reference(&by_minute, usize::from(n), threshold)
                .into_iter()
                .map(|m| m - pad)
                .collect();
            prop_assert_eq!(&claimed, &expected);
            prop_assert_eq!(alerts, expected.len());
        }
    }
}
