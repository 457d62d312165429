# syntax=docker/dockerfile:1
# Multi-stage build: a release binary built on Debian, shipped in a distroless non-root image.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tierguard && strip target/release/tierguard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tierguard /usr/local/bin/tierguard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tierguard"]
CMD ["run"]
