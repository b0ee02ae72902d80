#!/bin/bash
# A real OpenStack Keystone (Debian 12's "keystone" package, 2:22.0.2, Zed) on loopback, for the Keystone auth tests
# of the neutron provider.
#
#   keystone-peer.sh up     install what is missing, then: a fresh SQLite database (keystone-manage db_sync), fernet
#                           and credential keys, "keystone-manage bootstrap" (admin user, admin project, the admin /
#                           member / reader roles, the identity endpoint), a project "cloudnic" with a user "cloudnic"
#                           (member role) made through the API, and an application credential of that user made
#                           through the API; keystone's WSGI app under Debian's uWSGI on 127.0.0.1:$KEYSTONE_PORT.
#                           Prints the auth URL; the credentials are in <dir>/credentials.json (0600).
#   keystone-peer.sh down   stop uWSGI (its whole process group) and remove the directory
#
# Env: KEYSTONE_CI_DIR (/var/tmp/cloudnic-keystone), KEYSTONE_PORT (15000).
# Timings of every step go to stderr and to <dir>/timings.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

KD=${KEYSTONE_CI_DIR:-/var/tmp/cloudnic-keystone}
KPORT=${KEYSTONE_PORT:-15000}
AUTH_URL=http://127.0.0.1:$KPORT/v3
READY_CAP_S=60
APT=(apt-get -o DPkg::Lock::Timeout=900 -o DPkg::Options::=--force-unsafe-io -q)
PKGS=(keystone sqlite3 curl)
PY=/usr/bin/python3              # Debian's python (pyenv's python3 comes first on PATH and has no keystone)
# keystone-manage as Debian installs it, with Debian's python and nothing of pyenv's environment
KSM=(env -u PYTHONPATH -u PYTHONHOME "$PY" /usr/bin/keystone-manage --config-file "$KD/etc/keystone.conf")

T0=$(date +%s.%N)
log() { printf 'keystone-peer: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
TIMINGS=()
mark() { local t; t=$(elapsed "$2"); TIMINGS+=("$1=${t}s"); log "$1: ${t} s"; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, the state directory is root's)"

ensure_pkgs() {
  local missing=() p created_policy=
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local t; t=$(date +%s.%N)
  log "installing ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # the package's postinst runs "invoke-rc.d keystone start" (0.0.0.0:5000)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  local rc=0
  { "${APT[@]}" update >/dev/null &&
    "${APT[@]}" -y install --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || die "apt-get install ${missing[*]} failed ($rc)"
  mark install "$t"
}

on_fail() {
  local rc=$?
  [ "$rc" = 0 ] && return 0
  log "failed ($rc); the logs' tails, then removing what was started"
  local f
  for f in "$KD/log/uwsgi.log" "$KD/log/keystone.log"; do
    [ -s "$f" ] && { log "--- $f"; tail -15 "$f" | cut -c1-300 >&2; }
  done
  down || true
}

# own_group PID: wait until PID leads its own process group (its setsid ran), so "kill -- -PID" hits only it
own_group() {
  for _ in $(seq 1 100); do
    [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f3)" = "$1" ] && return 0
    kill -0 "$1" 2>/dev/null || die "uwsgi exited at once (log: $KD/log/uwsgi.log)"
    sleep 0.05
  done
  die "uwsgi (pid $1) is not in its own process group"
}

http_code() { curl -m 5 -s -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true; }

# api METHOD PATH [auth]: the JSON body on stdin (never in argv: it may carry a password), the response on stdout;
# with "auth", the token that token() saved goes along
api() {
  local method=$1 path=$2 token=${3:-} out code
  out=$(mktemp "$KD/api.XXXXXX")
  local args=(-m 30 -s -o "$out" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json')
  [ -z "$token" ] || args+=(-H @"$KD/token.header")
  [ "$method" = GET ] || args+=(--data-binary @-)
  code=$(curl "${args[@]}" "$AUTH_URL$path" || true)
  if [ "${code:0:1}" != 2 ]; then
    log "$method $path -> HTTP $code: $(head -c 400 "$out")"; rm -f "$out"; return 1
  fi
  cat "$out"; rm -f "$out"
}

# token USER PASSWORD PROJECT: a project-scoped token; written as a header file (0600) that api() sends
token() {
  local hdr; hdr=$(mktemp "$KD/hdr.XXXXXX")
  local code
  code=$(curl -m 30 -s -D "$hdr" -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary @- "$AUTH_URL/auth/tokens" <<JSON || true
{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "$1", "domain": {"id": "default"},
 "password": "$2"}}}, "scope": {"project": {"name": "$3", "domain": {"id": "default"}}}}}
JSON
)
  [ "$code" = 201 ] || { rm -f "$hdr"; die "POST /v3/auth/tokens for user $1 -> HTTP $code"; }
  (umask 077; grep -i '^X-Subject-Token:' "$hdr" | tr -d '\r' | sed 's/^[^:]*:/X-Auth-Token:/' > "$KD/token.header")
  rm -f "$hdr"
}

json_get() { "$PY" -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"; }

secret() { "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))'; }

write_conf() {
  cat > "$KD/etc/keystone.conf" <<CONF
[DEFAULT]
log_dir = $KD/log
log_file = keystone.log
use_stderr = false
debug = false

[database]
connection = sqlite:///$KD/keystone.sqlite

[token]
provider = fernet
expiration = 3600

[fernet_tokens]
key_repository = $KD/fernet-keys

[fernet_receipts]
key_repository = $KD/fernet-keys

[credential]
key_repository = $KD/credential-keys

[cache]
enabled = false

[identity]
# bcrypt: the cheapest cost (CI speed); 72 = bcrypt's own limit (a larger value logs a warning on every check)
password_hash_rounds = 4
max_password_length = 72

[catalog]
driver = sql

[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
CONF
}

up() {
  ensure_pkgs "${PKGS[@]}"
  down
  trap on_fail EXIT
  [ "$(http_code "$AUTH_URL")" = 000 ] ||
    die "something already answers on 127.0.0.1:$KPORT; stop it or set KEYSTONE_PORT"
  (umask 077; mkdir -p "$KD"/{etc,log,fernet-keys,credential-keys})
  write_conf

  # db_sync and the two key repositories are independent: run the three keystone-manage calls at once (~2 s each,
  # mostly python start-up)
  local t; t=$(date +%s.%N)
  local step pids=() steps=(db_sync fernet_setup credential_setup)
  for step in "${steps[@]}"; do
    case $step in
      db_sync) "${KSM[@]}" db_sync ;;
      *) "${KSM[@]}" "$step" --keystone-user root --keystone-group root ;;
    esac > "$KD/log/$step.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!steps[@]}"; do
    wait "${pids[$i]}" || { tail -20 "$KD/log/${steps[$i]}.log" >&2; die "keystone-manage ${steps[$i]} failed"; }
  done
  # WAL: a reader's open transaction no longer blocks a writer's commit. Without it (rollback journal), creating a
  # catalog service failed every time with "database is locked" (HTTP 500 after the 5 s busy timeout): the request
  # still holds a read transaction of its own on another connection when it commits. WAL is kept in the file.
  [ "$(sqlite3 "$KD/keystone.sqlite" 'PRAGMA journal_mode=WAL;')" = wal ] ||
    die "cannot put keystone.sqlite in WAL mode"
  mark db_sync_and_keys "$t"

  t=$(date +%s.%N)
  local admin_pw user_pw ac_secret
  admin_pw=$(secret); user_pw=$(secret); ac_secret=$(secret)
  # the password through the environment (OS_BOOTSTRAP_PASSWORD), not argv
  OS_BOOTSTRAP_PASSWORD=$admin_pw "${KSM[@]}" bootstrap --bootstrap-username admin --bootstrap-project-name admin \
    --bootstrap-role-name admin --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url "$AUTH_URL" --bootstrap-public-url "$AUTH_URL" --bootstrap-internal-url "$AUTH_URL" \
    > "$KD/log/bootstrap.log" 2>&1 || { tail -20 "$KD/log/bootstrap.log" >&2; die "keystone-manage bootstrap failed"; }
  mark bootstrap "$t"

  # Debian's uWSGI (its python3 plugin embeds Debian's python 3.11) serving keystone-wsgi-public, in its own process
  # group; setsid from a non-interactive shell does not fork, so $! is uWSGI's master and the group id.
  # * One worker process with one thread, because of SQLite: with uWSGI threads sqlalchemy logs "SQLite objects
  #   created in a thread can only be used in that same thread", and with two workers (before WAL) a write failed
  #   with "database is locked". Requests queue (listen backlog 100); a token takes about 0.1-0.3 s.
  # * In front of it uWSGI's HTTP router (--http, --http-keepalive) on 127.0.0.1:$KPORT, talking to the worker over a
  #   unix socket: it keeps idle client connections without holding the worker. (--http-socket closes after every
  #   response, which breaks clients that reuse a connection; --http11-socket keeps it alive but parks the only
  #   worker on the idle connection, so every other client waits for its 4 s socket timeout.)
  t=$(date +%s.%N)
  env -u PYTHONPATH -u PYTHONHOME OS_KEYSTONE_CONFIG_FILES="$KD/etc/keystone.conf" \
    setsid /usr/bin/uwsgi --plugins http,python3 --http "127.0.0.1:$KPORT" --http-keepalive \
      --socket "$KD/uwsgi.sock" --wsgi-file /usr/bin/keystone-wsgi-public \
      --master --processes 1 --threads 1 --lazy-apps --die-on-term --no-orphans --buffer-size 65535 \
      --need-app --chdir "$KD" --logto "$KD/log/uwsgi.log" < /dev/null > "$KD/log/uwsgi.stdout" 2>&1 &
  local pid=$!
  echo "$pid" > "$KD/uwsgi.pid"
  own_group "$pid"
  local deadline=$((SECONDS + READY_CAP_S))
  while [ "$(http_code "$AUTH_URL")" != 200 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -30 "$KD/log/uwsgi.log" >&2 2>/dev/null || true
      die "uwsgi died before keystone answered (log: $KD/log/uwsgi.log)"
    fi
    [ $SECONDS -lt $deadline ] || die "keystone not ready after ${READY_CAP_S}s (log: $KD/log/uwsgi.log)"
    sleep 0.2
  done
  mark server "$t"

  # through the API: project "cloudnic", user "cloudnic" with the member role there, its application credential
  t=$(date +%s.%N)
  token admin "$admin_pw" admin
  local project_id user_id member_id ac_id
  project_id=$(api POST /projects auth <<< '{"project": {"name": "cloudnic", "domain_id": "default"}}' |
    json_get project.id)
  user_id=$(api POST /users auth <<JSON | json_get user.id
{"user": {"name": "cloudnic", "domain_id": "default", "default_project_id": "$project_id", "password": "$user_pw"}}
JSON
)
  member_id=$(api GET '/roles?name=member' auth < /dev/null | json_get roles.0.id)
  api PUT "/projects/$project_id/users/$user_id/roles/$member_id" auth < /dev/null > /dev/null
  token cloudnic "$user_pw" cloudnic
  ac_id=$(api POST "/users/$user_id/application_credentials" auth <<JSON | json_get application_credential.id
{"application_credential": {"name": "cloudnic-ci", "description": "keystone-peer.sh", "secret": "$ac_secret"}}
JSON
)
  rm -f "$KD/token.header"
  mark api_setup "$t"

  (umask 077; "$PY" - "$KD/credentials.json" <<PY
import json, sys
json.dump({
    "auth_url": "$AUTH_URL",
    "admin": {"username": "admin", "password": "$admin_pw", "project_name": "admin"},
    "username": "cloudnic", "user_id": "$user_id", "password": "$user_pw",
    "project_name": "cloudnic", "project_id": "$project_id",
    "user_domain_name": "Default", "project_domain_name": "Default",
    "application_credential_id": "$ac_id", "application_credential_secret": "$ac_secret",
}, open(sys.argv[1], "w"), indent=1)
PY
  )
  printf '%s\n' "${TIMINGS[@]}" "total=$(elapsed "$T0")s" > "$KD/timings"
  trap - EXIT
  log "up in $(elapsed "$T0") s: $AUTH_URL (${TIMINGS[*]})"
  echo "$AUTH_URL"
}

down() {
  local t pid; t=$(date +%s.%N)
  if [ -f "$KD/uwsgi.pid" ]; then
    pid=$(cat "$KD/uwsgi.pid")
    kill -TERM -- "-$pid" 2>/dev/null || true      # uWSGI master + worker
    for _ in $(seq 1 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$KD"
  mark down "$t"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
