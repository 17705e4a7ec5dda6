//! Exactly-once output (`kafka.exactly_once = true`): the detector's producer is transactional, and each chunk's
//! records and its input offsets go to Kafka in one transaction (begin → produce → `send_offsets_to_transaction`
//! with the consumer's group metadata → commit). A chunk is bounded by `detector.chunk_records` and
//! `detector.chunk_linger`, so a transaction is too. The blocking librdkafka calls run on blocking threads.
//!
//! Fencing: a restarted instance with the same `transactional.id` aborts what its predecessor left open when it
//! initialises, and a member that lost its partitions in a rebalance has its offsets refused by the group
//! coordinator (KIP-447: the group generation travels with the offsets), so a zombie commits nothing.
//!
//! A call that fails with a retriable error (librdkafka's `is_retriable`) is repeated, a bounded number of times
//! within [`TRANSACTION_TIMEOUT`]; one that requires an abort is aborted; after a fatal one the producer can no
//! longer abort, so the next instance with this id does.
//!
//! On a failed transaction the detector aborts it (when the producer still can) and stops with
//! [`DetectorError::Transaction`]: its state already holds the chunk, so carrying on would skip the chunk's
//! output. A restart resumes from the committed offsets and rebuilds each partition's state as for a partition
//! that moved (`detector.state.rebuild_records`), so it re-creates the same records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netanom_handles::kafka_log::KafkaLog;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, Producer};

use crate::config::DetectorConfig;
use crate::outcome::DetectorError;

/// Longest wait for each transactional request (initialising, sending offsets, committing, aborting).
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Most attempts of a transactional call that fails with a retriable error.
const MAX_ATTEMPTS: u32 = 5;
/// Pause before the n-th retry: n times this.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Shortest timeout given to an attempt.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// What to do after a transactional call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Call again: the transaction is still usable.
    Retry,
    /// Abort the transaction (and stop).
    Abort,
    /// Stop: the producer can neither commit nor abort.
    Fatal,
}

/// The step after `e`, from librdkafka's flags on transactional errors (`KafkaError::Transaction`); any other
/// error aborts.
fn next_step(e: &KafkaError) -> Step {
    match e {
        KafkaError::Transaction(t) => step_from_flags(t.is_fatal(), t.txn_requires_abort(), t.is_retriable()),
        _ => Step::Abort,
    }
}

/// [`next_step`] from the flags of an `RDKafkaError`: fatal first, then requires-abort, then retriable.
fn step_from_flags(fatal: bool, requires_abort: bool, retriable: bool) -> Step {
    if fatal {
        Step::Fatal
    } else if requires_abort {
        Step::Abort
    } else if retriable {
        Step::Retry
    } else {
        Step::Abort
    }
}

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
    /// commits it. A retriable error repeats the call (within [`TRANSACTION_TIMEOUT`] in all); any other failure
    /// aborts the transaction when the producer still can (not after a fatal error), and is returned.
    ///
    /// Not to be cancelled once called: the blocking calls go on without the future, and an abort racing them
    /// would leave the producer in an unknown state. It returns within about [`TRANSACTION_TIMEOUT`] per call.
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
            let args = Arc::new((offsets, group));
            let r = self
                .retrying("sending offsets to the transaction", move |p, timeout| {
                    p.send_offsets_to_transaction(&args.0, &args.1, timeout)
                })
                .await;
            self.settle(r, "sending offsets to the transaction").await?;
        }
        let r = self.retrying("committing the transaction", |p, timeout| p.commit_transaction(timeout)).await;
        self.settle(r, "committing the transaction").await?;
        self.open = false;
        Ok(())
    }

    /// Runs `call` on a blocking thread, again while it fails with a retriable error, at most [`MAX_ATTEMPTS`]
    /// times and within [`TRANSACTION_TIMEOUT`] in all.
    async fn retrying<F>(&self, what: &str, call: F) -> Result<KafkaResult<()>, tokio::task::JoinError>
    where
        F: Fn(&FutureProducer<KafkaLog>, Duration) -> KafkaResult<()> + Send + Sync + 'static,
    {
        let call = Arc::new(call);
        let deadline = Instant::now() + TRANSACTION_TIMEOUT;
        let mut attempt = 1;
        loop {
            let (p, c) = (self.producer.clone(), call.clone());
            let left = deadline.saturating_duration_since(Instant::now()).max(MIN_ATTEMPT);
            let r = tokio::task::spawn_blocking(move || c(&p, left)).await?;
            match r {
                Err(e) if next_step(&e) == Step::Retry && attempt < MAX_ATTEMPTS && Instant::now() < deadline => {
                    tracing::warn!(transactional_id = %self.id, error = %e, attempt, "{what}: retriable error, retrying");
                    tokio::time::sleep(RETRY_BACKOFF * attempt).await;
                    attempt += 1;
                }
                r => return Ok(r),
            }
        }
    }

    /// The outcome of a transactional call: on an error, the transaction is aborted unless the error is fatal
    /// (the producer can no longer abort; the next instance with this id aborts it).
    async fn settle(
        &mut self,
        r: Result<KafkaResult<()>, tokio::task::JoinError>,
        what: &str,
    ) -> Result<(), DetectorError> {
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                if next_step(&e) == Step::Fatal {
                    self.open = false;
                } else {
                    self.abort().await;
                }
                Err(self.error(what, e))
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
    fn retriable_errors_are_retried_and_fatal_or_abortable_ones_are_not() {
        assert_eq!(step_from_flags(false, false, true), Step::Retry);
        assert_eq!(step_from_flags(false, true, false), Step::Abort);
        assert_eq!(step_from_flags(false, true, true), Step::Abort, "requires abort wins over retriable");
        assert_eq!(step_from_flags(true, false, true), Step::Fatal, "fatal wins over retriable");
        assert_eq!(step_from_flags(true, true, false), Step::Fatal);
        assert_eq!(step_from_flags(false, false, false), Step::Abort);
        // Errors other than transactional ones carry no flags: abort.
        assert_eq!(next_step(&KafkaError::Canceled), Step::Abort);
    }

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
