#!/usr/bin/env bash
# Installs what building and testing Skiff needs on a fresh Debian machine (as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)   # etcd-client's build needs protoc
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)            # the etcd backend tests and bench
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install the Rust toolchain (rustup) first" >&2; exit 1; }
