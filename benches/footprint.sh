#!/usr/bin/env bash
# Ledge's footprint: memory and disk of a node as its data grows, and start-up time with a
# large data set, with etcd's beside it for the same keys, in one run on this machine.
#
#   benches/footprint.sh                                  # KEYS=100000,1000000
#   KEYS=100000 TOPOLOGIES=single SKIP_ETCD=1 benches/footprint.sh   # a quick run
#   MEMORY_MB=128 SKIP_BUILD=1 KEEP=1 WORK_DIR=/tmp/fp benches/footprint.sh
#
# For each topology (a one-node region, a 3-node region) and each KEYS count, on fresh data:
#   - load: ledge-load writes KEYS fresh keys (16-byte keys, VALUE_SIZE-byte values, default
#     256) into the strong `default` keyspace at CLIENTS (default 64) clients;
#   - RSS: every ledged's resident set is sampled every 0.5 s; reported are the largest sample
#     of any node during the load, right after it, and after IDLE seconds (default 20) of quiet;
#   - disk: after the idle time (the node checkpoints when idle and purges its log behind the
#     checkpoint), each node's data directory by part, as `ledge cluster status` reports it,
#     and its ratio to the live data (KEYS × (key + value) bytes);
#   - start-up (one-node region, largest KEYS): the node is stopped and started again; reported
#     is the time from exec until a get is answered and until a put is acknowledged.
# etcd (Debian's etcd-server, 3 members, installed with apt when missing) gets the same load for
# the largest KEYS count; its RSS and its data directories' size are reported beside Ledge's.
# Ledge runs with its default memory budget unless MEMORY_MB is set (passed as LEDGE_MEMORY_MB).
#
# The report goes to benches/results/footprint-YYYYMMDD-HHMMSS.md (path printed last). Data and
# logs go to a fresh temporary directory (WORK_DIR to choose), removed unless KEEP=1; only what
# this script started is stopped, also on failure or Ctrl-C. Binaries come from
# $CARGO_TARGET_DIR/release (default target/release), built first unless SKIP_BUILD=1.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"
scripts="$LEDGE_ROOT/benches/scripts"

IFS=, read -r -a key_counts <<<"${KEYS:-100000,1000000}"
IFS=, read -r -a topologies <<<"${TOPOLOGIES:-single,region}"
clients=${CLIENTS:-64}
value_size=${VALUE_SIZE:-256}
key_size=16
idle=${IDLE:-20}
target_dir=${CARGO_TARGET_DIR:-target}
[[ "$target_dir" = /* ]] || target_dir="$LEDGE_ROOT/$target_dir"
bin="$target_dir/release"
work=${WORK_DIR:-$(mktemp -d /tmp/ledge-footprint.XXXXXX)}
mkdir -p "$work"
stamp=$(date +%Y%m%d-%H%M%S)
report="$LEDGE_ROOT/benches/results/footprint-$stamp.md"
[ -z "${MEMORY_MB:-}" ] || export LEDGE_MEMORY_MB=$MEMORY_MB
largest=0
for k in "${key_counts[@]}"; do [ "$k" -le "$largest" ] || largest=$k; done

sampler_pid=""
load_pid=""
running=()   # data dirs of ledge regions this script started (ledge-cluster.sh or single)
etcd_dir=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # A run cut short still reports what it measured.
  if [ $rc -ne 0 ] && [ -s "${rows_file:-/nonexistent}" ]; then write_report || true; fi
  [ -z "$sampler_pid" ] || kill "$sampler_pid" 2>/dev/null || true
  [ -z "$load_pid" ] || kill "$load_pid" 2>/dev/null || true
  local d
  for d in "${running[@]}"; do stop_ledge "$d" || true; done
  [ -z "$etcd_dir" ] || "$scripts/etcd-cluster.sh" stop "$etcd_dir" || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else log "kept data and logs in $work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Starting and stopping Ledge.

# start_single DIR: a one-node region on 127.0.0.1:7700 with data in DIR/n1.
start_single() {
  local dir=$1
  mkdir -p "$dir"
  port_free 7700 || die "127.0.0.1:7700 is in use"
  setsid "$bin/ledged" --region bench --data-dir "$dir/n1" --listen 127.0.0.1:7700 --bootstrap-expect 1 \
    </dev/null >>"$dir/n1.log" 2>&1 &
  echo $! >"$dir/n1.pid"
  echo 127.0.0.1:7700 >"$dir/endpoints"
  wait_answers 127.0.0.1:7700 get
}

# wait_answers ENDPOINT get|put: waits until a get (NotFound counts) or a put is answered.
wait_answers() {
  local endpoint=$1 what=$2 i out
  for i in $(seq 600); do
    if [ "$what" = get ]; then
      out=$("$bin/ledge" --endpoints "$endpoint" kv get footprint-probe 2>&1 || true)
      [[ "$out" == *NotFound* || "$out" == *value* ]] && return 0
    else
      "$bin/ledge" --endpoints "$endpoint" kv put footprint-probe x >/dev/null 2>&1 && return 0
    fi
    sleep 0.05
  done
  die "$endpoint did not answer a $what within 30 s"
}

stop_ledge() {
  local dir=$1
  if [ -f "$dir/n2.pid" ]; then
    "$scripts/ledge-cluster.sh" stop "$dir"
  else
    stop_pidfile "$dir/n1.pid" ledged
  fi
}

pids_of() { # pids_of DIR: the pids of the region's live ledged processes
  local f
  for f in "$1"/n*.pid; do
    pid_alive "$f" ledged && cat "$f"
  done
  true
}

# ---------------------------------------------------------------------------------------------
# Measuring.

# sample_rss OUT PID...: appends the largest VmRSS (KiB) among PIDs to OUT every 0.5 s.
sample_rss() {
  local out=$1
  shift
  while :; do
    local max=0 pid kb
    for pid in "$@"; do
      kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
      [ "${kb:-0}" -le "$max" ] || max=$kb
    done
    echo "$max" >>"$out"
    sleep 0.5
  done
}

max_of() { sort -n "$1" | tail -1; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }

rss_now() { # rss_now PID...: largest VmRSS in KiB
  local max=0 pid kb
  for pid in "$@"; do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${kb:-0}" -le "$max" ] || max=$kb
  done
  echo "$max"
}

# disk_of ENDPOINT: "log db snapshots" bytes from the node's status.
disk_of() {
  "$bin/ledge" --endpoints "$1" --output json cluster status |
    jq -r '"\(.disk.log_bytes) \(.disk.db_bytes) \(.disk.snapshot_bytes)"'
}

rows_file="$work/rows.md"
startup_file="$work/startup.md"
: >"$rows_file"
: >"$startup_file"

# load_and_sample DIR TARGET ENDPOINTS PID...: runs the put load against ENDPOINTS while
# sampling the PIDs' RSS; sets `rate` (puts/s) and `before`, `during`, `after`, `idle_rss` (KiB).
load_and_sample() {
  local dir=$1 target=$2 endpoints=$3
  shift 3
  before=$(rss_now "$@")
  sample_rss "$dir/rss-load" "$@" &
  sampler_pid=$!
  "$bin/ledge-load" --target "$target" --endpoints "$endpoints" --op put --clients "$clients" --total "$keys" \
    --key-size "$key_size" --value-size "$value_size" --json >"$dir/load.json" &
  load_pid=$!
  wait "$load_pid"
  load_pid=""
  kill "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
  during=$(max_of "$dir/rss-load")
  after=$(rss_now "$@")
  sleep "$idle"
  idle_rss=$(rss_now "$@")
  rate=$(jq -r '.ops_per_sec | floor' "$dir/load.json" | head -1)
}

# run_ledge TOPOLOGY KEYS
run_ledge() {
  local topology=$1 keys=$2 dir="$work/ledge-$1-$2" endpoints
  log "$topology, $keys keys"
  if [ "$topology" = single ]; then
    start_single "$dir"
  else
    "$scripts/ledge-cluster.sh" start "$dir" "$bin" >/dev/null
  fi
  running+=("$dir")
  endpoints=$(cat "$dir/endpoints")
  # shellcheck disable=SC2046
  local pids=($(pids_of "$dir"))
  local before during after idle_rss rate
  load_and_sample "$dir" ledge "$endpoints" "${pids[@]}"
  local live=$((keys * (key_size + value_size))) worst=0 worst_parts="" ep
  for ep in ${endpoints//,/ }; do
    read -r l d s <<<"$(disk_of "$ep")"
    local total=$((l + d + s))
    if [ "$total" -gt "$worst" ]; then
      worst=$total
      worst_parts="log $(mib $((l / 1024))) / db $(mib $((d / 1024))) / snapshots $(mib $((s / 1024)))"
    fi
  done
  echo "| Ledge $topology | $keys | ${rate:-?} | $(mib "$before") | $(mib "$during") | $(mib "$after") | $(mib "$idle_rss") | $(mib $((worst / 1024))) ($worst_parts) | $(ratio "$worst" "$live") |" >>"$rows_file"
  if [ "$topology" = single ] && [ "$keys" -eq "$largest" ]; then
    stop_ledge "$dir"
    local t0 t_get t_put
    t0=$(date +%s.%N)
    start_single "$dir"
    t_get=$(date +%s.%N)
    wait_answers 127.0.0.1:7700 put
    t_put=$(date +%s.%N)
    # shellcheck disable=SC2046
    echo "| Ledge single | $keys | $(awk -v a="$t0" -v b="$t_get" 'BEGIN { printf "%.2f", b - a }') | $(awk -v a="$t0" -v b="$t_put" 'BEGIN { printf "%.2f", b - a }') | $(mib "$(rss_now $(pids_of "$dir"))") |" >>"$startup_file"
  fi
  stop_ledge "$dir"
  running=("${running[@]/$dir/}")
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
}

run_etcd() {
  local keys=$1 dir="$work/etcd-$1" endpoints
  log "etcd, $keys keys"
  ensure_cmd etcd etcd-server
  etcd_dir=$dir
  endpoints=$("$scripts/etcd-cluster.sh" start "$dir" | tail -1)
  local pids=() f
  for f in "$dir"/m*.pid; do pids+=("$(cat "$f")"); done
  local before during after idle_rss rate
  load_and_sample "$dir" etcd "$endpoints" "${pids[@]}"
  local live=$((keys * (key_size + value_size))) worst=0 d bytes
  for d in "$dir"/m*.etcd "$dir"/m[0-9]; do
    [ -d "$d" ] || continue
    bytes=$(du -sb "$d" | cut -f1)
    [ "$bytes" -le "$worst" ] || worst=$bytes
  done
  echo "| etcd 3-member | $keys | ${rate:-?} | $(mib "$before") | $(mib "$during") | $(mib "$after") | $(mib "$idle_rss") | $(mib $((worst / 1024))) | $(ratio "$worst" "$live") |" >>"$rows_file"
  "$scripts/etcd-cluster.sh" stop "$dir"
  etcd_dir=""
}

write_report() {
  mkdir -p "$(dirname "$report")"
  {
    echo "# Footprint: Ledge and etcd, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); commit $(git -C "$LEDGE_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo "Load: ledge-load --op put --clients $clients --key-size $key_size --value-size $value_size; Ledge memory budget ${MEMORY_MB:-default (64)} MiB."
    echo "RSS: largest node's resident set (MiB) before the load, at its peak during it, right after, and after ${idle} s idle."
    echo "Disk: the largest node's data directory after the idle time; ratio = disk / (keys × $((key_size + value_size)) B)."
    echo
    echo "| system | keys | puts/s | RSS before | RSS peak | RSS after | RSS idle | disk MiB | disk / live |"
    echo "|---|---|---|---|---|---|---|---|---|"
    cat "$rows_file"
    if [ -s "$startup_file" ]; then
      echo
      echo "Start-up with the largest data set (seconds from exec):"
      echo
      echo "| node | keys | get answered | put acknowledged | RSS then (MiB) |"
      echo "|---|---|---|---|---|"
      cat "$startup_file"
    fi
  } >"$report"
  cat "$report"
  echo "$report"
}

# ---------------------------------------------------------------------------------------------
# The run.

ensure_cmd jq jq
[ -n "${SKIP_BUILD:-}" ] || "$scripts/build.sh"
for keys in "${key_counts[@]}"; do
  for topology in "${topologies[@]}"; do run_ledge "$topology" "$keys"; done
done
[ -n "${SKIP_ETCD:-}" ] || run_etcd "$largest"

write_report
