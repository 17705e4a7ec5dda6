//! What the router's Kafka consumers share (the router's own in [`crate::route`], each destination's in
//! [`crate::destination`], the dead-letter replay's in [`crate::dlq`]): the brokers, the group, end-of-partition
//! events, the caller's defaults and `kafka.properties` over them; and the error a failed creation gives, with
//! secret values of the properties redacted. Each caller then sets what `kafka.properties` must not override.

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::RouterConfig;
use crate::report::{RouterError, redacted};

/// The settings common to the router's consumers: `bootstrap.servers`, `group.id` = `group`,
/// `enable.partition.eof`, then `defaults` (the caller's own, overridable: e.g. `queued.max.messages.kbytes`),
/// then every `kafka_properties` entry over them.
pub fn consumer_config(config: &RouterConfig, group: &str, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers).set("group.id", group).set("enable.partition.eof", "true");
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &config.kafka_properties {
        c.set(k, v);
    }
    c
}

/// The error of a consumer that could not be created: `what` was being done, and librdkafka's reason with any
/// secret value redacted.
pub fn creation_error(what: String) -> impl FnOnce(KafkaError) -> RouterError {
    move |source| RouterError::Kafka { what, source: Box::new(redacted(source)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_override_the_defaults_but_not_the_group() {
        let mut config = RouterConfig { brokers: "127.0.0.1:9".into(), ..RouterConfig::default() };
        config.kafka_properties.insert("queued.max.messages.kbytes".into(), "64".into());
        config.kafka_properties.insert("client.id".into(), "router-7".into());
        let c = consumer_config(&config, "g", &[("queued.max.messages.kbytes", "4096"), ("fetch.wait.max.ms", "100")]);
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("enable.partition.eof"), Some("true"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("64"), "kafka.properties win over a default");
        assert_eq!((c.get("fetch.wait.max.ms"), c.get("client.id")), (Some("100"), Some("router-7")));
    }

    #[test]
    fn a_creation_error_says_what_was_being_done_and_names_the_property() {
        let mut config = RouterConfig { brokers: "127.0.0.1:9".into(), ..RouterConfig::default() };
        config.kafka_properties.insert("no.such.property".into(), "x".into());
        let e = consumer_config(&config, "g", &[])
            .create::<rdkafka::consumer::BaseConsumer>()
            .map_err(creation_error("creating the consumer of group g".into()))
            .err()
            .unwrap();
        let text = format!("{e} {e:?}");
        assert!(text.contains("creating the consumer of group g") && text.contains("no.such.property"), "{text}");
    }
}
