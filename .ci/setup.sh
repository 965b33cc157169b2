#!/usr/bin/env bash
# Prepare this machine for Shoal: system packages, a Docker engine, the Python venv and the
# test workload image. Idempotent: what is already there is used as it is.
#   bash .ci/setup.sh            # everything the demo needs
#   SHOAL_TEST_DEPS=1 bash ...   # plus what the tests and benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE_DIR=${SHOAL_STATE_DIR:-$ROOT/.shoal}
mkdir -p "$STATE_DIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# -- system packages (Debian/Ubuntu) ---------------------------------------------------
need=()
command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || need+=(docker.io)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)  # the mesh adds its VIPs to node bridges
if [ "${SHOAL_TEST_DEPS:-0}" = 1 ]; then
  command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  # the controller's PostgreSQL store is tested on a real server (binaries in
  # /usr/lib/postgresql/<version>/bin; tests/support/postgres.py starts a throwaway cluster)
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
  command -v openssl >/dev/null || need+=(openssl)  # certificates for the TLS tests
  # every service's /metrics is linted by Prometheus' own promtool
  command -v promtool >/dev/null || need+=(prometheus)
  # the dashboard's browser test drives Debian's chromium (Playwright never downloads one)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # ACME against a real test CA (and its mock DNS); Caddy next to nginx in bench_https
  command -v pebble >/dev/null || need+=(pebble); command -v caddy >/dev/null || need+=(caddy)
fi
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "missing: ${need[*]} — install them with your package manager" >&2; exit 1
  fi
  say "installing ${need[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >"$STATE_DIR/apt.log" 2>&1 || { tail -20 "$STATE_DIR/apt.log"; exit 1; }
fi

# -- a Docker engine -------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $STATE_DIR/dockerd.log)"
  as_root setsid sh -c "nohup dockerd >'$STATE_DIR/dockerd.log' 2>&1 &"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -30 "$STATE_DIR/dockerd.log"; echo "dockerd did not start" >&2; exit 1; }
fi

# -- Python environment ----------------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.shoal-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing shoal into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >"$STATE_DIR/pip.log" 2>&1 || true
  .venv/bin/python -m pip install -q -e '.[dev]' >>"$STATE_DIR/pip.log" 2>&1 \
    || { tail -30 "$STATE_DIR/pip.log"; echo "pip install failed" >&2; exit 1; }
  .venv/bin/python -c "import core, services, aiomqtt, aiodocker"
  touch "$stamp"
fi

# -- the test workload image (no registry is reachable: built locally) -----------------
# (rebuilt too when older than the Dockerfile's shoal-test.echo.revision label)
echo_revision() { docker image inspect -f '{{index .Config.Labels "shoal-test.echo.revision"}}' "$1" 2>/dev/null; }
want_revision="$(sed -n 's/^LABEL shoal-test.echo.revision=//p' configs/images/echo/Dockerfile)"
if [ "$(echo_revision shoal-test/echo:v1)" != "$want_revision" ] \
   || [ "$(echo_revision shoal-test/echo:v2)" != "$want_revision" ]; then
  say "building shoal-test/echo:v1 and :v2"
  bash configs/images/echo/build.sh
fi
say "ready: $(docker version --format 'docker {{.Server.Version}}'), $(.venv/bin/python --version)"
