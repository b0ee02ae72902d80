#!/bin/bash
# The real OpenStack Neutron peers of the neutron tests (Debian 12's packages, Zed), on loopback only.
#
#   neutron-peer.sh up              neutron-server on 127.0.0.1:$NEUTRON_PORT, noauth, ML2 (flat, vlan, vxlan;
#                                   linuxbridge + l2population; extension drivers port_security and
#                                   tag_ports_during_bulk_creation), fake transport (no broker), PostgreSQL started by
#                                   hand on 127.0.0.1:$NEUTRON_PG_PORT + a unix socket, a fresh database every time
#   neutron-peer.sh down            stop both (neutron-server's whole process group) and remove their directory
#   neutron-peer.sh fake-agent HOST register a never-dying "Linux bridge agent" row for HOST, so that ports with
#                                   binding:host_id=HOST bind (vif_type bridge); idempotent
#   neutron-peer.sh server-stop     stop only neutron-server (outage tests); server-start starts it again
#   neutron-peer.sh lab-up          the agent lab: netns $NEUTRON_LAB_NETNS with RabbitMQ, neutron-server (rabbit
#                                   transport, its own PostgreSQL through a unix socket) and a real
#                                   neutron-linuxbridge-agent (host $NEUTRON_AGENT_HOST; physnet1 on a veth inside the
#                                   netns; vxlan with local_ip 127.0.0.1 + l2population)
#   neutron-peer.sh lab-down        remove all of it: agent, server, RabbitMQ, epmd, every process left in the
#                                   netns, the netns, PostgreSQL, the directory
#   neutron-peer.sh lab-server-stop | lab-server-start   the same as server-stop/-start, for the lab's server
#
# Everything listens on loopback: the plain peer on the host's, the lab on the netns's own loopback, so the two can
# be up at the same time (same port numbers, different namespaces; the directories differ).
# Env: NEUTRON_CI_DIR (/var/tmp/cloudnic-neutron), NEUTRON_PORT (19696), NEUTRON_PG_PORT (15432),
#      NEUTRON_AGENT_HOST (cnn-lab-host), NEUTRON_LAB_NETNS (cnn-lab).
# Timings of every step go to stderr and to <dir>/timings.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

ND=${NEUTRON_CI_DIR:-/var/tmp/cloudnic-neutron}
NPORT=${NEUTRON_PORT:-19696}
PGPORT=${NEUTRON_PG_PORT:-15432}
AGENT_HOST=${NEUTRON_AGENT_HOST:-cnn-lab-host}
NS=${NEUTRON_LAB_NETNS:-cnn-lab}
API=$ND/api                       # the plain peer's directory
LAB=$ND/lab                       # the lab's directory
RMQ_PORT=15679 RMQ_DIST_PORT=25679 EPMD_PORT=14369   # inside the lab netns only
PHYS=cnn-phys0                    # physnet1's interface inside the lab netns (a veth; its peer is cnn-phys0p)
READY_CAP_S=90
APT=(apt-get -o DPkg::Lock::Timeout=900 -o DPkg::Options::=--force-unsafe-io -q)   # no fsync per file: 85 -> 56 s
PKGS_API=(neutron-common postgresql curl)
PKGS_LAB=(rabbitmq-server neutron-linuxbridge-agent iptables ipset conntrack ebtables bridge-utils sudo iputils-ping
          iproute2)

T0=$(date +%s.%N)
log() { printf 'neutron-peer: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
TIMINGS=()
mark() {   # mark STEP START: record how long STEP took since START
  local t; t=$(elapsed "$2"); TIMINGS+=("$1=${t}s"); log "$1: ${t} s"
}
save_timings() { printf '%s\n' "${TIMINGS[@]}" "total=$(elapsed "$T0")s" > "$1/timings"; }
[ "$(id -u)" = 0 ] || die "must run as root (PostgreSQL as the postgres user, netns, the agent's iptables)"

# ---- packages: apt-get update and install only when something is missing ----------------------------------------
ensure_pkgs() {
  local missing=() p created_policy=
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local t; t=$(date +%s.%N)
  log "installing ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep the packages from starting their services (0.0.0.0:9696, :5432)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  local rc=0
  { "${APT[@]}" update >/dev/null && "${APT[@]}" -y install --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || die "apt-get install ${missing[*]} failed ($rc)"
  mark install "$t"
}

# on_fail CLEANUP: an EXIT trap that runs CLEANUP when the script fails half-way (nothing is left running)
on_fail() {
  local rc=$?
  [ "$rc" = 0 ] && return 0
  log "failed ($rc); removing what was started"
  "$1" || true
}

pgbin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }
as_postgres() { su postgres -s /bin/sh -c "$1"; }

# pg_up DIR LISTEN: initdb + start + CREATE DATABASE neutron; LISTEN '' means the unix socket only
pg_up() {
  local dir=$1 listen=$2 t; t=$(date +%s.%N)
  mkdir -p "$dir/pg"; chown postgres: "$dir/pg"
  as_postgres "$(pgbin)/initdb -D $dir/pg/data -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" > "$dir/log/initdb.log"
  as_postgres "$(pgbin)/pg_ctl -D $dir/pg/data -l $dir/pg/postgres.log -w -o \"-c listen_addresses='$listen' \
    -p $PGPORT -c unix_socket_directories=$dir/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off\" \
    start" > /dev/null || { tail -20 "$dir/pg/postgres.log" >&2; die "PostgreSQL did not start (port $PGPORT)"; }
  as_postgres "psql -h $dir/pg -p $PGPORT -qc 'CREATE DATABASE neutron'"
  mark postgresql "$t"
}

pg_down() {
  local dir=$1
  [ -f "$dir/pg/data/postmaster.pid" ] || return 0
  as_postgres "$(pgbin)/pg_ctl -D $dir/pg/data -m fast -w stop" > /dev/null 2>&1 || {
    local pid; pid=$(head -1 "$dir/pg/data/postmaster.pid")
    kill -KILL "$pid" 2>/dev/null || true
  }
}

# write_conf DIR DBURL TRANSPORT
write_conf() {
  local dir=$1 dburl=$2 transport=$3
  mkdir -p "$dir"/{etc,state,lock,log}
  cat > "$dir/etc/neutron.conf" <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $NPORT
auth_strategy = noauth
core_plugin = ml2
service_plugins =
transport_url = $transport
api_workers = 0
rpc_workers = 0
rpc_state_report_workers = 0
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
state_path = $dir/state
api_paste_config = /etc/neutron/api-paste.ini

[database]
connection = $dburl

[oslo_concurrency]
lock_path = $dir/lock

[quotas]
# generous defaults for a whole test session; a test lowers one project's quota with PUT /v2.0/quotas/<project>
quota_network = 1000
quota_subnet = 1000
quota_port = 10000
quota_security_group = 1000
quota_security_group_rule = 10000

[experimental]
linuxbridge = true
CONF
  cat > "$dir/etc/ml2_conf.ini" <<CONF
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = linuxbridge,l2population
# tag_ports_during_bulk_creation (entry point neutron.ml2.extension_drivers in Zed's setup.cfg): "tags" in a
# POST /v2.0/ports body are kept, so a port is created with its ownership tags in one call (no PUT .../tags)
extension_drivers = port_security,tag_ports_during_bulk_creation

[ml2_type_flat]
flat_networks = *

[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199

[ml2_type_vxlan]
vni_ranges = 1000:1999
CONF
}

migrate() {
  local dir=$1 t; t=$(date +%s.%N)
  neutron-db-manage --config-file "$dir/etc/neutron.conf" --config-file "$dir/etc/ml2_conf.ini" upgrade heads \
    > "$dir/log/db-manage.log" 2>&1 || { tail -20 "$dir/log/db-manage.log" >&2; die "neutron-db-manage failed"; }
  mark migrate "$t"
}

# in_ns NETNS CMD...: run CMD in NETNS ('' = here)
in_ns() { local ns=$1; shift; if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi; }

http_code() {   # http_code NETNS URL
  in_ns "$1" curl -m 5 -s -o /dev/null -w '%{http_code}' "$2" 2>/dev/null || true
}

# own_group PID WHAT: wait until PID leads its own process group (its setsid ran), so "kill -- -PID" hits only it
own_group() {
  for _ in $(seq 1 100); do
    # /proc/PID/stat after "(comm) ": state ppid pgrp ...
    [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f3)" = "$1" ] && return 0
    kill -0 "$1" 2>/dev/null || die "$2 exited at once"
    sleep 0.05
  done
  die "$2 (pid $1) is not in its own process group"
}

# server_start DIR NETNS: neutron-server in its own process group; returns once GET /v2.0/networks answers 200
server_start() {
  local dir=$1 ns=$2 t pid; t=$(date +%s.%N)
  local url=http://127.0.0.1:$NPORT/v2.0/networks deadline=$((SECONDS + READY_CAP_S))
  [ "$(http_code "$ns" "$url")" = 000 ] ||
    die "something already answers on 127.0.0.1:$NPORT${ns:+ in netns $ns}; stop it or set NEUTRON_PORT"
  local cmd=(setsid neutron-server --config-file "$dir/etc/neutron.conf" --config-file "$dir/etc/ml2_conf.ini"
             --log-file "$dir/log/neutron-server.log")
  [ -z "$ns" ] || cmd=(ip netns exec "$ns" "${cmd[@]}")
  # a simple command in the background (not a shell function: that would add a subshell) execs in the child, and
  # setsid there does not fork: $! becomes neutron-server and the id of its own process group
  "${cmd[@]}" > "$dir/log/neutron-server.stdout" 2>&1 < /dev/null &
  pid=$!
  own_group "$pid" neutron-server
  echo "$pid" > "$dir/neutron.pid"
  while [ "$(http_code "$ns" "$url")" != 200 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -30 "$dir/log/neutron-server.log" >&2 2>/dev/null || tail -30 "$dir/log/neutron-server.stdout" >&2
      die "neutron-server died before answering (log: $dir/log/neutron-server.log)"
    fi
    [ $SECONDS -lt $deadline ] || die "neutron-server not ready after ${READY_CAP_S}s (log: $dir/log/neutron-server.log)"
    sleep 0.2
  done
  mark server "$t"
}

server_stop() {
  local dir=$1 pid
  [ -f "$dir/neutron.pid" ] || return 0
  pid=$(cat "$dir/neutron.pid")
  kill -TERM -- "-$pid" 2>/dev/null || true   # api + rpc worker + periodic worker
  for _ in $(seq 1 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$dir/neutron.pid"
}

# ---- the plain peer --------------------------------------------------------------------------------------------
up() {
  ensure_pkgs "${PKGS_API[@]}"
  down
  trap 'on_fail down' EXIT
  mkdir -p "$API"/{etc,state,lock,log}
  pg_up "$API" 127.0.0.1
  write_conf "$API" "postgresql+psycopg2://postgres@127.0.0.1:$PGPORT/neutron" "fake:/"
  migrate "$API"
  server_start "$API" ""
  save_timings "$API"
  trap - EXIT
  log "up in $(elapsed "$T0") s: http://127.0.0.1:$NPORT (${TIMINGS[*]})"
  echo "http://127.0.0.1:$NPORT"
}

down() {
  local t; t=$(date +%s.%N)
  server_stop "$API"
  pg_down "$API"
  rm -rf "$API"
  rmdir "$ND" 2>/dev/null || true
  mark down "$t"
}

fake_agent() {   # heartbeat far in the future: the agent never counts as dead
  local host=$1 id
  [[ $host =~ ^[A-Za-z0-9._-]+$ ]] || die "fake-agent: host name '$host' must be [A-Za-z0-9._-]+"
  [ -f "$API/pg/data/postmaster.pid" ] || die "fake-agent: the peer is not up (run: $0 up)"
  id=$(cat /proc/sys/kernel/random/uuid)
  as_postgres "psql -h $API/pg -p $PGPORT -q -v ON_ERROR_STOP=1 neutron" > /dev/null <<SQL
INSERT INTO agents (id, agent_type, "binary", topic, host, admin_state_up, created_at, started_at, heartbeat_timestamp,
  configurations, "load", availability_zone)
VALUES ('$id', 'Linux bridge agent', 'neutron-linuxbridge-agent', 'N/A', '$host', true, '2026-01-01 00:00:00',
  '2026-01-01 00:00:00', '2099-01-01 00:00:00',
  '{"interface_mappings": {"physnet1": "eth1"}, "bridge_mappings": {}, "tunnel_types": ["vxlan"],
    "tunneling_ip": "127.0.0.1", "l2_population": true, "devices": 0}', 0, 'nova')
ON CONFLICT DO NOTHING;
SQL
}

# ---- the agent lab -------------------------------------------------------------------------------------------
RMQ_ENV=(HOME="$LAB/rabbit" RABBITMQ_NODENAME=cnn-rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  RABBITMQ_NODE_PORT=$RMQ_PORT RABBITMQ_DIST_PORT=$RMQ_DIST_PORT ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT
  RABBITMQ_MNESIA_BASE="$LAB/rabbit/mnesia" RABBITMQ_LOG_BASE="$LAB/rabbit/log"
  RABBITMQ_CONFIG_FILE="$LAB/rabbit/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$LAB/rabbit/enabled_plugins"
  RABBITMQ_CONF_ENV_FILE="$LAB/rabbit/rabbitmq-env.conf"
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
rmq() { ip netns exec "$NS" env "${RMQ_ENV[@]}" "$@"; }

lab_up() {
  ensure_pkgs "${PKGS_API[@]}" "${PKGS_LAB[@]}"
  lab_down
  trap 'on_fail lab_down' EXIT
  local t; t=$(date +%s.%N)
  mkdir -p "$LAB"/{etc,state,lock,log,agent-state,agent-lock,rabbit/mnesia,rabbit/log}
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip -n "$NS" link add "$PHYS" type veth peer name "${PHYS}p"
  ip -n "$NS" link set "$PHYS" up
  ip -n "$NS" link set "${PHYS}p" up
  mark netns "$t"

  # RabbitMQ first (about 10 s): it starts while the database is built
  printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users.guest = true\n' "$RMQ_PORT" > "$LAB/rabbit/rabbitmq.conf"
  echo '[].' > "$LAB/rabbit/enabled_plugins"
  : > "$LAB/rabbit/rabbitmq-env.conf"
  local trmq; trmq=$(date +%s.%N)
  ip netns exec "$NS" env "${RMQ_ENV[@]}" setsid /usr/lib/rabbitmq/bin/rabbitmq-server \
    > "$LAB/log/rabbitmq.stdout" 2>&1 < /dev/null &
  own_group $! rabbitmq-server
  echo $! > "$LAB/rabbit.pid"

  pg_up "$LAB" ""   # the unix socket only: unix sockets cross network namespaces, loopback TCP does not
  write_conf "$LAB" "postgresql+psycopg2://postgres@/neutron?host=$LAB/pg&port=$PGPORT" \
    "rabbit://guest:guest@127.0.0.1:$RMQ_PORT/"
  migrate "$LAB"

  rmq /usr/lib/rabbitmq/bin/rabbitmqctl wait --pid "$(cat "$LAB/rabbit.pid")" --timeout 60 \
    > "$LAB/log/rabbitmqctl-wait.log" 2>&1 || { tail -20 "$LAB/log/rabbitmq.stdout" >&2; die "RabbitMQ did not start"; }
  mark rabbitmq "$trmq"

  cat > "$LAB/etc/linuxbridge_agent.ini" <<CONF
[DEFAULT]
host = $AGENT_HOST
transport_url = rabbit://guest:guest@127.0.0.1:$RMQ_PORT/
state_path = $LAB/agent-state

[oslo_concurrency]
lock_path = $LAB/agent-lock

[agent]
root_helper = sudo
polling_interval = 1

[linux_bridge]
physical_interface_mappings = physnet1:$PHYS

[vxlan]
enable_vxlan = true
local_ip = 127.0.0.1
l2_population = true

[securitygroup]
enable_security_group = true
firewall_driver = iptables

[experimental]
linuxbridge = true
CONF
  server_start "$LAB" "$NS"
  t=$(date +%s.%N)
  ip netns exec "$NS" setsid neutron-linuxbridge-agent --config-file "$LAB/etc/linuxbridge_agent.ini" \
    --log-file "$LAB/log/linuxbridge-agent.log" > "$LAB/log/linuxbridge-agent.stdout" 2>&1 < /dev/null &
  own_group $! neutron-linuxbridge-agent
  echo $! > "$LAB/agent.pid"
  local url="http://127.0.0.1:$NPORT/v2.0/agents?host=$AGENT_HOST&binary=neutron-linuxbridge-agent" deadline=$((SECONDS + 60))
  until ip netns exec "$NS" curl -m 5 -s "$url" 2>/dev/null | grep -q '"alive": *true'; do
    kill -0 "$(cat "$LAB/agent.pid")" 2>/dev/null || {
      tail -30 "$LAB/log/linuxbridge-agent.log" >&2; die "neutron-linuxbridge-agent died"; }
    [ $SECONDS -lt $deadline ] || die "the linuxbridge agent did not report alive in 60 s ($LAB/log/linuxbridge-agent.log)"
    sleep 0.5
  done
  mark agent "$t"
  save_timings "$LAB"
  trap - EXIT
  log "lab-up in $(elapsed "$T0") s: netns $NS, http://127.0.0.1:$NPORT inside it, agent host $AGENT_HOST (${TIMINGS[*]})"
  echo "http://127.0.0.1:$NPORT"
}

lab_down() {
  local t; t=$(date +%s.%N)
  if [ -f "$LAB/agent.pid" ]; then kill -TERM -- "-$(cat "$LAB/agent.pid")" 2>/dev/null || true; fi
  server_stop "$LAB"
  if [ -f "$LAB/rabbit.pid" ]; then   # SIGTERM makes RabbitMQ stop cleanly; rabbitmqctl stop would boot another VM
    kill -TERM -- "-$(cat "$LAB/rabbit.pid")" 2>/dev/null || true
  fi
  if [ -e "/run/netns/$NS" ]; then
    # whatever is still in the netns is ours: epmd (RabbitMQ leaves it running), privsep-helper daemons, the agent
    local pids sig _
    for sig in TERM KILL; do
      for _ in $(seq 1 50); do
        pids=$(ip netns pids "$NS" 2>/dev/null || true)
        [ -z "$pids" ] && break
        # shellcheck disable=SC2086
        kill -$sig $pids 2>/dev/null || true
        sleep 0.1
      done
    done
    ip netns del "$NS"
  fi
  pg_down "$LAB"
  rm -rf "$LAB"
  rmdir "$ND" 2>/dev/null || true
  mark lab-down "$t"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  fake-agent) fake_agent "${2:?usage: $0 fake-agent HOST}" ;;
  server-stop) server_stop "$API" ;;
  server-start) server_start "$API" "" ;;
  lab-up) lab_up ;;
  lab-down) lab_down ;;
  lab-server-stop) server_stop "$LAB" ;;
  lab-server-start) server_start "$LAB" "$NS" ;;
  *) echo "usage: $0 up|down|fake-agent HOST|server-stop|server-start|lab-up|lab-down|lab-server-stop|lab-server-start" >&2
     exit 2 ;;
esac
