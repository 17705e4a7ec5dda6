//! Round trips through the hand-written codec, cross-checked against `apache-avro` reading the `.avsc` files, and
//! rejection of malformed and hostile payloads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Schema, types::Value};
use netanom_schemas::{
    Anomaly, AnomalyKind, Contribution, DestinationStats, Direction, FrameError, Network, PacketBatch, PacketFeatures,
    SchemaIds, avsc,
};
use proptest::prelude::*;

const IDS: SchemaIds = SchemaIds::BUILT_IN;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

prop_compose! {
    fn packet()(
        ts_ns in any::<i64>(),
        network in prop_oneof![Just(Network::Ipv4), Just(Network::Ipv6), Just(Network::Arp)],
        destination in ip(),
        ports in any::<(u16, u16)>(),
        ip_proto in any::<u8>(),
        lens in any::<(u32, u32, u32)>(),
        tcp_flags in any::<u8>(),
        ttl in any::<u8>(),
        vlan in proptest::option::of(0u16..4096),
        icmp in proptest::option::of(any::<(u8, u8)>()),
        flow in any::<(i64, u64, u64)>(),
        forward in any::<bool>(),
    ) -> PacketFeatures {
        PacketFeatures {
            ts_ns, network, destination, src_port: ports.0, dst_port: ports.1, ip_proto,
            wire_len: lens.0, cap_len: lens.1, payload_len: lens.2, tcp_flags, ttl, vlan,
            icmp_type: icmp.map(|i| i.0), icmp_code: icmp.map(|i| i.1),
            flow_duration_ns: flow.0, flow_packets: flow.1 >> 1, flow_bytes: flow.2 >> 1,
            direction: if forward { Direction::Forward } else { Direction::Reverse },
            payload_entropy: icmp.map(|i| f32::from(i.0) / 32.0),
        }
    }
}

prop_compose! {
    fn batch()(source in ip(), sequence in 0u64..u64::MAX >> 1, packets in proptest::collection::vec(packet(), 1..40))
        -> PacketBatch {
        PacketBatch { source, sequence, packets }
    }
}

prop_compose! {
    fn anomaly()(
        id in ".{0,40}", host in ".{0,40}", kind in 0usize..4, w in any::<(i64, i64)>(),
        score in any::<f64>().prop_filter("not NaN", |f| !f.is_nan()), threshold in -1e9f64..1e9,
        target in proptest::option::of(".{0,20}"), reason in ".{0,80}",
        features in proptest::collection::vec((".{0,12}", -1e6f64..1e6, proptest::option::of(-1e6f64..1e6)), 0..6),
        sample in ".{0,60}", model_version in "[a-z0-9-]{0,12}",
        detected_ns in proptest::option::of(any::<i64>()), window_key in proptest::option::of(".{0,30}"),
        closing in any::<bool>(),
    ) -> Anomaly {
        Anomaly {
            id, host, kind: AnomalyKind::ALL[kind], window_start_ns: w.0, window_end_ns: w.1, score, threshold,
            target, reason,
            features: features.into_iter().map(|(name, value, baseline)| Contribution { name, value, baseline }).collect(),
            sample, model_version, detected_ns, window_key, closing,
        }
    }
}

prop_compose! {
    fn destination_stats()(
        destination in ip(), w in any::<(i64, i64, i64)>(), counts in any::<(u32, u32, u32)>(),
        sample_sources in proptest::collection::vec(ip(), 0..8), origin_partition in any::<i32>(),
        bytes in any::<u32>(), evidence in proptest::option::of(any::<(i64, Option<i64>)>()),
        first_packet_ns in proptest::collection::vec(any::<i64>(), 0..8),
    ) -> DestinationStats {
        DestinationStats {
            destination, window_start_ns: w.0, window_ns: w.1, sources: counts.0.into(),
            packets: counts.1.into(), syn_packets: counts.2.into(), sample_sources, last_ts_ns: w.2,
            origin_partition, bytes: bytes.into(), first_evidence_ns: evidence.map(|e| e.0),
            last_evidence_ns: evidence.and_then(|e| e.1), unlisted_packets: counts.1.into(),
            first_packet_ns,
        }
    }
}

/// Reads one datum the way `apache-avro` does.
fn read(schema: &Schema, mut body: &[u8]) -> Value {
    GenericDatumReader::builder(schema).build().unwrap().read_value(&mut body).unwrap()
}

/// Writes one datum the way `apache-avro` does.
fn write(schema: &Schema, v: Value) -> Vec<u8> {
    GenericDatumWriter::builder(schema).build().unwrap().write_value_to_vec(v).unwrap()
}

fn schema(src: &str) -> Schema {
    Schema::parse_str(src).expect("the .avsc parses")
}

fn ip_bytes(ip: IpAddr) -> Value {
    match ip {
        IpAddr::V4(a) => Value::Bytes(a.octets().to_vec()),
        IpAddr::V6(a) => Value::Bytes(a.octets().to_vec()),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    match v {
        Value::Record(fields) => &fields.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("field {name}")).1,
        other => panic!("not a record: {other:?}"),
    }
}

proptest! {
    #[test]
    fn packet_batch_round_trips(b in batch()) {
        let bytes = b.encode(&IDS);
        prop_assert_eq!(PacketBatch::decode(&bytes, &IDS).unwrap(), b);
    }

    #[test]
    fn packet_batch_is_what_apache_avro_reads(b in batch()) {
        let s = schema(avsc::PACKET_BATCH_V1);
        let bytes = b.encode(&IDS);
        let v = read(&s, &bytes[5..]);
        prop_assert_eq!(field(&v, "source"), &ip_bytes(b.source));
        prop_assert_eq!(field(&v, "sequence"), &Value::Long(b.sequence as i64));
        let Value::Array(items) = field(&v, "packets") else { panic!("packets is not an array") };
        prop_assert_eq!(items.len(), b.packets.len());
        for (item, p) in items.iter().zip(&b.packets) {
            prop_assert_eq!(field(item, "ts_ns"), &Value::Long(p.ts_ns));
            prop_assert_eq!(field(item, "destination"), &ip_bytes(p.destination));
            prop_assert_eq!(field(item, "dst_port"), &Value::Int(p.dst_port.into()));
            prop_assert_eq!(field(item, "wire_len"), &Value::Long(p.wire_len.into()));
            let vlan = p.vlan.map_or(Value::Union(0, Box::new(Value::Null)), |v| Value::Union(1, Box::new(Value::Int(v.into()))));
            prop_assert_eq!(field(item, "vlan"), &vlan);
            prop_assert_eq!(field(item, "flow_bytes"), &Value::Long(p.flow_bytes as i64));
            let dir = match p.direction { Direction::Forward => 0, Direction::Reverse => 1 };
            prop_assert!(matches!(field(item, "direction"), Value::Enum(i, _) if *i == dir));
            let entropy = p.payload_entropy.map_or(Value::Union(0, Box::new(Value::Null)), |e| Value::Union(1, Box::new(Value::Float(e))));
            prop_assert_eq!(field(item, "payload_entropy"), &entropy);
        }
        // And apache-avro's own encoding of what it read decodes with ours to the same batch.
        let reencoded = write(&s, v);
        let mut framed = vec![0, 0, 0, 0, 1];
        framed.extend_from_slice(&reencoded);
        prop_assert_eq!(PacketBatch::decode(&framed, &IDS).unwrap(), b);
    }

    #[test]
    fn anomaly_round_trips_through_apache_avro(a in anomaly()) {
        let bytes = a.encode(&IDS);
        prop_assert_eq!(&Anomaly::decode(&bytes, &IDS).unwrap(), &a);
        let s = schema(avsc::ANOMALY_V1);
        let v = read(&s, &bytes[5..]);
        prop_assert_eq!(field(&v, "host"), &Value::String(a.host.clone()));
        let mut framed = vec![0, 0, 0, 0, 2];
        framed.extend_from_slice(&write(&s, v));
        prop_assert_eq!(Anomaly::decode(&framed, &IDS).unwrap(), a);
    }

    #[test]
    fn destination_stats_round_trip_through_apache_avro(d in destination_stats()) {
        let bytes = d.encode(&IDS);
        prop_assert_eq!(&DestinationStats::decode(&bytes, &IDS).unwrap(), &d);
        let s = schema(avsc::DESTINATION_STATS_V1);
        let v = read(&s, &bytes[5..]);
        let mut framed = vec![0, 0, 0, 0, 3];
        framed.extend_from_slice(&write(&s, v));
        prop_assert_eq!(DestinationStats::decode(&framed, &IDS).unwrap(), d);
    }

    #[test]
    fn destination_stats_of_the_previous_schema_decode_with_the_defaults(d in destination_stats()) {
        // The schema before `bytes` and the evidence times: the same fields up to `origin_partition`.
        let mut old: serde_json::Value = serde_json::from_str(avsc::DESTINATION_STATS_V1).unwrap();
        let fields = old["fields"].as_array_mut().unwrap();
        let at = fields.iter().position(|f| f["name"] == "origin_partition").unwrap();
        fields.truncate(at + 1);
        let old = schema(&old.to_string());
        let current = schema(avsc::DESTINATION_STATS_V1);
        let bytes = d.encode(&IDS);
        let mut v = read(&current, &bytes[5..]);
        if let Value::Record(fields) = &mut v {
            fields.truncate(fields.len() - 5);
        }
        let mut framed = vec![0, 0, 0, 0, 3];
        framed.extend_from_slice(&write(&old, v));
        let want = DestinationStats {
            bytes: 0,
            first_evidence_ns: None,
            last_evidence_ns: None,
            unlisted_packets: 0,
            first_packet_ns: Vec::new(),
            ..d
        };
        prop_assert_eq!(&DestinationStats::decode(&framed, &IDS).unwrap(), &want);
        // apache-avro resolving the old writer schema against the current one gives the same defaults.
        let resolved = GenericDatumReader::builder(&old)
            .reader_schema(&current)
            .build()
            .unwrap()
            .read_value(&mut &framed[5..])
            .unwrap();
        prop_assert_eq!(field(&resolved, "bytes"), &Value::Long(0));
        prop_assert_eq!(field(&resolved, "unlisted_packets"), &Value::Long(0));
        for name in ["first_evidence_ns", "last_evidence_ns"] {
            let v = field(&resolved, name);
            prop_assert!(matches!(v, Value::Null) || matches!(v, Value::Union(0, n) if **n == Value::Null), "{name}: {v:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = PacketBatch::decode(&bytes, &IDS);
        let _ = Anomaly::decode(&bytes, &IDS);
        let _ = DestinationStats::decode(&bytes, &IDS);
        let mut framed = vec![0, 0, 0, 0, 1];
        framed.extend_from_slice(&bytes);
        let _ = PacketBatch::decode(&framed, &IDS);
    }

    #[test]
    fn every_truncation_of_a_valid_batch_is_an_error(b in batch(), cut in any::<prop::sample::Index>()) {
        let bytes = b.encode(&IDS);
        let cut = cut.index(bytes.len());
        prop_assert!(PacketBatch::decode(&bytes[..cut], &IDS).is_err());
    }
}

#[test]
fn header_errors_name_what_is_wrong() {
    assert_eq!(PacketBatch::decode(&[0, 0], &IDS).unwrap_err(), FrameError::TooShort(2));
    assert_eq!(PacketBatch::decode(&[7, 0, 0, 0, 1, 0], &IDS).unwrap_err(), FrameError::BadMagic(7));
    let e = PacketBatch::decode(&[0, 0, 0, 0, 2, 0], &IDS).unwrap_err();
    assert_eq!(e.to_string(), "schema id 2 is not 1, the id of PacketBatch");
}

#[test]
fn a_huge_array_count_is_rejected_before_allocating() {
    // source 10.0.0.1, sequence 0, then a block count of 2^40 items in a 20-byte payload.
    let mut p = vec![0, 0, 0, 0, 1, 8, 10, 0, 0, 1, 0];
    let mut z = (1u64 << 40) << 1;
    while z >= 0x80 {
        p.push((z as u8) | 0x80);
        z >>= 7;
    }
    p.push(z as u8);
    let e = PacketBatch::decode(&p, &IDS).unwrap_err();
    assert!(e.to_string().contains("cannot fit"), "{e}");
}

#[test]
fn a_huge_string_length_is_rejected() {
    let mut p = vec![0, 0, 0, 0, 2];
    p.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // length ~2^31
    let e = Anomaly::decode(&p, &IDS).unwrap_err();
    assert!(e.to_string().contains("id: length"), "{e}");
}

#[test]
fn an_address_of_the_wrong_size_is_rejected() {
    let p = [0, 0, 0, 0, 1, 6, 1, 2, 3, 0, 0];
    let e = PacketBatch::decode(&p, &IDS).unwrap_err();
    assert!(e.to_string().contains("source: address of 3 bytes"), "{e}");
}

#[test]
fn alert_json_has_the_fields_of_the_avsc() {
    let alert = netanom_schemas::Alert {
        id: "x".into(),
        host: "10.0.0.1".into(),
        kind: AnomalyKind::Rate,
        score: 1.0,
        threshold: 0.5,
        first_seen: netanom_schemas::time_from_ns(1_614_265_330_123_456_789),
        last_seen: netanom_schemas::time_from_ns(0),
        detected_at: Some(netanom_schemas::time_from_ns(0)),
        count: 3,
        reason: "r".into(),
        target: None,
        sample: "s".into(),
        features: vec![],
        model_version: "rules-v1".into(),
        revision: 1,
        final_revision: true,
        kinds: Vec::new(),
        totals: Default::default(),
    };
    let json = serde_json::to_value(&alert).unwrap();
    assert_eq!(json["first_seen"], "2021-02-25T15:02:10.123456789Z");
    assert_eq!(
        (json["kind"].as_str(), json["last_seen"].as_str()),
        (Some("rate"), Some("1970-01-01T00:00:00.000000000Z"))
    );
    let avsc: serde_json::Value = serde_json::from_str(avsc::ALERT_V1).unwrap();
    let mut want: Vec<&str> = avsc["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    let mut got: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    schema(avsc::ALERT_V1);
}

#[test]
fn an_anomaly_written_before_the_window_fields_decodes_with_their_defaults() {
    let a = Anomaly {
        id: "victim:10.0.0.5:0:10:final".into(),
        host: "10.0.0.5".into(),
        kind: AnomalyKind::Victim,
        window_start_ns: 3,
        window_end_ns: 9,
        score: 600.0,
        threshold: 500.0,
        target: Some("10.0.0.5".into()),
        reason: "r".into(),
        features: vec![],
        sample: "s".into(),
        model_version: "rules-v1".into(),
        detected_ns: Some(5),
        window_key: Some("10.0.0.5/0".into()),
        closing: true,
    };
    let bytes = a.encode(&IDS);
    assert_eq!(Anomaly::decode(&bytes, &IDS).unwrap(), a);
    // The three fields take 2 + 12 + 1 bytes: an older writer's record ends before them.
    let old = &bytes[..bytes.len() - 15];
    let decoded = Anomaly::decode(old, &IDS).unwrap();
    assert_eq!((decoded.detected_ns, decoded.window_key.as_deref(), decoded.closing), (None, None, false));
    assert_eq!(decoded.detected_at_ns(), 9, "the window's end");
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() = 2;
    let e = Anomaly::decode(&bad, &IDS).unwrap_err();
    assert!(e.to_string().contains("closing: boolean byte 2"), "{e}");
}
