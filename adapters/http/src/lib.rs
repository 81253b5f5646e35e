//! spendguard-http: the adapters that speak HTTP — the providers' admin APIs (OpenAI and
//! Anthropic: costs, usage per key, key administration), the chat and paging channels
//! (Slack, PagerDuty, Teams, Discord, signed webhooks), Google (billing and service-account
//! keys for a shutdown), and the verification of inbound SNS and Google push messages.

#[cfg(feature = "chat")]
pub mod chat;
#[cfg(feature = "providers")]
pub mod client;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod https;
#[cfg(feature = "providers")]
pub mod keys;
#[cfg(feature = "chat")]
pub mod poster;
#[cfg(feature = "providers")]
pub mod sources;
#[cfg(feature = "verify")]
pub mod verify;
