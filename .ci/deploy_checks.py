#!/usr/bin/env python3
"""The checks of .ci/validate-deploy that are not a third-party validator, one subcommand each.

  schemas SRC OUT                  CRD openAPIV3Schema files of SRC (deploy/k8s/schemas/crd) -> JSON Schemas in OUT
  split RENDERED OUT SCHEMAS ALLOWED...
                                   rendered manifests -> OUT/core.yaml (built-in kinds) and OUT/crd/<schema>/*.json;
                                   fails on a custom resource whose apiVersion is not one of ALLOWED (group/version)
                                   or has no schema in SCHEMAS (the output of `schemas`)
  invariants RENDERED TARGET       cross-object properties of one rendered Kubernetes target
  compose COMPOSE_JSON             properties of the rendered compose stack (`docker-compose config --format json`)
  mutate RENDERED OUT NAME         writes a deliberately broken copy of RENDERED (mutation NAME) to OUT
  mutations                        lists the mutation names, one a line

Each prints one line per problem and exits 1 if there is any.
"""

import copy
import json
import os
import re
import sys
import tomllib

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INT32 = (-(2**31), 2**31 - 1)
# Custom-resource groups the manifests use; their kinds must match a vendored CRD schema exactly.
CRD_GROUPS = {"kafka.strimzi.io", "keda.sh"}
# Ports and images the roles are run with.
# Default of lifecycle.shutdown_grace (src/config.rs): a role stops within it after SIGTERM.
SHUTDOWN_GRACE_S = 20
TELEMETRY_PORT = {"netanom-producer": 9110, "netanom-detector": 9100, "netanom-alert-router": 9100}
CAPTURE_BINARY = "netanom-capture"


def fail_with(problems):
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# ---------------------------------------------------------------------------------------------------------------
# CRD openAPIV3Schema -> JSON Schema


def structural(node):
    """JSON Schema of one OpenAPI v3 structural-schema node, as the API server applies it to a create or apply:
    unknown fields are rejected (kubectl's default server-side field validation is Strict) unless the node
    preserves them, int32/int64 formats bound the value, int-or-string is either."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [structural(v) for v in value]
        elif key.startswith("x-kubernetes-"):
            continue  # extensions: int-or-string handled below; CEL rules are checked by `invariants`
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out.pop("type", None)
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if node.get("type") == "integer" and node.get("format") == "int32":
        out.setdefault("minimum", INT32[0])
        out.setdefault("maximum", INT32[1])
    return out


def cmd_schemas(src, out):
    """Writes <kind>_<group>_<version>.json (lowercase kind) per vendored CRD file <group>_<plural>_<version>.json,
    plus the ObjectMeta schema they refer to."""
    os.makedirs(out, exist_ok=True)
    problems = []
    with open(os.path.join(os.path.dirname(src.rstrip("/")), "_objectmeta.json")) as f:
        objectmeta = json.load(f)
    with open(os.path.join(out, "_objectmeta.json"), "w") as f:
        json.dump(objectmeta, f)
    for name in sorted(os.listdir(src)):
        m = re.fullmatch(r"([a-z0-9.-]+)_([a-z0-9]+)_(v[0-9a-z]+)\.json", name)
        if not m:
            problems.append(f"{src}/{name}: not named <group>_<plural>_<version>.json")
            continue
        group, _plural, version = m.groups()
        with open(os.path.join(src, name)) as f:
            crd = json.load(f)
        schema = structural(crd["openAPIV3Schema"])
        kind = crd["kind"]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$comment"] = crd["$comment"]
        props = schema["properties"]
        props["apiVersion"] = {"const": f"{group}/{version}"}
        props["kind"] = {"const": kind}
        props["metadata"] = {"$ref": "_objectmeta.json"}
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
        schema["additionalProperties"] = False
        with open(os.path.join(out, schema_name(kind, f"{group}/{version}")), "w") as f:
            json.dump(schema, f, indent=1)
    fail_with(problems)


def schema_name(kind, api_version):
    group, _, version = api_version.rpartition("/")
    return f"{kind.lower()}_{group}_{version}.json"


# ---------------------------------------------------------------------------------------------------------------
# split


def cmd_split(src, out, schemas, allowed):
    docs = load_docs(src)
    core, problems = [], []
    os.makedirs(os.path.join(out, "crd"), exist_ok=True)
    for i, doc in enumerate(docs):
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        group = api_version.rpartition("/")[0]
        where = f"{kind}/{doc.get('metadata', {}).get('name')} ({api_version})"
        if group not in CRD_GROUPS:
            core.append(doc)
            continue
        if api_version not in allowed:
            problems.append(f"{where}: apiVersion {api_version} is not served by the target platforms "
                            f"(allowed: {', '.join(sorted(a for a in allowed if a.startswith(group)))})")
            continue
        schema = schema_name(kind, api_version)
        if not os.path.exists(os.path.join(schemas, schema)):
            problems.append(f"{where}: no vendored CRD schema {schema} in deploy/k8s/schemas/crd")
            continue
        d = os.path.join(out, "crd", schema)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{i:03d}-{doc['metadata']['name']}.json"), "w") as f:
            json.dump(doc, f)
    with open(os.path.join(out, "core.yaml"), "w") as f:
        yaml.safe_dump_all(core, f)
    fail_with(problems)


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes invariants


def detector_offset_reset(toml):
    """The detectors' auto.offset.reset: set in detector/src/consume.rs, overridable by [kafka.properties]."""
    override = toml.get("kafka", {}).get("properties", {}).get("auto.offset.reset")
    if override:
        return override
    with open(os.path.join(REPO, "detector", "src", "consume.rs")) as f:
        found = set(re.findall(r'\.set\("auto\.offset\.reset",\s*"(\w+)"\)', f.read()))
    return found.pop() if len(found) == 1 else None


def selects(selector, labels):
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e["values"]) \
                or (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def network_policy_problems(by_kind, workloads):
    problems = []
    policies = by_kind.get("NetworkPolicy", [])
    for w in workloads:
        name = w["metadata"]["name"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        if len(mine) != 1:
            problems.append(f"{w['kind']}/{name}: must be selected by exactly one NetworkPolicy, found {len(mine)}")
            continue
        spec = mine[0]["spec"]
        where = f"NetworkPolicy/{mine[0]['metadata']['name']}"
        if set(spec.get("policyTypes", [])) != {"Ingress", "Egress"}:
            problems.append(f"{where}: policyTypes must be Ingress and Egress (deny by default both ways)")
        port = TELEMETRY_PORT.get(name)
        for rule in spec.get("ingress", []):
            if not rule.get("from"):
                problems.append(f"{where}: an ingress rule without `from` admits every source")
            if [p.get("port") for p in rule.get("ports", [])] != [port]:
                problems.append(f"{where}: ingress must open only the telemetry port {port}, "
                                f"opens {[p.get('port') for p in rule.get('ports', [])]}")
        ipblocks = []
        for rule in spec.get("egress", []):
            if not rule.get("to") or not rule.get("ports"):
                problems.append(f"{where}: an egress rule without `to` and `ports` opens every destination")
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    ipblocks.append(peer["ipBlock"]["cidr"])
                    if peer["ipBlock"]["cidr"].endswith("/0"):
                        problems.append(f"{where}: egress to {peer['ipBlock']['cidr']} opens every address")
        if name == "netanom-alert-router" and not ipblocks:
            problems.append(f"{where}: the router needs an ipBlock egress rule for its webhook destinations")
        if name != "netanom-alert-router" and ipblocks:
            problems.append(f"{where}: {name} talks to in-cluster services only, found ipBlock {ipblocks}")
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction, []):
                for peer in rule.get(key, []):
                    if "app.kubernetes.io/part-of" in peer.get("podSelector", {}).get("matchLabels", {}):
                        problems.append(f"{where}: {direction} peer selector requires app.kubernetes.io/part-of "
                                        "(the base's common label leaked into it): Prometheus, DNS and Kafka "
                                        "pods do not carry it")
    return problems


def cmd_invariants(src, target):
    docs = load_docs(src)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    problems = []

    def need(cond, msg):
        if not cond:
            problems.append(msg)

    toml = tomllib.loads(next(iter(by_kind["ConfigMap"]))["data"]["netanom.toml"])
    topics = toml["topics"]
    partitions = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"].get("partitions")
                  for t in by_kind.get("KafkaTopic", [])}
    expected = {"packets": 12, "destinations": 12, "anomalies": 6, "alerts": 3, "dead_letter": 1}
    for key, count in expected.items():
        need(partitions.get(topics[key]) == count,
             f"KafkaTopic {topics[key]} must have {count} partitions, has {partitions.get(topics[key])!r}")
    need(partitions.get(topics["packets"]) == partitions.get(topics["destinations"]),
         "netanom.packets and netanom.destinations must have the same partition count (one consumer group reads both)")
    for t in by_kind.get("KafkaTopic", []):
        need("strimzi.io/cluster" in t["metadata"].get("labels", {}),
             f"KafkaTopic {t['metadata']['name']}: the Topic Operator ignores topics without the strimzi.io/cluster label")

    workloads = by_kind.get("Deployment", []) + by_kind.get("DaemonSet", [])
    need(len(workloads) == 3, f"expected 3 workloads, found {len(workloads)}")
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    configmaps = {c["metadata"]["name"] for c in by_kind.get("ConfigMap", [])}
    for w in workloads:
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        need(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0,
             f"{w['kind']}/{name}: must run as non-root (runAsNonRoot and a non-zero runAsUser)")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        grace = pod.get("terminationGracePeriodSeconds", 30)
        need(SHUTDOWN_GRACE_S + 5 <= grace <= 30,
             f"{w['kind']}/{name}: terminationGracePeriodSeconds must leave lifecycle.shutdown_grace "
             f"({SHUTDOWN_GRACE_S} s) 5 s of margin and stay at most 30 s, is {grace}")
        for c in pod["containers"]:
            where = f"{w['kind']}/{name} container {c['name']}"
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                need(c.get(probe, {}).get("httpGet", {}).get("path") == path, f"{where}: {probe} must GET {path}")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            need(ports.get("http-metrics") == TELEMETRY_PORT.get(name),
                 f"{where}: http-metrics port must be {TELEMETRY_PORT.get(name)}, is {ports.get('http-metrics')}")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                need({"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: resources.{kind} needs cpu and memory")
            sc = c.get("securityContext", {})
            need(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
            need(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
            need(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities must drop ALL")
            need(sc.get("runAsUser", psc.get("runAsUser", 0)) != 0, f"{where}: must not run as uid 0")
            for m in c.get("volumeMounts", []):
                v = volumes.get(m["name"], {})
                need(m.get("readOnly") is True or "emptyDir" in v,
                     f"{where}: writable mount {m['mountPath']} must be an emptyDir (the root filesystem is read-only)")
            added = set(sc.get("capabilities", {}).get("add", []))
            command = c.get("command", [])
            if w["kind"] == "DaemonSet":
                need(added == {"NET_RAW"}, f"{where}: capture needs NET_RAW alone, has {sorted(added)}")
                need(command == [CAPTURE_BINARY],
                     f"{where}: must run {CAPTURE_BINARY} (the binary with the file capability), runs {command}")
                need(pod.get("hostNetwork") is True and pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
                     f"{where}: needs hostNetwork with dnsPolicy ClusterFirstWithHostNet")
            else:
                need(not added, f"{where}: must add no capabilities, adds {sorted(added)}")
                need(CAPTURE_BINARY not in command, f"{where}: only the producer may run {CAPTURE_BINARY}")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = secrets.get(ref["name"], {})
                    need(ref["key"] in secret.get("stringData", {}) | secret.get("data", {}),
                         f"{where}: env {e['name']} refers to missing secret key {ref['name']}/{ref['key']}")
                if e["name"].startswith("NETANOM_") and e["name"] != "NETANOM_CONFIG":
                    need("__" in e["name"], f"{where}: env {e['name']} would be read as a config key without a section")
        for v in pod.get("volumes", []):
            if "configMap" in v:
                need(v["configMap"]["name"] in configmaps,
                     f"{w['kind']}/{name}: volume {v['name']} refers to missing ConfigMap {v['configMap']['name']}")

    problems += network_policy_problems(by_kind, workloads)

    pdbs = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for p in by_kind.get("PodDisruptionBudget", [])}
    need({"netanom-detector", "netanom-alert-router"} <= pdbs,
         f"PodDisruptionBudgets needed for detector and router, found {sorted(pdbs)}")

    detector = next((w for w in workloads if w["metadata"]["name"] == "netanom-detector"), None)
    need(detector is not None, "no netanom-detector Deployment")
    if detector is not None:
        need("replicas" not in detector["spec"],
             "Deployment/netanom-detector: spec.replicas must be absent (an autoscaler owns the count; "
             "a fixed value is reset on every apply)")
    max_detectors = partitions.get(topics["packets"])
    scalers = by_kind.get("ScaledObject", []) + by_kind.get("HorizontalPodAutoscaler", [])
    reset = detector_offset_reset(toml)
    need(reset is not None, "cannot tell the detectors' auto.offset.reset from detector/src/consume.rs")
    if target == "base":
        need(not scalers, "base must not autoscale")
    else:
        need(len(scalers) == 1, f"overlay {target} needs exactly one autoscaler, found {len(scalers)}")
    for s in scalers:
        spec = s["spec"]
        need(spec["scaleTargetRef"]["name"] == "netanom-detector", f"{s['kind']} must target netanom-detector")
        if s["kind"] == "ScaledObject":
            lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        else:
            lo, hi = spec.get("minReplicas", 1), spec["maxReplicas"]
        need(1 <= lo <= hi, f"{s['kind']}: min replicas {lo} must be in 1..max {hi}")
        need(hi == max_detectors, f"{s['kind']}: max replicas {hi} must equal the packets partition count {max_detectors}")
        for t in spec.get("triggers", []):
            m = t["metadata"]
            need(t["type"] == "kafka", f"ScaledObject trigger type {t['type']} is not kafka")
            need(m.get("topic") == topics["packets"], f"ScaledObject topic {m.get('topic')} must be {topics['packets']}")
            need(m.get("consumerGroup") == toml["detector"]["group_id"],
                 f"ScaledObject consumerGroup {m.get('consumerGroup')} must be detector.group_id {toml['detector']['group_id']}")
            need(m.get("bootstrapServers") == toml["kafka"]["brokers"],
                 f"ScaledObject bootstrapServers {m.get('bootstrapServers')} must be kafka.brokers {toml['kafka']['brokers']}")
            # KEDA's default is `latest`: an absent policy disagrees with detectors reading from `earliest`.
            need(m.get("offsetResetPolicy", "latest") == reset,
                 f"ScaledObject offsetResetPolicy {m.get('offsetResetPolicy', 'latest (default)')} must match the "
                 f"detectors' auto.offset.reset {reset}, or a first backlog is not counted as lag")
    fail_with(problems)


# ---------------------------------------------------------------------------------------------------------------
# compose

# Services that cannot carry a healthcheck, with the reason (a Docker healthcheck runs inside the container).
COMPOSE_NO_HEALTHCHECK = {
    "otel-collector": "the image holds the collector binary alone (no shell, no HTTP client)",
}


def cmd_compose(src):
    with open(src) as f:
        services = json.load(f)["services"]
    with open(os.path.join(REPO, "deploy", "compose", "netanom.toml"), "rb") as f:
        listen = tomllib.load(f)["telemetry"]["listen"]
    port = int(listen.rpartition(":")[2])
    with open(os.path.join(REPO, "Dockerfile")) as f:
        dockerfile = f.read()
    runtime = dockerfile[dockerfile.index("AS runtime"):]
    problems = []

    def need(cond, msg):
        if not cond:
            problems.append(msg)

    need(re.search(r"apt-get install[^\n]*\bcurl\b", runtime) is not None,
         "Dockerfile: the runtime stage must install curl (the netanom healthchecks run it)")
    need(f"setcap cap_net_raw+ep /usr/local/bin/{CAPTURE_BINARY}" in runtime,
         f"Dockerfile: the runtime stage must give /usr/local/bin/{CAPTURE_BINARY} the file capability cap_net_raw+ep")
    for name, s in services.items():
        one_shot = s.get("restart", "no") == "no"
        hc = s.get("healthcheck")
        if one_shot:
            continue
        if name in COMPOSE_NO_HEALTHCHECK:
            need(not hc, f"{name}: has a healthcheck now: remove it from the exemptions")
            continue
        need(hc and not hc.get("disable") and hc.get("test"), f"{name}: needs a healthcheck")
        netanom = "netanom" in s.get("image", "") and s.get("build")
        if not netanom:
            continue
        need(hc and hc.get("test") == ["CMD", "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{port}/healthz"],
             f"{name}: healthcheck must GET /healthz on the telemetry port {port} with curl, is {hc and hc.get('test')}")
        need(s.get("read_only") is True, f"{name}: read_only root filesystem")
        need(s.get("cap_drop") == ["ALL"], f"{name}: cap_drop must be [ALL]")
        need("no-new-privileges:true" in s.get("security_opt", []), f"{name}: needs no-new-privileges")
        user = s.get("user", "10001")
        need(user.split(":")[0] not in ("0", "root"), f"{name}: must not run as root (user {user})")
        added = set(s.get("cap_add", []))
        entrypoint = s.get("entrypoint") or []
        if name == "producer":
            need(added == {"NET_RAW"}, f"{name}: capture needs NET_RAW alone, has {sorted(added)}")
            need(entrypoint == [CAPTURE_BINARY], f"{name}: must run {CAPTURE_BINARY}, runs {entrypoint}")
        else:
            need(not added, f"{name}: must add no capabilities, adds {sorted(added)}")
            need(CAPTURE_BINARY not in entrypoint, f"{name}: only the producer may run {CAPTURE_BINARY}")
    fail_with(problems)


# ---------------------------------------------------------------------------------------------------------------
# broken copies: each must be rejected by the checks above or by the validators


def _find(docs, kind, name=None):
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))


def _container(docs, name):
    return _find(docs, "Deployment" if name != "netanom-producer" else "DaemonSet", name)["spec"]["template"]["spec"]["containers"][0]


MUTATIONS = {
    # Kubernetes (applied to a rendered keda overlay)
    "kafkatopic-apiversion-v1beta2": lambda d: _find(d, "KafkaTopic").update(apiVersion="kafka.strimzi.io/v1beta2"),
    "scaledobject-apiversion-v1alpha2": lambda d: _find(d, "ScaledObject").update(apiVersion="keda.sh/v1alpha2"),
    "kafkatopic-zero-partitions": lambda d: _find(d, "KafkaTopic")["spec"].update(partitions=0),
    "kafkatopic-unknown-field": lambda d: _find(d, "KafkaTopic")["spec"].update(partition=12),
    "scaledobject-unknown-field": lambda d: _find(d, "ScaledObject")["spec"].update(maxReplicas=12),
    "scaledobject-offset-latest": lambda d: _find(d, "ScaledObject")["spec"]["triggers"][0]["metadata"].update(
        offsetResetPolicy="latest"),
    "detector-fixed-replicas": lambda d: _find(d, "Deployment", "netanom-detector")["spec"].update(replicas=3),
    "detector-unknown-field": lambda d: _container(d, "netanom-detector")["securityContext"].update(readOnlyRootFS=True),
    "producer-net-admin": lambda d: _container(d, "netanom-producer")["securityContext"]["capabilities"]["add"].append(
        "NET_ADMIN"),
    "producer-root": lambda d: _find(d, "DaemonSet")["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
    "router-egress-anywhere": lambda d: _find(d, "NetworkPolicy", "netanom-alert-router")["spec"]["egress"].append(
        {"ports": [{"port": 443}]}),
    "detector-ingress-anyone": lambda d: _find(d, "NetworkPolicy", "netanom-detector")["spec"]["ingress"][0].pop("from"),
    "detector-no-networkpolicy": lambda d: d.remove(_find(d, "NetworkPolicy", "netanom-detector")),
    "detector-no-pdb": lambda d: d.remove(_find(d, "PodDisruptionBudget", "netanom-detector")),
}
COMPOSE_MUTATIONS = {
    "compose-detector-no-healthcheck": lambda c: c["services"]["detector"].pop("healthcheck"),
    "compose-producer-net-admin": lambda c: c["services"]["producer"]["cap_add"].append("NET_ADMIN"),
    "compose-producer-root": lambda c: c["services"]["producer"].update(user="0:0"),
}


def cmd_mutate(src, out, name):
    if name in COMPOSE_MUTATIONS:
        with open(src) as f:
            doc = json.load(f)
        COMPOSE_MUTATIONS[name](doc)
        with open(out, "w") as f:
            json.dump(doc, f)
        return
    docs = copy.deepcopy(load_docs(src))
    MUTATIONS[name](docs)
    with open(out, "w") as f:
        yaml.safe_dump_all(docs, f)


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "schemas":
        cmd_schemas(*args)
    elif cmd == "split":
        cmd_split(args[0], args[1], args[2], set(args[3:]))
    elif cmd == "invariants":
        cmd_invariants(*args)
    elif cmd == "compose":
        cmd_compose(*args)
    elif cmd == "mutate":
        cmd_mutate(*args)
    elif cmd == "mutations":
        print("\n".join(list(MUTATIONS) + list(COMPOSE_MUTATIONS)))
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv)
