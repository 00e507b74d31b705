#!/usr/bin/env bash
# A local nats-server cluster of N nodes (default 3) on loopback ports, in operator mode with the
# grid's keys, JetStream on every node: what a broker with `--replicas 3` needs for R3 streams
# and bucket, so that one node can be lost with nothing lost.
#
#   nats-cluster.sh conf  DIR [N [BASE_PORT]]   # write DIR/node-<i>.conf (and the keys, if none)
#   nats-cluster.sh up    DIR [N [BASE_PORT]]   # conf (if not yet written), start every node
#   nats-cluster.sh urls  DIR                   # the client URLs, comma-separated (--nats-url)
#   nats-cluster.sh kill  DIR <i>               # SIGKILL node i (a drill)
#   nats-cluster.sh start DIR <i>               # start node i again on its data
#   nats-cluster.sh down  DIR                   # stop every node
#
# Ports (BASE_PORT default 4222): node i (1-based) serves clients on BASE+i-1, routes on
# BASE+N+i-1 and monitoring (/varz, /connz, /jsz) on BASE+2N+i-1, all on 127.0.0.1.
#
# Layout of DIR: keys/ (the grid's keys, `helium creds init`, kept if present), node-<i>.conf,
# node-<i>/jetstream (its store), node-<i>/jwt (its own account-JWT directory: a `full`
# resolver owns its directory, so the resolver line of keys/nats-auth.conf is written again per
# node after the include), logs/node-<i>.log, pids/node-<i>, urls.
#
# Environment: HELIUM_BIN_DIR (where `helium` is), NATS_SERVER_BIN (the nats-server binary).
set -Eeuo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${HELIUM_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/helium/target}/release}"
nats_server="${NATS_SERVER_BIN:-$root/.venv/bin/nats-server}"
[ -x "$nats_server" ] || nats_server=$(command -v nats-server || echo "$nats_server")

usage() { sed -n '6,11p' "$0" | sed 's/^# *//'; exit 2; }

conf() {
  local dir=$1 n=${2:-3} base=${3:-4222} i j routes
  [[ $n =~ ^[1-9]$ ]] || { echo "N must be 1-9, not $n"; return 2; }
  mkdir -p "$dir"/{logs,pids}
  dir=$(cd "$dir" && pwd)
  # The resolver dir given here is unused by the nodes (each writes its own line below).
  [ -f "$dir/keys/nats-auth.conf" ] || "$bin/helium" creds init --keys "$dir/keys" --resolver-dir "$dir/keys/jwt" >/dev/null
  : >"$dir/urls"
  for i in $(seq "$n"); do
    mkdir -p "$dir/node-$i"/{jetstream,jwt}
    routes=""
    for j in $(seq "$n"); do
      [ "$j" = "$i" ] || routes+="    nats-route://127.0.0.1:$((base + n + j - 1))"$'\n'
    done
    cat >"$dir/node-$i.conf" <<CONF
# Node $i of $n of a local Helium NATS cluster (deploy/nats-cluster.sh).
server_name: nats-$i
listen: 127.0.0.1:$((base + i - 1))
http: 127.0.0.1:$((base + 2 * n + i - 1))
max_payload: 8MB
# fsync before every ack: a journal entry acknowledged is on the disk of each replica.
jetstream { store_dir: "$dir/node-$i/jetstream", sync_interval: always }
cluster {
  name: helium
  listen: 127.0.0.1:$((base + n + i - 1))
  routes: [
$routes  ]
}
include "keys/nats-auth.conf"
$("$bin/helium" creds resolver --dir "$dir/node-$i/jwt")
CONF
    printf '%snats://127.0.0.1:%s' "$([ "$i" = 1 ] || echo ,)" "$((base + i - 1))" >>"$dir/urls"
  done
  echo >>"$dir/urls"
}

nodes() { local f; for f in "$1"/node-*.conf; do [ -f "$f" ] && basename "$f" .conf | sed 's/^node-//'; done; }

# Starts node i and waits for it to listen for clients (JetStream then elects leaders with its
# peers; `up` waits for that).
start() {
  local dir=$1 i=$2 log
  [ -f "$dir/node-$i.conf" ] || { echo "no node $i in $dir"; return 2; }
  if [ -f "$dir/pids/node-$i" ] && kill -0 "$(cat "$dir/pids/node-$i")" 2>/dev/null; then
    echo "node $i already running"; return 0
  fi
  log="$dir/logs/node-$i.log"
  : >"$log"
  "$nats_server" -c "$dir/node-$i.conf" >>"$log" 2>&1 &
  echo $! >"$dir/pids/node-$i"
  for _ in $(seq 300); do
    grep -q "Server is ready" "$log" && return 0
    kill -0 "$(cat "$dir/pids/node-$i")" 2>/dev/null || break
    sleep 0.1
  done
  echo "node $i failed to start:"; tail -20 "$log"; return 1
}

up() {
  local dir=$1 i
  [ -f "$dir/node-1.conf" ] || conf "$@"
  dir=$(cd "$dir" && pwd)
  for i in $(nodes "$dir"); do start "$dir" "$i"; done
  # JetStream is usable once the meta group has a leader: some node logs it.
  for _ in $(seq 300); do
    grep -q "metadata leader" "$dir"/logs/node-*.log && break
    sleep 0.1
  done
  grep -q "metadata leader" "$dir"/logs/node-*.log || { echo "no JetStream meta leader elected"; return 1; }
  echo "cluster up: $(cat "$dir/urls")"
}

kill_node() {
  local dir=$1 i=$2 f="$1/pids/node-$2" pid
  [ -f "$f" ] || { echo "node $i is not running"; return 0; }
  pid=$(cat "$f")
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$f"
  echo "node $i killed"
}

down() {
  local dir=$1 i f pid
  for i in $(nodes "$dir"); do
    f="$dir/pids/node-$i"; [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  echo "cluster down"
}

cmd=${1:-}; [ $# -ge 2 ] || usage
shift
case $cmd in
  conf) conf "$@" ;;
  up) up "$@" ;;
  urls) cat "$1/urls" ;;
  kill) kill_node "$1" "${2:?node number}" ;;
  start) start "$(cd "$1" && pwd)" "${2:?node number}" ;;
  down) down "$1" ;;
  *) usage ;;
esac
