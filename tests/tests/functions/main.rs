//! The functions end to end, one test binary: each module drives one function (or several
//! together) through its production wiring, against moto (AWS) and the local stand-ins of the
//! providers' APIs.

mod budget_check;
mod drill;
mod fanout;
mod faults;
mod key_guard;
mod key_theft;
mod nightly;
mod provider_limits;
mod provider_series;
mod shutdown;
mod signed_alerts;
mod sources;
mod webhook;
