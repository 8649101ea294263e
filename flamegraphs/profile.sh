#!/usr/bin/env bash
# Profiles a release corekv under put and range load with perf (software
# cpu-clock sampling: these VMs have no hardware counters) and renders one
# flamegraph per workload with inferno. Writes flamegraphs/<workload>.svg.
#
#   flamegraphs/profile.sh            # put and range, 10 s each
#   SECONDS_PER_RUN=20 flamegraphs/profile.sh put
set -euo pipefail
cd "$(dirname "$0")/.."
workloads=("${@:-put range}")
[ $# -eq 0 ] && workloads=(put range)
secs=${SECONDS_PER_RUN:-10}
addr=127.0.0.78:23830

if ! command -v perf >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install --quiet inferno
fi
cargo build --release --quiet

work=$(mktemp -d /var/tmp/corekv-profile.XXXXXX)
server=
cleanup() { [ -n "$server" ] && kill -9 "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

for w in "${workloads[@]}"; do
  rm -rf "$work/data"
  ./target/release/corekv --data-dir "$work/data" --listen-client-urls "http://$addr" \
    --advertise-client-urls "http://$addr" 2>"$work/server.log" &
  server=$!
  for _ in $(seq 100); do grep -q "ready to serve client requests" "$work/server.log" && break; sleep 0.1; done
  case $w in
    put) args=(--conns 100 --clients 1000 --key-size 8 --val-size 256 put) ;;
    range) args=(--conns 100 --clients 1000 --consistency l range) ;;
    *) echo "unknown workload $w (put, range)" >&2; exit 2 ;;
  esac
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$server" -o "$work/perf.data" -- sleep "$secs" &
  recorder=$!
  ./target/release/corekv-bench --endpoints "$addr" --duration "$((secs + 1))s" --server-pid "$server" "${args[@]}" \
    | tee "flamegraphs/$w.txt"
  wait "$recorder" || true
  perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
    --title "corekv $w: ${args[*]}" > "flamegraphs/$w.svg"
  kill -9 "$server"; wait "$server" 2>/dev/null || true; server=
  echo "wrote flamegraphs/$w.svg"
done
