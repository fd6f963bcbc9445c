# syntax=docker/dockerfile:1
#
# One image, four programs; the command picks the component:
#   docker run IMAGE                  the all-in-one `vstream` (embedded mode, not deployed on AWS)
#   docker run IMAGE ingest           RTMP/WebSocket ingest
#   docker run IMAGE encoder          ffmpeg encoder
#   docker run IMAGE coordinator-fn   coordinator as a plain HTTP server (on AWS it runs on Lambda,
#                                     packaged by cargo lambda instead; see infra/README.md)
# Build: docker build -t vstream .   (BuildKit; for Fargate add --platform linux/amd64 or linux/arm64)

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# --workspace: the binaries may live in member crates (ingest/, encoder/, coordinator-fn/) as
# well as in the root package. The target directory is a cache mount, so the binaries are
# copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace \
        --bin vstream --bin ingest --bin encoder --bin coordinator-fn \
 && mkdir -p /out \
 && cp target/release/vstream target/release/ingest target/release/encoder target/release/coordinator-fn /out/

FROM debian:bookworm-slim
# ffmpeg/ffprobe: the encoder; ca-certificates: TLS to S3, Redis (rediss://), the web app;
# curl: container health checks (ECS, compose); tini: PID 1 that forwards SIGTERM and reaps ffmpeg.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ffmpeg ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/vstream --create-home --shell /usr/sbin/nologin vstream

COPY --from=builder /out/ /usr/local/bin/

USER vstream
WORKDIR /var/lib/vstream
# 1935: RTMP; 8080: HTTP (WebSocket publish, media pull, /healthz, /metrics, embedded player).
EXPOSE 1935 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["vstream"]
