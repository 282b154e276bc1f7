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
events=()
for c in $(seq 0 $((COMPANIES - 1))); do events+=(--event-type "$((10000 + c)):$c:30" --api-key "cal_lt_$c"); done
target/release/fake-calcom --listen "$CALCOM" "${events[@]}" >/dev/null &
track $!
# The local broker's fetch wait: lib.sh, BROKER_CONSUMER_PROPERTIES.
WORKER_PID=""
END_TO_END=(--database-url "$DATABASE_URL" --baseline-db)
if [ "${CALLGATE_LT_WORKER:-on}" = off ]; then
    END_TO_END=()
else
    CALLGATE_KAFKA_CONSUMER_PROPERTIES="${CALLGATE_LT_WORKER_KAFKA_PROPERTIES:-$BROKER_CONSUMER_PROPERTIES}" \
        CALLGATE_WORKER_LISTEN="$WORKER" \
        CALLGATE_CALCOM_BASE_URL="http://$CALCOM" \
        target/release/callgate-worker run 2>"$OUT/$stamp-worker.log" &
    WORKER_PID=$!
    track "$WORKER_PID"
fi
# Extra librdkafka properties go to the gateway and to the bare producer it is measured against.
GATEWAY_KAFKA=()
if [ -n "${CALLGATE_LT_GATEWAY_KAFKA_PROPERTIES:-}" ]; then
    GATEWAY_KAFKA=(--baseline-kafka-properties "$CALLGATE_LT_GATEWAY_KAFKA_PROPERTIES")
    export CALLGATE_KAFKA_PROPERTIES="$CALLGATE_LT_GATEWAY_KAFKA_PROPERTIES"
fi
CALLGATE_LISTEN="$GATEWAY" CALLGATE_METRICS_LISTEN="$GATEWAY_OPS" target/release/callgate-gateway serve 2>"$OUT/$stamp-gateway.log" &
GATEWAY_PID=$!
track "$GATEWAY_PID"
until curl -fsS "http://$GATEWAY_OPS/readyz" >/dev/null 2>&1; do sleep 0.2; done

[ $# -gt 0 ] || set -- --rate 2000 --duration 30s
# The run reads the database only when told to (END_TO_END), not from the exported variable.
env -u CALLGATE_DATABASE_URL target/release/callgate-loadtest run "${MODEL[@]}" --target "http://$GATEWAY" --target-metrics "http://$GATEWAY_OPS" "${END_TO_END[@]}" \
    --baseline-http --baseline-kafka "$KAFKA_BROKERS" "${GATEWAY_KAFKA[@]}" \
    --json "$OUT/$stamp.json" --svg "$OUT/$stamp.svg" "$@" &
RUN_PID=$!
track "$RUN_PID"
# Waited on, not run in the foreground, so that a TERM stops the run and the stack at once
# instead of after the run's last leg.
wait "$RUN_PID"
log "memory (RSS): gateway $(ps -o rss= -p "$GATEWAY_PID") KiB${WORKER_PID:+, worker $(ps -o rss= -p "$WORKER_PID") KiB}"
log "report: $OUT/$stamp.json, chart: $OUT/$stamp.svg, logs: $OUT/$stamp-{gateway,worker}.log"
