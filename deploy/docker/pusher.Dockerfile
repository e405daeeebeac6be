# The push client for a Raspberry Pi (64-bit Raspberry Pi OS, arm64):
# `dreamstream-push`, cross-compiled with Debian's aarch64 toolchain (as CI
# checks it), and ffmpeg for files and cameras. From the repository's root:
#   docker buildx build --platform linux/arm64 \
#     -f deploy/docker/pusher.Dockerfile -t dreamstream-push .
#   docker run --device /dev/video0 -e DREAMSTREAM_SERVER=http://10.0.0.1:8080 \
#     -e DREAMSTREAM_STREAM_NAME=alice -e DREAMSTREAM_STREAM_KEY=dsk_... dreamstream-push
FROM --platform=$BUILDPLATFORM rust:1.94-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add aarch64-unknown-linux-gnu
ENV CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dreamstream-push --target aarch64-unknown-linux-gnu

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --groups video dreamstream
COPY --from=build /src/target/aarch64-unknown-linux-gnu/release/dreamstream-push /usr/local/bin/dreamstream-push
USER 10001
ENTRYPOINT ["dreamstream-push"]
CMD ["push", "/dev/video0", "--fps", "15", "--size", "640x480"]
