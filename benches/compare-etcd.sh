#!/usr/bin/env bash
# Ledge vs etcd in one run: a 3-node Ledge region and a 3-member etcd cluster on 127.0.0.1 of
# this machine, driven by the same closed-loop load generator (ledge-load) with the same
# workload, and a markdown report of the results.
#
#   benches/compare-etcd.sh                              # CLIENTS=1,16,64,256, 10 s per level
#   CLIENTS=1,16,64 DURATION=5 benches/compare-etcd.sh
#   SKIP_BUILD=1 KEEP=1 WORK_DIR=/tmp/cmp benches/compare-etcd.sh
#
# What it measures, each at every CLIENTS level for DURATION seconds (16-byte keys, 256-byte
# values; gets read random keys among 10,000 written just before, untimed):
#   - put:        Ledge strong keyspace vs etcd put (both acknowledge after a quorum fsync)
#   - get:        Ledge linearizable get vs etcd default (linearizable) get
#   - stale get:  Ledge stale get vs etcd serializable get, every connection pinned to one
#                 member round-robin, so all three replicas serve reads
#   - eventual:   Ledge put to an eventual keyspace at level one, and at level quorum, vs the
#                 same etcd put numbers (etcd has no eventual writes)
#   - CPU-seconds per 10,000 puts: user+sys time of a system's three server processes
#     (/proc/PID/stat utime+stime) across a dedicated run of CPU_PUTS (default 20,000)
#     acknowledged puts at 64 clients, divided by the puts, times 10,000.
#
# Steps: benches/scripts/build.sh (SKIP_BUILD=1 skips it); ledge-cluster.sh and
# etcd-cluster.sh start (etcd-server, curl and jq are installed with apt when missing); the
# runs above; the report goes to benches/results/compare-etcd-YYYYMMDD-HHMMSS.md, whose path
# is printed last. Both clusters are stopped on exit, also on failure or Ctrl-C. Data, logs and
# raw JSON results go to a fresh temporary directory (WORK_DIR to choose it), removed on exit
# unless KEEP=1. Binaries are taken from $CARGO_TARGET_DIR/release (default target/release).
# Both clusters run for the whole script: the idle one costs a few heartbeats, and is not
# counted in the other's CPU time.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"
scripts="$LEDGE_ROOT/benches/scripts"

clients=${CLIENTS:-1,16,64,256}
duration=${DURATION:-10}
cpu_puts=${CPU_PUTS:-20000}
cpu_clients=64
preload=10000
value_size=256
eventual_keyspace=bench_eventual
target_dir=${CARGO_TARGET_DIR:-target}
[[ "$target_dir" = /* ]] || target_dir="$LEDGE_ROOT/$target_dir"
bin="$target_dir/release"
work=${WORK_DIR:-$(mktemp -d /tmp/ledge-compare-etcd.XXXXXX)}
mkdir -p "$work/results"
stamp=$(date +%Y%m%d-%H%M%S)
report="$LEDGE_ROOT/benches/results/compare-etcd-$stamp.md"

# ---------------------------------------------------------------------------------------------
# Cleanup: stop only what this script started (clusters whose start it ran, the load generator
# it is waiting for), also when it fails or is interrupted.
load_pid=""
ledge_started=""
etcd_started=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$load_pid" ] && kill -0 "$load_pid" 2>/dev/null; then kill "$load_pid" 2>/dev/null || true; fi
  [ -z "$ledge_started" ] || "$scripts/ledge-cluster.sh" stop "$work/ledge" || true
  [ -z "$etcd_started" ] || "$scripts/etcd-cluster.sh" stop "$work/etcd" || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else log "kept data, logs and raw results in $work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Helpers.

# Conditions that make numbers on a shared machine rough: the 1-minute load average and how many
# compiler processes (someone else's builds) are running. Sampled before every run.
max_rustc=0
loads=()
sample_conditions() {
  local n
  n=$(pgrep -c -x rustc || true)
  [ "${n:-0}" -le "$max_rustc" ] || max_rustc=$n
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
}

# run_load NAME ARGS...: runs ledge-load --json with ARGS, one JSON line per level into
# $work/results/NAME.jsonl. In the background and waited for, so that a SIGTERM to this script
# stops the run at once (bash runs traps only between foreground commands).
run_load() {
  local name=$1
  shift
  sample_conditions
  log "run $name: ledge-load $*"
  "$bin/ledge-load" --json --value-size "$value_size" "$@" >"$work/results/$name.jsonl" &
  load_pid=$!
  wait "$load_pid"
  load_pid=""
  # Echo the levels as they finish, so a long run shows progress.
  jq -r '"  \(.target) \(.op) \(.clients) clients: \(.ops_per_sec | floor) ops/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, errors \(.errors)"' \
    "$work/results/$name.jsonl" >&2
}

# run_levels NAME TARGET ENDPOINTS ARGS...: every CLIENTS level for DURATION seconds.
run_levels() {
  local name=$1 target=$2 endpoints=$3
  shift 3
  run_load "$name" --target "$target" --endpoints "$endpoints" --clients "$clients" --duration "$duration" "$@"
}

# cpu_ticks DIR PREFIX NAME: the user+sys clock ticks used so far by the three server processes
# whose pid files are DIR/PREFIX{1,2,3}.pid (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
  local dir=$1 prefix=$2 name=$3 total=0 i pid stat fields
  for i in 1 2 3; do
    pid_alive "$dir/$prefix$i.pid" "$name" || die "$name $prefix$i is not running"
    pid=$(cat "$dir/$prefix$i.pid")
    stat=$(cat "/proc/$pid/stat")
    # Drop "pid (comm) " first: comm may contain spaces. What is left starts at field 3.
    read -r -a fields <<<"${stat##*) }"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# cpu_per_10k VAR NAME TARGET ENDPOINTS DIR PREFIX PROCNAME: a dedicated put run of CPU_PUTS
# puts at 64 clients; sets VAR to the servers' CPU-seconds per 10,000 acknowledged puts. (It sets
# a variable rather than printing, so run_load runs in this shell: traps and samples work.)
cpu_per_10k() {
  local var=$1 name=$2 target=$3 endpoints=$4 dir=$5 prefix=$6 proc=$7 before after puts
  before=$(cpu_ticks "$dir" "$prefix" "$proc")
  run_load "$name" --target "$target" --endpoints "$endpoints" --clients "$cpu_clients" --total "$cpu_puts"
  after=$(cpu_ticks "$dir" "$prefix" "$proc")
  puts=$(jq -s 'map(.ops) | add' "$work/results/$name.jsonl")
  [ "$puts" -gt 0 ] || die "$name acknowledged no puts"
  log "$name: $((after - before)) ticks for $puts puts"
  printf -v "$var" '%s' "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$puts" \
    'BEGIN { printf "%.2f", t / hz / n * 10000 }')"
}

# ---------------------------------------------------------------------------------------------
# Report helpers.

# level FILE CLIENTS: "ops/s p50 p99 errors misses" of that level, or nothing.
level() {
  jq -r --argjson c "$2" 'select(.clients == $c) | "\(.ops_per_sec) \(.p50_ms) \(.p99_ms) \(.errors) \(.misses)"' "$1"
}

# table TITLE NOTE LEDGE_FILE ETCD_FILE: one markdown table, a row per CLIENTS level; ratio is
# Ledge ops/s over etcd ops/s.
table() {
  local title=$1 note=$2 lf=$3 ef=$4 c l e errs=""
  printf '\n## %s\n\n' "$title"
  [ -z "$note" ] || printf '%s\n\n' "$note"
  echo "| clients | Ledge ops/s | etcd ops/s | ratio | Ledge p50/p99 ms | etcd p50/p99 ms |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for c in ${clients//,/ }; do
    l=$(level "$lf" "$c")
    e=$(level "$ef" "$c")
    # A level with no result (a run that died early) shows as "-".
    awk -v c="$c" -v l="$l" -v e="$e" 'BEGIN {
      nl = split(l, L, " "); ne = split(e, E, " ")
      ratio = (nl && ne && E[1] > 0) ? sprintf("%.2f", L[1] / E[1]) : "-"
      lr = nl ? sprintf("%.0f", L[1]) : "-"; ll = nl ? sprintf("%.2f / %.2f", L[2], L[3]) : "-"
      er = ne ? sprintf("%.0f", E[1]) : "-"; el = ne ? sprintf("%.2f / %.2f", E[2], E[3]) : "-"
      printf "| %d | %s | %s | %s | %s | %s |\n", c, lr, er, ratio, ll, el
    }'
    read -r _ _ _ le lm <<<"${l:-- - - 0 0}"
    read -r _ _ _ ee em <<<"${e:-- - - 0 0}"
    [ "$le$lm$ee$em" = "0000" ] || errs+="${errs:+; }$c clients: Ledge $le errors, $lm misses; etcd $ee errors, $em misses"
  done
  # Failed requests are not in the counts; gets that found no value are (and are listed here).
  [ -z "$errs" ] || printf '\nNot all clean: %s.\n' "$errs"
}

write_report() {
  local lc ec ratio
  lc=$1 ec=$2
  ratio=$(awk -v l="$lc" -v e="$ec" 'BEGIN { if (e > 0) printf "%.2f", l / e; else printf "-" }')
  mkdir -p "$(dirname "$report")"
  {
    echo "# Ledge vs etcd, 3 replicas each on one machine ($stamp)"
    echo
    echo "- Machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r)"
    echo "- Ledge: commit $commit; 3 \`ledged\` nodes ($ledge_eps), default settings"
    echo "- etcd: $etcd_version; 3 members ($etcd_eps), default settings"
    echo "- Workload: \`ledge-load\`, closed loop, $duration s per level, 16-byte keys, ${value_size}-byte values,"
    echo "  clients share at most 16 gRPC connections; gets read random keys among $preload preloaded ones."
    echo "  Stale and serializable gets pin each connection to one member (round-robin); the other"
    echo "  operations use each client's normal routing."
    echo "- Conditions: servers and load generator share the machine; script niceness $(ps -o ni= -p $$ | tr -d ' ');"
    echo "  1-minute load average before each run: ${loads[*]}; at most $max_rustc compiler (rustc)"
    echo "  processes from other builds seen at the start of a run."
    echo
    echo "Ratio is Ledge over etcd (above 1: Ledge is faster). p50/p99 are request latencies seen by"
    echo "the load generator."
    table "put (strong keyspace vs etcd put)" "" "$work/results/ledge-put.jsonl" "$work/results/etcd-put.jsonl"
    table "get (linearizable)" "" "$work/results/ledge-get.jsonl" "$work/results/etcd-get.jsonl"
    table "stale get (Ledge stale vs etcd serializable)" "" \
      "$work/results/ledge-stale-get.jsonl" "$work/results/etcd-stale-get.jsonl"
    table "Ledge eventual put (level one) vs etcd put" \
      "etcd has no eventual writes: its column repeats the etcd put run above." \
      "$work/results/ledge-eventual-put.jsonl" "$work/results/etcd-put.jsonl"
    table "Ledge eventual put (level quorum) vs etcd put" \
      "Acknowledged once a majority of the region holds the write durably; etcd's column repeats its put run." \
      "$work/results/ledge-eventual-quorum-put.jsonl" "$work/results/etcd-put.jsonl"
    printf '\n## CPU-seconds per 10,000 puts\n\n'
    echo "User+sys CPU of the three server processes across $cpu_puts acknowledged puts at $cpu_clients"
    echo "clients (strong keyspace for Ledge), per 10,000 puts. Ratio is Ledge over etcd (above 1:"
    echo "Ledge uses more CPU per put)."
    echo
    echo "| | Ledge | etcd | ratio |"
    echo "|---|---:|---:|---:|"
    echo "| CPU-seconds per 10,000 puts | $lc | $ec | $ratio |"
  } >"$report"
}

# ---------------------------------------------------------------------------------------------
# Main.

[ -n "${SKIP_BUILD:-}" ] || "$scripts/build.sh"
for b in ledged ledge ledge-load; do
  [ -x "$bin/$b" ] || die "$bin/$b not found; run benches/scripts/build.sh (with the same CARGO_TARGET_DIR)"
done
ensure_cmd jq jq
commit=$(git -C "$LEDGE_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$LEDGE_ROOT" status --porcelain 2>/dev/null)" ] || commit+=" (with uncommitted changes)"

# A cluster already running in WORK_DIR was not started here, so refuse instead of stopping it
# at the end.
for f in "$work"/ledge/n?.pid "$work"/etcd/m?.pid; do
  ! { pid_alive "$f" ledged || pid_alive "$f" etcd; } || die "a cluster is already running in $work ($f)"
done
ledge_started=1
ledge_eps=$("$scripts/ledge-cluster.sh" start "$work/ledge" "$bin")
etcd_started=1
etcd_eps=$("$scripts/etcd-cluster.sh" start "$work/etcd")
etcd_version=$(etcd --version | head -1 | sed "s/^etcd Version: /etcd /")
out=$("$bin/ledge" --endpoints "$ledge_eps" keyspace create "$eventual_keyspace" --mode eventual 2>&1) ||
  [[ "$out" == *xists* ]] || die "cannot create keyspace $eventual_keyspace: $out"

# Each operation against Ledge, then against etcd, so both see similar machine conditions.
run_levels ledge-put ledge "$ledge_eps" --op put
run_levels etcd-put etcd "$etcd_eps" --op put
run_levels ledge-get ledge "$ledge_eps" --op get --preload "$preload"
run_levels etcd-get etcd "$etcd_eps" --op get --preload "$preload"
run_levels ledge-stale-get ledge "$ledge_eps" --op stale-get --preload "$preload"
run_levels etcd-stale-get etcd "$etcd_eps" --op stale-get --preload "$preload"
run_levels ledge-eventual-put ledge "$ledge_eps" --op put --keyspace "$eventual_keyspace"
run_levels ledge-eventual-quorum-put ledge "$ledge_eps" --op put --keyspace "$eventual_keyspace" --level quorum
cpu_per_10k ledge_cpu ledge-cpu ledge "$ledge_eps" "$work/ledge" n ledged
cpu_per_10k etcd_cpu etcd-cpu etcd "$etcd_eps" "$work/etcd" m etcd

write_report "$ledge_cpu" "$etcd_cpu"
cat "$report"
echo
echo "report: $report"
