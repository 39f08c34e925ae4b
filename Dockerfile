# Builds the operator image: docker build -t guestbook-operator .
# bookworm for the builder because the runtime below is Debian 12 too: the
# binary must not need a newer glibc than the one it runs with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts (BuildKit) keep the registry and compiled dependencies between
# builds; the binary is copied out because the target/ mount is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin guestbook-operator \
    && cp target/release/guestbook-operator /guestbook-operator

# distroless/cc: glibc and libgcc for the binary, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /guestbook-operator /guestbook-operator
# The chart's securityContext runs it as this uid (runAsNonRoot, runAsUser 65532).
USER 65532:65532
ENTRYPOINT ["/guestbook-operator"]
