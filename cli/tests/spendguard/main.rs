//! The `spendguard` binary as its users run it, one test binary: the commands and their exit
//! codes, the demo end to end, `invoke` with every fixture, and the operator's commands against
//! a deployment in moto.

mod budgets;
mod commands;
mod demo;
mod invoke;
mod operate;
mod report;
mod scripts;
mod serve;
