#!/usr/bin/env bash
# The demo: start `latchkey dev`, wait until every service is healthy, show health over
# HTTP and gRPC and the API over reflection, then stop it (DEMO_KEEP=1 leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.tmp/bin
export LATCHKEY_DATA_DIR=${LATCHKEY_DATA_DIR:-$PWD/.data}
GRPC=${LATCHKEY_GRPC_ADDR:-127.0.0.1:7400}
HTTP=${LATCHKEY_HTTP_ADDR:-127.0.0.1:7480}
mkdir -p "$LATCHKEY_DATA_DIR"
LOG=$LATCHKEY_DATA_DIR/dev.log

for addr in "$GRPC" "$HTTP" 127.0.0.1:4223; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
    echo "demo: $addr is already in use (another latchkey dev?). Stop it first." >&2
    exit 1
  fi
done

echo "== starting latchkey dev (log: $LOG)"
start=$(date +%s%N)
"$BIN/latchkey" dev >"$LOG" 2>&1 &
pid=$!
stop() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid"
    wait "$pid" || true
  fi
}
if [ "${DEMO_KEEP:-0}" != 1 ]; then trap stop EXIT; fi

for _ in $(seq 1 100); do
  if curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "latchkey dev exited:"; cat "$LOG"; exit 1; fi
  sleep 0.1
done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "healthy after ${ms} ms (process start to /healthz 200)"
echo
sed -n '/latchkey dev is up/,/Ctrl-C/p' "$LOG"
echo
echo "== HTTP /healthz"
curl -fsS "http://$HTTP/healthz"; echo
echo
echo "== gRPC health (grpc-health-probe), per service"
for svc in "" latchkey.v1.ProjectService latchkey.v1.AutomationService latchkey.v1.AuthSessionService \
           latchkey.v1.RunService latchkey.v1.JobService latchkey.registry.v1.SessionStateService \
           latchkey.vault.v1.VaultService latchkey.browser-runner; do
  printf '  %-42s ' "${svc:-(overall)}"
  "$BIN/grpc-health-probe" -addr "$GRPC" -service "$svc"
done
echo
echo "== the API over reflection (grpcurl list)"
"$BIN/grpcurl" -plaintext "$GRPC" list
echo
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo "latchkey dev keeps running as pid $pid; stop it with: kill -INT $pid"
else
  echo "== stopping (Ctrl-C)"
fi
