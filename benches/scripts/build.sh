#!/usr/bin/env bash
# Builds the release binaries the side-by-side benchmark needs: ledged, ledge (CLI) and
# ledge-load with the `etcd` feature. That feature's etcd-client crate compiles etcd's protos
# with the system protoc, so protobuf-compiler is installed with apt first when missing.
#
#   benches/scripts/build.sh        # binaries land in target/release/
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ -z "${PROTOC:-}" ]; then
  ensure_cmd protoc protobuf-compiler
fi
cd "$LEDGE_ROOT"
cargo build --release -p ledge-api --bin ledged -p ledge-client --bin ledge \
  -p ledge-benches --bin ledge-load --features ledge-benches/etcd
