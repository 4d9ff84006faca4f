# syntax=docker/dockerfile:1
#
# The election image: the Rust binary on distroless cc (the glibc and libgcc
# it links against, CA certificates; no shell, no package manager), running
# as the unprivileged `nonroot` user (65532).
#
#   docker build -t election:0.1.0 .
#
# Expected size: ~28 MB (gcr.io/distroless/cc-debian12 ~23 MB + the ~5 MB
# stripped, LTO-built binary).
#
# Layer order keeps rebuilds cheap: the dependency graph (Cargo.toml,
# Cargo.lock) is built first against placeholder sources, so editing src/
# only recompiles the crate itself.

FROM rust:1.95-bookworm AS build
WORKDIR /build

# 1. Dependencies only, against placeholder src/lib.rs and src/main.rs.
#    The benches are declared in Cargo.toml, so cargo needs their sources to
#    read the manifest (it does not build them); likewise the manifest of the
#    workspace's other member, the task menu xtask/ (a placeholder main: it
#    is not built either). vendor/: the patched zookeeper-client
#    ([patch.crates-io]). build.rs: the link options.
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches ./benches
COPY vendor/zookeeper-client ./vendor/zookeeper-client
COPY xtask/Cargo.toml ./xtask/
RUN mkdir src xtask/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > xtask/src/main.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/election target/release/deps/election-* \
        target/release/deps/libelection-* target/release/.fingerprint/election-*

# 2. The crate itself.
COPY src ./src
RUN cargo build --release --locked \
    && mkdir -p /out/var/lib/election \
    && install -m 0755 target/release/election /out/election

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/election /usr/local/bin/election
# Default file-dir of the chart and of docker-compose.yml, owned by nonroot
# so that a fresh named volume mounted here is writable.
COPY --from=build --chown=65532:65532 /out/var/lib/election /var/lib/election
USER 65532:65532
EXPOSE 8080
# Exec form: the daemon is PID 1 and receives SIGTERM directly (it handles
# it: release leadership, close the ZooKeeper session, exit 0).
ENTRYPOINT ["/usr/local/bin/election"]
CMD ["run"]
