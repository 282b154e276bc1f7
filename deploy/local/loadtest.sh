#!/usr/bin/env bash
# "How fast is callgate on this machine?" in one command: a throwaway stack (Postgres, nisshi,
# a fake Cal.com), the release gateway and worker, load-test tenants seeded, then
# callgate-loadtest against them with the same-run baselines. Arguments go to
# `callgate-loadtest run` (default: 2,000 req/s open loop for 30 s), e.g.
#   deploy/local/loadtest.sh --rate 1000 --duration 60s
#   deploy/local/loadtest.sh --connections 64 --duration 20s        # closed loop: the ceiling
# Tenants: CALLGATE_LT_COMPANIES (100) x CALLGATE_LT_NUMBERS (30); librdkafka properties:
# CALLGATE_LT_GATEWAY_KAFKA_PROPERTIES, CALLGATE_LT_WORKER_KAFKA_PROPERTIES (the worker's
# consumer, e.g. fetch.wait.max.ms=10). CALLGATE_LT_WORKER=off
# measures the gateway with only the broker beside it (no worker, no end-to-end figures). Other
# CALLGATE_* variables reach the gateway and worker (e.g. CALLGATE_KAFKA_PRODUCERS=1).
# The broker keeps its log in memory: its SQLite engine costs about four times as much per produce
# request, which would measure SQLite rather than callgate (BENCHMARKS.md, "the broker's storage
# engine"; CALLGATE_BROKER_STORAGE=sqlite to see it). Reports, and the gateway's and worker's
# logs, in .local/loadtest/.
# The gateway has a spool (.local/loadtest/spool). CALLGATE_LT_BROKER=paused stops the broker
# (SIGSTOP: it hangs, as in a partition) before the run, so every webhook is answered from the
# spool, then resumes it and times the drain. No worker, no broker baseline in that mode.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMPANIES="${CALLGATE_LT_COMPANIES:-100}"
NUMBERS="${CALLGATE_LT_NUMBERS:-30}"
GATEWAY="127.0.0.1:${CALLGATE_LT_GATEWAY_PORT:-28080}"
GATEWAY_OPS="127.0.0.1:${CALLGATE_LT_GATEWAY_OPS_PORT:-28081}"
WORKER="127.0.0.1:${CALLGATE_LT_WORKER_PORT:-29190}"
CALCOM="127.0.0.1:${CALLGATE_LT_CALCOM_PORT:-28095}"
OUT="$ROOT/.local/loadtest"
start_stack loadtest "${CALLGATE_LT_PG_PORT:-25435}" "${CALLGATE_LT_KAFKA_PORT:-29095}" memory
create_topics
ensure_secret_key

cd "$ROOT"
log "building (release)"
cargo build --release --locked -p callgate-gateway -p callgate-worker -p callgate-loadtest
cargo build --release --locked -p callgate-tests --bin fake-calcom
export CALLGATE_DATABASE_URL="$DATABASE_URL" CALLGATE_KAFKA_BROKERS="$KAFKA_BROKERS" CALLGATE_LOG=warn
target/release/callgate-worker migrate
MODEL=(--companies "$COMPANIES" --numbers-per-company "$NUMBERS" --twilio-public-url "http://$GATEWAY")
target/release/callgate-loadtest seed "${MODEL[@]}" --calcom

mkdir -p "$OUT"
stamp="$(date +%Y%m%d-%H%M%S)"
BROKER_MODE="${CALLGATE_LT_BROKER:-up}"
case "$BROKER_MODE" in
up | paused) ;;
*) die "CALLGATE_LT_BROKER must be up or paused, not '$BROKER_MODE'" ;;
esac
[ "$BROKER_MODE" = up ] || CALLGATE_LT_WORKER=off
export CALLGATE_SPOOL_DIR="$STATE/spool"
rm -rf "$CALLGATE_SPOOL_DIR"
events=()
for c in $(seq 0 $((COMPANIES - 1))); do events+=(--event-type "$((10000 + c)):$c:30" --api-key "cal_lt_$c"); done
target/release/fake-calcom --listen "$CALCOM" "${events[@]}" >/dev/null &
track $!
# The local broker's fetch wait: lib.sh, BROKER_CONSUMER_PROPERTIES.
WORKER_PID=""
END_TO_END=(--database-url "$DATABASE_URL" --baseline-db --worker-metrics "http://$WORKER")
if [ "${CALLGATE_LT_WORKER:-on}" = off ]; then
    END_TO_END=()
else
    CALLGATE_KAFKA_CONSUMER_PROPERTIES="${CALLGATE_LT_WORKER_KAFKA_PROPERTIES:-$BROKER_CONSUMER_PROPERTIES}" \
        CALLGATE_WORKER_LISTEN="$WORKER" \
        CALLGATE_CALCOM_BASE_URL="http://$CALCOM" \
        target/release/callgate-worker run >"$OUT/$stamp-worker.log" 2>&1 &
    WORKER_PID=$!
    track "$WORKER_PID"
fi
# Extra librdkafka properties go to the gateway and to the bare producer it is measured against.
GATEWAY_KAFKA=()
if [ -n "${CALLGATE_LT_GATEWAY_KAFKA_PROPERTIES:-}" ]; then
    GATEWAY_KAFKA=(--baseline-kafka-properties "$CALLGATE_LT_GATEWAY_KAFKA_PROPERTIES")
    export CALLGATE_KAFKA_PROPERTIES="$CALLGATE_LT_GATEWAY_KAFKA_PROPERTIES"
fi
CALLGATE_LISTEN="$GATEWAY" CALLGATE_METRICS_LISTEN="$GATEWAY_OPS" target/release/callgate-gateway serve >"$OUT/$stamp-gateway.log" 2>&1 &
GATEWAY_PID=$!
track "$GATEWAY_PID"
until curl -fsS "http://$GATEWAY_OPS/readyz" >/dev/null 2>&1; do sleep 0.2; done
# The gateway's metric $1 (summed over its series).
gateway_metric() {
    curl -fsS "http://$GATEWAY_OPS/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }'
}
BASELINE_BROKER=(--baseline-kafka "$KAFKA_BROKERS" "${GATEWAY_KAFKA[@]}")
if [ "$BROKER_MODE" = paused ]; then
    kill -STOP "$(cat "$STATE/broker.pid")"
    log "broker paused (SIGSTOP): webhooks go to the spool"
    BASELINE_BROKER=(--baseline-fsync "$CALLGATE_SPOOL_DIR")
fi

[ $# -gt 0 ] || set -- --rate 2000 --duration 30s
# The run reads the database only when told to (END_TO_END), not from the exported variable.
env -u CALLGATE_DATABASE_URL target/release/callgate-loadtest run "${MODEL[@]}" --target "http://$GATEWAY" --target-metrics "http://$GATEWAY_OPS" "${END_TO_END[@]}" \
    --baseline-http "${BASELINE_BROKER[@]}" \
    --json "$OUT/$stamp.json" --svg "$OUT/$stamp.svg" "$@" &
RUN_PID=$!
track "$RUN_PID"
# Waited on, not run in the foreground, so that a TERM stops the run and the stack at once
# instead of after the run's last leg.
wait "$RUN_PID"
if [ "$BROKER_MODE" = paused ]; then
    spooled="$(gateway_metric callgate_gateway_spool_records)"
    started="$(date +%s.%N)"
    kill -CONT "$(cat "$STATE/broker.pid")"
    log "broker resumed with $spooled records in the spool; draining"
    while [ "$(gateway_metric callgate_gateway_spool_open)" != 0 ]; do sleep 0.1; done
    drained="$(gateway_metric callgate_gateway_spool_drained_records_total)"
    log "$(awk -v d="$drained" -v s="$started" -v e="$(date +%s.%N)" \
        'BEGIN { printf "drained %d records in %.1f s (%.0f records/s)", d, e - s, d / (e - s) }')"
else
    log "spooled while the broker was up: $(gateway_metric callgate_gateway_spool_spooled_records_total) records"
fi
log "memory (RSS): gateway $(ps -o rss= -p "$GATEWAY_PID") KiB${WORKER_PID:+, worker $(ps -o rss= -p "$WORKER_PID") KiB}"
log "report: $OUT/$stamp.json, chart: $OUT/$stamp.svg, logs: $OUT/$stamp-{gateway,worker}.log"
