//! Test support for spendguard's cross-function tests: emulated AWS (moto in server mode,
//! reached through the real AWS SDK with `AWS_ENDPOINT_URL`), local HTTP stand-ins for
//! providers' APIs, and the store conformance suite that both store backends must pass.

pub mod admin_apis;
pub mod aws;
pub mod cloud;
pub mod conformance;
pub mod detection;
pub mod fanout;
pub mod faults;
pub mod google;
pub mod hotitem;
pub mod incidents;
pub mod keyguard;
pub mod logs;
pub mod standin;
pub mod throttle_model;
pub mod usage_apis;
pub mod webhook;
