#!/usr/bin/env bash
# Make sure the system packages bi_platform needs are present:
#   - the PostgreSQL server binaries (initdb, pg_ctl, postgres) for the embedded runtime,
#     unless DATABASE_URL is set (an external server) or BI_PLATFORM_PG_BIN_DIR points at
#     an installation;
#   - Chromium (headless) for the ETL report's browser test (skip: BI_PLATFORM_NO_CHROMIUM=1);
#   - redis-server for the serving tests (a real Redis behind the cache and rate limits;
#     skip: BI_PLATFORM_NO_REDIS=1);
#   - wrk, the load generator of `bi-platform bench serving` (skip: BI_PLATFORM_NO_WRK=1);
#   - a Java runtime (>= 17) for Spark and the PostgreSQL JDBC driver
#     (/usr/share/java/postgresql.jar) for the cadastral domain's partitioned reads.
# Installs what is missing with apt when running as root on Debian/Ubuntu; otherwise
# prints the exact command and fails.
set -euo pipefail

have_pg_binaries() {
  if [ -n "${BI_PLATFORM_PG_BIN_DIR:-}" ]; then
    [ -x "$BI_PLATFORM_PG_BIN_DIR/initdb" ] && [ -x "$BI_PLATFORM_PG_BIN_DIR/pg_ctl" ]
    return
  fi
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

have_redis() {
  command -v redis-server >/dev/null 2>&1
}

have_wrk() {
  command -v wrk >/dev/null 2>&1
}

java_major() {
  command -v java >/dev/null 2>&1 || { echo 0; return; }
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1
}

have_java() {
  [ "$(java_major)" -ge 17 ] 2>/dev/null
}

have_jdbc() {
  [ -f "${CADASTRAL_JDBC_JAR:-/usr/share/java/postgresql.jar}" ]
}

missing=()
if [ -z "${DATABASE_URL:-}" ] && ! have_pg_binaries; then
  missing+=(postgresql)
fi
if [ -z "${BI_PLATFORM_NO_CHROMIUM:-}" ] && ! have_chromium; then
  missing+=(chromium)
fi
if [ -z "${BI_PLATFORM_NO_REDIS:-}" ] && ! have_redis; then
  missing+=(redis-server)
fi
if [ -z "${BI_PLATFORM_NO_WRK:-}" ] && ! have_wrk; then
  missing+=(wrk)
fi
if ! have_java; then
  missing+=(openjdk-17-jre-headless)
fi
if ! have_jdbc; then
  missing+=(libpostgresql-jdbc-java)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> installing system packages with apt-get: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -z "${DATABASE_URL:-}" ] && ! have_pg_binaries; then
    echo "error: apt-get installed postgresql but initdb is still missing" >&2
    exit 1
  fi
  if [ -z "${BI_PLATFORM_NO_CHROMIUM:-}" ] && ! have_chromium; then
    echo "error: apt-get installed chromium but the chromium command is still missing" >&2
    exit 1
  fi
  if [ -z "${BI_PLATFORM_NO_REDIS:-}" ] && ! have_redis; then
    echo "error: apt-get installed redis-server but the command is still missing" >&2
    exit 1
  fi
  if [ -z "${BI_PLATFORM_NO_WRK:-}" ] && ! have_wrk; then
    echo "error: apt-get installed wrk but the command is still missing" >&2
    exit 1
  fi
  if ! have_java; then
    echo "error: Spark needs Java >= 17; java is $(java_major) after apt-get" >&2
    exit 1
  fi
  if ! have_jdbc; then
    echo "error: apt-get installed libpostgresql-jdbc-java but the jar is still missing" >&2
    exit 1
  fi
  exit 0
fi

cat >&2 <<MSG
error: missing system packages: ${missing[*]}
  postgresql: the server binaries (initdb, pg_ctl, postgres), looked up on PATH and under
              /usr/lib/postgresql/*/bin; or set BI_PLATFORM_PG_BIN_DIR to a directory
              holding them, or DATABASE_URL to an existing server.
  chromium:   headless browser for the ETL report test (BI_PLATFORM_NO_CHROMIUM=1 skips
              installing it; that test then fails and says why).
  redis-server: a real Redis for the serving tests (BI_PLATFORM_NO_REDIS=1 skips it;
              those tests then fail and say why).
  wrk:        the load generator of `bi-platform bench serving` (BI_PLATFORM_NO_WRK=1).
  openjdk-17-jre-headless: Java >= 17 for Spark (the cadastral domain).
  libpostgresql-jdbc-java: PostgreSQL JDBC driver for Spark (CADASTRAL_JDBC_JAR).
Install them, then run make again:
    sudo apt-get update && sudo apt-get install -y ${missing[*]}      # Debian/Ubuntu
MSG
exit 1
