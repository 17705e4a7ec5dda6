//! A detector's client of the models topic ([`crate::forest::shared`] says what flows there): reads the topic
//! from its beginning, gathers the partitions' warm-up contributions, publishes the recipe of the group's model
//! while this detector owns packets-topic partition 0, and trains the model of the recipe it reads, off the
//! reactor. The consume loop (`consume`) produces the contributions and puts the model in force.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use netanom_handles::kafka_log::KafkaLog;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::forest::TrainedForest;
use crate::forest::model::TrainOptions;
use crate::forest::shared::{FOREST_KEY, Gathered, MIN_TRAINING_VECTORS, ModelRecord, Recipe};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the reader looks again whether it should publish the recipe while the topic is quiet.
const RECHECK: Duration = Duration::from_millis(500);

/// The group's model as this detector knows it.
#[derive(Debug, Clone)]
pub(crate) enum GroupModel {
    /// Not published yet.
    Pending,
    /// The model in force.
    Ready(Arc<TrainedForest>),
    /// None will come: the warm-up was too small, or the recipe could not be trained.
    None(String),
}

/// The running client: the group's model, and whether this detector publishes it.
pub(crate) struct ModelsTopic {
    model: watch::Receiver<GroupModel>,
    trainer: Arc<AtomicBool>,
    installed: bool,
    consumer: Arc<StreamConsumer>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModelsTopic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the reader needs.
pub(crate) struct Setup {
    /// The models topic.
    pub topic: String,
    /// The detectors' consumer group (the reader's client id derives from it).
    pub group: String,
    /// Partitions of the packets topic.
    pub partitions: i32,
    /// Training parameters of the recipe this detector publishes.
    pub options: TrainOptions,
    /// Where the publishing detector saves the model (`forest.save_path`).
    pub save_path: Option<std::path::PathBuf>,
}

impl ModelsTopic {
    /// Starts reading `setup.topic` with a consumer of `client` (brokers and properties set) and publishing with
    /// `producer`. `None` when the topic does not exist (logged): the detector then trains on its own warm-up.
    pub(crate) async fn start(
        client: ClientConfig,
        producer: FutureProducer<KafkaLog>,
        setup: Setup,
        shutdown: CancellationToken,
    ) -> Option<Self> {
        let mut cc = client;
        // Assigned, never subscribed: the group id is required by the client, no group is joined and nothing is
        // committed.
        cc.set("group.id", format!("{}.models", setup.group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer = match cc.create() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "models-topic consumer not created: the forest trains on this detector's own warm-up");
                return None;
            }
        };
        let consumer = Arc::new(consumer);
        let (c, topic) = (consumer.clone(), setup.topic.clone());
        let exists = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(Some(&topic), METADATA_TIMEOUT).map(|m| {
                m.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            })
        })
        .await;
        if !matches!(exists, Ok(Ok(true))) {
            tracing::warn!(topic = %setup.topic,
                "models topic missing (create it, see deploy/): the forest trains on this detector's own warm-up");
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        if let Err(e) =
            tpl.add_partition_offset(&setup.topic, 0, Offset::Beginning).and_then(|()| consumer.assign(&tpl))
        {
            tracing::warn!(topic = %setup.topic, error = %e,
                "models topic not assigned: the forest trains on this detector's own warm-up");
            return None;
        }
        let (tx, rx) = watch::channel(GroupModel::Pending);
        let trainer = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(read(consumer.clone(), producer, setup, trainer.clone(), tx, shutdown));
        Some(Self { model: rx, trainer, installed: false, consumer, task })
    }

    /// Stops reading; returns the consumer for the caller to close off the reactor.
    pub(crate) async fn stop(mut self) -> Arc<StreamConsumer> {
        self.task.abort();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        // Aborted: its copy of the consumer is dropped when it ends.
        let _ = task.await;
        self.consumer.clone()
    }

    /// Whether this detector owns packets-topic partition 0, and so publishes the group's model.
    pub(crate) fn set_trainer(&self, trainer: bool) {
        self.trainer.store(trainer, Ordering::Release);
    }

    /// The group's model, once, when it has arrived.
    pub(crate) fn take_ready(&mut self) -> Option<Arc<TrainedForest>> {
        if self.installed {
            return None;
        }
        match &*self.model.borrow_and_update() {
            GroupModel::Ready(m) => {
                self.installed = true;
                Some(m.clone())
            }
            _ => None,
        }
    }

    /// True, once, when the group has no model and will have none (published as untrained, or its recipe
    /// could not be trained).
    pub(crate) fn gave_up(&mut self) -> bool {
        if self.installed || !matches!(*self.model.borrow(), GroupModel::None(_)) {
            return false;
        }
        self.installed = true;
        true
    }

    /// Waits at most `limit` for the group's model (or word that none will come); the model, once.
    pub(crate) async fn wait(&mut self, limit: Duration) -> Option<Arc<TrainedForest>> {
        let outcome: Result<Option<String>, String> = {
            let waited = tokio::time::timeout(limit, self.model.wait_for(|m| !matches!(m, GroupModel::Pending))).await;
            match waited {
                Ok(Ok(m)) => Ok(match &*m {
                    GroupModel::None(why) => Some(why.clone()),
                    _ => None,
                }),
                Ok(Err(_)) => Err("the models-topic reader stopped".to_string()),
                Err(_) => Err(format!("the group's isolation model did not arrive within {} s", limit.as_secs())),
            }
        };
        match outcome {
            Ok(Some(why)) => tracing::warn!(reason = %why, "the group has no isolation model"),
            Ok(None) => {}
            Err(why) => tracing::warn!(reason = %why, "no isolation model"),
        }
        self.take_ready()
    }
}

async fn read(
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer<KafkaLog>,
    setup: Setup,
    trainer: Arc<AtomicBool>,
    tx: watch::Sender<GroupModel>,
    shutdown: CancellationToken,
) {
    let mut gathered = Gathered::default();
    let mut published = false;
    let mut seen_recipe: Option<Recipe> = None;
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(RECHECK, consumer.recv()) => r,
        };
        match received {
            Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, topic = %setup.topic, "models-topic consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Ok(m)) => match ModelRecord::decode(m.payload().unwrap_or_default()) {
                Ok(ModelRecord::Sample(c)) => gathered.add(c),
                Ok(ModelRecord::Forest(recipe)) => {
                    if seen_recipe.as_ref() == Some(&recipe) {
                        continue;
                    }
                    published = true;
                    let save = trainer.load(Ordering::Acquire).then(|| setup.save_path.clone()).flatten();
                    let r = recipe.clone();
                    seen_recipe = Some(recipe);
                    let started = std::time::Instant::now();
                    let trained = tokio::task::spawn_blocking(move || r.train()).await;
                    match trained {
                        Ok(Ok(model)) => {
                            tracing::info!(
                                model_version = model.version(),
                                threshold = model.threshold(),
                                samples = seen_recipe.as_ref().map_or(0, |r| r.vectors.len()),
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "isolation forest trained from the group's recipe"
                            );
                            if let Some(path) = &save
                                && let Err(e) = model.save(path)
                            {
                                tracing::warn!(error = %e, "could not save the trained forest");
                            }
                            if !matches!(*tx.borrow(), GroupModel::Ready(_)) {
                                tx.send_replace(GroupModel::Ready(Arc::new(model)));
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "the group's recipe could not be trained");
                            tx.send_if_modified(|s| set_none(s, e.to_string()));
                        }
                        Err(e) => {
                            tx.send_if_modified(|s| set_none(s, e.to_string()));
                        }
                    }
                }
                Ok(ModelRecord::Untrained { vectors, need }) => {
                    published = true;
                    tx.send_if_modified(|s| {
                        set_none(s, format!("the group's warm-up had {vectors} vectors, fewer than {need}"))
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, partition = m.partition(), offset = m.offset(), "models-topic record skipped");
                }
            },
        }
        if !published
            && trainer.load(Ordering::Acquire)
            && let Some(all) = gathered.complete(setup.partitions)
        {
            let vectors: usize = all.iter().map(|c| c.vectors.len()).sum();
            let record = match Recipe::new(&setup.options, &all) {
                Some(r) => ModelRecord::Forest(r),
                None => ModelRecord::Untrained { vectors, need: MIN_TRAINING_VECTORS },
            };
            let payload = record.encode();
            let sent = producer
                .send(FutureRecord::to(&setup.topic).key(FOREST_KEY).payload(&payload), Duration::from_secs(30))
                .await;
            match sent {
                Ok(_) => {
                    published = true;
                    tracing::info!(vectors, partitions = setup.partitions, "the group's model recipe published");
                }
                Err((e, _)) => tracing::warn!(error = %e, "publishing the group's model recipe failed; retrying"),
            }
        }
    }
}

/// Marks that no model will come, unless one is in force.
fn set_none(state: &mut GroupModel, why: String) -> bool {
    if matches!(state, GroupModel::Ready(_)) {
        return false;
    }
    *state = GroupModel::None(why);
    true
}
