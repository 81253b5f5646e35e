//! spendguard-domain: the rules of spendguard, pure and synchronous — money, periods, scopes,
//! budgets and every policy (settings), evaluation and forecasts, alerts, usage counting, the
//! nightly maths, theft detection, the budgets file, and the wire formats spendguard reads and
//! writes. Nothing here does I/O: the flows that drive these rules live in `spendguard-app`,
//! the clouds and stores they talk to in the adapter crates.

pub mod aggregate;
pub mod alarm;
pub mod alert;
pub mod alert_signature;
pub mod authorize;
pub mod budget;
pub mod budgets_export;
pub mod budgets_file;
pub mod caps;
pub mod daily;
pub mod drill;
pub mod evaluate;
pub mod forecast;
pub mod format;
pub mod ids;
pub mod key_hours;
pub mod keys;
pub mod ledger;
pub mod message;
pub mod money;
pub mod pending_usage;
pub mod period;
pub mod policy_index;
pub mod pricing;
pub mod records;
pub mod resources;
pub mod rolling;
pub mod scope;
pub mod secret;
pub mod security;
pub mod senders;
pub mod settings;
pub mod signals;
pub mod spend;
pub mod standard_webhooks;
pub mod throttle;
pub mod usage;
