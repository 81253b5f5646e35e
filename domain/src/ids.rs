//! Identifiers that must not be mixed up: each a string on the wire and in the store, its own
//! type in the code (a delivery claim takes an `AlertId` and a `ChannelName`, never two `&str`).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id!(
    /// A budget's id (`[[budget]] id`), or the scope a nightly alert is claimed under
    /// (`scope:<scope>`).
    BudgetId
);
id!(
    /// An alert's id: one per crossing (budget, window, period, tier), or per anomaly, report,
    /// finding.
    AlertId
);
id!(
    /// A key's id in the registry (`[[key]] id`).
    KeyId
);
id!(
    /// A delivery channel's name (`[channels.<name>]`), or a digest's id.
    ChannelName
);
