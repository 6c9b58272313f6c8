#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, for benchmarking Ledge against it.
#
#   benches/scripts/etcd-cluster.sh start DIR   # prints the client endpoints on stdout
#   benches/scripts/etcd-cluster.sh stop DIR
#
# Members m1..m3 listen for clients on 127.0.0.1:2379/22379/32379 and for peers on
# 127.0.0.1:2380/22380/32380 (override with ETCD_CLIENT_PORTS / ETCD_PEER_PORTS, three
# space-separated ports each). Data, logs (DIR/mN.log) and pid files live under DIR. etcd runs
# with its defaults otherwise: every write is fsynced by a quorum before it is acknowledged.
# `etcd` comes from Debian's etcd-server package, installed with apt-get when not on PATH.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
read -r -a client_ports <<<"${ETCD_CLIENT_PORTS:-2379 22379 32379}"
read -r -a peer_ports <<<"${ETCD_PEER_PORTS:-2380 22380 32380}"
[ ${#client_ports[@]} -eq 3 ] && [ ${#peer_ports[@]} -eq 3 ] || die "need three client and three peer ports"

endpoints() {
  local IFS=,
  local eps=()
  for p in "${client_ports[@]}"; do eps+=("127.0.0.1:$p"); done
  echo "${eps[*]}"
}

healthy() { # healthy PORT
  local body
  body=$(curl -fsS --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null || true)
  [[ "$body" == *'"health":"true"'* ]]
}

start() {
  ensure_cmd etcd etcd-server
  ensure_cmd curl curl
  local initial="" i
  for i in 0 1 2; do initial+="${initial:+,}m$((i + 1))=http://127.0.0.1:${peer_ports[$i]}"; done
  for i in 0 1 2; do
    local name="m$((i + 1))"
    if pid_alive "$dir/$name.pid" etcd; then
      log "$name already running (pid $(cat "$dir/$name.pid"))"
      continue
    fi
    for p in "${client_ports[$i]}" "${peer_ports[$i]}"; do
      port_free "$p" || die "127.0.0.1:$p is in use"
    done
    # Started with setsid so the member outlives this script and a Ctrl-C in its terminal.
    setsid etcd --name "$name" --data-dir "$dir/$name" \
      --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
      --initial-cluster "$initial" --initial-cluster-token ledge-bench --initial-cluster-state new \
      --logger zap --log-outputs stderr \
      </dev/null >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    log "started $name (pid $!), log $dir/$name.log"
  done
  local waited=0
  for i in 0 1 2; do
    until healthy "${client_ports[$i]}"; do
      pid_alive "$dir/m$((i + 1)).pid" etcd || die "m$((i + 1)) exited; see $dir/m$((i + 1)).log"
      [ $waited -lt 300 ] || die "etcd not healthy after 30 s; see $dir/m*.log"
      sleep 0.1
      waited=$((waited + 1))
    done
  done
  log "etcd cluster healthy ($(etcd --version | head -1))"
  endpoints | tee "$dir/endpoints"
}

stop() {
  local i
  for i in 1 2 3; do stop_pidfile "$dir/m$i.pid" etcd; done
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
