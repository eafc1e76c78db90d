# syntax=docker/dockerfile:1
#
# mcpgate container image.
#
#   docker build -t mcpgate:dev .                      # profile-guided build (PGO), the default
#   docker build --build-arg PGO=0 -t mcpgate:dev .    # one plain release build: faster to build,
#                                                      # ~1.2x slower to run (tests/load/README.md)
#   docker run --read-only --tmpfs /tmp \
#     -v "$PWD/gateway.toml:/etc/mcpgate/gateway.toml:ro" \
#     -v "$PWD/tls:/etc/mcpgate/tls:ro" \
#     -v mcpgate-state:/var/lib/mcpgate \
#     -e MCPGATE_SESSION_SECRET -e MCPGATE_INTROSPECTION_SECRET \
#     -p 8443:8443 -p 9464:9464 mcpgate:dev
#
# Runtime layout (the Kubernetes manifests in deploy/kubernetes rely on it):
#   /usr/local/bin/mcpgate        the binary (ENTRYPOINT)
#   /etc/mcpgate/gateway.toml     configuration; NOT baked in, mount it read-only
#   /etc/mcpgate/tls/             TLS certificate and key referenced by [server.tls]
#   /var/lib/mcpgate              state_dir: the only path the process writes to.
#                                 Mount a volume here (emptyDir in Kubernetes);
#                                 everything else works with a read-only root FS.
#   8443/tcp                      public listener   ([server] listen)
#   9464/tcp                      admin listener    ([admin] listen: /metrics /healthz /readyz)
#
# The final image is distroless: no shell, no package manager, uid/gid 65532.
# Other subcommands replace CMD, e.g.:
#   docker run --rm -v ...:/etc/mcpgate:ro IMAGE check --config /etc/mcpgate/gateway.toml

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
# PGO=1: the profile-guided build that the README's performance figures are for. An instrumented
# build is trained by `tests/load/run.sh pgo` (a local nginx upstream, wrk and h2load on loopback,
# about a minute), then rebuilt with the profile: two release builds instead of one.
ARG PGO=1
WORKDIR /build
# The training's tools, at the versions of the image's Debian release (pins would break as soon
# as Debian replaces a package), and the llvm-profdata of this toolchain's LLVM.
# hadolint ignore=DL3008
RUN if [ "$PGO" = 1 ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends nginx-light wrk nghttp2-client openssl curl \
            python3 python3-cryptography \
        && rm -rf /var/lib/apt/lists/* \
        && rustup component add llvm-tools; \
    fi
# .dockerignore is an allowlist: only Cargo.toml, Cargo.lock, the Rust sources and tests/
# (the PGO training harness) reach the build context (no target/, no .git, no local state
# dirs with dev keys).
COPY . .
# The cache mounts keep the crates.io registry and target/ between builds, which
# gives incremental dependency caching without a dummy-main layer trick.
# aws-lc-sys builds with the C compiler already in this image (no cmake/clang needed).
# PIN=0: the builder may have a single CPU; the training counts code paths, not time.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    if [ "$PGO" = 1 ]; then \
        PIN=0 bash tests/load/run.sh pgo \
        && install -D -m 0755 target/pgo/use/release/mcpgate /out/mcpgate; \
    else \
        cargo build --release --locked --bin mcpgate \
        && install -D -m 0755 target/release/mcpgate /out/mcpgate; \
    fi \
    && install -d -m 0700 /out/state

# Debian 12 runtime to match the bookworm builder's glibc. Pin by digest in
# production (gcr.io/distroless/cc-debian12:nonroot@sha256:...).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mcpgate" \
      org.opencontainers.image.description="OAuth 2.1 resource-server gateway for MCP servers" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/mcpgate /usr/local/bin/mcpgate
COPY --from=builder --chown=65532:65532 /out/state /var/lib/mcpgate
USER 65532:65532
WORKDIR /var/lib/mcpgate
VOLUME ["/var/lib/mcpgate"]
EXPOSE 8443 9464
ENTRYPOINT ["/usr/local/bin/mcpgate"]
CMD ["--config", "/etc/mcpgate/gateway.toml", "--log-format", "json"]
