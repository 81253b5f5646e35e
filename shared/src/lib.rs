//! spendguard-core: the domain of spendguard (money, scopes, budgets, periods, evaluation,
//! forecasts, alerts) and the ports and adapters around it (store, spend sources, alert bus,
//! secrets, clock). Every rule of the system lives here, in one place.

pub mod aggregate;
pub mod alert;
pub mod aws;
pub mod budget;
pub mod bus;
pub mod channels;
pub mod check;
pub mod clock;
pub mod config;
pub mod env;
pub mod evaluate;
pub mod forecast;
pub mod guard;
pub mod ingest;
pub mod intake;
pub mod keys;
pub mod lease;
pub mod money;
pub mod nightly;
pub mod period;
pub mod pricing;
pub mod records;
pub mod runtime;
pub mod scope;
pub mod secret;
pub mod security;
pub mod shutdown;
pub mod signals;
pub mod sources;
pub mod store;
pub mod usage;
pub mod verify;
