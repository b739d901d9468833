# syntax=docker/dockerfile:1
# The sycri node image: what the Helm chart's DaemonSet runs on every sycri node.
#
# Build:  docker build -t sycri/sycri:0.1.0 .
#         buildah bud --format docker -t sycri/sycri:0.1.0 .   (podman/buildah: see below)
# In OCI format (buildah's and podman's default) HEALTHCHECK is dropped: the OCI image
# config has no such field. Build with --format docker to keep it; Kubernetes ignores it
# either way and uses the chart's startup, liveness and readiness probes instead.
# Without the node agent (nodeAgent.enabled=false in the chart), 126 MB smaller:
#         docker build --build-arg SYCRI_EXTRAS= -t sycri/sycri:0.1.0-noagent .
# Both stages use the same Debian release so the virtual environment built in the
# first runs unchanged on the second's /usr/bin/python3. The base is pinned by a dated
# tag; pin it harder with --build-arg DEBIAN_IMAGE=debian:bookworm-20251229-slim@sha256:...
ARG DEBIAN_IMAGE=debian:bookworm-20251229-slim

# --- build: the sycri wheel and a virtual environment holding it and its dependencies ---
FROM ${DEBIAN_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# Optional extras of the sycri wheel: node-agent (the Kubernetes client) by default.
ARG SYCRI_EXTRAS=node-agent
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python3 -m venv /opt/sycri \
    && /opt/sycri/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/sycri/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && whl="$(echo /dist/sycri-*.whl)" \
    && /opt/sycri/bin/pip install --no-cache-dir "${whl}${SYCRI_EXTRAS:+[${SYCRI_EXTRAS}]}" \
    && /opt/sycri/bin/pip uninstall -y pip \
    && /opt/sycri/bin/sycri version

# --- node: runtime tools and the installed wheel; no compilers, no pip, no apt lists ---
FROM ${DEBIAN_IMAGE} AS node
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 \
        runc \
        conmon \
        catatonit \
        squashfs-tools \
        squashfs-tools-ng \
        squashfuse \
        fuse3 \
        containernetworking-plugins \
        iptables \
        iproute2 \
        systemd \
        mount \
        gpgv \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/sycri
COPY --from=build /opt/sycri /opt/sycri
ENV PATH=/opt/sycri/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The defaults, so the image also runs without the chart's ConfigMap over /etc/sycri.
RUN sycri config show > /etc/sycri/config.yaml
LABEL org.opencontainers.image.title="sycri" \
      org.opencontainers.image.description="Kubernetes CRI v1 runtime for SIF images" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root is required: sycri creates namespaces, mounts, cgroups and runs runc.
USER root
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["sycri", "health", "--config", "/etc/sycri/config.yaml"]
# One process: sycri-node picks the host's iptables backend (legacy or nft, as
# kube-proxy's iptables-wrapper does) and execs sycri in its place; conmon monitors
# each container and outlives restarts. The chart's init container runs
# `sycri proxy install` instead (its own command).
ENTRYPOINT ["sycri-node", "serve"]
CMD ["--config", "/etc/sycri/config.yaml"]
