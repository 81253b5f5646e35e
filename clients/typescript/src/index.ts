/**
 * spendguard's client: check the kill switch before spending, report usage after.
 *
 *   const guard = new Guard(url, usageSecret, statusToken, "openai/prod/search");
 *   await guard.allow();                 // throws SpendBlocked when the switch is engaged
 *   guard.report({ model: "gpt-4o", tokens_in: 1200, tokens_out: 350 });
 *
 * See docs/clients.md in the spendguard repository.
 */
export { GuardUnavailable, ReportRejected, SpendBlocked, SpendguardError, Throttled } from "./errors.js";
export { Guard, Stats, type GuardOptions, type Logger, type SwitchStatus } from "./guard.js";
export type { UsageRecord } from "./reporter.js";
export { wrapAnthropic, wrapOpenAI } from "./sdk.js";
