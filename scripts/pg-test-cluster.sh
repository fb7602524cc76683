#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL 15 cluster for the store tests.
#
#   eval "$(scripts/pg-test-cluster.sh start)"   # sets WRIT_TEST_POSTGRES_DSN and _DIR
#   go test ./store/...
#   scripts/pg-test-cluster.sh stop "$WRIT_TEST_POSTGRES_DIR"
#
# The cluster lives in a new temporary directory, listens on 127.0.0.1 only,
# on a free port, trusts local connections (there is no password anywhere)
# and runs with fsync off (WRIT_PG_DURABLE=1 keeps it on, for benchmarks of
# durable writes): it is for tests, never for data. Run as root, it
# runs PostgreSQL as the postgres user (PostgreSQL refuses to run as root)
# and installs PostgreSQL with apt-get when it is missing.
# Only the export lines go to stdout; everything else goes to stderr.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MARKER=.writ-pg-test-cluster

log() { echo "pg-test-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  echo "usage: $0 start | stop DIR" >&2
  exit 2
}

# as_owner runs a command as the user that owns the cluster, from a
# directory that user can read.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

ensure_postgres() {
  if [[ ! -x $PGBIN/initdb ]]; then
    [[ $(id -u) -eq 0 ]] || die "no PostgreSQL in $PGBIN: install postgresql-15, or set PGBIN"
    log "installing PostgreSQL with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y --no-install-recommends postgresql >&2
    [[ -x $PGBIN/initdb ]] || die "apt-get installed no PostgreSQL in $PGBIN: set PGBIN to the bin directory of the one installed"
  fi
  if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    log "creating the postgres user"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/sh postgres
  fi
}

# port_free reports whether nothing listens on 127.0.0.1:$1.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

random_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 40000))
    if port_free "$port"; then
      echo "$port"
      return
    fi
  done
  die "found no free port"
}

start() {
  ensure_postgres
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/writ-pg.XXXXXX")
  touch "$dir/$MARKER"
  if [[ $(id -u) -eq 0 ]]; then
    chown -R postgres: "$dir"
  fi
  chmod 700 "$dir"

  as_owner "$PGBIN/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
    --encoding=UTF8 --no-instructions >&2
  as_owner tee "$dir/data/pg_hba.conf" >/dev/null <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF

  # Another process may take the port between the check and the start: try
  # a few ports before giving up.
  # Tests do not need durability; benchmarks of durable writes set
  # WRIT_PG_DURABLE=1 to keep PostgreSQL's defaults (fsync and synchronous
  # commit on).
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [[ "${WRIT_PG_DURABLE:-}" == 1 ]]; then
    durability=""
  fi
  local port
  for attempt in 1 2 3 4 5; do
    port=$(random_port)
    if as_owner "$PGBIN/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" --wait --timeout=60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir $durability -c max_connections=300" \
      start >&2; then
      log "PostgreSQL listening on 127.0.0.1:$port, data in $dir"
      echo "export WRIT_TEST_POSTGRES_DSN='postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable'"
      echo "export WRIT_TEST_POSTGRES_DIR='$dir'"
      return
    fi
    log "start on port $port failed (attempt $attempt):"
    tail -n 5 "$dir/postgres.log" >&2 || true
  done
  rm -rf "$dir"
  die "could not start PostgreSQL"
}

stop() {
  local dir=${1:-}
  [[ -n $dir ]] || usage
  # Refuse to delete anything this script did not create.
  [[ -f $dir/$MARKER ]] || die "$dir is not a cluster made by this script"
  if [[ -f $dir/data/postmaster.pid ]]; then
    as_owner "$PGBIN/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait stop >&2 || log "pg_ctl stop failed; removing $dir anyway"
  fi
  rm -rf "$dir"
  log "stopped and removed $dir"
}

case ${1:-} in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) usage ;;
esac
