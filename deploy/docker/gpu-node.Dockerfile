# A gpu-node (`gpu-node serve`): the processors on an NVIDIA GPU (candle
# with CUDA), joining a control node's cluster. From the repository's root:
#   docker build -f deploy/docker/gpu-node.Dockerfile \
#     --build-arg CUDA_COMPUTE_CAP=89 -t dreamstream-gpu-node .
#   docker run --gpus all -e DREAMSTREAM_CLUSTER_COOKIE=... dreamstream-gpu-node \
#     serve --config /etc/dreamstream/gpu-node.toml
FROM nvidia/cuda:12.6.3-devel-ubuntu24.04 AS build
# The GPU's compute capability (8.9: Ada; 8.6: Ampere), for candle's kernels.
ARG CUDA_COMPUTE_CAP=89
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl g++ pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain 1.94.0
ENV PATH=/root/.cargo/bin:$PATH \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gpu-node --features cuda

FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/dreamstream dreamstream
COPY --from=build /src/target/release/gpu-node /usr/local/bin/gpu-node
USER 10001
WORKDIR /var/lib/dreamstream
ENTRYPOINT ["gpu-node"]
CMD ["serve"]
