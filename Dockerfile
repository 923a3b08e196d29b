# The `baton` binary in a small image, run as a non-root user (used by
# docker-compose.yml). Build: `docker build -t baton:0.1.0 .`
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p baton-cli --bin baton

FROM debian:bookworm-slim
# ca-certificates: TLS to NATS; wget: the compose healthchecks (/healthz).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates wget \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/baton /usr/local/bin/baton
# The services keep no files: their state lives in NATS. /auth is where
# `baton auth` writes the identities (a volume, owned by the image's user).
RUN mkdir /auth && chown 10001:10001 /auth
USER 10001:10001
ENTRYPOINT ["baton"]
CMD ["--help"]
