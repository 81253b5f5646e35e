//! Spend sources that read what spendguard itself stored: usage counters, and the budget
//! figures Google notified.

pub mod counters;
pub mod gcp;
