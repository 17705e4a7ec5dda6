//! Fuzz entry points of the wire decoders (`netanom-schemas` only, so that they build and run without the
//! rest of the workspace): the Confluent framing and each Avro record type, with seed records.

use std::net::{IpAddr, Ipv4Addr};

use netanom_schemas::{
    Anomaly, AnomalyKind, Contribution, DestinationStats, Direction, Network, PacketBatch, PacketFeatures, SchemaIds,
};

/// `data` behind the Confluent header of `schema_id`, so that every input reaches the Avro decoder.
fn framed(schema_id: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5);
    netanom_schemas::frame::write_header(&mut out, schema_id);
    out.extend_from_slice(data);
    out
}

/// The Avro body of a `PacketBatch` record. Checks that what decodes re-encodes to bytes that decode to the
/// same encoding.
pub fn packet_batch(data: &[u8]) {
    let ids = SchemaIds::BUILT_IN;
    if let Ok(batch) = PacketBatch::decode(&framed(ids.packet_batch, data), &ids) {
        round_trip(&batch);
    }
}

/// The Avro body of an `Anomaly` record; round trip as for [`packet_batch`].
pub fn anomaly(data: &[u8]) {
    let ids = SchemaIds::BUILT_IN;
    if let Ok(a) = Anomaly::decode(&framed(ids.anomaly, data), &ids) {
        let bytes = a.encode(&ids);
        let again = Anomaly::decode(&bytes, &ids).expect("an encoded anomaly decodes");
        assert_eq!(again.encode(&ids), bytes);
    }
}

/// The Avro body of a `DestinationStats` record; round trip as for [`packet_batch`].
pub fn destination_stats(data: &[u8]) {
    let ids = SchemaIds::BUILT_IN;
    if let Ok(s) = DestinationStats::decode(&framed(ids.destination_stats, data), &ids) {
        let bytes = s.encode(&ids);
        let again = DestinationStats::decode(&bytes, &ids).expect("encoded stats decode");
        assert_eq!(again, s);
    }
}

/// A whole record value: the Confluent framing, then whichever decoder its schema id names.
pub fn confluent_frame(data: &[u8]) {
    let ids = SchemaIds::BUILT_IN;
    if let Ok((id, body)) = netanom_schemas::frame::split(data) {
        assert_eq!(body, &data[5..]);
        assert_eq!(data[0], 0);
        let _ = netanom_schemas::frame::split_expect(data, id, "any").expect("its own id is expected");
    }
    let _ = PacketBatch::decode(data, &ids);
    let _ = Anomaly::decode(data, &ids);
    let _ = DestinationStats::decode(data, &ids);
}

/// What decodes must re-encode to bytes that decode to the same encoding.
pub fn round_trip(batch: &PacketBatch) {
    let ids = SchemaIds::BUILT_IN;
    let bytes = batch.encode(&ids);
    let decoded = PacketBatch::decode(&bytes, &ids).expect("an encoded batch decodes");
    assert_eq!(decoded.encode(&ids), bytes, "encode ∘ decode ∘ encode = encode");
}

/// Seed records for the wire decoders: a packet batch, an anomaly and destination statistics, each as an Avro
/// body and as a whole framed record.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ids = SchemaIds::BUILT_IN;
    let packet = |i: u16, network, destination: IpAddr| PacketFeatures {
        ts_ns: 1_700_000_000_000_000_000 + i64::from(i) * 1_000_000,
        network,
        destination,
        src_port: 40_000 + i,
        dst_port: 443,
        ip_proto: 6,
        wire_len: 1514,
        cap_len: 96,
        payload_len: 1448,
        tcp_flags: 0x18,
        ttl: 64,
        vlan: (i % 2 == 0).then_some(100),
        icmp_type: None,
        icmp_code: None,
        flow_duration_ns: i64::from(i) * 1_000_000,
        flow_packets: u64::from(i) + 1,
        flow_bytes: (u64::from(i) + 1) * 1514,
        direction: if i % 3 == 0 { Direction::Reverse } else { Direction::Forward },
        payload_entropy: (i % 2 == 1).then_some(4.5),
    };
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 3));
    let v6: IpAddr = "2001:db8::3".parse().expect("an address");
    let batch = PacketBatch {
        source: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        sequence: 7,
        packets: (0..6)
            .map(|i| packet(i, if i < 4 { Network::Ipv4 } else { Network::Ipv6 }, if i < 4 { v4 } else { v6 }))
            .collect(),
    };
    let anomaly = Anomaly {
        id: "fanout-10.0.0.9-1700000000000000000".into(),
        host: "10.0.0.9".into(),
        kind: AnomalyKind::Fanout,
        window_start_ns: 1_700_000_000_000_000_000,
        window_end_ns: 1_700_000_010_000_000_000,
        score: 120.0,
        threshold: 50.0,
        target: Some("10.0.1.3".into()),
        reason: "10.0.0.9 probed 120 ports of 10.0.1.3 in 10 s".into(),
        features: vec![Contribution { name: "distinct_dst_ports".into(), value: 120.0, baseline: Some(3.5) }],
        sample: "10.0.0.9:40001 > 10.0.1.3:22 tcp S".into(),
        model_version: "rules-1".into(),
        detected_ns: None,
        window_key: None,
        closing: false,
    };
    let stats = DestinationStats {
        destination: v4,
        window_start_ns: 1_700_000_000_000_000_000,
        window_ns: 10_000_000_000,
        sources: 2,
        packets: 900,
        syn_packets: 850,
        sample_sources: vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), v6],
        last_ts_ns: 1_700_000_009_000_000_000,
        origin_partition: 3,
        bytes: 54_000,
        first_evidence_ns: Some(1_700_000_000_250_000_000),
        last_evidence_ns: Some(1_700_000_008_750_000_000),
        unlisted_packets: 0,
        first_packet_ns: vec![],
    };
    let mut out = Vec::new();
    for (target, bytes) in [
        ("packet_batch", batch.encode(&ids)),
        ("anomaly", anomaly.encode(&ids)),
        ("destination_stats", stats.encode(&ids)),
    ] {
        out.push((target, bytes[5..].to_vec()));
        out.push(("confluent_frame", bytes));
    }
    out
}
