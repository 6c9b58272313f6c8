#!/usr/bin/env bash
# Side-by-side write benchmark: a 3-node Ledge region vs a 3-member etcd cluster, both on
# 127.0.0.1 of this machine, driven by the same load generator (ledge-load) with the same
# closed-loop workload: CLIENTS concurrent clients over a shared pool of gRPC connections, each
# putting a random 16-byte key with a 256-byte value, one put at a time, for DURATION seconds.
# Both systems acknowledge a put only once a quorum has committed and fsynced it.
#
#   benches/scripts/side-by-side.sh                     # 64 clients, 10 s per target
#   CLIENTS=1,16,64 DURATION=5 benches/scripts/side-by-side.sh
#   JSON=1 benches/scripts/side-by-side.sh              # one JSON line per level, with "target"
#
# What it does:
#   1. build.sh: release ledged, ledge and ledge-load (with the etcd feature); installs
#      protobuf-compiler with apt when protoc is missing. SKIP_BUILD=1 skips it.
#   2. ledge-cluster.sh start: Ledge on 127.0.0.1:7711-7713, region "bench".
#   3. etcd-cluster.sh start: etcd on 127.0.0.1:2379/22379/32379 (peers 2380/22380/32380);
#      installs etcd-server with apt when etcd is missing.
#   4. ledge-load --target ledge, then ledge-load --target etcd, then ledge-load on an eventual
#      keyspace of the same Ledge region (level one); prints all three results.
#   5. Stops both clusters on exit, also on failure or Ctrl-C.
# Data and logs go to a fresh temporary directory (WORK_DIR to choose it), removed on exit
# unless KEEP=1. Both clusters run for the whole script: the idle one costs a few heartbeats.
# Needs: bash, cargo, curl, apt-get (for the installs), free ports above.
set -euo pipefail
source "$(dirname "$0")/common.sh"
scripts="$LEDGE_ROOT/benches/scripts"

clients=${CLIENTS:-64}
duration=${DURATION:-10}
json_flag=()
[ -n "${JSON:-}" ] && json_flag=(--json)
work=${WORK_DIR:-$(mktemp -d /tmp/ledge-side-by-side.XXXXXX)}
mkdir -p "$work"

load_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$load_pid" ] && kill -0 "$load_pid" 2>/dev/null; then kill "$load_pid" 2>/dev/null || true; fi
  "$scripts/ledge-cluster.sh" stop "$work/ledge" || true
  "$scripts/etcd-cluster.sh" stop "$work/etcd" || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else log "kept data and logs in $work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -n "${SKIP_BUILD:-}" ] || "$scripts/build.sh"
bin="$LEDGE_ROOT/target/release"

ledge_eps=$("$scripts/ledge-cluster.sh" start "$work/ledge" "$bin")
etcd_eps=$("$scripts/etcd-cluster.sh" start "$work/etcd")

# Runs ledge-load in the background and waits for it, so a SIGTERM to this script stops the
# run at once (bash runs traps only between foreground commands).
run_load() {
  "$bin/ledge-load" --clients "$clients" --duration "$duration" "${json_flag[@]}" "$@" &
  load_pid=$!
  wait "$load_pid"
  load_pid=""
}

echo "== Ledge $(cd "$LEDGE_ROOT" && git rev-parse --short HEAD 2>/dev/null || true): 3 nodes, $ledge_eps"
run_load --target ledge --endpoints "$ledge_eps"
echo
echo "== $(etcd --version | head -1): 3 members, $etcd_eps"
run_load --target etcd --endpoints "$etcd_eps"
echo
# The same region, writing to an eventual keyspace at level one: durable on the node that took
# the write, then pushed to the other two (no Raft round).
echo "== Ledge eventual keyspace (level one): 3 nodes, $ledge_eps"
"$bin/ledge" --endpoints "$ledge_eps" keyspace create bench_eventual --mode eventual >/dev/null
run_load --target ledge --endpoints "$ledge_eps" --keyspace bench_eventual
