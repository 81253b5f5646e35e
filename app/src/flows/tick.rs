//! What happens at every scheduled check (every 5 minutes): the budget check, then the limit
//! ramps of restoring kill switches, then theft detection over every key's last two hours.
//! A check of some budgets only (the webhook's, after a signal) is the budget check alone
//! ([`Checker::check_only`]).

use spendguard_domain::settings::PolicySet;

use crate::flows::caps::{CapKeeper, CapOutcome, CapReport};
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use spendguard_domain::budget::{Budget, SourceSpec};
use spendguard_domain::pending_usage;
use spendguard_domain::period::Period;

use crate::flows::check::{CheckError, CheckOptions, CheckReport, Checker, Timing};
use crate::flows::guard::advance_ramps;
use crate::flows::rollup::roll_up_pending;
use crate::flows::security::SecurityScan;

/// Ended periods one run evaluates at most per window after a late roll-up (two days of
/// hours, more than a month of days).
const LATE_PERIODS: usize = 48;

impl Checker {
    /// The budgets `options.only` names, evaluated and recorded, and nothing of the scheduled
    /// run around them: what the webhook does after a signal (and all its binary links of the
    /// check, so the scheduled parts stay out of the internet-facing function).
    pub async fn check_only(
        &self,
        policy: &PolicySet,
        options: &CheckOptions,
    ) -> Result<CheckReport, CheckError> {
        let (report, observations) = self.evaluate(policy, options).await?;
        self.record(&report, &observations, options).await?;
        Ok(report)
    }

    /// One run: loads the policy, evaluates (all budgets, or `options.only`), then for a whole
    /// run the ramps, the theft scan and the provider caps, and records it all.
    pub async fn run(&self, options: &CheckOptions) -> Result<CheckReport, CheckError> {
        let policy = &self.store.load_policy().await?;
        // what ingest left pending first (a stalled stream, ADR 031): otherwise every
        // ancestor budget under-counts until the stream recovers
        let now = self.clock.now();
        let pending = roll_up_pending(self.store.as_ref(), now).await;
        let (mut report, observations) = self.evaluate(policy, options).await?;
        match pending {
            Ok(pending) => {
                // every run, 0 when nothing waited: the alarm tells a dead stream or a growing
                // backlog from a quiet deployment (a failed roll-up fails the run instead)
                if let Some(metric) = &self.pending_age {
                    let age = pending_usage::age_seconds(pending.oldest_pending_since, now);
                    metric.sink.emit(pending_usage::age_emf_line(
                        &metric.function,
                        age,
                        now.timestamp_millis(),
                    ));
                }
                report.failures.extend(pending.failures.iter().cloned());
                report.pending = pending;
            }
            Err(e) => report
                .failures
                .push(format!("roll-up of pending usage: {e}")),
        }
        // the periods that ended since the last check evaluated them (spend rolled up after
        // that check, a second before midnight), and those that hold spend moved after they
        // ended (this run's roll-up, the stream's, the nightly run's): their crossings are
        // raised now rather than never
        match self.store.late_spend().await {
            Ok(late) => {
                // read after the marks: every period ended by then is evaluated
                let until = self.clock.now().max(report.at);
                let failed = report.failures.len();
                let evaluated = match late.since() {
                    Some(since) => {
                        self.evaluate_ended(policy, options, since, until, &mut report)
                            .await?
                    }
                    None => 0,
                };
                let owed = late.evaluated_until.is_none()
                    || evaluated > 0
                    || late.marks.iter().any(|m| !m.quarters.is_empty());
                // recorded once evaluated in full: not by a dry run (which raised nothing),
                // nor by a check of some budgets only, nor when raising failed
                if owed
                    && !options.dry_run
                    && options.only.is_empty()
                    && report.failures.len() == failed
                    && let Err(e) = self.store.settle_late_spend(&late, until).await
                {
                    report.failures.push(format!("ended periods: {e}"));
                }
            }
            Err(e) => report.failures.push(format!("ended periods: {e}")),
        }
        if options.only.is_empty() {
            // restoring kill switches climb their limit-factor ramp, one step per interval
            if !options.dry_run {
                report.alerts.ramps_advanced =
                    advance_ramps(self.store.as_ref(), &policy.settings.restore, report.at).await?;
            }
            // every key's last two hours against its usual (ADR 016)
            let scan = SecurityScan {
                store: self.store.as_ref(),
                bus: self.bus.as_ref(),
                key_usage: &self.key_usage,
                settings: &policy.settings,
                now: report.at,
                run_id: &report.run_id,
                dry_run: options.dry_run,
                lease: self.claim_lease,
            };
            match scan.run().await {
                Ok(security) => report.security = security,
                Err(e) => report.failures.push(format!("security scan: {e}")),
            }
            report
                .failures
                .extend(report.security.failures.iter().cloned());
            if !options.dry_run {
                report.provider_caps = self.keep_caps(policy).await;
                report
                    .failures
                    .extend(
                        report
                            .provider_caps
                            .iter()
                            .filter_map(|c| match &c.outcome {
                                CapOutcome::Failed { error } => {
                                    Some(format!("provider cap {}: {error}", c.resource))
                                }
                                _ => None,
                            }),
                    );
            }
        }
        self.record(&report, &observations, options).await?;
        Ok(report)
    }

    /// Evaluates the ended periods that hold spend recorded from `oldest` on, which a late
    /// roll-up completed: a crossing in a period that ended before its spend was rolled up is
    /// raised now rather than never. Usage budgets only (the others' sources are not rolled
    /// up); at most [`LATE_PERIODS`] periods per window.
    /// Returns how many instants it evaluated.
    async fn evaluate_ended(
        &self,
        policy: &PolicySet,
        options: &CheckOptions,
        oldest: DateTime<Utc>,
        until: DateTime<Utc>,
        report: &mut CheckReport,
    ) -> Result<usize, CheckError> {
        // the last instant of each ended period, with the windows that period belongs to
        let mut instants: BTreeMap<DateTime<Utc>, Vec<Budget>> = BTreeMap::new();
        for budget in &policy.budgets {
            if budget.source != SourceSpec::Usage
                || !(options.only.is_empty() || options.only.contains(&budget.id))
            {
                continue;
            }
            for window in &budget.windows {
                for period in
                    Period::ended_since(window.kind, budget.zone, oldest, until, LATE_PERIODS)
                {
                    let at = period.end - Duration::seconds(1);
                    let budgets = instants.entry(at).or_default();
                    match budgets.iter_mut().find(|b| b.id == budget.id) {
                        Some(b) => b.windows.push(window.clone()),
                        None => budgets.push(Budget {
                            windows: vec![window.clone()],
                            ..budget.clone()
                        }),
                    }
                }
            }
        }
        // the budgets are chosen above
        let options = CheckOptions {
            only: Vec::new(),
            ..options.clone()
        };
        let evaluated = instants.len();
        for (at, budgets) in instants {
            let ended = PolicySet {
                budgets,
                settings: policy.settings.clone(),
                ..PolicySet::default()
            };
            let (late, _) = self.evaluate_at(&ended, &options, at, Timing::Late).await?;
            report.alerts.add(&late.alerts);
            report.failures.extend(late.failures);
        }
        Ok(evaluated)
    }

    /// Keeps the provider limits the budgets name (`provider_cap`). A cap whose provider has
    /// no admin key configured is reported failed: the cap the budgets file promises is not kept.
    pub async fn keep_caps(&self, policy: &PolicySet) -> Vec<CapReport> {
        CapKeeper {
            store: self.store.clone(),
            clock: self.clock.clone(),
            targets: self.provider_caps.clone(),
            lease_waits: &crate::lease::LEASE_WAITS_MS,
        }
        .keep(policy, Some(self.bus.as_ref()))
        .await
    }
}
