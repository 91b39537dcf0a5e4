#!/usr/bin/env bash
# Installs what building and testing Skiff needs on a fresh Debian machine (as root).
# Idempotent: only what is missing is installed.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
have protoc || need+=(protobuf-compiler)          # etcd-client's build needs protoc
have etcd || need+=(etcd-server)                  # the etcd backend tests and bench
have pkg-config || need+=(pkg-config)
have cc || need+=(build-essential)
have curl || need+=(curl)
pkg libseccomp-dev || need+=(libseccomp-dev)      # libcontainer's seccomp (RuntimeDefault)
[ -x /bin/busybox ] || need+=(busybox-static)     # test images are built from it
have docker-registry || need+=(docker-registry)   # a local registry for pull tests
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)  # pod networking (CNI)
have ip || need+=(iproute2)
have iptables || [ -x /usr/sbin/iptables ] || need+=(iptables)  # the bridge (ipMasq) and portmap CNI plugins run it
have nft || [ -x /usr/sbin/nft ] || need+=(nftables)  # the service dataplane
have script || need+=(bsdutils)                   # a terminal for `kubectl exec -it` tests
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
have cargo || { echo "cargo is missing: install the Rust toolchain (rustup) first" >&2; exit 1; }
