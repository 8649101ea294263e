#!/usr/bin/env bash
# corekv vs etcd 3.4, side by side on this machine in one run.
#
# Builds corekv in release, then for each round and each workload starts a
# fresh corekv, measures it with corekv-bench, stops it, starts a fresh
# etcd, measures it the same way, stops it (A B A B ...). Every run gets a
# new data directory under /var/tmp. Per run it records QPS, latency
# percentiles, the server's CPU seconds per 1,000 requests (utime+stime
# from /proc/<pid>/stat, measured phase only), its peak RSS (VmHWM) and the
# generator's own CPU. Optionally (when etcd's own `benchmark` tool is
# available) it cross-checks the generator: the same put and range
# workloads driven by etcd's tool and by corekv-bench with --total, each
# against a fresh corekv and a fresh etcd, with both tools' whole-process
# CPU per request from /usr/bin/time.
#
# With --members 3 each run starts a fresh three-member cluster of corekv
# (then of etcd) instead of one server: member i listens on its own
# loopback address (BIND_IP, BIND_IP+1, BIND_IP+2; same ports), the
# generator gets all three endpoints (leader first; connection g goes to
# endpoint g mod 3), and server CPU per 1,000 requests and peak RSS are
# the SUMS over the three processes, read from /proc by this script around
# the generator command (corekv-bench --server-pid takes one pid only).
# Range workloads then preload their keys with a separate command before
# that window. The cross-check is single-node only: skipped with --members 3.
#
# Writes bench/results/YYYY-MM-DD-<name>.md and .json (medians, corekv/etcd
# ratios first, every run, the exact commands). Raw outputs stay in the
# work directory it prints.
#
# Usage: bench/compare.sh [--name NAME] [--members 1|3] [--rounds N]
#          [--duration 10s] [--workloads kv|watch-lease|all|put-1c,...]
#          [--no-cross-check] [--build-etcd-benchmark]
#          [--etcd-benchmark PATH] [--xcheck-total N] [--corekv-cores N]
#          [--keep-work]
# --members: servers per cluster, 1 (the default: one corekv, one etcd)
# or 3; --name then defaults to single-node or three-node.
# --workloads takes names (see workload_args below) or groups: kv (the
# default: put-1c, put-1000c, range-s-1000c, range-l-1000c), watch-lease
# (issue 5: watch-10kw, watch-fanout-1kw, lease-keepalive-100c, put-paced and
# put-paced-slow-1000w), k8s (k8s-16c) and all.
# Environment: BIND_IP (127.0.0.77), COREKV_PORT (23790),
#   ETCD_PORT (23791), ETCD_PEER_PORT (23792), COREKV_PEER_PORT (23793,
#   UDP: corekv peers talk QUIC; clusters only), WORK_ROOT (/var/tmp).
set -euo pipefail

NAME=
MEMBERS=1
ROUNDS=3
DURATION=10s
WORKLOADS=kv
CROSS_CHECK=1
CROSS_CHECK_NOTE=
BUILD_ETCD_BENCHMARK=0
ETCD_BENCHMARK=${ETCD_BENCHMARK:-/var/tmp/etcd-baseline/bin/benchmark}
XCHECK_TOTAL=50000
COREKV_CORES=
KEEP_WORK=0
BIND_IP=${BIND_IP:-127.0.0.77}
COREKV_PORT=${COREKV_PORT:-23790}
ETCD_PORT=${ETCD_PORT:-23791}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23792}
COREKV_PEER_PORT=${COREKV_PEER_PORT:-23793}
WORK_ROOT=${WORK_ROOT:-/var/tmp}

die() { echo "compare.sh: $*" >&2; exit 1; }
ORIG_ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --members) MEMBERS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --no-cross-check) CROSS_CHECK=0; shift ;;
    --build-etcd-benchmark) BUILD_ETCD_BENCHMARK=1; shift ;;
    --etcd-benchmark) ETCD_BENCHMARK=$2; shift 2 ;;
    --xcheck-total) XCHECK_TOTAL=$2; shift 2 ;;
    --corekv-cores) COREKV_CORES=$2; shift 2 ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$ROUNDS" -ge 1 ] 2>/dev/null || die "--rounds must be a positive number"
case "$MEMBERS" in
  1) NAME=${NAME:-single-node} ;;
  3) NAME=${NAME:-three-node} ;;
  *) die "--members must be 1 or 3" ;;
esac
if [ "$MEMBERS" -gt 1 ] && [ "$CROSS_CHECK" = 1 ]; then
  echo "--members $MEMBERS: the cross-check with etcd's benchmark tool is single-node only; skipping it"
  CROSS_CHECK=0
  CROSS_CHECK_NOTE="skipped: single-node only, not run with --members $MEMBERS"
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
COREKV="$REPO/target/release/corekv"
BENCH="$REPO/target/release/corekv-bench"
ETCD=$(command -v etcd || true)
[ -n "$ETCD" ] || die "etcd not found: apt-get install etcd-server"
command -v etcdctl >/dev/null || die "etcdctl not found: apt-get install etcd-client"
[ -x /usr/bin/time ] || die "/usr/bin/time not found: apt-get install time"
command -v python3 >/dev/null || die "python3 not found"

# Workloads of issue 2's "Measure" and issue 6: name|what|corekv-bench args.
# Keys 8 B over 100k (random); values 256 B; one generator thread.
workload_args() {
  case "$1" in
    put-1c) echo "put --conns 1 --clients 1 --key-size 8 --val-size 256 --key-space-size 100000" ;;
    put-1000c) echo "put --conns 100 --clients 1000 --key-size 8 --val-size 256 --key-space-size 100000" ;;
    range-s-1000c) echo "range --consistency s --conns 100 --clients 1000 --key-size 8 --val-size 256 --key-space-size 10000" ;;
    range-l-1000c) echo "range --consistency l --conns 100 --clients 1000 --key-size 8 --val-size 256 --key-space-size 10000" ;;
    range-s-100c) echo "range --consistency s --conns 10 --clients 100 --key-size 8 --val-size 256 --key-space-size 10000" ;;
    range-l-100c) echo "range --consistency l --conns 10 --clients 100 --key-size 8 --val-size 256 --key-space-size 10000" ;;
    txn-put-1000c) echo "txn-put --conns 100 --clients 1000 --key-size 16 --val-size 256 --key-space-size 100000000 --sequential-keys --prefix /registry/" ;;
    txn-cas-1000c) echo "txn-cas --conns 100 --clients 1000 --key-size 16 --val-size 256 --key-space-size 10000 --prefix /registry/" ;;
    # Issue 5. Watch: 10,000 watchers (100 streams x 100) over 1,000
    # prefixes on 10 connections, created before measuring; 100 writers put
    # 1,000 keys/s under the prefixes (10,000 events/s), every event checked.
    watch-10kw) echo "watch --conns 10 --clients 100 --rate 1000 --watch-streams 100 --watchers-per-stream 100 --watch-prefixes 1000 --val-size 256 --key-space-size 100000" ;;
    # Fan-out: 1,000 watchers (10 streams x 100) on one prefix; 10 writers
    # put 100 keys/s under it (100,000 events/s), every event checked.
    watch-fanout-1kw) echo "watch-fanout --conns 10 --clients 10 --rate 100 --watch-streams 10 --watchers-per-stream 100 --val-size 256 --key-space-size 100000" ;;
    # 1,000 leases; 100 keep-alive streams, each renewing as soon as answered.
    lease-keepalive-100c) echo "lease-keepalive --conns 10 --clients 100 --leases 1000 --lease-ttl 60" ;;
    # Put at a fixed 1,000/s without, then with, 1,000 watchers of every key
    # written (10 streams x 100 on 10 connections of their own) that never read.
    put-paced) echo "put --conns 10 --clients 100 --rate 1000 --key-size 8 --val-size 256 --key-space-size 100000" ;;
    put-paced-slow-1000w) echo "watch-slow --slow-watchers 1000 --slow-streams 10 --slow-conns 10 --conns 10 --clients 100 --rate 1000 --key-size 8 --val-size 256 --key-space-size 100000" ;;
    # Issue 6: kube-apiserver's request shapes (create/update/delete Txns,
    # gets, paginated lists at a pinned revision, count-only ranges,
    # compact_rev_key + Compact), 16 clients on 4 connections.
    k8s-16c) echo "k8s --conns 4 --clients 16" ;;
    *) die "unknown workload $1" ;;
  esac
}
case "$WORKLOADS" in
  kv) WORKLOADS=put-1c,put-1000c,range-s-1000c,range-l-1000c ;;
  watch-lease) WORKLOADS=watch-10kw,watch-fanout-1kw,lease-keepalive-100c,put-paced,put-paced-slow-1000w ;;
  k8s) WORKLOADS=k8s-16c ;;
  all) WORKLOADS=put-1c,put-1000c,range-s-1000c,range-l-1000c,watch-10kw,watch-fanout-1kw,lease-keepalive-100c,put-paced,put-paced-slow-1000w,k8s-16c ;;
esac
IFS=, read -r -a WORKLOAD_LIST <<< "$WORKLOADS"
for w in "${WORKLOAD_LIST[@]}"; do workload_args "$w" >/dev/null; done

# --- work directory (must be a real disk: fdatasync numbers on tmpfs lie) ---
WORK=$(mktemp -d "$WORK_ROOT/corekv-compare.XXXXXX")
fstype=$(stat -f -c %T "$WORK")
[ "$fstype" != tmpfs ] || die "$WORK is on tmpfs; set WORK_ROOT to an ext4 directory"
echo "work directory: $WORK ($fstype)"
INDEX="$WORK/index.tsv"
: > "$INDEX"

# The running servers: one pid (SERVER_PID), or one per cluster member.
SERVER_PID=
SERVER_PIDS=()
cleanup() {
  local pid
  for pid in $SERVER_PID "${SERVER_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ "$KEEP_WORK" = 0 ]; then rm -rf "$WORK"/*/data; fi
}
trap cleanup EXIT

# --- build ---
echo "building corekv (release)..."
cargo build --release 2>&1 | tail -n 2
[ -x "$COREKV" ] && [ -x "$BENCH" ] || die "release build did not produce $COREKV and $BENCH"

if [ "$CROSS_CHECK" = 1 ] && [ ! -x "$ETCD_BENCHMARK" ]; then
  if [ "$BUILD_ETCD_BENCHMARK" = 1 ]; then
    echo "building etcd's benchmark tool (installs Go and Debian packages; minutes)..."
    OUT_BIN="$ETCD_BENCHMARK" BASE=$(dirname "$(dirname "$ETCD_BENCHMARK")") \
      bash "$REPO/../shared/tools/etcd-benchmark-build.sh" > "$WORK/etcd-benchmark-build.log" 2>&1 \
      || { tail -n 20 "$WORK/etcd-benchmark-build.log" >&2; die "etcd benchmark build failed (log above)"; }
  else
    echo "etcd's benchmark tool not found at $ETCD_BENCHMARK: skipping the cross-check"
    echo "  (build it with --build-etcd-benchmark or ../shared/tools/etcd-benchmark-build.sh)"
    CROSS_CHECK=0
  fi
fi

# shellcheck source=bench/cluster-layout.sh
. "$REPO/bench/cluster-layout.sh"
if [ "$MEMBERS" = 1 ]; then
  for p in "$COREKV_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
    port_free "$BIND_IP" "$p" || die "$BIND_IP:$p is in use; set BIND_IP or the *_PORT variables"
  done
else
  [ $(( ${BIND_IP##*.} + MEMBERS - 1 )) -le 254 ] || die "BIND_IP $BIND_IP leaves no room for $MEMBERS addresses"
  for i in $(seq 1 "$MEMBERS"); do
    ip=$(member_ip "$i")
    for p in "$COREKV_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
      port_free "$ip" "$p" || die "$ip:$p is in use; set BIND_IP or the *_PORT variables"
    done
    port_free_udp "$ip" "$COREKV_PEER_PORT" || die "$ip:$COREKV_PEER_PORT (UDP) is in use; set COREKV_PEER_PORT"
  done
fi

COREKV_EP="$BIND_IP:$COREKV_PORT"
ETCD_EP="$BIND_IP:$ETCD_PORT"
CLK_TCK=$(getconf CLK_TCK)

# server_cmd SERVER DATA_DIR: the exact command line (printed in results).
server_cmd() {
  case "$1" in
    corekv) echo "$COREKV --data-dir $2 --listen-client-urls http://$COREKV_EP --advertise-client-urls http://$COREKV_EP${COREKV_CORES:+ --cores $COREKV_CORES}" ;;
    etcd) echo "$ETCD --name compare --data-dir $2 --listen-client-urls http://$ETCD_EP --advertise-client-urls http://$ETCD_EP --listen-peer-urls http://$BIND_IP:$ETCD_PEER_PORT --initial-advertise-peer-urls http://$BIND_IP:$ETCD_PEER_PORT --initial-cluster compare=http://$BIND_IP:$ETCD_PEER_PORT" ;;
  esac
}
endpoint() { if [ "$1" = corekv ]; then echo "$COREKV_EP"; else echo "$ETCD_EP"; fi; }

# --- clusters (--members > 1): the layout is in cluster-layout.sh ---

# cluster_view SERVER: one line per member that answers `endpoint status`:
# "mI member_id leader_id" (64-bit ids kept exact: python's int, not jq).
cluster_view() {
  local eps= i
  for i in $(seq 1 "$MEMBERS"); do eps="${eps:+$eps,}$(member_endpoint "$1" "$i")"; done
  ETCDCTL_API=3 etcdctl --endpoints="$eps" --dial-timeout=1s --command-timeout=2s endpoint status -w json 2>/dev/null \
    | python3 -c '
import json, sys
eps = sys.argv[1].split(",")
for s in json.load(sys.stdin):
    st = s["Status"]
    # etcdctl leaves zero fields out: no "leader" means none known
    print("m%d %d %d" % (eps.index(s["Endpoint"]) + 1, st["header"]["member_id"], st.get("leader", 0)))
' "$eps"
}

# start_cluster SERVER DIR: fresh data dirs, start every member, wait until
# all answer `endpoint health` and all report the same non-zero leader.
# Sets SERVER_PIDS (member order) and CLUSTER_EPS (endpoints, leader first);
# writes DIR/leader (the leader's name).
start_cluster() {
  local server=$1 dir=$2 i pid eps= view leaders leader
  rm -rf "$dir/data"; mkdir -p "$dir/data"
  SERVER_PIDS=()
  for i in $(seq 1 "$MEMBERS"); do
    member_cmd "$server" "$i" "$dir/data/m$i" > "$dir/server-m$i.cmd"
    # shellcheck disable=SC2046
    $(cat "$dir/server-m$i.cmd") > "$dir/server-m$i.log" 2>&1 &
    SERVER_PIDS+=($!)
    eps="${eps:+$eps,}$(member_endpoint "$server" "$i")"
  done
  for _ in $(seq 1 600); do
    for i in $(seq 1 "$MEMBERS"); do
      pid=${SERVER_PIDS[$((i - 1))]}
      if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "$dir/server-m$i.log" >&2; die "$server m$i exited at start-up (log: $dir/server-m$i.log)"
      fi
    done
    if ETCDCTL_API=3 etcdctl --endpoints="$eps" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; then
      view=$(cluster_view "$server" || true)
      leaders=$(awk '{print $3}' <<< "$view" | sort -u)
      if [ "$(wc -l <<< "$view")" = "$MEMBERS" ] && [ "$(wc -l <<< "$leaders")" = 1 ] && [ "$leaders" != 0 ]; then
        leader=$(awk -v id="$leaders" '$2 == id {print $1}' <<< "$view")
        [ -n "$leader" ] || die "$server: leader $leaders is not one of the members"
        echo "$leader" > "$dir/leader"
        CLUSTER_EPS=$(member_endpoint "$server" "${leader#m}")
        for i in $(seq 1 "$MEMBERS"); do
          [ "m$i" = "$leader" ] || CLUSTER_EPS="$CLUSTER_EPS,$(member_endpoint "$server" "$i")"
        done
        return 0
      fi
    fi
    sleep 0.1
  done
  die "$server cluster did not become healthy with a leader in 60 s (logs: $dir/server-m*.log)"
}

stop_cluster() {
  local dir=$1 pid
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PIDS=()
  rm -rf "$dir/data"
}

# start_server SERVER DIR: fresh data dir, start, wait until it answers.
start_server() {
  local server=$1 dir=$2 ep
  ep=$(endpoint "$server")
  rm -rf "$dir/data"; mkdir -p "$dir"
  server_cmd "$server" "$dir/data" > "$dir/server.cmd"
  # shellcheck disable=SC2046
  $(cat "$dir/server.cmd") > "$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      tail -n 20 "$dir/server.log" >&2; die "$server exited at start-up (log: $dir/server.log)"
    fi
    if ETCDCTL_API=3 etcdctl --endpoints="$ep" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  die "$server did not become healthy in 30 s (log: $dir/server.log)"
}

stop_server() {
  local dir=$1
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  rm -rf "$dir/data"
}

proc_cpu_ticks() { local f; read -r -a f <<< "$(sed 's/^.*) //' "/proc/$1/stat")"; echo $(( f[11] + f[12] )); }
vm_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# run_main SERVER WORKLOAD ROUND: corekv-bench for --duration, fresh server.
run_main() {
  local server=$1 workload=$2 round=$3 dir ep
  dir="$WORK/main-$workload-$server-r$round"
  ep=$(endpoint "$server")
  start_server "$server" "$dir"
  loadavg > "$dir/load"
  # shellcheck disable=SC2046
  echo "$BENCH $(workload_args "$workload") --endpoints $ep --duration $DURATION --server-pid $SERVER_PID --json $dir/result.json --plot $dir/plot --no-progress" > "$dir/bench.cmd"
  # Exit status 4: a watch run whose events were not delivered exactly
  # once. That is a result (recorded as errors), not a failed run.
  local rc=0
  /usr/bin/time -f '%U %S %M' -o "$dir/gen.time" $(cat "$dir/bench.cmd") > "$dir/bench.txt" 2>&1 || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 4 ]; then cat "$dir/bench.txt" >&2; die "corekv-bench failed ($dir)"; fi
  stop_server "$dir"
  printf 'main\tcorekv-bench\t%s\t%s\t%s\t%s\n' "$server" "$workload" "$round" "$dir" >> "$INDEX"
  python3 - "$dir/result.json" "$server" "$workload" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, l, srv = r["result"], r["result"]["latency_us"], r["server"] or {}
print(f"  {sys.argv[3]:<14} {sys.argv[2]:<7} round {sys.argv[4]}: {s['qps']:>9.0f} req/s  p50 {l['p50']/1e3:7.3f} ms  "
      f"p99 {l['p99']/1e3:7.3f} ms  server {srv.get('cpu_s_per_1000_requests', 0):.3f} CPU s/1k  "
      f"RSS {srv.get('peak_rss_kib', 0)/1024:.0f} MiB  errors {s['failed']}")
w = r.get("watch")
if w:
    e = w["latency_from_ack_us"]
    per_w, per_s = srv.get("rss_kib_per_watcher"), srv.get("rss_kib_per_stream")
    print(f"  {'':<14} {'':<7}          events {w['delivered']}/{w['expected']} ({w['errors']['total']} errors), "
          f"{w['events_per_second']:.0f}/s, ack->event p50 {e['p50']/1e3:.3f} ms p99 {e['p99']/1e3:.3f} ms, "
          f"RSS/watcher {per_w if per_w is None else round(per_w, 2)} KiB, RSS/stream {per_s if per_s is None else round(per_s, 1)} KiB")
EOF
}

# preload_cmd WORKLOAD ENDPOINTS: for a cluster's range workload, the
# separate command that puts the keys corekv-bench's own preload would
# (keys 0..key-space-size, same sizes and prefix), so that the server CPU
# window around the measured command holds no preload. Empty otherwise.
preload_cmd() {
  local args a next= k=8 v=8 n=100000 prefix=
  args=$(workload_args "$1")
  case " $args " in
    " range "*) ;;
    *) return 0 ;;
  esac
  case " $args " in *" --preload "*) return 0 ;; esac
  for a in $args; do
    case "$next" in
      --key-size) k=$a ;; --val-size) v=$a ;; --key-space-size) n=$a ;; --prefix) prefix=$a ;;
    esac
    next=$a
  done
  echo "$BENCH put --endpoints $2 --conns 10 --clients 100 --key-size $k --val-size $v --key-space-size $n --sequential-keys --total $n${prefix:+ --prefix $prefix} --no-progress"
}

# run_main_cluster SERVER WORKLOAD ROUND: as run_main, on a fresh cluster of
# MEMBERS processes. corekv-bench gets every endpoint (leader first) and no
# --server-pid; this function reads utime+stime of every member from
# /proc/<pid>/stat right before and after the generator command, and each
# member's VmHWM after it, into DIR/cluster.usage ("clk_tck N",
# "window_s S", then "mI pid cpu_ticks vmhwm_kib" per member).
run_main_cluster() {
  local server=$1 workload=$2 round=$3 dir pcmd i pid t0 t1 extra= rc=0
  local -a ticks0=()
  dir="$WORK/main-$workload-$server-r$round"
  start_cluster "$server" "$dir"
  loadavg > "$dir/load"
  pcmd=$(preload_cmd "$workload" "$CLUSTER_EPS")
  if [ -n "$pcmd" ]; then
    echo "$pcmd" > "$dir/preload.cmd"
    # shellcheck disable=SC2046
    $(cat "$dir/preload.cmd") > "$dir/preload.txt" 2>&1 || { cat "$dir/preload.txt" >&2; die "preload failed ($dir)"; }
    extra=" --preload 0"
  fi
  echo "$BENCH $(workload_args "$workload")$extra --endpoints $CLUSTER_EPS --duration $DURATION --json $dir/result.json --plot $dir/plot --no-progress" > "$dir/bench.cmd"
  for pid in "${SERVER_PIDS[@]}"; do ticks0+=("$(proc_cpu_ticks "$pid")"); done
  t0=$EPOCHREALTIME
  # shellcheck disable=SC2046
  /usr/bin/time -f '%U %S %M' -o "$dir/gen.time" $(cat "$dir/bench.cmd") > "$dir/bench.txt" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  {
    echo "clk_tck $CLK_TCK"
    echo "window_s $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')"
    for i in $(seq 1 "$MEMBERS"); do
      pid=${SERVER_PIDS[$((i - 1))]}
      echo "m$i $pid $(( $(proc_cpu_ticks "$pid") - ticks0[i - 1] )) $(vm_hwm_kib "$pid")"
    done
  } > "$dir/cluster.usage"
  # Exit status 4: a watch run whose events were not delivered exactly once.
  if [ "$rc" != 0 ] && [ "$rc" != 4 ]; then cat "$dir/bench.txt" >&2; die "corekv-bench failed ($dir)"; fi
  stop_cluster "$dir"
  printf 'main\tcorekv-bench\t%s\t%s\t%s\t%s\n' "$server" "$workload" "$round" "$dir" >> "$INDEX"
  python3 - "$dir/result.json" "$server" "$workload" "$round" "$dir/cluster.usage" "$(cat "$dir/leader")" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, l = r["result"], r["result"]["latency_us"]
lines = [line.split() for line in open(sys.argv[5])]
hz = int(lines[0][1])
cpu_s = sum(int(f[2]) for f in lines[2:]) / hz
hwm_kib = sum(int(f[3]) for f in lines[2:])
requests = s["ok"] + s["failed"]
per_1k = cpu_s * 1000 / requests if requests else 0
print(f"  {sys.argv[3]:<14} {sys.argv[2]:<7} round {sys.argv[4]}: {s['qps']:>9.0f} req/s  p50 {l['p50']/1e3:7.3f} ms  "
      f"p99 {l['p99']/1e3:7.3f} ms  server (sum of {len(lines) - 2}) {per_1k:.3f} CPU s/1k  "
      f"RSS {hwm_kib/1024:.0f} MiB  errors {s['failed']}  leader {sys.argv[6]}")
EOF
}

# run_xcheck TOOL SERVER KIND ROUND: one generator with --total on a fresh
# server; server CPU from /proc around the whole tool run.
run_xcheck() {
  local tool=$1 server=$2 kind=$3 round=$4 dir ep pid0 cmd
  dir="$WORK/xcheck-$kind-$tool-$server-r$round"
  ep=$(endpoint "$server")
  start_server "$server" "$dir"
  if [ "$kind" = range-s ]; then
    # etcd's tool ranges over one key: make it exist, as corekv-bench's preload does.
    "$BENCH" put --endpoints "$ep" --key-size 8 --val-size 256 --key-space-size 1 --total 1 --no-progress > /dev/null
  fi
  case "$tool:$kind" in
    etcd-benchmark:put) cmd="$ETCD_BENCHMARK --endpoints $ep --conns 100 --clients 1000 --precise put --total $XCHECK_TOTAL --key-size 8 --val-size 256 --key-space-size 100000" ;;
    corekv-bench:put) cmd="$BENCH put --endpoints $ep --conns 100 --clients 1000 --total $XCHECK_TOTAL --key-size 8 --val-size 256 --key-space-size 100000 --json $dir/result.json --no-progress" ;;
    etcd-benchmark:range-s) cmd="$ETCD_BENCHMARK --endpoints $ep --conns 100 --clients 1000 --precise range 00000000 --consistency s --total $((XCHECK_TOTAL * 2))" ;;
    corekv-bench:range-s) cmd="$BENCH range --endpoints $ep --conns 100 --clients 1000 --consistency s --total $((XCHECK_TOTAL * 2)) --key-size 8 --val-size 256 --key-space-size 1 --preload 0 --json $dir/result.json --no-progress" ;;
  esac
  echo "$cmd" > "$dir/bench.cmd"
  loadavg > "$dir/load"
  pid0=$(proc_cpu_ticks "$SERVER_PID")
  # shellcheck disable=SC2086
  GRPC_GO_LOG_SEVERITY_LEVEL=error /usr/bin/time -f '%U %S %M %e' -o "$dir/gen.time" $cmd > "$dir/bench.txt" 2>&1 \
    || { tail -n 20 "$dir/bench.txt" >&2; die "$tool failed ($dir)"; }
  echo "$(( $(proc_cpu_ticks "$SERVER_PID") - pid0 )) $CLK_TCK $(vm_hwm_kib "$SERVER_PID")" > "$dir/server.usage"
  stop_server "$dir"
  printf 'xcheck\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$server" "$kind" "$round" "$dir" >> "$INDEX"
  echo "  xcheck $kind $tool vs $server round $round: $(grep -E 'Requests/sec|^throughput' "$dir/bench.txt" | tr -s ' \t' ' ')"
}

# --- the runs ---
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(loadavg)
echo "load average at start: $LOAD_START"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS"
  for workload in "${WORKLOAD_LIST[@]}"; do
    if [ "$MEMBERS" = 1 ]; then
      run_main corekv "$workload" "$round"
      run_main etcd "$workload" "$round"
    else
      run_main_cluster corekv "$workload" "$round"
      run_main_cluster etcd "$workload" "$round"
    fi
  done
  if [ "$CROSS_CHECK" = 1 ]; then
    for kind in put range-s; do
      for server in corekv etcd; do
        run_xcheck etcd-benchmark "$server" "$kind" "$round"
        run_xcheck corekv-bench "$server" "$kind" "$round"
      done
    done
  fi
done
LOAD_END=$(loadavg)
echo "load average at end: $LOAD_END"

# --- the report ---
mkdir -p "$REPO/bench/results"
OUT="$REPO/bench/results/$(date +%F)-$NAME"
{
  echo "started=$STARTED"
  echo "finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "load_start=$LOAD_START"
  echo "load_end=$LOAD_END"
  echo "rounds=$ROUNDS"
  echo "duration=$DURATION"
  echo "workloads=$WORKLOADS"
  echo "cross_check=$CROSS_CHECK"
  echo "xcheck_total=$XCHECK_TOTAL"
  echo "compare_command=bench/compare.sh $ORIG_ARGS"
  echo "commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo -dirty)"
  echo "etcd_version=$("$ETCD" --version | head -1 | sed "s/^etcd Version: /etcd /")"
  echo "rustc=$(rustc --version)"
  if [ "$MEMBERS" = 1 ]; then
    echo "corekv_cmd=$(server_cmd corekv '<fresh dir>')"
    echo "etcd_cmd=$(server_cmd etcd '<fresh dir>')"
  else
    echo "members=$MEMBERS"
    echo "cross_check_note=${CROSS_CHECK_NOTE:-not run (--no-cross-check); it is single-node only}"
    for i in $(seq 1 "$MEMBERS"); do echo "corekv_cmd.m$i=$(member_cmd corekv "$i" "<fresh dir>/m$i")"; done
    for i in $(seq 1 "$MEMBERS"); do echo "etcd_cmd.m$i=$(member_cmd etcd "$i" "<fresh dir>/m$i")"; done
    for w in "${WORKLOAD_LIST[@]}"; do
      p=$(preload_cmd "$w" '<endpoints>')
      if [ -n "$p" ]; then echo "preload.$w=$p"; fi
    done
  fi
  echo "nproc=$(nproc)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel=$(uname -r)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "disk=$(df -T "$WORK" | awk 'NR==2 {print $1" "$2}')"
  for w in "${WORKLOAD_LIST[@]}"; do echo "args.$w=$(workload_args "$w")"; done
} > "$WORK/meta.txt"
python3 "$REPO/bench/compare_report.py" "$WORK" "$OUT"
# The first round's plots (latency percentile curve, throughput over
# time) of every workload and server, next to the results file.
mkdir -p "$OUT-plots"
for d in "$WORK"/main-*-r1; do
  for f in "$d"/plot-*.svg; do
    [ -e "$f" ] && cp "$f" "$OUT-plots/$(basename "$d" | sed 's/^main-//; s/-r1$//')-$(basename "$f" | sed 's/^plot-//')"
  done
done
echo "plots: $OUT-plots/"
echo "results: $OUT.md $OUT.json (raw: $WORK)"
