//! What happens at every scheduled check (every 5 minutes): the budget check, then the limit
//! ramps of restoring kill switches, then theft detection over every key's last two hours.
//! A check of some budgets only (the webhook's, after a signal) is the budget check alone
//! ([`Checker::check_only`]).

use spendguard_domain::settings::PolicySet;

use crate::flows::caps::{CapKeeper, CapOutcome, CapReport};
use crate::flows::check::{CheckError, CheckOptions, CheckReport, Checker};
use crate::flows::guard::advance_ramps;
use crate::flows::security::SecurityScan;

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
        let (mut report, observations) = self.evaluate(policy, options).await?;
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
