# syntax=docker/dockerfile:1.7
# netanom: one image for every role (`netanom producer | detector | alert-router | run`).
#   docker build -t netanom:dev .
#   docker run --rm netanom:dev detector --brokers kafka:9092
# Live capture: /usr/local/bin/netanom-capture is a copy of the binary with the file capability cap_net_raw+ep, so
# the producer can run as uid 10001 when the runtime grants NET_RAW (compose cap_add, Kubernetes securityContext);
# `netanom` itself carries no capability. See deploy/README.md.

FROM rust:1-bookworm AS builder
# libpcap-dev for the pcap crate; libssl-dev and libcurl4-openssl-dev for librdkafka's TLS, SASL/SCRAM and
# OAUTHBEARER/OIDC. Debian package versions are not pinned: the base image tag is the pin and
# point-release security fixes should flow in on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpcap-dev libssl-dev libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p netanom \
    && install -D -m 0755 target/release/netanom /out/netanom

FROM debian:bookworm-slim AS runtime
# Runtime libraries only: libpcap for capture, CA certificates for TLS to Kafka and https webhooks, libssl and
# libcurl for librdkafka (TLS, SCRAM, OIDC token requests), curl for container healthchecks (GET /healthz),
# libcap2-bin to set the capture binary's file capability below (removed again there).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpcap0.8 ca-certificates libssl3 libcurl4 curl libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 netanom \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin netanom
COPY --from=builder /out/netanom /usr/local/bin/netanom
# netanom-capture: the same binary with CAP_NET_RAW as a file capability, for the producer only (a non-root process
# gets no capability from the container's set otherwise). The other roles run `netanom`, and a container whose
# bounding set lacks NET_RAW cannot execute netanom-capture at all. Set-user/group-id bits are stripped from every
# file, so nothing else in the image can raise privileges.
RUN cp /usr/local/bin/netanom /usr/local/bin/netanom-capture \
    && setcap cap_net_raw+ep /usr/local/bin/netanom-capture \
    && apt-get purge -y --auto-remove libcap2-bin \
    && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
USER 10001:10001
# /healthz, /readyz and /metrics of every role (and the detector's scoring API).
EXPOSE 9100
ENTRYPOINT ["netanom"]
CMD ["--help"]
