#!/usr/bin/env bash
# The demo: set up, start a one-node cluster (`shoal up`), deploy configs/demo.yaml
# (3 replicas of the echo app behind the balancer), and show requests reaching them.
# Interactive: keeps running until Ctrl-C. Piped or with DEMO_KEEP=0: cleans up and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
STATE=.shoal/demo
mkdir -p "$STATE"
LISTEN=${SHOAL_LISTEN:-127.0.0.1:8080}
BROKER=${SHOAL_BROKER:-mqtt://127.0.0.1:1883}
export SHOAL_BROKER=$BROKER

echo "==> starting shoal up (log: $STATE/up.log)"
shoal up --broker "$BROKER" --listen "$LISTEN" --data-dir "$STATE/data" >"$STATE/up.log" 2>&1 &
UP_PID=$!
cleanup() {
  echo "==> cleaning up"
  shoal delete -f configs/demo.yaml >/dev/null 2>&1 || true
  sleep 3
  kill -TERM "$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  shoal get nodes -o json 2>/dev/null | grep -q '"status": "ready"' && break
  kill -0 "$UP_PID" 2>/dev/null || { tail -40 "$STATE/up.log"; exit 1; }
  sleep 0.3
done

echo "==> shoal apply -f configs/demo.yaml --wait"
shoal apply -f configs/demo.yaml --wait
echo
shoal get apps
echo
shoal get replicas
echo
echo "==> 9 requests through the balancer at http://$LISTEN/ (Host: demo.local)"
for _ in $(seq 1 9); do curl -s -H 'Host: demo.local' "http://$LISTEN/"; done
echo
echo "==> an unknown route gets a 404 from the balancer"
curl -s -w ' (HTTP %{http_code})\n' -H 'Host: nowhere.local' "http://$LISTEN/"

if [ -t 0 ] && [ "${DEMO_KEEP:-1}" = 1 ]; then
  echo
  echo "Shoal is running. Try: curl -H 'Host: demo.local' http://$LISTEN/ ;"
  echo "  .venv/bin/shoal get replicas ; docker kill <a container> ; Ctrl-C to stop."
  wait "$UP_PID"
fi
