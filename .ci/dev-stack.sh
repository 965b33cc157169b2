#!/usr/bin/env bash
# compose.dev.yml for real: build the one Shoal image (no registry, no network in the build),
# bring the stack up, deploy configs/demo.yaml on it, check the balancer answers from every
# replica. With DEV_KEEP=0 (or piped) it takes everything down again, volumes included.
#   bash .ci/dev-stack.sh     (= make dev-stack; SHOAL_DEV_BUILD_ONLY=1: only the image, = make image)
# Ports and prefix: SHOAL_DEV_BROKER (1883), SHOAL_DEV_LISTEN (8080), SHOAL_DEV_ADMIN (9090),
# SHOAL_DEV_PREFIX (shoal); compose project: SHOAL_DEV_PROJECT (shoal-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
bash .ci/setup.sh  # the venv (for the wheels and the CLI) and the echo image
command -v docker-compose >/dev/null || {
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  else sudo apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; fi
}
export SHOAL_DEV_BROKER=${SHOAL_DEV_BROKER:-1883} SHOAL_DEV_LISTEN=${SHOAL_DEV_LISTEN:-8080}
export SHOAL_DEV_ADMIN=${SHOAL_DEV_ADMIN:-9090} SHOAL_DEV_PREFIX=${SHOAL_DEV_PREFIX:-shoal}
PROJECT=${SHOAL_DEV_PROJECT:-shoal-dev}
COMPOSE=(docker-compose -f compose.dev.yml -p "$PROJECT")
export SHOAL_BROKER="mqtt://127.0.0.1:$SHOAL_DEV_BROKER" SHOAL_PREFIX="$SHOAL_DEV_PREFIX"
SHOAL=(.venv/bin/shoal)

if [ -z "${SHOAL_BASE:-}" ]; then
  if docker image inspect python:3.11-slim >/dev/null 2>&1; then
    SHOAL_BASE=python:3.11-slim
  else  # no registry here: a base from Debian packages
    bash configs/images/base/build.sh
    SHOAL_BASE=shoal-base:bookworm
  fi
fi
export SHOAL_BASE
say "wheels of shoal and its dependencies -> dist/wheels"
rm -rf dist/wheels
.venv/bin/python -m pip wheel -q --wheel-dir dist/wheels . 2>&1 | grep -v "is ignored" >&2 || true
ls dist/wheels/shoal-*.whl >/dev/null
if [ "${SHOAL_DEV_BUILD_ONLY:-0}" = 1 ]; then  # make image
  DOCKER_BUILDKIT=0 docker build -q --network none -f configs/Dockerfile \
    --build-arg "BASE=$SHOAL_BASE" -t shoal:dev . 2>/dev/null
  say "built shoal:dev ($(docker run --rm shoal:dev --version)) on $SHOAL_BASE"
  exit 0
fi

down() {
  say "taking the stack down"
  "${SHOAL[@]}" delete -f configs/demo.yaml >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do
    [ -z "$(docker ps -aq --filter "label=shoal.prefix=$SHOAL_DEV_PREFIX")" ] && break
    sleep 0.2
  done
  "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  docker ps -aq --filter "label=shoal.prefix=$SHOAL_DEV_PREFIX" | xargs -r docker rm -f >/dev/null
}
if [ "${DEV_KEEP:-1}" = 0 ] || [ ! -t 0 ]; then trap down EXIT; fi

say "docker-compose up --build (base $SHOAL_BASE)"
DOCKER_BUILDKIT=0 "${COMPOSE[@]}" up -d --build --quiet-pull >"${TMPDIR:-/tmp}/$PROJECT-up.log" 2>&1 \
  || { tail -30 "${TMPDIR:-/tmp}/$PROJECT-up.log"; exit 1; }
[ "$("${COMPOSE[@]}" ps -q | wc -l)" = 7 ] || { "${COMPOSE[@]}" ps; exit 1; }

say "waiting for node dev-1"
for _ in $(seq 1 150); do
  "${SHOAL[@]}" get nodes -o json 2>/dev/null | grep -q '"status": "ready"' && break
  sleep 0.2
done
"${SHOAL[@]}" get nodes
"${SHOAL[@]}" apply -f configs/demo.yaml --wait --wait-timeout 60
"${SHOAL[@]}" get replicas
say "9 requests through the stack's balancer (Host: demo.local)"
seen=$(for _ in $(seq 1 9); do curl -sf -H 'Host: demo.local' "http://127.0.0.1:$SHOAL_DEV_LISTEN/"; done | sort -u)
echo "$seen"
[ "$(echo "$seen" | wc -l)" = 3 ] || { echo "expected 3 replicas answering" >&2; exit 1; }
say "dev stack serving: $("${COMPOSE[@]}" ps --services | tr '\n' ' ')"
