//! Where a new destination starts on the alerts topic (`start_from` of a webhook or of the syslog receiver): a
//! destination whose consumer group has no committed position yet starts at the beginning of the topic's
//! retention (`earliest`, the default: every alert kept is delivered) or at its end (`latest`: only alerts
//! published from then on). Once a destination has committed a position, it resumes there, as long as that
//! position is still within the topic's retention: when the alerts after it have been deleted (the destination
//! was stopped longer than the retention), it starts again where `start_from` says, at the beginning of what is
//! still kept (`earliest`) or, with `latest`, at the end, skipping the alerts still kept. A
//! `kafka_properties` entry `auto.offset.reset` does not change this: `start_from` decides.

use serde::{Deserialize, Serialize};

/// Where a destination without a committed position starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// At the beginning of the alerts topic's retention.
    #[default]
    Earliest,
    /// At the end of the alerts topic: alerts published before the destination's first start are not delivered.
    Latest,
}

impl StartFrom {
    /// The consumer's `auto.offset.reset`.
    pub fn offset_reset(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}
