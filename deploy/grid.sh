#!/usr/bin/env bash
# A local Helium grid on this machine: nats-server (JetStream, fsync before ack) with its data
# under .helium/grid, one helium-broker with a file:// object store, and two CPU workers at
# different prices. `grid.sh up` prints the NATS URL; `grid.sh down` stops everything.
# Drills: `grid.sh kill <component>` (SIGKILL) and `grid.sh restart <component>` (SIGKILL if
# running, then start it again on the same data) for nats, broker, worker-cheap, worker-dear.
#
# Auth is on: the first `up` makes the grid's keys (.helium/grid/keys, secret) with
# `helium creds init`, and a credential per process and demo principal in .helium/grid/creds:
# operator, researcher, gpu-owner-1, gpu-owner-2, gpu-owner (people), broker, worker-cheap,
# worker-dear, my-gpu (processes; the workers pay gpu-owner-1 and gpu-owner-2; my-gpu, which
# notebooks/gpu_owner.ipynb starts, pays gpu-owner). nats-server refuses anything else.
# The two workers advertise 4 GiB each (a small GPU's worth): a job that needs more waits for
# a bigger worker, such as the one gpu_owner.ipynb starts.
set -Eeuo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
grid="${HELIUM_GRID_DIR:-$root/.helium/grid}"
bin="${HELIUM_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/helium/target}/release}"
nats_server="$root/.venv/bin/nats-server"
port="${HELIUM_PORT:-4222}"
# Two workers share this machine: each trainer gets half the cores, so two jobs training at
# once do not fight over them (OpenMP threads spin while they wait for work).
threads=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))

# Starts "$@" in the background, logging to $grid/logs/$name.log, and waits for its `ready` line.
start() {
  local name=$1; shift
  "$@" >"$grid/logs/$name.out" 2>"$grid/logs/$name.log" &
  echo $! >"$grid/pids/$name"
  for _ in $(seq 600); do
    grep -qx ready "$grid/logs/$name.out" 2>/dev/null && return 0
    kill -0 "$(cat "$grid/pids/$name")" 2>/dev/null || { echo "$name died:"; tail -20 "$grid/logs/$name.log"; return 1; }
    sleep 0.1
  done
  echo "$name not ready in 60 s"; tail -20 "$grid/logs/$name.log"; return 1
}

# Whether every process of the grid is still running.
alive() {
  local f
  for f in "$grid"/pids/*; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || return 1; done
}

up() {
  if [ -f "$grid/env" ]; then
    if alive; then echo "grid already up: $(cat "$grid/env")"; return 0; fi
    echo "a previous grid died; cleaning it up"; down
  fi
  # A grid that fails half-way is torn down, not left running.
  trap 'echo "grid failed to start; stopping what started"; down' ERR
  mkdir -p "$grid"/{nats,store,logs,pids,w1,w2,creds}
  keys "$grid"
  if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
    port=$("$root/.venv/bin/python" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  fi
  cat >"$grid/nats.conf" <<CONF
listen: 127.0.0.1:$port
jetstream { store_dir: "$grid/nats", sync_interval: always }
max_payload: 8MB
include "keys/nats-auth.conf"
CONF
  echo "nats://127.0.0.1:$port" >"$grid/url"
  for name in nats broker worker-cheap worker-dear; do launch "$name"; done
  local url creds="$grid/creds"; url=$(cat "$grid/url")
  printf 'HELIUM_NATS_URL=%s\nHELIUM_WORKER_THREADS=%s\nHELIUM_KEYS=%s\nHELIUM_CREDS_DIR=%s\nHELIUM_BIN_DIR=%s\n' \
    "$url" "$threads" "$grid/keys" "$creds" "$bin" >"$grid/env"
  trap - ERR
  echo "grid up: $url  (logs in .helium/grid/logs; stop with: make down)"
}

# Starts one component of the grid (`up` and `restart`), on the grid's data and port.
launch() {
  local name=$1 url creds="$grid/creds"; url=$(cat "$grid/url")
  case $name in
    nats)
      "$nats_server" -c "$grid/nats.conf" >"$grid/logs/nats.out" 2>"$grid/logs/nats.log" &
      echo $! >"$grid/pids/nats"
      for _ in $(seq 600); do grep -q "Server is ready" "$grid/logs/nats.log" && break; sleep 0.1; done
      grep -q "Server is ready" "$grid/logs/nats.log" || { echo "nats-server failed"; tail "$grid/logs/nats.log"; false; } ;;
    broker) start broker "$bin/helium-broker" --nats-url "$url" --creds "$creds/broker.creds" --store "file://$grid/store" ;;
    worker-cheap) start worker-cheap "$bin/helium-worker" --grid "$url" --creds "$creds/worker-cheap.creds" --price 1.0 --work-dir "$grid/w1" --device cpu --threads "$threads" --memory-gb 4 ;;
    worker-dear) start worker-dear "$bin/helium-worker" --grid "$url" --creds "$creds/worker-dear.creds" --price 2.5 --work-dir "$grid/w2" --device cpu --threads "$threads" --memory-gb 4 ;;
    *) echo "no component $name (nats, broker, worker-cheap, worker-dear)"; return 2 ;;
  esac
}

# SIGKILLs one component (a drill: no chance to clean up) and waits until it is gone.
kill_component() {
  local name=$1 f="$grid/pids/$1" pid
  case $name in nats|broker|worker-cheap|worker-dear) ;; *) echo "no component $name (nats, broker, worker-cheap, worker-dear)"; return 2 ;; esac
  [ -f "$f" ] || { echo "$name is not running"; return 0; }
  pid=$(cat "$f")
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$f"
  echo "$name killed"
}

restart_component() {
  [ -f "$grid/env" ] || { echo "grid is not up"; return 1; }
  kill_component "$1" >/dev/null
  launch "$1"
  echo "$1 restarted"
}

# The grid's keys and the credentials of its processes and demo principals, made once: a grid
# brought up again keeps them (its ledger and jobs name the same principals).
keys() {
  local dir=$1 helium="$bin/helium"
  [ -f "$dir/keys/operator.nk" ] || "$helium" creds init --keys "$dir/keys" --resolver-dir "$dir/nats/jwt" >/dev/null
  issue() {
    local file="$dir/creds/$1.creds"; shift
    [ -s "$file" ] && return 0
    # The local grid listens on 127.0.0.1 only and keeps its credentials across `make up`s.
    (umask 077; "$helium" creds issue "$@" --expires never --keys "$dir/keys" >"$file.tmp") && mv "$file.tmp" "$file"
  }
  issue operator operator operator
  issue researcher researcher researcher
  issue gpu-owner-1 researcher gpu-owner-1
  issue gpu-owner-2 researcher gpu-owner-2
  issue broker broker broker
  issue worker-cheap worker worker-cheap --owner gpu-owner-1
  issue worker-dear worker worker-dear --owner gpu-owner-2
  issue gpu-owner researcher gpu-owner
  issue my-gpu worker my-gpu --owner gpu-owner
}

down() {
  compgen -G "$grid/pids/*" >/dev/null || { echo "grid is not up"; return 0; }
  for name in worker-cheap worker-dear broker nats; do
    f="$grid/pids/$name"; [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  rm -f "$grid/env"
  echo "grid down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kill) kill_component "${2:?usage: $0 kill <component>}" ;;
  restart) restart_component "${2:?usage: $0 restart <component>}" ;;
  *) echo "usage: $0 up|down|kill <component>|restart <component>"; exit 2 ;;
esac
