#!/usr/bin/env bash
# The chaos run: proves "every webhook answered 2xx ends in the database exactly once, and every
# appointment asked for is booked in Cal.com exactly once" under faults, and prints a verdict.
#
# A stack of its own (Postgres with fsync on, the broker on its durable SQLite engine, the fake
# Cal.com answering with Cal.com's real faults now and then), the gateway with a spool, one
# worker, and signed traffic of all three providers (calls with appointments) at a steady rate.
# While the traffic runs, faults come in turn: the broker killed and started again, the gateway
# SIGKILLed and restarted, the worker SIGKILLed three times, a second worker joining and leaving
# (rebalances), Postgres restarted with `-m immediate`, a burst of Cal.com timeouts and 5xx.
# Then `callgate-loadtest verdict` holds the database and the fake Cal.com to the load
# generator's own record of every 2xx: lost, duplicated and late counts; exit 1 unless all zero.
#
#   deploy/local/chaos.sh            # the long run (about 6 minutes of traffic), release build
#   deploy/local/chaos.sh --short    # about a minute, shorter outages (the test suite runs it)
#   deploy/local/chaos.sh --debug    # the debug binaries (what the test suite has built)
# Logs and the accepted record in .local/chaos/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SHORT=0
PROFILE=release
for arg in "$@"; do
    case "$arg" in
    --short) SHORT=1 ;;
    --debug) PROFILE=debug ;;
    *) die "usage: chaos.sh [--short] [--debug]" ;;
    esac
done
if [ "$SHORT" = 1 ]; then
    RATE=40 BROKER_OUTAGE=8 WORKER_KILLS=2 SECOND_WORKER=8 CALCOM_BURST=8 ROUNDS=1 SETTLE=3
else
    RATE=150 BROKER_OUTAGE=20 WORKER_KILLS=3 SECOND_WORKER=20 CALCOM_BURST=20 ROUNDS=3 SETTLE=8
fi
# Traffic lasts as long as the faults take, plus a calm tail.
DURATION=$(((SETTLE * 8 + BROKER_OUTAGE + WORKER_KILLS * 3 + SECOND_WORKER + CALCOM_BURST + 15) * ROUNDS))
GATEWAY="127.0.0.1:${CALLGATE_CHAOS_GATEWAY_PORT:-28280}"
GATEWAY_OPS="127.0.0.1:${CALLGATE_CHAOS_GATEWAY_OPS_PORT:-28281}"
WORKER_PORTS=("${CALLGATE_CHAOS_WORKER_PORT:-29290}" "${CALLGATE_CHAOS_WORKER2_PORT:-29291}")
CALCOM="127.0.0.1:${CALLGATE_CHAOS_CALCOM_PORT:-28295}"
PROMETHEUS="127.0.0.1:${CALLGATE_CHAOS_PROMETHEUS_PORT:-29395}"
COMPANIES=20
CALCOM_FAULTS="Unavailable,SlowNoCommit,CommitThenSlow,CommitThen500,CommitThenReset"

# Every start and restart of its Postgres (restart_postgres_immediate too) is durable.
export PG_DURABLE=1
start_stack chaos "${CALLGATE_CHAOS_PG_PORT:-25437}" "${CALLGATE_CHAOS_KAFKA_PORT:-29097}" sqlite
create_topics
ensure_secret_key
# node, for the dashboard check at the end (test.sh has installed these already).
ensure_deploy_tools
OUT="$STATE/run"
rm -rf "$OUT" "$STATE/spool"
mkdir -p "$OUT"

cd "$ROOT"
log "building ($PROFILE)"
PROFILE_FLAG=()
[ "$PROFILE" = release ] && PROFILE_FLAG=(--release)
cargo build --locked "${PROFILE_FLAG[@]}" -p callgate-gateway -p callgate-worker -p callgate-loadtest
cargo build --locked "${PROFILE_FLAG[@]}" -p callgate-tests --bin fake-calcom
BIN="target/$PROFILE"
export CALLGATE_DATABASE_URL="$DATABASE_URL" CALLGATE_KAFKA_BROKERS="$KAFKA_BROKERS" CALLGATE_LOG=warn
"$BIN/callgate-worker" migrate
MODEL=(--companies "$COMPANIES" --numbers-per-company 6 --twilio-public-url "http://$GATEWAY")
"$BIN/callgate-loadtest" seed "${MODEL[@]}" --calcom

events=()
for c in $(seq 0 $((COMPANIES - 1))); do events+=(--event-type "$((10000 + c)):$c:30" --api-key "cal_lt_$c"); done
"$BIN/fake-calcom" --listen "$CALCOM" --chaos 0.02 "${events[@]}" >"$OUT/calcom.log" 2>&1 &
track $!

GATEWAY_PID=""
start_gateway() {
    wait_port free "${GATEWAY##*:}" "the gateway"
    CALLGATE_LISTEN="$GATEWAY" CALLGATE_METRICS_LISTEN="$GATEWAY_OPS" CALLGATE_SPOOL_DIR="$STATE/spool" \
        "$BIN/callgate-gateway" serve >>"$OUT/gateway.log" 2>&1 &
    GATEWAY_PID=$!
    track "$GATEWAY_PID"
    until curl -fsS "http://$GATEWAY_OPS/readyz" >/dev/null 2>&1; do sleep 0.1; done
}

WORKER_PIDS=("" "")
start_worker() {
    local n="$1"
    wait_port free "${WORKER_PORTS[$n]}" "worker $n"
    CALLGATE_KAFKA_CONSUMER_PROPERTIES="$BROKER_CONSUMER_PROPERTIES" \
        CALLGATE_WORKER_LISTEN="127.0.0.1:${WORKER_PORTS[$n]}" CALLGATE_CALCOM_BASE_URL="http://$CALCOM" \
        "$BIN/callgate-worker" run >>"$OUT/worker-$n.log" 2>&1 &
    WORKER_PIDS[n]=$!
    track "${WORKER_PIDS[$n]}"
}

kill9() { kill -KILL "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# "Nothing lost" means nothing only if Postgres syncs its commits: checked after every (re)start.
require_durable_postgres() {
    local fsync sync
    fsync="$(pg_setting fsync)" sync="$(pg_setting synchronous_commit)"
    [ "$fsync" = on ] && [ "$sync" = on ] || die "Postgres runs with fsync=$fsync synchronous_commit=$sync"
}
require_durable_postgres

start_worker 0
start_gateway
# A real Prometheus with the alert rules, scraping everything the run starts: at the end every
# dashboard panel's query must evaluate and return data.
start_prometheus "$PROMETHEUS" "callgate-gateway=$GATEWAY_OPS" \
    "callgate-worker=127.0.0.1:${WORKER_PORTS[0]}" "callgate-worker=127.0.0.1:${WORKER_PORTS[1]}"
log "traffic: $RATE webhooks/s for ${DURATION}s, faults in $ROUNDS round(s)"
"$BIN/callgate-loadtest" run "${MODEL[@]}" --target "http://$GATEWAY" --target-metrics "http://$GATEWAY_OPS" \
    --rate "$RATE" --duration "${DURATION}s" --warmup 0s --appointment-share 0.3 --event-gap 300ms \
    --accepted "$OUT/accepted.jsonl" >"$OUT/loadtest.txt" 2>"$OUT/loadtest.log" &
LOAD_PID=$!
track "$LOAD_PID"

for round in $(seq "$ROUNDS"); do
    sleep "$SETTLE"
    log "round $round: broker killed for ${BROKER_OUTAGE}s"
    kill_broker
    sleep "$BROKER_OUTAGE"
    restart_broker sqlite
    sleep "$SETTLE"
    log "round $round: gateway SIGKILLed and restarted"
    kill9 "$GATEWAY_PID"
    start_gateway
    sleep "$SETTLE"
    for kill in $(seq "$WORKER_KILLS"); do
        log "round $round: worker SIGKILLed ($kill of $WORKER_KILLS)"
        kill9 "${WORKER_PIDS[0]}"
        sleep 1
        start_worker 0
        sleep 2
    done
    sleep "$SETTLE"
    log "round $round: a second worker joins for ${SECOND_WORKER}s"
    start_worker 1
    sleep "$SECOND_WORKER"
    kill -TERM "${WORKER_PIDS[1]}"
    wait "${WORKER_PIDS[1]}" 2>/dev/null || true
    sleep "$SETTLE"
    log "round $round: Postgres restarted with -m immediate"
    restart_postgres_immediate
    require_durable_postgres
    sleep "$SETTLE"
    log "round $round: Cal.com times out and fails half the bookings for ${CALCOM_BURST}s"
    curl -fsS -X POST "http://$CALCOM/__chaos?share=0.5&faults=$CALCOM_FAULTS" >/dev/null
    sleep "$CALCOM_BURST"
    curl -fsS -X POST "http://$CALCOM/__chaos?share=0.02" >/dev/null
done
wait "$LOAD_PID" || die "the load generator failed; see $OUT/loadtest.log"
grep -E 'offered|statuses' "$OUT/loadtest.txt" | tail -2 >&2 || true
log "traffic done; waiting for every accepted event to settle"
"$BIN/callgate-loadtest" verdict --accepted "$OUT/accepted.jsonl" --database-url "$DATABASE_URL" \
    --calcom-url "http://$CALCOM" --wait 240s | tee "$OUT/verdict.txt"
log "every dashboard panel's query against the run's Prometheus"
node deploy/check/dashboards.mjs --prometheus "http://$PROMETHEUS" deploy/grafana/dashboards/*.json
