# Helpers shared by the benchmark scripts; source it, don't run it.

# Absolute path of the workspace root (benches/scripts/../..).
LEDGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { echo "[$(basename "$0")] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ensure_cmd CMD DEBIAN_PACKAGE: installs the package with apt-get unless CMD is on PATH.
ensure_cmd() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "$cmd is not on PATH and there is no apt-get to install $pkg"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # A fresh image has no package lists; fetch them only when the package is not known yet.
  # (The output is captured first: `apt-cache | grep -q` fails under pipefail by SIGPIPE.)
  local policy
  policy=$(apt-cache policy "$pkg" 2>/dev/null || true)
  if [[ "$policy" != *"Candidate: "[0-9]* ]]; then
    log "apt-get update"
    $sudo apt-get update -qq
    policy=$(apt-cache policy "$pkg" 2>/dev/null || true)
  fi
  [[ "$policy" == *"Candidate: "[0-9]* ]] || die "apt has no package $pkg"
  log "installing $pkg (for $cmd)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
  command -v "$cmd" >/dev/null 2>&1 || die "installed $pkg but $cmd is still not on PATH"
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE NAME: true when PIDFILE names a live process whose command is NAME.
pid_alive() {
  local pidfile=$1 name=$2 pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

# stop_pidfile PIDFILE NAME: SIGTERM the process, SIGKILL it after 15 s, remove PIDFILE.
# Only a process whose command is NAME is signalled, so a stale pid file never kills a stranger.
stop_pidfile() {
  local pidfile=$1 name=$2 pid i
  if pid_alive "$pidfile" "$name"; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
      [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || break
      sleep 0.1
    done
    if [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
      log "$name ($pid) ignored SIGTERM for 15 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
}
