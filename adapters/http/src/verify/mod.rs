//! Verification of inbound signals: Standard Webhooks signatures (usage reports), Google OIDC
//! tokens (Pub/Sub push), and SNS message signatures. Each verifier says precisely why it
//! refused, for the operator's logs; callers answer the sender with a generic 401/403.

pub mod gcp_oidc;
pub mod sns;
