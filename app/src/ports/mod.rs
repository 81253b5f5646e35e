//! The ports: one file per boundary, each a small trait the flows are written against.

pub mod bus;
pub mod channels;
pub mod clock;
pub mod key_usage;
pub mod keys;
pub mod rate_limits;
pub mod secret_versions;
pub mod secrets;
pub mod shutdown;
pub mod sources;
pub mod store;
