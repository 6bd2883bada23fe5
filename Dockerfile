# syntax=docker/dockerfile:1
#
# flowgate container image.
#
#   docker build -t flowgate:dev --build-arg VERSION=$(git describe --tags --always --dirty) .
#   docker build -t fakeflow:dev --target fakeflow .      # the Flowise stand-in
#
# The default (last) stage is the gateway. It runs as the distroless
# "nonroot" user (65532), needs no shell, curl or config file: the embedded
# defaults work, and `-config FILE` or flags override them.

ARG GO_VERSION=1.26

# ---- deps: module download, shared by both builds --------------------------
# Runs on the builder's own platform and cross-compiles (pure Go, no cgo),
# so `docker buildx build --platform linux/amd64,linux/arm64` is fast.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS deps
WORKDIR /src
ENV CGO_ENABLED=0
# Dependencies first, so source edits do not re-download modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .

# ---- build: the gateway -----------------------------------------------------
FROM deps AS build
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/flowgate ./cmd/flowgate && mkdir -p /out/state

# ---- build-fakeflow: only built for the fakeflow target ----------------------
FROM deps AS build-fakeflow
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/fakeflow ./cmd/fakeflow

# ---- fakeflow: optional target, a Flowise-compatible stand-in upstream -----
# Carries flowgate too, only so its `healthcheck` subcommand can probe
# fakeflow's /api/v1/ping without a shell or curl in the image.
FROM gcr.io/distroless/static-debian12:nonroot AS fakeflow
COPY --from=build-fakeflow /out/fakeflow /usr/local/bin/fakeflow
COPY --from=build /out/flowgate /usr/local/bin/flowgate
USER 65532:65532
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/flowgate", "healthcheck", "-url", "http://127.0.0.1:3000/api/v1/ping"]
ENTRYPOINT ["/usr/local/bin/fakeflow"]

# ---- flowgate: the default target -----------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot AS flowgate
ARG VERSION=dev
LABEL org.opencontainers.image.title="flowgate" \
      org.opencontainers.image.description="TLS-terminating reverse proxy and observability gateway for LLM flow servers" \
      org.opencontainers.image.source="https://github.com/flowgate/flowgate" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/flowgate /usr/local/bin/flowgate
# The embedded usage ledger and quota state when no Redis is configured
# (metering.store_dir). Owned by nonroot, so a named volume mounted here
# starts writable; mount one, or the state lives and dies with the container.
COPY --from=build --chown=65532:65532 /out/state /var/lib/flowgate
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8080: proxy listener. 8443: HTTPS (tls.listen, when tls.mode is on).
# 9090: /metrics, /healthz, /readyz.
# The admin API (9091) listens on loopback only and is not exposed.
EXPOSE 8080 8443 9090
# Liveness of the process, not of the upstreams: /healthz on the metrics
# listener. Pass -url to the healthcheck if server.metrics_listen moves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/flowgate", "healthcheck"]
# SIGTERM drains in-flight requests and streams for up to
# server.shutdown_timeout (30s): give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/flowgate"]
