#!/usr/bin/env bash
# Election time and write unavailability after the leader is killed:
# corekv vs etcd 3.4, each as a three-member cluster on this machine.
#
# Builds corekv in release. Then for corekv, and then for etcd, starts a
# fresh three-member cluster (the layout of `compare.sh --members 3`:
# member i is mi on its own loopback address BIND_IP+i-1, the same ports;
# both servers with their default --heartbeat-interval 100 and
# --election-timeout 1000) and repeats K times:
#   1. wait for a stable leader: every member healthy (`etcdctl endpoint
#      health`) and `etcdctl endpoint status -w json` showing the same
#      non-zero leader and term on all three, twice, 1 s apart;
#   2. start a light open-loop write load through the two followers
#      (corekv-bench put --rate 200 --clients 4 --conns 2, bounded by
#      --load-duration) and let it run for --load-lead;
#   3. SIGKILL the leader process; the kill time is bash's $EPOCHREALTIME
#      (microseconds) right after kill(2) returned;
#   4. election time: poll both survivors with one `etcdctl endpoint status
#      -w json` call (then sleep --poll-interval) until both report the same
#      new non-zero leader; the time is when that poll returned (an upper
#      bound; the last poll that did not see it started at the lower bound,
#      both are recorded);
#   5. write unavailability: from the kill on, start an `etcdctl put`
#      through a survivor (alternating) every --probe-interval, each with
#      --probe-timeout, until one succeeds; the time is when the first
#      successful put returned;
#   6. restart the killed member on its data directory (same command line)
#      and wait until it is healthy and follows the new leader.
# Writes bench/results/YYYY-MM-DD-<name>.md and .json (every kill, median
# and max per server, the machine, the exact commands) via
# bench/election_report.py. Raw outputs stay in the work directory it
# prints (server logs, the load's JSON, probe errors).
#
# Usage: bench/election.sh [--kills K] [--servers corekv,etcd] [--name NAME]
#          [--load-rate 200] [--load-duration 10s] [--load-lead 2]
#          [--poll-interval 0.01] [--probe-interval 0.025]
#          [--probe-timeout 1s] [--timeout 30] [--corekv-cores N]
#          [--keep-work]
# --kills: leader kills per server (5); --name: results file name
# (election); --load-lead: seconds of load before the kill; --timeout:
# seconds to wait for a new leader and for a successful put after a kill
# (a kill that exceeds it is recorded as timed out).
# Environment: BIND_IP (127.0.0.77: members use .77, .78, .79),
#   COREKV_PORT (23790), COREKV_PEER_PORT (23793, UDP/QUIC), ETCD_PORT
#   (23791), ETCD_PEER_PORT (23792), WORK_ROOT (/var/tmp).
set -euo pipefail
export LC_ALL=C   # $EPOCHREALTIME with a '.' decimal point

KILLS=5
SERVERS=corekv,etcd
NAME=election
LOAD_RATE=200
LOAD_DURATION=10s
LOAD_LEAD=2
POLL_INTERVAL=0.01
PROBE_INTERVAL=0.025
PROBE_TIMEOUT=1s
TIMEOUT=30
COREKV_CORES=
KEEP_WORK=0
MEMBERS=3
BIND_IP=${BIND_IP:-127.0.0.77}
COREKV_PORT=${COREKV_PORT:-23790}
COREKV_PEER_PORT=${COREKV_PEER_PORT:-23793}
ETCD_PORT=${ETCD_PORT:-23791}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23792}
WORK_ROOT=${WORK_ROOT:-/var/tmp}

die() { echo "election.sh: $*" >&2; exit 1; }
ORIG_ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) KILLS=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --load-rate) LOAD_RATE=$2; shift 2 ;;
    --load-duration) LOAD_DURATION=$2; shift 2 ;;
    --load-lead) LOAD_LEAD=$2; shift 2 ;;
    --poll-interval) POLL_INTERVAL=$2; shift 2 ;;
    --probe-interval) PROBE_INTERVAL=$2; shift 2 ;;
    --probe-timeout) PROBE_TIMEOUT=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --corekv-cores) COREKV_CORES=$2; shift 2 ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$KILLS" -ge 1 ] 2>/dev/null || die "--kills must be a positive number"
[ "$TIMEOUT" -ge 1 ] 2>/dev/null || die "--timeout must be a positive number of seconds"
[[ $LOAD_DURATION =~ ^[0-9]+s$ ]] || die "--load-duration takes whole seconds, like 10s"
IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
  case "$s" in corekv|etcd) ;; *) die "--servers: unknown server $s (corekv, etcd)" ;; esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
COREKV="$REPO/target/release/corekv"
BENCH="$REPO/target/release/corekv-bench"
ETCD=$(command -v etcd || true)
[ -n "$ETCD" ] || die "etcd not found: apt-get install etcd-server"
command -v etcdctl >/dev/null || die "etcdctl not found: apt-get install etcd-client"
command -v python3 >/dev/null || die "python3 not found"
[ -n "${EPOCHREALTIME:-}" ] || die "needs bash 5 (\$EPOCHREALTIME)"
export ETCDCTL_API=3

# --- work directory (a real disk, as for compare.sh) ---
WORK=$(mktemp -d "$WORK_ROOT/corekv-election.XXXXXX")
fstype=$(stat -f -c %T "$WORK")
[ "$fstype" != tmpfs ] || die "$WORK is on tmpfs; set WORK_ROOT to an ext4 directory"
echo "work directory: $WORK ($fstype)"
KILLS_TSV="$WORK/kills.tsv"
: > "$KILLS_TSV"

# Everything this script starts, so that every exit path stops it: the
# members (MEMBER_PIDS, index = member number - 1), the load generator and
# the put prober (its own process group, so its etcdctl children go too).
MEMBER_PIDS=()
LOAD_PID=
PROBE_PID=
cleanup() {
  local pid
  if [ -n "$PROBE_PID" ]; then kill -TERM -- "-$PROBE_PID" 2>/dev/null || true; fi
  if [ -n "$LOAD_PID" ]; then kill -KILL "$LOAD_PID" 2>/dev/null || true; fi
  for pid in "${MEMBER_PIDS[@]}"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
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

# --- the cluster layout (as compare.sh --members 3) ---
# shellcheck source=bench/cluster-layout.sh
. "$REPO/bench/cluster-layout.sh"
all_endpoints() {
  local i out=
  for i in $(seq 1 "$MEMBERS"); do out="${out:+$out,}$(member_endpoint "$1" "$i")"; done
  echo "$out"
}

[ $(( ${BIND_IP##*.} + MEMBERS - 1 )) -le 254 ] || die "BIND_IP $BIND_IP leaves no room for $MEMBERS addresses"
for i in $(seq 1 "$MEMBERS"); do
  ip=$(member_ip "$i")
  for p in "$COREKV_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
    port_free "$ip" "$p" || die "$ip:$p is in use (is compare.sh running?); set BIND_IP or the *_PORT variables"
  done
  port_free_udp "$ip" "$COREKV_PEER_PORT" || die "$ip:$COREKV_PEER_PORT (UDP) is in use; set COREKV_PEER_PORT"
done

# start_member SERVER DIR I: start member I on DIR/data/mI (log appended).
start_member() {
  local server=$1 dir=$2 i=$3
  member_cmd "$server" "$i" "$dir/data/m$i" > "$dir/server-m$i.cmd"
  # shellcheck disable=SC2046
  $(cat "$dir/server-m$i.cmd") >> "$dir/server-m$i.log" 2>&1 &
  MEMBER_PIDS[i - 1]=$!
}

check_alive() {
  local server=$1 dir=$2 i
  for i in $(seq 1 "$MEMBERS"); do
    if ! kill -0 "${MEMBER_PIDS[i - 1]}" 2>/dev/null; then
      tail -n 20 "$dir/server-m$i.log" >&2; die "$server m$i exited (log: $dir/server-m$i.log)"
    fi
  done
}

# cluster_view SERVER [ENDPOINTS]: one line per member that answers
# `endpoint status`: "mI member_id leader_id raft_term" (64-bit ids exact).
cluster_view() {
  etcdctl --endpoints="${2:-$(all_endpoints "$1")}" --dial-timeout=1s --command-timeout=2s endpoint status -w json 2>/dev/null \
    | python3 -c '
import json, sys
eps = sys.argv[1].split(",")
for s in json.load(sys.stdin):
    st = s["Status"]
    # etcdctl leaves zero fields out: no "leader" means none known
    print("m%d %d %d %d" % (eps.index(s["Endpoint"]) + 1, st["header"]["member_id"], st.get("leader", 0),
                            st["header"].get("raft_term", 0)))
' "$(all_endpoints "$1")"
}

# agreed_leader VIEW: "leader_id term" when all MEMBERS lines agree on a
# non-zero leader and a term; nothing otherwise.
agreed_leader() {
  local lines pairs
  lines=$(grep -c . <<< "$1" || true)
  pairs=$(awk '{print $3, $4}' <<< "$1" | sort -u)
  if [ "$lines" = "$MEMBERS" ] && [ "$(wc -l <<< "$pairs")" = 1 ] && [ "${pairs%% *}" != 0 ]; then echo "$pairs"; fi
}

# wait_stable SERVER DIR: all members healthy and agreeing on the same
# leader and term twice, 1 s apart. Sets LEADER (member number), LEADER_ID
# and MEMBER_IDS (member number - 1 -> id).
wait_stable() {
  local server=$1 dir=$2 view first second deadline=$(( SECONDS + 60 ))
  while [ "$SECONDS" -lt "$deadline" ]; do
    check_alive "$server" "$dir"
    if etcdctl --endpoints="$(all_endpoints "$server")" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; then
      view=$(cluster_view "$server" || true)
      first=$(agreed_leader "$view")
      if [ -n "$first" ]; then
        sleep 1
        view=$(cluster_view "$server" || true)
        second=$(agreed_leader "$view")
        if [ "$first" = "$second" ]; then
          LEADER_ID=${first%% *}
          LEADER=$(awk -v id="$LEADER_ID" '$2 == id {print substr($1, 2)}' <<< "$view")
          [ -n "$LEADER" ] || die "$server: leader $LEADER_ID is not one of the members"
          mapfile -t MEMBER_IDS < <(sort <<< "$view" | awk '{print $2}')
          return 0
        fi
      fi
    fi
    sleep 0.2
  done
  die "$server: no stable leader within 60 s (logs: $dir/server-m*.log)"
}

# The put prober, run in its own process group (setsid) so that cleanup can
# stop it with all of its etcdctl children: from now until a put succeeds,
# DIR/probe.stop appears or UNTIL_US passes, start every INTERVAL one
# `etcdctl put` through EP1 or EP2 (alternating) with command timeout TMO,
# in the background; each success appends "start_us end_us endpoint n" to
# DIR/probe.ok. Then waits for the puts still out (bounded by TMO).
# shellcheck disable=SC2016
PROBE_SCRIPT='
dir=$1 ep1=$2 ep2=$3 interval=$4 tmo=$5 until_us=$6 key=$7
trap "kill \$(jobs -p) 2>/dev/null; exit 0" TERM
n=0
while [ ! -s "$dir/probe.ok" ] && [ ! -e "$dir/probe.stop" ] && [ "${EPOCHREALTIME/./}" -lt "$until_us" ]; do
  if [ $((n % 2)) = 0 ]; then ep=$ep1; else ep=$ep2; fi
  (
    t0=${EPOCHREALTIME/./}
    if etcdctl --endpoints="$ep" --dial-timeout=1s --command-timeout="$tmo" put "$key/$n" x >/dev/null 2>>"$dir/probe.err"; then
      echo "$t0 ${EPOCHREALTIME/./} $ep $n" >> "$dir/probe.ok"
    fi
  ) &
  n=$((n + 1))
  sleep "$interval"
done
echo "$n" > "$dir/probe.sent"
wait
'

# wait_pid PID SECONDS: wait for our child PID; SIGKILL it after SECONDS.
wait_pid() {
  local pid=$1 deadline=$(( SECONDS + $2 ))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# one_kill SERVER DIR K: steps 1-6 of the header for kill number K.
one_kill() {
  local server=$1 dir=$2 k=$3 kdir leader old_id f1 f2 ep1 ep2 t_kill until_us
  local out rest t_start t_end last_miss_start=0 polls=0 new_id= t_elected= elected_lower= new_leader=
  local -a leaders
  kdir="$dir/kill-$k"; mkdir -p "$kdir"
  wait_stable "$server" "$dir"
  leader=$LEADER; old_id=$LEADER_ID
  f1=$(( leader % MEMBERS + 1 )); f2=$(( (leader + 1) % MEMBERS + 1 ))
  ep1=$(member_endpoint "$server" "$f1"); ep2=$(member_endpoint "$server" "$f2")

  # 2. the load, through the two followers
  echo "$BENCH put --endpoints $ep1,$ep2 --rate $LOAD_RATE --clients 4 --conns 2 --duration $LOAD_DURATION --key-size 8 --val-size 256 --key-space-size 1000 --json $kdir/load.json --no-progress" > "$kdir/load.cmd"
  # shellcheck disable=SC2046
  $(cat "$kdir/load.cmd") > "$kdir/load.txt" 2>&1 &
  LOAD_PID=$!
  sleep "$LOAD_LEAD"
  kill -0 "$LOAD_PID" 2>/dev/null || { cat "$kdir/load.txt" >&2; die "the load generator ended before the kill ($kdir)"; }
  check_alive "$server" "$dir"

  # 3. the kill
  kill -KILL "${MEMBER_PIDS[leader - 1]}"
  t_kill=${EPOCHREALTIME/./}
  wait "${MEMBER_PIDS[leader - 1]}" 2>/dev/null || true
  MEMBER_PIDS[leader - 1]=
  until_us=$(( t_kill + TIMEOUT * 1000000 ))

  # 5. the put prober (in the background, while this shell polls)
  setsid bash -c "$PROBE_SCRIPT" probe "$kdir" "$ep1" "$ep2" "$PROBE_INTERVAL" "$PROBE_TIMEOUT" "$until_us" "/election-probe/k$k" &
  PROBE_PID=$!

  # 4. poll both survivors until they name the same new leader
  while [ "${EPOCHREALTIME/./}" -lt "$until_us" ]; do
    t_start=${EPOCHREALTIME/./}
    out=$(etcdctl --endpoints="$ep1,$ep2" --dial-timeout=500ms --command-timeout=500ms endpoint status -w json 2>/dev/null || true)
    t_end=${EPOCHREALTIME/./}
    polls=$((polls + 1))
    leaders=(); rest=$out
    while [[ $rest =~ \"leader\":([0-9]+) ]]; do
      leaders+=("${BASH_REMATCH[1]}"); rest=${rest#*"${BASH_REMATCH[0]}"}
    done
    if [ "${#leaders[@]}" = 2 ] && [ "${leaders[0]}" = "${leaders[1]}" ] && [ "${leaders[0]}" != 0 ] \
      && [ "${leaders[0]}" != "$old_id" ]; then
      new_id=${leaders[0]}; t_elected=$t_end; elected_lower=$last_miss_start
      break
    fi
    last_miss_start=$t_start
    sleep "$POLL_INTERVAL"
  done
  local poll_end=${EPOCHREALTIME/./}

  # wait for the prober: it stops at its first success or at the timeout
  while kill -0 "$PROBE_PID" 2>/dev/null && [ ! -s "$kdir/probe.ok" ] && [ "${EPOCHREALTIME/./}" -lt "$until_us" ]; do
    sleep 0.05
  done
  touch "$kdir/probe.stop"
  wait_pid "$PROBE_PID" 10
  kill -TERM -- "-$PROBE_PID" 2>/dev/null || true
  PROBE_PID=
  local t_write=
  if [ -s "$kdir/probe.ok" ]; then t_write=$(sort -n -k2 "$kdir/probe.ok" | head -n 1 | cut -d' ' -f2); fi

  # the load ends by itself (--load-duration); bounded in case puts hang
  wait_pid "$LOAD_PID" $(( ${LOAD_DURATION%s} + 30 ))
  LOAD_PID=

  if [ -n "$new_id" ]; then
    for i in $(seq 1 "$MEMBERS"); do [ "${MEMBER_IDS[i - 1]}" = "$new_id" ] && new_leader=m$i; done
  fi
  # 6. restart the killed member and wait until it follows the new leader
  local t_restart t_rejoined= view
  t_restart=${EPOCHREALTIME/./}
  start_member "$server" "$dir" "$leader"
  local deadline=$(( SECONDS + 60 ))
  while [ "$SECONDS" -lt "$deadline" ]; do
    check_alive "$server" "$dir"
    if etcdctl --endpoints="$(member_endpoint "$server" "$leader")" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; then
      view=$(cluster_view "$server" "$(member_endpoint "$server" "$leader")" || true)
      if [ -n "$view" ] && [ "$(awk '{print $3}' <<< "$view")" != 0 ]; then t_rejoined=${EPOCHREALTIME/./}; break; fi
    fi
    sleep 0.1
  done
  [ -n "$t_rejoined" ] || die "$server m$leader did not rejoin within 60 s (log: $dir/server-m$leader.log)"

  # server kill old_leader new_leader t_kill_us elected_us elected_lower_us
  # write_us polls poll_window_us probes_sent rejoin_us run_dir
  printf '%s\t%s\tm%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$k" "$leader" "${new_leader:-}" "$t_kill" \
    "${t_elected:+$(( t_elected - t_kill ))}" "${elected_lower:+$(( elected_lower > t_kill ? elected_lower - t_kill : 0 ))}" \
    "${t_write:+$(( t_write - t_kill ))}" "$polls" "$(( poll_end - t_kill ))" "$(cat "$kdir/probe.sent" 2>/dev/null || echo 0)" \
    "$(( t_rejoined - t_restart ))" "$kdir" >> "$KILLS_TSV"
  python3 - "$server" "$k" "$leader" "$t_elected" "$t_write" "$t_kill" "${new_leader:-none}" "$polls" <<'EOF'
import sys
server, k, leader, elected, write, kill, new, polls = sys.argv[1:]
ms = lambda t: f"{(int(t) - int(kill)) / 1e3:8.1f} ms" if t else "timed out"
print(f"  {server:<7} kill {k}: leader m{leader} killed; new leader {new} after {ms(elected)} "
      f"({polls} polls); first put after {ms(write)}")
EOF
}

# run_server SERVER: a fresh cluster, KILLS kills, stop.
run_server() {
  local server=$1 dir i pid
  dir="$WORK/$server"
  mkdir -p "$dir/data"
  MEMBER_PIDS=()
  for i in $(seq 1 "$MEMBERS"); do start_member "$server" "$dir" "$i"; done
  for k in $(seq 1 "$KILLS"); do one_kill "$server" "$dir" "$k"; done
  for pid in "${MEMBER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${MEMBER_PIDS[@]}"; do wait_pid "$pid" 10; done
  MEMBER_PIDS=()
  if [ "$KEEP_WORK" = 0 ]; then rm -rf "$dir/data"; fi
}

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(loadavg)
echo "load average at start: $LOAD_START"
for server in "${SERVER_LIST[@]}"; do
  echo "$server: 3 members, $KILLS leader kills"
  run_server "$server"
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
  echo "kills=$KILLS"
  echo "servers=$SERVERS"
  echo "members=$MEMBERS"
  echo "load_rate=$LOAD_RATE"
  echo "load_duration=$LOAD_DURATION"
  echo "load_lead_s=$LOAD_LEAD"
  echo "poll_interval_s=$POLL_INTERVAL"
  echo "probe_interval_s=$PROBE_INTERVAL"
  echo "probe_timeout=$PROBE_TIMEOUT"
  echo "timeout_s=$TIMEOUT"
  echo "election_command=bench/election.sh $ORIG_ARGS"
  echo "commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo -dirty)"
  echo "etcd_version=$("$ETCD" --version | head -1 | sed "s/^etcd Version: /etcd /")"
  echo "etcdctl_version=$(etcdctl version | head -1)"
  echo "rustc=$(rustc --version)"
  for s in corekv etcd; do
    for i in $(seq 1 "$MEMBERS"); do echo "${s}_cmd.m$i=$(member_cmd "$s" "$i" "<fresh dir>/m$i")"; done
  done
  echo "load_cmd=$BENCH put --endpoints <follower>,<follower> --rate $LOAD_RATE --clients 4 --conns 2 --duration $LOAD_DURATION --key-size 8 --val-size 256 --key-space-size 1000 --json <file> --no-progress"
  echo "poll_cmd=etcdctl --endpoints=<survivor>,<survivor> --dial-timeout=500ms --command-timeout=500ms endpoint status -w json; sleep $POLL_INTERVAL"
  echo "probe_cmd=etcdctl --endpoints=<survivor, alternating> --dial-timeout=1s --command-timeout=$PROBE_TIMEOUT put /election-probe/k<kill>/<n> x  (one started every $PROBE_INTERVAL s)"
  echo "nproc=$(nproc)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel=$(uname -r)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "disk=$(df -T "$WORK" | awk 'NR==2 {print $1" "$2}')"
} > "$WORK/meta.txt"
python3 "$REPO/bench/election_report.py" "$WORK" "$OUT"
echo "results: $OUT.md $OUT.json (raw: $WORK)"
