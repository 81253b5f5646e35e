//! What a delivery channel is asked to deliver.

use crate::alert::AlertEvent;
use sha2::{Digest, Sha256};

/// What a channel is asked to deliver.
#[derive(Debug, Clone)]
pub enum Message {
    /// One alert, with the kill-switch state of its scope at delivery time.
    Alert {
        event: Box<AlertEvent>,
        kill_switch: String,
    },
    /// Warnings collected over an interval, oldest first.
    Digest {
        channel: String,
        events: Vec<AlertEvent>,
    },
}

/// The id a digest of these alerts is delivered under (the same alerts, the same id).
pub fn digest_id(alert_ids: &[String]) -> String {
    let mut h = Sha256::new();
    for id in alert_ids {
        h.update(id.as_bytes());
    }
    format!("digest-{}", hex::encode(&h.finalize()[..12]))
}
