#!/usr/bin/env bash
# Make sure the system packages bi_platform needs are present: the PostgreSQL server
# binaries (initdb, pg_ctl, postgres) for the embedded runtime. Installs them with apt
# when running as root on Debian/Ubuntu; otherwise prints the exact command and fails.
# Skipped when DATABASE_URL is set (an external server is used) or
# BI_PLATFORM_PG_BIN_DIR points at an installation.
set -euo pipefail

have_pg_binaries() {
  if [ -n "${BI_PLATFORM_PG_BIN_DIR:-}" ]; then
    [ -x "$BI_PLATFORM_PG_BIN_DIR/initdb" ] && [ -x "$BI_PLATFORM_PG_BIN_DIR/pg_ctl" ]
    return
  fi
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if [ -n "${DATABASE_URL:-}" ] || have_pg_binaries; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> PostgreSQL server binaries not found: installing them with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  have_pg_binaries && exit 0
  echo "error: apt-get installed postgresql but initdb is still missing" >&2
  exit 1
fi

cat >&2 <<'MSG'
error: the PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH
nor under /usr/lib/postgresql/*/bin. Install them, then run make again:
    sudo apt-get update && sudo apt-get install -y postgresql      # Debian/Ubuntu
    sudo dnf install -y postgresql-server                          # Fedora/RHEL
    brew install postgresql@15                                     # macOS
or set BI_PLATFORM_PG_BIN_DIR to a directory holding them, or DATABASE_URL to an
existing server.
MSG
exit 1
