# The proxy image: linkerd2-proxy and the tools Linkerd's injector runs from the same image
# (proxy-init, the network validator, linkerd-await), at Linkerd's paths
# (`../shared/compat/init-containers.md` section 7). See README, "The image".
#
#   docker build -t <registry>/linkerd2-proxy:<tag> .
#
# `build` compiles the binaries (profile `image`: stripped, fat LTO); `runtime` is Debian slim
# with iptables (nft and legacy) whose multi-call binaries get NET_ADMIN/NET_RAW as file
# capabilities, as in Linkerd's image; the last stage only adds files and configuration, so
# it builds without running anything (the image test builds it from the workspace's binaries
# with `--build-context build=<dir> --build-context runtime=<image>`).

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin git \
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

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables libcap2-bin \
 && setcap cap_net_raw,cap_net_admin+eip /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi \
 && apt-get purge -y --auto-remove libcap2-bin \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

FROM runtime
COPY --from=build /out/ /
ENV LINKERD2_PROXY_LOG=warn,linkerd=info \
    LINKERD2_PROXY_LOG_FORMAT=plain
# The chart's proxy uid (`proxy.uid`); the pod's securityContext sets it too, and runs
# proxy-init as 65534.
USER 2102
# The entrypoint Linkerd's injector relies on. Linkerd's is a wrapper that writes a key and a
# CSR for the proxy; this proxy makes its key in memory, so the name is the proxy itself.
ENTRYPOINT ["/usr/lib/linkerd/linkerd2-proxy-identity"]
