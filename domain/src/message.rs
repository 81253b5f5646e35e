//! What a delivery channel is asked to deliver.

use crate::alert::AlertEvent;

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
