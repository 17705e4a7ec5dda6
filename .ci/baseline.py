#!/usr/bin/env python3
"""The prototype, done fairly: a per-packet IsolationForest baseline for `netanom eval`.

Per packet (dpkt): wire size, IP protocol (0 for ARP), source and destination port, TCP flags. One
scikit-learn IsolationForest (contamination 0.1 as in the prototype, 100 trees, random_state 42) is fitted on all
packets of the capture and labels each packet anomalous or not. Host rule (fixed, chosen before looking at the
shared captures): a source host is alerted when it sent at least MIN_PACKETS packets and more than SHARE of
them are anomalous. Its score for ROC-AUC is that share. Time to detect = time of the packet at which the
running counts first satisfy the rule minus the host's first packet (the model itself needs the whole capture,
so this flatters the baseline).

Labels and host-level figures follow `netanom eval` exactly (src/labels.rs, src/evaluate.rs): positives are
the labelled attackers (every source host when the catalogue speaks of reflectors/spoofed/every source); labelled
victims count only for victim alerts, which the baseline has none of, so a labelled victim is out of the count
unless alerted (then a false positive).

Usage: baseline.py --pcap FILE --labels FILE [--json]
"""

import argparse
import csv
import ipaddress
import json
import re
import socket
import statistics
import sys

import dpkt
import numpy as np
from sklearn.ensemble import IsolationForest

MIN_PACKETS = 5
SHARE = 0.5


def ip_text(raw):
    fam = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return str(ipaddress.ip_address(socket.inet_ntop(fam, raw)))


def packets(path):
    """(ts_ns, source host, features) of every usable packet."""
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        for ts, buf in reader:
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except (dpkt.dpkt.UnpackError, dpkt.dpkt.NeedData):
                continue
            l3 = eth.data
            ts_ns = int(round(float(ts) * 1e9))
            if isinstance(l3, dpkt.arp.ARP):
                yield ts_ns, ip_text(l3.spa), [len(buf), 0, 0, 0, 0]
                continue
            if not isinstance(l3, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            proto = l3.p if isinstance(l3, dpkt.ip.IP) else l3.nxt
            l4 = l3.data
            sport = getattr(l4, "sport", 0) if not isinstance(l4, bytes) else 0
            dport = getattr(l4, "dport", 0) if not isinstance(l4, bytes) else 0
            flags = l4.flags if isinstance(l4, dpkt.tcp.TCP) else 0
            yield ts_ns, ip_text(l3.src), [len(buf), proto, sport, dport, flags]


IP_TOKEN = re.compile(r"[\s,;()\[\]]+")


def addresses(text):
    ips, macs = set(), set()
    for tok in IP_TOKEN.split(text):
        tok = tok.rstrip(".:")
        if not tok or "/" in tok:
            continue
        for cand in (tok, tok.rsplit(":", 1)[0] if tok.count(":") == 1 else None):
            if cand is None:
                continue
            try:
                ips.add(str(ipaddress.ip_address(cand)))
                break
            except ValueError:
                pass
        else:
            if re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", tok):
                macs.add(tok.lower())
    return ips, macs


def load_labels(path, capture):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    labels = {"attackers": set(), "victims": set(), "all_sources": False, "class": "labelled"}
    if rows and rows[0][:2] == ["file", "traffic_class"]:
        cap = capture.replace("\\", "/")
        match = [r for r in rows[1:] if r and (cap == r[0] or cap.endswith("/" + r[0]))]
        if not match:
            sys.exit(f"labels {path} has no row whose file the capture path {capture} ends with")
        r = max(match, key=lambda r: len(r[0]))
        labels["class"] = r[1]
        labels["victims"] = addresses(r[4])[0]
        if r[1] != "benign":
            low = r[3].lower()
            labels["all_sources"] = any(k in low for k in ("reflector", "spoofed", "every source")) or (
                low.startswith("all ") and "source" in low
            )
            ips, macs = addresses(r[3])
            labels["attackers"] = set() if labels["all_sources"] else (ips or macs)
        return labels
    for row in rows:
        if len(row) < 2 or row[0] == "host" or row[0].startswith("#"):
            continue
        host, role = row[0].strip(), row[1].strip()
        if role == "attacker":
            labels["attackers"].add(str(ipaddress.ip_address(host)))
        elif role == "victim":
            labels["victims"].add(str(ipaddress.ip_address(host)))
    return labels


def roc_auc(scores, positive):
    pos = [s for h, s in scores.items() if h in positive]
    neg = [s for h, s in scores.items() if h not in positive]
    if not pos or not neg:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    labels = load_labels(args.labels, args.pcap)
    rows = list(packets(args.pcap))
    hosts = {}
    for ts, h, _ in rows:
        hosts.setdefault(h, ts)
    anomalous = np.zeros(len(rows), dtype=bool)
    if len(rows) >= 2:
        x = np.array([r[2] for r in rows], dtype=float)
        model = IsolationForest(n_estimators=100, contamination=0.1, random_state=42)
        anomalous = model.fit_predict(x) == -1
    count, bad, alert_ns = {}, {}, {}
    for (ts, h, _), a in zip(rows, anomalous):
        count[h] = count.get(h, 0) + 1
        bad[h] = bad.get(h, 0) + int(a)
        if h not in alert_ns and count[h] >= MIN_PACKETS and bad[h] / count[h] > SHARE:
            alert_ns[h] = ts
    alerted = {h for h in hosts if count[h] >= MIN_PACKETS and bad[h] / count[h] > SHARE}
    share = {h: bad[h] / count[h] for h in hosts}
    victims = labels["victims"]
    attackers = {h for h in hosts if h not in victims} if labels["all_sources"] else labels["attackers"]
    positive = set(attackers)
    all_hosts = {h for h in hosts if h not in victims or h in alerted or h in attackers}
    universe = all_hosts | positive | alerted
    tp = len(positive & alerted)
    fp = len(alerted - positive)
    fn = len(positive - alerted)
    tn = len(universe) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ttd = {h: (alert_ns[h] - hosts[h]) / 1e9 for h in sorted(attackers) if h in alert_ns and h in alerted}
    out = {
        "capture": args.pcap,
        "class": labels["class"],
        "hosts": len(universe),
        "attackers": len(attackers),
        "all_sources_attack": labels["all_sources"],
        "attackers_alerted": len(attackers & alerted),
        "victims": len(victims),
        "victims_alerted": 0,
        "false_positive_hosts": sorted(alerted - positive),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / len(universe) if universe else 1.0,
        "roc_auc": roc_auc({h: share.get(h, 0.0) for h in universe}, positive),
        "time_to_detect_s": ttd,
        "median_time_to_detect_s": statistics.median(ttd.values()) if ttd else None,
        "alerts": {"baseline": len(alerted)},
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
