# Shared by compare.sh and election.sh (sourced, not run): where the
# members of a benchmark cluster listen and how each is started.
#
# Member I is named mI and listens on member_ip I (BIND_IP, then the next
# addresses); the two servers use different ports (corekv: COREKV_PORT,
# COREKV_PEER_PORT over UDP/QUIC; etcd: ETCD_PORT, ETCD_PEER_PORT), so they
# never collide. Reads BIND_IP, MEMBERS, the *_PORT variables, COREKV, ETCD
# and COREKV_CORES when called.

port_free() { ! ss -Hltn "sport = :$2" 2>/dev/null | grep -q "$1:$2 "; }
port_free_udp() { ! ss -Hlun "sport = :$2" 2>/dev/null | grep -q "$1:$2 "; }
member_ip() { echo "${BIND_IP%.*}.$(( ${BIND_IP##*.} + $1 - 1 ))"; }
client_port() { if [ "$1" = corekv ]; then echo "$COREKV_PORT"; else echo "$ETCD_PORT"; fi; }
peer_port() { if [ "$1" = corekv ]; then echo "$COREKV_PEER_PORT"; else echo "$ETCD_PEER_PORT"; fi; }
member_endpoint() { echo "$(member_ip "$2"):$(client_port "$1")"; }
initial_cluster() {
  local i out=
  for i in $(seq 1 "$MEMBERS"); do out="${out:+$out,}m$i=http://$(member_ip "$i"):$(peer_port "$1")"; done
  echo "$out"
}
# member_cmd SERVER I DATA_DIR: member I's exact command line (the same on
# a restart: both servers then ignore the --initial-cluster* flags).
member_cmd() {
  local server=$1 i=$2 data=$3 ip cep pep
  ip=$(member_ip "$i"); cep="http://$ip:$(client_port "$server")"; pep="http://$ip:$(peer_port "$server")"
  local common="--name m$i --data-dir $data --listen-client-urls $cep --advertise-client-urls $cep --listen-peer-urls $pep --initial-advertise-peer-urls $pep --initial-cluster $(initial_cluster "$server") --initial-cluster-state new --initial-cluster-token bench"
  case "$server" in
    corekv) echo "$COREKV $common${COREKV_CORES:+ --cores $COREKV_CORES}" ;;
    etcd) echo "$ETCD $common" ;;
  esac
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
