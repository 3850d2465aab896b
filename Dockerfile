# plateau in a container: a multi-stage build, the binary on a slim Debian with git (for `plateau publish`) and CA
# certificates, run as an unprivileged user.
#   docker build -t plateau .
#   docker run --rm -v "$PWD:/work" -w /work plateau run scenarios/quickstart.toml
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin plateau \
 && strip target/release/plateau

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin plateau
COPY --from=build /src/target/release/plateau /usr/local/bin/plateau
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/plateau"]
CMD ["--help"]
