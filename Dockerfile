# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as
# a non-root user. The image holds the router, the reconciler and the
# reference region server.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake protobuf-compiler libprotobuf-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked \
      -p switchyard-cli -p switchyard-reconciler -p switchyard-region \
 && mkdir /out \
 && cp target/dist/switchyard target/dist/switchyard-reconcile target/dist/switchyard-region /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/switchyard --create-home switchyard
COPY --from=build /out/ /usr/local/bin/
USER switchyard
WORKDIR /var/lib/switchyard
EXPOSE 8080 8443 9901 9902
ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard/switchyard.yaml"]
