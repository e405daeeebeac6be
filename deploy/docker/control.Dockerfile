# The control node: `dreamstream serve` (pages, WebSockets, WHIP/WHEP, the
# stream actors, one in-process CPU worker; SQLite in /var/lib/dreamstream
# unless DATABASE_URL is set). From the repository's root:
#   docker build -f deploy/docker/control.Dockerfile -t dreamstream .
#   docker run -p 8080:8080 -p 8189:8189/udp \
#     -e DREAMSTREAM_MEDIA__PUBLIC_IPS=203.0.113.7 dreamstream
FROM rust:1.94-slim-bookworm AS build
# g++ and nasm: openh264's vendored C++ and assembly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ nasm pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dreamstream --bin dreamstream

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/dreamstream dreamstream
COPY --from=build /src/target/release/dreamstream /usr/local/bin/dreamstream
USER 10001
WORKDIR /var/lib/dreamstream
# HTTP on 8080; WebRTC media on one UDP port; GPU nodes join on 4697 (DREAMSTREAM_CLUSTER_LISTEN).
ENV DREAMSTREAM_LISTEN=0.0.0.0:8080 \
    DREAMSTREAM_DATA_DIR=/var/lib/dreamstream \
    DREAMSTREAM_MEDIA__UDP_LISTEN=0.0.0.0:8189
EXPOSE 8080 8189/udp 4697
HEALTHCHECK --interval=10s --timeout=3s CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["dreamstream"]
CMD ["serve"]
