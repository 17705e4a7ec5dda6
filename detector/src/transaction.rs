//! Exactly-once output (`kafka.exactly_once = true`): the detector's producer is transactional, and each chunk's
//! records and its input offsets go to Kafka in one transaction (begin → produce → `send_offsets_to_transaction`
//! with the consumer's group metadata → commit). A chunk is bounded by `detector.chunk_records` and
//! `detector.chunk_linger`, so a transaction is too. The blocking librdkafka calls run on blocking threads.
//!
//! Fencing: a restarted instance with the same `transactional.id` aborts what its predecessor left open when it
//! initialises, and a member that lost its partitions in a rebalance has its offsets refused by the group
//! coordinator (KIP-447: the group generation travels with the offsets), so a zombie commits nothing.
//!
//! On a failed transaction the detector aborts it (when the producer still can) and stops with
//! [`DetectorError::Transaction`]: its state already holds the chunk, so carrying on would skip the chunk's
//! output. A restart resumes from the committed offsets and rebuilds each partition's state as for a partition
//! that moved (`detector.state.rebuild_records`), so it re-creates the same records.

use std::time::Duration;

use netanom_handles::kafka_log::KafkaLog;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};

use crate::config::DetectorConfig;
use crate::outcome::DetectorError;

/// Longest wait for each transactional request (initialising, sending offsets, committing, aborting).
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The `transactional.id` of a detector (see `DetectorConfig::transactional_id`); `index` is the detector's
/// index within its process, when a process runs several (`netanom run`).
pub(crate) fn transactional_id(config: &DetectorConfig, index: Option<u32>) -> String {
    let base = match &config.transactional_id {
        Some(id) => id.clone(),
        None => {
            let instance = match config.kafka_properties.get("group.instance.id") {
                Some(i) => i.clone(),
                None => nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".to_string()),
            };
            format!("{}-{instance}", config.group_id)
        }
    };
    match index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    }
}

/// The transactions of one detector's producer.
pub(crate) struct Transactions {
    producer: FutureProducer<KafkaLog>,
    id: String,
    open: bool,
}

impl Transactions {
    /// Initialises transactions on `producer` (created with `transactional.id` = `id`): fences an earlier
    /// instance with the same id and aborts what it left open. A broker without transactions answers with an
    /// error, or not within [`TRANSACTION_TIMEOUT`]: both name the setting.
    pub(crate) async fn init(producer: FutureProducer<KafkaLog>, id: String) -> Result<Self, DetectorError> {
        let p = producer.clone();
        let r = tokio::task::spawn_blocking(move || p.init_transactions(TRANSACTION_TIMEOUT)).await;
        let t = Self { producer, id, open: false };
        match r {
            Ok(Ok(())) => {
                tracing::info!(transactional_id = %t.id, "exactly-once output: transactions initialised");
                Ok(t)
            }
            Ok(Err(e)) => Err(t.error(
                "initialising transactions (does the broker support Kafka transactions? set kafka.exactly_once = \
                 false for at-least-once output)",
                e,
            )),
            Err(e) => Err(DetectorError::Worker(e.to_string())),
        }
    }

    /// The producer's `transactional.id`.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether a transaction is open (begun, neither committed nor aborted).
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Begins a transaction: every record produced until [`Self::commit`] belongs to it.
    pub(crate) fn begin(&mut self) -> Result<(), DetectorError> {
        self.producer.begin_transaction().map_err(|e| self.error("beginning a transaction", e))?;
        self.open = true;
        Ok(())
    }

    /// Adds `offsets` (next offsets to consume) to the open transaction under the consumer group `group`, and
    /// commits it. On failure the transaction is aborted when the producer still can, and the error returned.
    pub(crate) async fn commit(
        &mut self,
        offsets: TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), DetectorError> {
        if offsets.count() > 0 {
            let Some(group) = group else {
                self.abort().await;
                return Err(DetectorError::Worker("the consumer has no group metadata for the transaction".into()));
            };
            let p = self.producer.clone();
            let r = tokio::task::spawn_blocking(move || {
                p.send_offsets_to_transaction(&offsets, &group, TRANSACTION_TIMEOUT)
            })
            .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.abort().await;
                    return Err(self.error("sending offsets to the transaction", e));
                }
                Err(e) => return Err(DetectorError::Worker(e.to_string())),
            }
        }
        let p = self.producer.clone();
        let r = tokio::task::spawn_blocking(move || p.commit_transaction(TRANSACTION_TIMEOUT)).await;
        match r {
            Ok(Ok(())) => {
                self.open = false;
                Ok(())
            }
            Ok(Err(e)) => {
                self.abort().await;
                Err(self.error("committing the transaction", e))
            }
            Err(e) => Err(DetectorError::Worker(e.to_string())),
        }
    }

    /// Aborts the open transaction, if any, within `TRANSACTION_TIMEOUT`; a failure is logged (the broker aborts
    /// it when the next instance with this id initialises, or after `transaction.timeout.ms`).
    pub(crate) async fn abort(&mut self) {
        self.abort_within(TRANSACTION_TIMEOUT).await;
    }

    /// [`Self::abort`] within `timeout`.
    pub(crate) async fn abort_within(&mut self, timeout: Duration) {
        if !self.open {
            return;
        }
        self.open = false;
        let p = self.producer.clone();
        match tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await {
            Ok(Ok(())) => tracing::warn!(transactional_id = %self.id, "transaction aborted"),
            Ok(Err(e)) => tracing::error!(transactional_id = %self.id, error = %e,
                "could not abort the transaction; the next instance with this transactional id aborts it"),
            Err(e) => tracing::error!(error = %e, "aborting the transaction: worker failed"),
        }
    }

    fn error(&self, what: &str, source: KafkaError) -> DetectorError {
        DetectorError::Transaction {
            transactional_id: self.id.clone(),
            what: what.to_string(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_comes_from_the_config_the_instance_id_or_the_host() {
        let mut c = DetectorConfig { group_id: "g".into(), ..DetectorConfig::default() };
        let host = transactional_id(&c, None);
        assert!(host.starts_with("g-") && host.len() > 2, "{host}");
        assert_eq!(transactional_id(&c, Some(2)), format!("{host}-2"));
        c.kafka_properties.insert("group.instance.id".into(), "det-a".into());
        assert_eq!(transactional_id(&c, None), "g-det-a");
        c.transactional_id = Some("explicit".into());
        assert_eq!(transactional_id(&c, Some(0)), "explicit-0");
    }
}
