#!/usr/bin/env bash
# The demo, on one machine: start `latchkey dev` and the demo portal, deploy the portal's
# recipe bundle, create an AuthSession, run list-invoices, expire every portal session,
# run again (Latchkey logs in again by itself), and count the logins the portal saw.
# DEMO_KEEP=1 leaves both running afterwards. DEMO_JAEGER=1 also starts Jaeger
# (.tmp/bin/jaeger, memory storage; OTLP on 127.0.0.1:4317, query on 127.0.0.1:16686),
# exports every service's spans to it and shows the recreated Run's trace.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.tmp/bin
export LATCHKEY_DATA_DIR=${LATCHKEY_DATA_DIR:-$PWD/.data}
GRPC=${LATCHKEY_GRPC_ADDR:-127.0.0.1:7400}
HTTP=${LATCHKEY_HTTP_ADDR:-127.0.0.1:7480}
PORTAL=${DEMO_PORTAL_ADDR:-127.0.0.1:7490}
export LATCHKEY_ADDR=$GRPC
mkdir -p "$LATCHKEY_DATA_DIR"
LOG=$LATCHKEY_DATA_DIR/dev.log

JAEGER_OTLP=127.0.0.1:4317
JAEGER_QUERY=127.0.0.1:16686
ports=("$GRPC" "$HTTP" 127.0.0.1:4223 "$PORTAL")
if [ "${DEMO_JAEGER:-0}" = 1 ]; then ports+=("$JAEGER_OTLP" "$JAEGER_QUERY"); fi
for addr in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
    echo "demo: $addr is already in use (another latchkey dev or portal?). Stop it first." >&2
    exit 1
  fi
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
lk() { "$BIN/latchkey" "$@"; }

pids=()
stop() {
  # Newest first, each to its end: latchkey dev flushes its spans before Jaeger stops.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -INT "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
if [ "${DEMO_KEEP:-0}" != 1 ]; then trap stop EXIT; fi

if [ "${DEMO_JAEGER:-0}" = 1 ]; then
  step "starting Jaeger (OTLP $JAEGER_OTLP, query http://$JAEGER_QUERY)"
  cat >"$LATCHKEY_DATA_DIR/jaeger.yaml" <<YAML
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}, logs: {level: warn}}
extensions:
  jaeger_query:
    storage: {traces: mem}
    http: {endpoint: $JAEGER_QUERY}
    grpc: {endpoint: 127.0.0.1:16685}
  jaeger_storage:
    backends: {mem: {memory: {max_traces: 100000}}}
receivers:
  otlp: {protocols: {grpc: {endpoint: $JAEGER_OTLP}}}
processors:
  batch: {timeout: 200ms}
exporters:
  jaeger_storage_exporter: {trace_storage: mem}
YAML
  "$BIN/jaeger" --config "$LATCHKEY_DATA_DIR/jaeger.yaml" >"$LATCHKEY_DATA_DIR/jaeger.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -fsS "http://$JAEGER_QUERY/api/services" >/dev/null 2>&1 && break; sleep 0.1; done
  # Spans leave each service in batches; every half second here rather than every 5 s.
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://$JAEGER_OTLP LATCHKEY_JAEGER_URL=http://$JAEGER_QUERY OTEL_BSP_SCHEDULE_DELAY=500
fi

step "starting the demo portal on http://$PORTAL and latchkey dev (log: $LOG)"
"$BIN/portal" -addr "$PORTAL" >"$LATCHKEY_DATA_DIR/portal.log" 2>&1 &
pids+=($!)
start=$(date +%s%N)
"$BIN/latchkey" dev >"$LOG" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
  if curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && [ -s "$LATCHKEY_DATA_DIR/dev-api-key" ]; then break; fi
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then echo "latchkey dev exited:"; cat "$LOG"; exit 1; fi
  sleep 0.1
done
echo "every service healthy after $(( ($(date +%s%N) - start) / 1000000 )) ms:"
curl -fsS "http://$HTTP/healthz"; echo
"$BIN/grpc-health-probe" -addr "$GRPC"

step "deploying the portal's recipe bundle (examples/portal/automations)"
lk automations deploy examples/portal/automations

step "creating an AuthSession for alice (credentials go to the vault, encrypted)"
id="demo-$(date +%s)"
echo '{"username": "alice", "password": "wonderland"}' |
  lk sessions create -type credentials -id "$id" -var "baseURL=http://$PORTAL" -credentials-file -
for _ in $(seq 1 300); do
  state=$(lk sessions -o json get "$id" | tr -d ' \n' | grep -o '"state":"[A-Z_]*"' | head -1 || true)
  case "$state" in *READY*|*EXPIRED*) break ;; esac
  sleep 0.1
done
lk sessions get "$id"
counters() { curl -fsS "http://$PORTAL/__admin/counters"; }
logins() { counters | tr -d ' \n' | grep -o '"logins":[0-9]*' | cut -d: -f2; }
echo "logins the portal has seen: $(logins)"

step "running list-invoices (the check runs first, in the same browser context)"
lk runs start list-invoices -session "$id" -wait

step "expiring every session on the portal (as a site does after a timeout)"
curl -fsS -X POST "http://$PORTAL/__admin/expire-sessions" && echo "done"

step "running list-invoices again: the check fails, Latchkey logs in once, the Run goes on"
lk runs start list-invoices -session "$id" -wait
lk sessions get "$id"

step "what happened"
echo "logins the portal has seen: $(logins) (one for the create, one for the recreate)"
echo "portal counters: $(counters)"
lk runs list -session "$id"
if [ "${DEMO_JAEGER:-0}" = 1 ]; then
  step "the recreated Run as one trace in Jaeger (latchkey runs trace)"
  run_id=$(lk runs list -session "$id" -api list-invoices -limit 1 -o json | grep -o '"id": *"run-[a-z0-9]*"' | head -1 | grep -o 'run-[a-z0-9]*')
  # Wait until the trace is whole: its span count stops growing.
  last=-1
  for _ in $(seq 1 30); do
    n=$(lk runs trace "$run_id" 2>/dev/null | head -1 | grep -o '[0-9]* spans' || true)
    if [ -n "$n" ] && [ "$n" = "$last" ]; then break; fi
    last=$n; sleep 1
  done
  lk runs trace "$run_id"
  trace=$(lk runs get "$run_id" -o json | grep -o '"traceId": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{32\}')
  echo "the trace in Jaeger's API: http://$JAEGER_QUERY/api/traces/$trace"
fi
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo; echo "still running: latchkey dev and the portal (pids ${pids[*]}); stop them with: kill -INT ${pids[*]}"
fi
