# facegate in a container: the binary, ONNX Runtime and the three model packs, fetched by the same
# pinned, hash-checked `scripts/setup` that `make setup` runs, with the same pins.
#
#   docker build -t facegate .
#   docker run -d --name facegate -p 127.0.0.1:8080:8080 -v facegate-data:/var/lib/facegate facegate
#   docker exec facegate facegate tenant create acme     # refused while serve holds SQLite: see README
#
# The pack is chosen at run time (`-e FACEGATE_PACK=buffalo_s` for the non-commercial one); all three are in the image.

# The toolchain the project is built and tested with (rust-version in Cargo.toml is the floor).
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
# scripts/setup fetches through pip; Debian's pip installs only under --target there, which is
# all setup does.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/setup
RUN cargo build --release --locked -p facegate

FROM debian:bookworm-slim
# CA roots for an s3:// bulk source over HTTPS; libstdc++ for ONNX Runtime is in the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/facegate facegate \
    && install -d -m 0700 -o facegate -g facegate /var/lib/facegate
WORKDIR /opt/facegate
COPY --from=build /src/target/release/facegate /usr/local/bin/facegate
COPY --from=build /src/.facegate/onnxruntime /opt/facegate/.facegate/onnxruntime
COPY --from=build /src/.facegate/models /opt/facegate/.facegate/models
# The packs' licence texts and notices travel with their weights.
COPY --from=build /src/packs /opt/facegate/packs
# The binary finds the runtime and the packs in .facegate/ under its working directory.
ENV FACEGATE_DATA_DIR=/var/lib/facegate \
    FACEGATE_LISTEN=0.0.0.0:8080 \
    FACEGATE_METRICS_LISTEN=0.0.0.0:9464 \
    FACEGATE_LOG_FORMAT=json
USER facegate
VOLUME /var/lib/facegate
# 8080: the APIs and the console (publish it behind the TLS proxy); 9464: /metrics, for the
# monitoring network only.
EXPOSE 8080 9464
# serve finishes in-flight requests for shutdown_grace_secs (30 s) after SIGTERM: give
# `docker stop` a longer timeout (`-t 40`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["facegate"]
CMD ["serve"]
