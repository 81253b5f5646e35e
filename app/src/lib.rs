//! spendguard-app: what spendguard does, over ports. `ports` are the small traits the flows
//! need of the world (the state store, the alert bus, secrets, spend sources, key providers,
//! clouds to shut down, delivery channels, the clock); `flows` are the use cases (the budget
//! check, usage ingest, budget notices, the kill switch and its restore, shutdown, rotation,
//! theft detection, the nightly aggregate). No AWS SDK, HTTP client or database is named here:
//! the adapter crates implement the ports, and each function wires the ones it uses.

pub mod backends;
pub mod env;
pub mod flows;
pub mod lease;
pub mod policy_cache;
pub mod ports;
pub mod refreshing;
pub mod signing;
pub mod sources;
