# syntax=docker/dockerfile:1
#
# Relay's container image: build with the Swift 6.3 toolchain on Debian 12 (bookworm), run on debian:bookworm-slim
# with the Swift standard library and Foundation linked statically, so the runtime stage needs only the C libraries
# the Package.swift system-library targets link (libcurl, libmicrohttpd, http-parser, OpenSSL, SQLite, libpq) and CA certificates.
#
#   docker build -t relay .
#   docker run -v relay-data:/data -v "$PWD/relay.json5:/etc/relay/relay.json5:ro" -p 8080:8080 relay
#
# docs/deploy.md has the rest (config, secrets, compose, SIGTERM, upgrading). `make container-check`
# (Tests/container/check-libs, part of `make test`) fails when the release binary's ldd needs a library that no
# package installed below provides: keep the runtime apt-get install line in step with it.

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build ----------------------------------------------------------------------------------------------------
FROM ${SWIFT_IMAGE} AS build

# The -dev packages of Package.swift's system-library targets (CCurl, CMicroHTTPD, COpenSSL, CSQLite, CPostgres).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcurl4-openssl-dev libmicrohttpd-dev libhttp-parser-dev libssl-dev libsqlite3-dev libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The manifest first (a layer that changes rarely), then the sources. Tests/ is needed too: SwiftPM checks that
# every target the manifest declares, test targets included, has its directory.
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests

# The cache mount keeps .build between image builds (BuildKit); the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/src/.build \
    swift build -c release --static-swift-stdlib --product relay \
 && install -D -m 0755 "$(swift build -c release --static-swift-stdlib --product relay --show-bin-path)/relay" \
      /out/relay

# ---- runtime --------------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# Only what the binary loads (checked against ldd by Tests/container/check-libs) and the CA bundle libcurl and
# OpenSSL verify destinations with. libcurl4, libmicrohttpd12, libhttp-parser2.9, libssl3, libsqlite3-0 and libpq5 are the binary's direct
# dependencies; libstdc++6 is one too (the static Swift runtime needs it) and is named although apt already has it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libcurl4 libmicrohttpd12 libhttp-parser2.9 libssl3 libsqlite3-0 libpq5 libstdc++6 \
 && rm -rf /var/lib/apt/lists/*

# A fixed, numeric non-root user (Kubernetes' runAsNonRoot can check a number). /data holds the SQLite database
# (relay.db and its -wal/-shm files): point store.sqlite at /data/relay.db.
RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /data --no-create-home --shell /usr/sbin/nologin relay \
 && mkdir -p /data /etc/relay \
 && chown relay:relay /data

COPY --from=build /out/relay /usr/local/bin/relay

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# The relay stops in order on SIGTERM: stops taking connections, finishes requests and delivery attempts in
# flight (server.shutdownTimeout, default 10s), closes the store, exits 0. Give `docker stop` more than that
# (`docker stop -t 30`, compose `stop_grace_period: 30s`).
STOPSIGNAL SIGTERM

# GET /healthz on the webhook listener, with bash's /dev/tcp (no curl in the image). The listener must accept
# connections on 127.0.0.1 inside the container (listen "0.0.0.0:8080"); another port: set RELAY_HEALTH_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${RELAY_HEALTH_PORT:-8080} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == *' 200 '* ]]"]

ENTRYPOINT ["/usr/local/bin/relay"]
CMD ["serve", "--config", "/etc/relay/relay.json5"]
