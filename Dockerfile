# The proxy image: linkerd2-proxy and the tools Linkerd's injector runs from the same image
# (proxy-init, the network validator, linkerd-await), at Linkerd's paths
# (`../shared/compat/init-containers.md` section 7). See README, "The image".
#
#   docker build -t <registry>/linkerd2-proxy:<tag> .
#
# `build` compiles the binaries (profile `image`: stripped, fat LTO; `make` builds jemalloc,
# the proxy's allocator); `runtime` is an empty base with only what the tools need, taken from
# Debian (iptables nft and legacy, whose
# multi-call binaries get NET_ADMIN/NET_RAW as file capabilities as in Linkerd's image,
# `sleep`, glibc); the last stage only adds files and configuration, so it builds without
# running anything (the image test builds it from the workspace's binaries with
# `--build-context build=<dir> --build-context runtime=<image>`). File capabilities cross
# stages through COPY, which BuildKit (Docker >= 23) and buildah preserve.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin git make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --profile image --locked -p linkerd-app -p linkerd-proxy-init \
      --bin linkerd2-proxy --bin linkerd2-proxy-init --bin linkerd2-network-validator --bin linkerd-await \
 && d=/out/usr/lib/linkerd \
 && mkdir -p "$d" \
 && cp target/image/linkerd2-proxy target/image/linkerd2-proxy-init \
       target/image/linkerd2-network-validator target/image/linkerd-await LICENSE "$d/" \
 && ln -s linkerd2-proxy "$d/linkerd2-proxy-identity" \
 && "$d/linkerd2-proxy" --version > "$d/linkerd2-proxy-version.txt" \
 && setcap cap_net_raw,cap_net_admin+eip "$d/linkerd2-proxy-init"

# The runtime's files, taken from Debian: iptables (nft and legacy) with file capabilities,
# `sleep`, and the libraries they and the binaries load (image/runtime-rootfs.sh).
FROM ${DEBIAN_IMAGE} AS runtime-files
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
COPY image/runtime-rootfs.sh /usr/local/bin/runtime-rootfs.sh
COPY --from=build /out/usr/lib/linkerd/ /tmp/linkerd/
RUN runtime-rootfs.sh /rootfs /tmp/linkerd/linkerd2-proxy /tmp/linkerd/linkerd2-proxy-init \
      /tmp/linkerd/linkerd2-network-validator /tmp/linkerd/linkerd-await

# Nothing but those files: no shell, no package manager.
FROM scratch AS runtime
COPY --from=runtime-files /rootfs/ /

FROM runtime
COPY --from=build /out/ /
# An empty base has no PATH: proxy-init finds iptables through it.
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    LINKERD2_PROXY_LOG=warn,linkerd=info \
    LINKERD2_PROXY_LOG_FORMAT=plain
# The chart's proxy uid (`proxy.uid`); the pod's securityContext sets it too, and runs
# proxy-init as 65534.
USER 2102
# The entrypoint Linkerd's injector relies on. Linkerd's is a wrapper that writes a key and a
# CSR for the proxy; this proxy makes its key in memory, so the name is the proxy itself.
ENTRYPOINT ["/usr/lib/linkerd/linkerd2-proxy-identity"]
