#!/usr/bin/env bash
# A 3-node Ledge region on loopback, for benchmarking (the Ledge half of side-by-side.sh).
#
#   benches/scripts/ledge-cluster.sh start DIR [BIN_DIR]   # prints the endpoints on stdout
#   benches/scripts/ledge-cluster.sh stop DIR
#
# Nodes n1..n3 run `ledged --region bench --data-dir DIR/nN --listen 127.0.0.1:771N
# --join 127.0.0.1:7711,127.0.0.1:7712,127.0.0.1:7713 --bootstrap-expect 3`, logging to
# DIR/nN.log. BIN_DIR holds ledged and ledge (default: target/release of this workspace;
# benches/scripts/build.sh builds them). start returns once `ledge cluster status` on
# 127.0.0.1:7711 reports a leader.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() { echo "usage: $0 start|stop DIR [BIN_DIR]" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
bin=${3:-$LEDGE_ROOT/target/release}
ports=(7711 7712 7713)
join="127.0.0.1:7711,127.0.0.1:7712,127.0.0.1:7713"

start() {
  local i
  for b in ledged ledge; do
    [ -x "$bin/$b" ] || die "$bin/$b not found; run benches/scripts/build.sh first"
  done
  for i in 0 1 2; do
    local name="n$((i + 1))" port=${ports[$i]}
    if pid_alive "$dir/$name.pid" ledged; then
      log "$name already running (pid $(cat "$dir/$name.pid"))"
      continue
    fi
    port_free "$port" || die "127.0.0.1:$port is in use"
    # Started with setsid so the node outlives this script and a Ctrl-C in its terminal.
    setsid "$bin/ledged" --region bench --data-dir "$dir/$name" --listen "127.0.0.1:$port" \
      --join "$join" --bootstrap-expect 3 \
      </dev/null >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    log "started $name (pid $!), log $dir/$name.log"
  done
  local status="" waited=0
  while :; do
    status=$("$bin/ledge" --endpoints 127.0.0.1:7711 --output json cluster status 2>&1 || true)
    [[ "$status" =~ \"leader_id\":[1-9] ]] && break
    for i in 1 2 3; do
      pid_alive "$dir/n$i.pid" ledged || die "n$i exited; see $dir/n$i.log"
    done
    [ $waited -lt 60 ] || die "no leader after 60 s; last status: $status"
    sleep 1
    waited=$((waited + 1))
  done
  log "Ledge region has a leader: $status"
  echo "$join" | tee "$dir/endpoints"
}

stop() {
  local i
  for i in 1 2 3; do stop_pidfile "$dir/n$i.pid" ledged; done
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
