#!/bin/sh
# Assembles the image's runtime root filesystem in DEST from a Debian system that has
# `iptables` and `libcap2-bin` installed: iptables' multi-call binaries (nft and legacy, IPv4
# and IPv6, with the names proxy-init runs), their extensions, `sleep` (the preStop hook), and
# every shared library these and the BINARIES given after DEST load (glibc included, so the
# tree is self-consistent on an empty base). The multi-call binaries get NET_ADMIN/NET_RAW as
# file capabilities, as in Linkerd's image (proxy-init runs them as uid 65534). No shell or
# package manager is copied.
#
#   runtime-rootfs.sh DEST [BINARY...]
set -eu
dest=$1
shift

# Files at their resolved paths (links followed), and a link at the path asked for.
put() {
  for f in "$@"; do
    real=$(readlink -f "$f")
    mkdir -p "$dest$(dirname "$real")"
    cp "$real" "$dest$real"
    # The path the loader asks for, when a link led there (e.g. /lib64/ld-linux-x86-64.so.2).
    if [ "$f" != "$real" ] && [ ! -e "$dest$f" ]; then
      mkdir -p "$dest$(dirname "$f")"
      ln -s "$real" "$dest$f"
    fi
  done
}

# The libraries a binary links.
libs() {
  ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true
}

# A file and its libraries.
copy() {
  put "$1" $(libs "$1")
}

for f in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/bin/sleep; do
  copy "$f"
done
# Only the libraries of the binaries given: they are added to the image on their own.
for f in "$@"; do
  put $(libs "$f")
done
for ext in /usr/lib/*/xtables/*.so; do
  copy "$ext"
done
mkdir -p "$dest/bin" "$dest/run" "$dest/tmp" "$dest/etc"
ln -s /usr/bin/sleep "$dest/bin/sleep"
for family in iptables ip6tables; do
  for mode in nft legacy; do
    for suffix in "" -save -restore; do
      ln -s "xtables-$mode-multi" "$dest/usr/sbin/$family-$mode$suffix"
    done
  done
  # Plain mode (`iptables`): nft, Debian's default alternative.
  for suffix in "" -save -restore; do
    ln -s xtables-nft-multi "$dest/usr/sbin/$family$suffix"
  done
done
# Name resolution for `linkerd-await`'s `localhost` (the kubelet mounts its own /etc/hosts).
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$dest/etc/hosts"
printf 'hosts: files dns\n' > "$dest/etc/nsswitch.conf"
for multi in xtables-nft-multi xtables-legacy-multi; do
  setcap cap_net_raw,cap_net_admin+eip "$dest/usr/sbin/$multi"
done
