# syntax=docker/dockerfile:1
# Multi-stage build: a release binary built on Debian, shipped in a distroless non-root image.
FROM rust:1.89-bookworm AS build
WORKDIR /src
# The build has no .git: pass the commit for `tierguard version` and tierguard_build_info,
# e.g. --build-arg TIERGUARD_GIT_COMMIT=$(git rev-parse HEAD) (else it reports "unknown").
ARG TIERGUARD_GIT_COMMIT=""
ENV TIERGUARD_GIT_COMMIT=${TIERGUARD_GIT_COMMIT}
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
# The workspace's test-only member must be present for cargo to read the workspace.
COPY crates ./crates
RUN cargo build --release --locked --bin tierguard && strip target/release/tierguard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tierguard /usr/local/bin/tierguard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tierguard"]
CMD ["run"]
