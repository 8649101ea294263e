#!/usr/bin/env bash
# etcdctl (etcd 3.4, ETCDCTL_API=3) compatibility suite for corekv.
#
# Usage:
#   tests/etcdctl/compat.sh /path/to/corekv     # check corekv
#   tests/etcdctl/compat.sh --reference-etcd     # run the same checks against
#                                                # /usr/bin/etcd (3.4) to prove
#                                                # the expectations are etcd's
#
# Starts one fresh server on a free 127.0.0.x port, runs etcdctl against it and
# compares every output with what etcd 3.4 prints for the same command. Exits
# non-zero with an "expected vs got" message on the first difference.
#
# Environment:
#   COREKV_COMPAT_TMPDIR     where the data dir goes (default /var/tmp; must
#                            not be tmpfs: corekv's WAL uses O_DIRECT)
#   COREKV_COMPAT_ENDPOINT   "url" (default: --endpoints=http://host:port) or
#                            "hostport" (--endpoints=host:port)
#   COREKV_ETCDCTL           the etcdctl binary (default: etcdctl from PATH)
#   COREKV_ETCD              the etcd binary for --reference-etcd (default: etcd)
#   KEEP_GOING=1             report every failed check instead of stopping at
#                            the first one (later checks may then cascade)
# (No ETCDCTL_* names: etcdctl warns on stderr about ETCDCTL_* variables it
# does not know.)

set -u -o pipefail

ETCDCTL=${COREKV_ETCDCTL:-etcdctl}
TIMEOUT=10 # seconds, for every etcdctl call

die() { echo "compat.sh: $*" >&2; exit 2; }

[ $# -eq 1 ] || die "usage: $0 /path/to/corekv | --reference-etcd"
if [ "$1" = "--reference-etcd" ]; then
    MODE=etcd
    SERVER=${COREKV_ETCD:-etcd}
    command -v "$SERVER" >/dev/null || die "etcd not found (apt-get install etcd-server)"
    # etcd 3.4 reports its own version; corekv reports an etcd 3.5 release.
    VERSION_RE='^3\.4\.[0-9]+$'
else
    MODE=corekv
    SERVER=$1
    [ -x "$SERVER" ] || die "corekv binary not executable: $SERVER"
    VERSION_RE='^3\.5\.[0-9]+$'
fi
command -v "$ETCDCTL" >/dev/null || die "etcdctl not found: install it with 'apt-get install etcd-client'"
command -v python3 >/dev/null || die "python3 not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
CTL_VERSION=$("$ETCDCTL" version 2>&1)
[[ "$CTL_VERSION" == "etcdctl version: 3.4."* ]] ||
    die "these expectations are etcdctl 3.4's; got: ${CTL_VERSION%%$'\n'*}"
for var in $(compgen -e ETCDCTL_); do unset "$var"; done # no inherited flags
export ETCDCTL_API=3

# ---------------------------------------------------------------- server ----

WORK=$(mktemp -d "${COREKV_COMPAT_TMPDIR:-/var/tmp}/corekv-etcdctl.XXXXXX") || die "mktemp failed"
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOG=$WORK/server.log READY_LINES=0

# pick_ports: a random 127.0.0.x host and two ports the kernel says are free
# on it; sets URL (client), PEER and EP (what etcdctl is given as --endpoints:
# the URL, as users write it, or with COREKV_COMPAT_ENDPOINT=hostport just
# host:port).
pick_ports() {
    HOST=127.0.0.$((RANDOM % 200 + 20))
    read -r CLIENT_PORT PEER_PORT < <(python3 - "$HOST" <<'PY'
import socket, sys
socks = []
for _ in range(2):
    s = socket.socket(); s.bind((sys.argv[1], 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
    ) || die "cannot find free ports"
    URL=http://$HOST:$CLIENT_PORT
    PEER=http://$HOST:$PEER_PORT
    EP=$URL
    [ "${COREKV_COMPAT_ENDPOINT:-url}" = hostport ] && EP=$HOST:$CLIENT_PORT
}

# start_server [--restart]: start a fresh server (or, with --restart, the
# same one again on its data dir and ports) and wait for its "ready to serve
# client requests" log line; tries other ports if the chosen ones got taken.
start_server() {
    local attempt i args restart=${1:-}
    for attempt in 1 2 3; do
        [ -n "$restart" ] || pick_ports
        args=(--name default --data-dir "$WORK/data"
            --listen-client-urls "$URL" --advertise-client-urls "$URL")
        if [ "$MODE" = etcd ]; then
            args+=(--listen-peer-urls "$PEER" --initial-advertise-peer-urls "$PEER"
                --initial-cluster "default=$PEER")
        fi
        [ -n "$restart" ] || rm -rf "$WORK/data"
        "$SERVER" "${args[@]}" >>"$LOG" 2>&1 &
        SERVER_PID=$!
        for i in $(seq 300); do
            [ "$(grep -c 'ready to serve client requests' "$LOG")" -gt "$READY_LINES" ] &&
                { READY_LINES=$((READY_LINES + 1)); return 0; }
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$SERVER_PID" 2>/dev/null && break # alive but not ready
        wait "$SERVER_PID" 2>/dev/null; SERVER_PID=
        [ -z "$restart" ] && grep -qi 'address already in use' "$LOG" || break
        : >"$LOG"
        echo "compat.sh: $URL or $PEER was taken meanwhile; trying other ports"
    done
    echo "FAIL: server did not become ready ($MODE: $SERVER ${args[*]})"
    echo "--- server log:"; tail -n 40 "$LOG"
    exit 1
}

# --------------------------------------------------------------- helpers ----

CMD= OUT= ERR= RC=
# ctl ARGS...: run etcdctl against the server (stdin: /dev/null), setting
# OUT (exact stdout), ERR (stderr without the client's JSON retry logs) and RC.
ctl() { ctl_in "$@" </dev/null; }
# ctl_in ARGS... <input: same, feeding the function's stdin to etcdctl.
ctl_in() {
    CMD="etcdctl $(printf '%q ' "$@")"
    timeout "$TIMEOUT" "$ETCDCTL" --endpoints="$EP" --dial-timeout=3s \
        --command-timeout=5s "$@" >"$WORK/out" 2>"$WORK/err"
    RC=$?
    OUT=$(cat "$WORK/out"; printf x); OUT=${OUT%x}
    ERR=$(grep -v '^{"level":' "$WORK/err")
    if [ "$RC" = 124 ]; then fail "timed out after ${TIMEOUT}s" "" ""; fi
}

fail() { # fail WHAT EXPECTED GOT
    echo "FAIL [$GROUP]: $1"
    echo "  command:  $CMD"
    echo "  --- expected:"; printf '%s\n' "$2" | cat -A | sed 's/^/    /'
    echo "  --- got:"; printf '%s\n' "$3" | cat -A | sed 's/^/    /'
    echo "  --- etcdctl exit status: $RC; stderr:"; printf '%s\n' "$ERR" | sed 's/^/    /'
    echo "  --- last server log lines:"; tail -n 10 "$LOG" | sed 's/^/    /'
    FAILS=$((FAILS + 1))
    [ -n "${KEEP_GOING:-}" ] || exit 1
}

# check WHAT EXPECTED GOT
check() { [ "$2" == "$3" ] || fail "$1" "$2" "$3"; CHECKS=$((CHECKS + 1)); }

ok() { check "exit status" "0" "$RC"; }

# out LINE...: the command succeeded and printed exactly these lines.
out() {
    ok
    local want=
    [ $# -eq 0 ] || printf -v want '%s\n' "$@"
    check "stdout" "$want" "$OUT"
}

# fails STATUS ERROR_LINE: the command failed with this exit status and its
# last stderr line (etcdctl's "Error: ..." line) is exactly ERROR_LINE.
fails() {
    check "exit status" "$1" "$RC"
    check "error message" "$2" "$(printf '%s\n' "$ERR" | tail -n 1)"
}

# Canonical form of etcdctl's -w json output: sorted keys, the top-level
# header's cluster_id/member_id/raft_term dropped (they differ per cluster),
# and every "key"/"value" base64-decoded so expectations stay readable.
NORM_PY='
import base64, json, sys
def dec(o):
    if isinstance(o, dict):
        return {k: (base64.b64decode(v).decode("utf-8", "backslashreplace")
                    if k in ("key", "value") and isinstance(v, str) else dec(v))
                for k, v in o.items()}
    if isinstance(o, list):
        return [dec(v) for v in o]
    return o
d = json.loads(sys.stdin.read())
if sys.argv[1] == "got":
    h = d.get("header") if isinstance(d, dict) else None
    if isinstance(h, dict):
        for f in ("cluster_id", "member_id", "raft_term"):
            h.pop(f, None)
    d = dec(d)
print(json.dumps(d, sort_keys=True, separators=(",", ":")))
'
norm() { python3 -c "$NORM_PY" "$1" 2>&1; }

# json EXPECTED: the command succeeded and its -w json output, normalized,
# equals EXPECTED (any JSON layout; keys/values as plain strings).
json() {
    ok
    local want got
    want=$(printf '%s' "$1" | norm want) || die "bad expected JSON: $1"
    got=$(printf '%s' "$OUT" | norm got) || got="unparseable JSON: $OUT"
    check "json output (normalized)" "$want" "$got"
}

# pyexpect WHAT EXPR: the command succeeded and EXPR (python, with d = the
# parsed stdout) is true.
pyexpect() {
    ok
    local r
    r=$(printf '%s' "$OUT" | python3 -c "
import json, re, sys
d = json.loads(sys.stdin.read())
print('yes' if ($2) else 'no')" 2>&1)
    [ "$r" = yes ] || fail "$1: $2" "yes" "$r (stdout: $OUT)"
    CHECKS=$((CHECKS + 1))
}

# pyval EXPR: print EXPR evaluated on the parsed stdout.
pyval() { printf '%s' "$OUT" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print($1)"; }

# put_ok KEY VALUE: a plain put that prints OK.
put_ok() { ctl put "$1" "$2"; out OK; }

# rev_is N: the store's current revision (header of a read) is N.
rev_is() {
    ctl get -w json __no_such_key__
    json "{\"header\":{\"revision\":$1}}"
}

# ---------------------------------------------------------------- groups ----

test_fresh() {
    GROUP=fresh
    # A fresh etcd is at revision 1 with no keys.
    rev_is 1
    ctl get --prefix '' -w json
    json '{"header":{"revision":1}}'
    ctl get --from-key '' --keys-only
    out
}

test_put() {
    GROUP=put
    ctl put foo bar -w json
    json '{"header":{"revision":2}}' # the first write of a fresh store
    ctl put foo bar2 --prev-kv
    out OK foo bar
    ctl put foo bar3 --prev-kv -w json
    json '{"header":{"revision":4},"prev_kv":{"key":"foo","create_revision":2,"mod_revision":3,"version":2,"value":"bar2"}}'
    ctl put newkey v --prev-kv # no previous value: nothing after OK
    out OK
    ctl put newkey v2 --prev-kv -w json
    json '{"header":{"revision":6},"prev_kv":{"key":"newkey","create_revision":5,"mod_revision":5,"version":1,"value":"v"}}'
    # --ignore-value: a new revision and version, the value kept.
    ctl put foo --ignore-value
    out OK
    ctl get foo -w json
    json '{"header":{"revision":7},"kvs":[{"key":"foo","create_revision":2,"mod_revision":7,"version":4,"value":"bar3"}],"count":1}'
    ctl put nokey --ignore-value
    fails 1 "Error: etcdserver: key not found"
    # --ignore-lease on a key without a lease: a plain put.
    ctl put foo --ignore-lease baz
    out OK
    ctl put nokey2 --ignore-lease baz
    fails 1 "Error: etcdserver: key not found"
    ctl put foo --ignore-value --ignore-lease -w json
    json '{"header":{"revision":9}}'
    ctl get foo -w json
    json '{"header":{"revision":9},"kvs":[{"key":"foo","create_revision":2,"mod_revision":9,"version":6,"value":"baz"}],"count":1}'
    rev_is 9 # the failed puts did not bump the revision
    # Keys and values with spaces and quotes round-trip.
    ctl put 'key with space' 'a "quoted" value'
    out OK
    ctl get 'key with space'
    out 'key with space' 'a "quoted" value'
    # A value from stdin, 512 KiB (several HTTP/2 frames).
    python3 -c 'import sys; sys.stdout.write("0123456789abcdef" * 32768)' >"$WORK/big"
    ctl_in put big <"$WORK/big"
    out OK
    ctl get big --print-value-only
    check "512 KiB value round-trips" "$(cat "$WORK/big")" "${OUT%$'\n'}"
    ctl del big
    out 1
    ctl del 'key with space'
    out 1
    rev_is 13
}

test_get() {
    GROUP=get
    ctl del foo newkey # range [foo, newkey): foo only
    out 1
    rev_is 14
    # Distinct create/mod revisions, versions and values, so every sort is
    # fully determined:     key  create mod version value
    put_ok k1 a          # k1   15
    put_ok k2 b          # k2   16
    put_ok k3 c          # k3   17     17  1       c
    put_ok k1 d          # k1   15     18  2       d
    put_ok k4 e          # k4   19     19  1       e
    put_ok k2 f
    put_ok k2 g          # k2   16     21  3       g
    ctl put other z -w json
    json '{"header":{"revision":22}}'

    ctl get k1
    out k1 d
    ctl get nothing
    out
    ctl get nothing -w json
    json '{"header":{"revision":22}}'
    ctl get --prefix k
    out k1 d k2 g k3 c k4 e
    ctl get --prefix k -w json
    json '{"header":{"revision":22},"count":4,"kvs":[
        {"key":"k1","create_revision":15,"mod_revision":18,"version":2,"value":"d"},
        {"key":"k2","create_revision":16,"mod_revision":21,"version":3,"value":"g"},
        {"key":"k3","create_revision":17,"mod_revision":17,"version":1,"value":"c"},
        {"key":"k4","create_revision":19,"mod_revision":19,"version":1,"value":"e"}]}'
    ctl get k1 k3 # [k1, k3)
    out k1 d k2 g
    ctl get k3 k1 # an empty range
    out
    ctl get --from-key k2
    out k2 g k3 c k4 e newkey v2 other z
    ctl get --from-key ''
    out k1 d k2 g k3 c k4 e newkey v2 other z
    ctl get --consistency=s k1
    out k1 d

    # --limit; -w json reports the total count and "more".
    ctl get --prefix k --limit 2
    out k1 d k2 g
    ctl get --prefix k --limit 1 -w json
    json '{"header":{"revision":22},"count":4,"more":true,"kvs":[
        {"key":"k1","create_revision":15,"mod_revision":18,"version":2,"value":"d"}]}'
    check "count of get --limit 1 -w json" 4 "$(pyval 'd["count"]')"
    ctl get --prefix k --limit 4 -w json
    pyexpect "--limit equal to the count: no more" '"more" not in d and d["count"] == 4 and len(d["kvs"]) == 4'
    ctl get --from-key '' --limit 1 -w json
    pyexpect "count of --from-key ''" 'd["count"] == 6 and d["more"] is True'

    # --keys-only and --print-value-only.
    ctl get --prefix k --keys-only
    out k1 '' k2 '' k3 '' k4 ''
    ctl get --prefix k --limit 2 --keys-only -w json
    json '{"header":{"revision":22},"count":4,"more":true,"kvs":[
        {"key":"k1","create_revision":15,"mod_revision":18,"version":2},
        {"key":"k2","create_revision":16,"mod_revision":21,"version":3}]}'
    ctl get --prefix k --print-value-only
    out d g c e
    ctl get --prefix k --keys-only --print-value-only
    out '' '' '' ''

    # --rev: the past as it was.
    ctl get --prefix k --rev 14 # before k1 existed
    out
    ctl get --prefix k --rev 18
    out k1 d k2 b k3 c
    ctl get k2 --rev 20 -w json
    json '{"header":{"revision":22},"count":1,"kvs":[
        {"key":"k2","create_revision":16,"mod_revision":20,"version":2,"value":"f"}]}'
    ctl get foo --rev 9
    out foo baz
    ctl get foo --rev 14 # deleted at 14
    out
    ctl get k1 --rev 1000
    fails 1 "Error: etcdserver: mvcc: required revision is a future revision"
    ctl get --prefix k --rev 23
    fails 1 "Error: etcdserver: mvcc: required revision is a future revision"

    # --sort-by x --order (no --order: ASCEND). VERSION has a tie (k3 and k4
    # are both at version 1): etcd sorts with Go's sort.Sort, an insertion
    # sort for up to 12 results, so ties stay in key order (k3 before k4) in
    # *both* directions; DESCEND is not the ASCEND list reversed.
    local target order
    declare -A asc=([CREATE]="d g c e" [KEY]="d g c e" [MODIFY]="c d e g"
        [VALUE]="c d e g" [VERSION]="c e d g")
    declare -A desc=([CREATE]="e c g d" [KEY]="e c g d" [MODIFY]="g e d c"
        [VALUE]="g e d c" [VERSION]="g d c e")
    for target in CREATE KEY MODIFY VALUE VERSION; do
        for order in "" ASCEND DESCEND; do
            ctl get --prefix k --sort-by="$target" ${order:+--order=$order} --print-value-only
            # shellcheck disable=SC2086 # word splitting intended
            if [ "$order" = DESCEND ]; then out ${desc[$target]}; else out ${asc[$target]}; fi
        done
    done
    ctl get --prefix k --order=DESCEND --keys-only
    out k4 '' k3 '' k2 '' k1 ''
    ctl get --prefix k --order=ASCEND --limit 1 --keys-only
    out k1 ''
    # Sort, then limit.
    ctl get --prefix k --sort-by=MODIFY --order=DESCEND --limit 2 -w json
    json '{"header":{"revision":22},"count":4,"more":true,"kvs":[
        {"key":"k2","create_revision":16,"mod_revision":21,"version":3,"value":"g"},
        {"key":"k4","create_revision":19,"mod_revision":19,"version":1,"value":"e"}]}'
    ctl get --prefix k --sort-by=VALUE --order=ASCEND --limit 1 --print-value-only
    out c
    # etcd quirk: without --order the request carries sort_order NONE, so
    # etcd's Range keeps the limit, reads the first limit+1 keys in key order
    # (+1 for "more"), sorts those ascending, and then truncates to limit.
    ctl get --prefix k --sort-by=VALUE --limit 1 --print-value-only
    out d # from {k1:d, k2:g}
    ctl get --prefix k --sort-by=VERSION --limit 2 --print-value-only
    out c d # from {k1:d v2, k2:g v3, k3:c v1}
    ctl get --prefix k --order=DESCEND --limit 1 --rev 18 -w json
    json '{"header":{"revision":22},"count":3,"more":true,"kvs":[
        {"key":"k3","create_revision":17,"mod_revision":17,"version":1,"value":"c"}]}'
    ctl get --prefix k --sort-by=BOGUS
    fails 4 "Error: bad sort target BOGUS"
    rev_is 22
}

test_del() {
    GROUP=del
    ctl del missing -w json # deleting nothing does not bump the revision
    json '{"header":{"revision":22}}'
    ctl del missing
    out 0
    ctl del --prefix nothing-here
    out 0
    rev_is 22
    ctl del --prev-kv k1
    out 1 k1 d
    ctl del --prev-kv k1
    out 0
    rev_is 23
    ctl del --prev-kv --prefix k -w json
    json '{"header":{"revision":24},"deleted":3,"prev_kvs":[
        {"key":"k2","create_revision":16,"mod_revision":21,"version":3,"value":"g"},
        {"key":"k3","create_revision":17,"mod_revision":17,"version":1,"value":"c"},
        {"key":"k4","create_revision":19,"mod_revision":19,"version":1,"value":"e"}]}'
    put_ok a 1; put_ok b 2; put_ok c 3; put_ok d 4
    rev_is 28
    ctl del a c # [a, c)
    out 2
    ctl get --from-key '' --keys-only
    out c '' d '' newkey '' other ''
    ctl del --prefix --prev-kv d
    out 1 d 4
    ctl del --from-key c # c, newkey, other
    out 3
    ctl get --from-key '' -w json
    json '{"header":{"revision":31}}'
    # A re-created key starts over at version 1.
    put_ok a again
    ctl get a -w json
    json '{"header":{"revision":32},"count":1,"kvs":[
        {"key":"a","create_revision":32,"mod_revision":32,"version":1,"value":"again"}]}'
    ctl del --from-key a
    out 1
    rev_is 33
}

test_txn() {
    GROUP=txn
    put_ok x 1
    rev_is 34
    # Scripted, as `etcdctl txn <<EOF`: compares, blank line, success ops,
    # blank line, failure ops, blank line.
    ctl_in txn <<'EOF'
mod("x") > "0"

put x overwrote
get x

put y created

EOF
    out SUCCESS '' OK '' x overwrote
    rev_is 35
    # Failure branch, simple and json.
    ctl_in txn <<'EOF'
value("x") = "nope"

put x never

put y created
get y

EOF
    out FAILURE '' OK '' y created
    ctl_in txn -w json <<'EOF'
value("x") = "nope"

put x never

put y created2
get y

EOF
    json '{"header":{"revision":37},"responses":[
        {"Response":{"ResponsePut":{"header":{"revision":37}}}},
        {"Response":{"ResponseRange":{"header":{"revision":37},"count":1,"kvs":[
            {"key":"y","create_revision":36,"mod_revision":37,"version":2,"value":"created2"}]}}}]}'
    # All compare targets and operators; several writes in one txn share a
    # revision; get/del with flags inside a txn.
    ctl_in txn <<'EOF'
value("x") = "overwrote"
version("x") = "2"
create("x") < "1000"
mod("y") > "36"
ver("y") != "1"
c("y") = "36"
val("y") > "a"
m("x") = "35"

put x v3
put z zz
get --prefix x
del y

put fail 1

EOF
    out SUCCESS '' OK '' OK '' x v3 '' 1
    ctl get --from-key '' -w json
    json '{"header":{"revision":38},"count":2,"kvs":[
        {"key":"x","create_revision":34,"mod_revision":38,"version":3,"value":"v3"},
        {"key":"z","create_revision":38,"mod_revision":38,"version":1,"value":"zz"}]}'
    # Interactive mode (-i) prints its prompts on stdout.
    ctl_in txn -i <<'EOF'
value("x") = "v3"

put q r

put q s

EOF
    out 'compares:' 'success requests (get, put, del):' 'failure requests (get, put, del):' SUCCESS '' OK
    rev_is 39
    # No compares; prev-kv inside a txn.
    ctl_in txn -w json <<'EOF'

put --prev-kv x v4
del --prev-kv z


EOF
    json '{"header":{"revision":40},"succeeded":true,"responses":[
        {"Response":{"ResponsePut":{"header":{"revision":40},"prev_kv":
            {"key":"x","create_revision":34,"mod_revision":38,"version":3,"value":"v3"}}}},
        {"Response":{"ResponseDeleteRange":{"header":{"revision":40},"deleted":1,"prev_kvs":[
            {"key":"z","create_revision":38,"mod_revision":38,"version":1,"value":"zz"}]}}}]}'
    # Read-only, empty and no-op txns do not bump the revision.
    ctl_in txn <<'EOF'

get x


EOF
    out SUCCESS '' x v4
    ctl_in txn -w json <<'EOF'



EOF
    json '{"header":{"revision":40},"succeeded":true}'
    ctl_in txn <<'EOF'

del no-such-key


EOF
    out SUCCESS '' 0
    rev_is 40
    # Compare against a missing key: its create/mod/version are 0.
    ctl_in txn <<'EOF'
create("missing") = "0"
version("missing") = "0"

get missing

put never 1

EOF
    out SUCCESS ''
    # A failing compare runs the failure ops, here none.
    ctl_in txn <<'EOF'
value("missing") = "x"

put never 1


EOF
    out FAILURE
    rev_is 40
    # Errors found by etcdctl itself.
    ctl_in txn <<'EOF'
bogus("x") = "1"



EOF
    fails 3 'Error: malformed comparison: bogus("x") = "1" (unknown target bogus)'
    ctl_in txn < <(printf 'mod("x") > "0"\n\nput x y') # no final blank line
    fails 3 "Error: EOF"
    # Errors found by the server.
    ctl_in txn <<'EOF'

put "" v


EOF
    fails 1 "Error: etcdserver: key is not provided"
    ctl_in txn <<'EOF'

put dup 1
put dup 2


EOF
    fails 1 "Error: etcdserver: duplicate key given in txn request"
    rev_is 40
}

test_compaction() {
    GROUP=compaction
    ctl get x --rev 37
    out x overwrote
    ctl compaction 36
    out "compacted revision 36"
    rev_is 40 # compaction is not a write
    ctl compaction 36
    fails 1 "Error: etcdserver: mvcc: required revision has been compacted"
    ctl compaction 20
    fails 1 "Error: etcdserver: mvcc: required revision has been compacted"
    ctl compaction 100000
    fails 1 "Error: etcdserver: mvcc: required revision is a future revision"
    ctl get x --rev 35
    fails 1 "Error: etcdserver: mvcc: required revision has been compacted"
    ctl get x --rev 36 # the compaction revision itself stays readable
    out x overwrote
    ctl compaction --physical 38
    out "compacted revision 38"
    ctl get x --rev 37
    fails 1 "Error: etcdserver: mvcc: required revision has been compacted"
    ctl get --prefix '' --rev 37 -w json
    fails 1 "Error: etcdserver: mvcc: required revision has been compacted"
    ctl get x --rev 38
    out x v3
    ctl get x --rev 100000
    fails 1 "Error: etcdserver: mvcc: required revision is a future revision"
    # Current data is untouched; keys keep their create revisions.
    ctl get --from-key '' -w json
    json '{"header":{"revision":40},"count":2,"kvs":[
        {"key":"q","create_revision":39,"mod_revision":39,"version":1,"value":"r"},
        {"key":"x","create_revision":34,"mod_revision":40,"version":4,"value":"v4"}]}'
    ctl compaction 40 # up to the current revision
    out "compacted revision 40"
    ctl get x
    out x v4
    ctl put x v5 -w json
    json '{"header":{"revision":41}}'
}

test_errors() {
    GROUP=errors
    ctl put '' x
    fails 1 "Error: etcdserver: key is not provided"
    ctl get ''
    fails 1 "Error: etcdserver: key is not provided"
    ctl del ''
    fails 1 "Error: etcdserver: key is not provided"
    ctl get x --rev 42
    fails 1 "Error: etcdserver: mvcc: required revision is a future revision"
    ctl put onlykey # no value argument, empty stdin
    fails 128 "Error: put command needs 1 argument and input from stdin or 2 arguments"
    rev_is 41
}

test_endpoint() {
    GROUP=endpoint
    local rev=41 index1 index2 hex_id
    # etcdctl 3.4 runs Maintenance.Status on its own connection per endpoint,
    # dialled as "passthrough:///<endpoint>": with an http:// endpoint the
    # HTTP/2 :authority is the whole URL ("http://host:port"), which etcd
    # accepts.
    ctl endpoint status -w json
    check "endpoint status exit status (:authority \"$EP\")" 0 "$RC"
    pyexpect "one status" 'len(d) == 1 and d[0]["Endpoint"] == "'"$EP"'"'
    pyexpect "version" 're.match(r"'"$VERSION_RE"'", d[0]["Status"]["version"])'
    pyexpect "header revision" 'd[0]["Status"]["header"]["revision"] == '"$rev"
    pyexpect "db size" 'd[0]["Status"]["dbSize"] > 0'
    pyexpect "leader is this member" 'd[0]["Status"]["leader"] == d[0]["Status"]["header"]["member_id"] != 0'
    pyexpect "raft term" 'd[0]["Status"]["raftTerm"] >= 1'
    # Every write so far (40 of them, plus 3 compactions) went through the log.
    pyexpect "raft index" 'd[0]["Status"]["raftIndex"] >= '"$((rev - 1))"
    pyexpect "raft applied index" 'd[0]["Status"].get("raftAppliedIndex", 0) == d[0]["Status"]["raftIndex"]'
    index1=$(pyval 'd[0]["Status"]["raftIndex"]')
    hex_id=$(pyval '"%x" % d[0]["Status"]["header"]["member_id"]')
    put_ok status-probe 1
    ctl endpoint status -w json
    index2=$(pyval 'd[0]["Status"]["raftIndex"]')
    [ "${index2:-0}" -gt "${index1:-0}" ] || fail "raft index grows with a write" "> $index1" "$index2"
    pyexpect "header revision after a put" 'd[0]["Status"]["header"]["revision"] == '"$((rev + 1))"

    # Simple: "endpoint, id, version, db size, is leader, is learner, raft
    # term, raft index, raft applied index, errors".
    ctl endpoint status
    ok
    [[ "$OUT" =~ ^$EP,\ $hex_id,\ (3\.[0-9]+\.[0-9]+),\ [0-9.]+\ [kMG]?B,\ true,\ false,\ [0-9]+,\ ([0-9]+),\ [0-9]+,\ $'\n'$ ]] ||
        fail "endpoint status (simple)" "$EP, $hex_id, <version>, <size>, true, false, <term>, <index>, <applied>, " "$OUT"
    local version=${BASH_REMATCH[1]:-} index=${BASH_REMATCH[2]:-0}
    [[ "$version" =~ $VERSION_RE ]] || fail "version" "$VERSION_RE" "$version"
    [ "$index" -ge "${index2:-0}" ] || fail "raft index" ">= $index2" "$index"

    ctl endpoint status -w table
    ok
    local border='+------------------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+'
    local head='|        ENDPOINT        |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |'
    local lines=()
    mapfile -t lines <<<"${OUT%$'\n'}"
    check "table lines" 5 "${#lines[@]}"
    # The column widths depend on the endpoint's length: compare the shape.
    check "table header" "$(sed 's/-\+/-/g' <<<"$border")|$(tr -s ' ' <<<"$head")" \
        "$(sed 's/-\+/-/g' <<<"${lines[0]}")|$(tr -s ' ' <<<"${lines[1]}")"
    [[ "${lines[3]}" =~ ^\|\ $EP\ \|\ $hex_id\ \|\ +3\.[0-9]+\.[0-9]+\ \|\ +[0-9.]+\ [kMG]?B\ \|\ +true\ \|\ +false\ \|\ +[0-9]+\ \|\ +[0-9]+\ \|\ +[0-9]+\ \|\ +\|$ ]] ||
        fail "endpoint status table row" "| $EP | $hex_id | <version> | <size> | true | false | ... |" "${lines[3]}"

    # health: the simple form goes to stderr.
    ctl endpoint health
    ok
    check "health stdout" "" "$OUT"
    [[ "$ERR" =~ ^$EP\ is\ healthy:\ successfully\ committed\ proposal:\ took\ =\ [0-9.]+(µs|ns|ms|s)$ ]] ||
        fail "endpoint health" "$EP is healthy: successfully committed proposal: took = <duration>" "$ERR"
    ctl endpoint health -w json
    pyexpect "health json" 'len(d) == 1 and d[0]["endpoint"] == "'"$EP"'" and d[0]["health"] is True and "error" not in d[0]'
    ctl endpoint health -w table
    ok
    [[ "$OUT" == *"| $EP |   true |"* ]] || fail "endpoint health table" "| $EP |   true | <took> |       |" "$OUT"
}

test_restart() {
    GROUP=restart
    ctl get --from-key '' -w json
    ok
    local before=$OUT
    # A clean stop (SIGTERM), then the same server on the same data dir.
    kill "$SERVER_PID"
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && fail "server stops on SIGTERM within 10s" "stopped" "running"
    wait "$SERVER_PID" 2>/dev/null; SERVER_PID=
    # corekv's io_uring listeners can outlive the process by ~0.1s, and an
    # immediate restart then fails with "address already in use" (etcd's do
    # not). That is not etcdctl's business: wait until the port is free.
    for _ in $(seq 100); do
        python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))' "$HOST" "$CLIENT_PORT" 2>/dev/null && break
        sleep 0.1
    done
    start_server --restart
    ctl get --from-key '' -w json
    json "$(printf '%s' "$before" | norm got)" # same keys, same revision
    rev_is 42
    ctl get x --rev 37 # the compaction survives
    fails 1 "Error: etcdserver: mvcc: required revision has been compacted"
    ctl get x --rev 40
    out x v4
    ctl put x v6 -w json
    json '{"header":{"revision":43}}'
}

# ------------------------------------------------------------------ main ----

CHECKS=0 FAILS=0
GROUP=startup
START=$SECONDS
start_server
echo "compat.sh: $MODE on $EP (data dir $WORK/data), ${CTL_VERSION%%$'\n'*}"
for group in test_fresh test_put test_get test_del test_txn test_compaction test_errors test_endpoint test_restart; do
    before=$FAILS
    $group
    if [ "$FAILS" = "$before" ]; then echo "ok   ${group#test_}"; else echo "FAIL ${group#test_}"; fi
done
kill -0 "$SERVER_PID" 2>/dev/null || { echo "FAIL: server exited"; tail -n 20 "$LOG"; exit 1; }
if [ "$FAILS" -gt 0 ]; then
    echo "compat.sh: $FAILS failed checks against $MODE in $((SECONDS - START))s"
    exit 1
fi
echo "compat.sh: all $CHECKS checks passed against $MODE in $((SECONDS - START))s"
