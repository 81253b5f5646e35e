//! budget-webhook: spendguard's HTTPS front door (a Lambda Function URL) and the subscriber of
//! the AWS Budgets SNS topic. Nothing forged gets in, nothing real is lost, nothing counts twice,
//! and a real crossing is evaluated within seconds. `main.rs` only wires.

pub mod app;
pub mod config;
pub mod event;
pub mod handler;
pub mod http;
