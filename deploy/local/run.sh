#!/usr/bin/env bash
# Sets up everything and runs callgate locally: Postgres, the Kafka-protocol broker, topics,
# migrations, a demo tenant, the fake Cal.com, the worker and the gateway (Ctrl-C or TERM stops
# it all).
# Installs what is missing, reuses what is there (the broker build is cached). The broker keeps
# its log in SQLite, so like Kafka it keeps what it acknowledged across a crash and restart.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LISTEN="${CALLGATE_LISTEN:-127.0.0.1:8080}"
WORKER_LISTEN="${CALLGATE_WORKER_LISTEN:-127.0.0.1:9090}"
# The gateway's /metrics and /readyz are on a port of their own, not on the webhook listener.
METRICS_LISTEN="${CALLGATE_METRICS_LISTEN:-127.0.0.1:9091}"
# Cal.com is a SaaS: locally, appointments are booked into the test suite's fake Cal.com.
CALCOM_LISTEN="${CALLGATE_FAKE_CALCOM_LISTEN:-127.0.0.1:8095}"
# A real Prometheus with callgate's alerts, scraping the gateway and the worker.
PROMETHEUS_LISTEN="${CALLGATE_PROMETHEUS_LISTEN:-127.0.0.1:9095}"
start_stack dev "${CALLGATE_DEV_PG_PORT:-25432}" "${CALLGATE_DEV_KAFKA_PORT:-29092}" sqlite
create_topics
ensure_secret_key

cd "$ROOT"
log "building (release)"
cargo build --release --locked -p callgate-gateway -p callgate-worker
cargo build --release --locked -p callgate-tests --bin fake-calcom
export CALLGATE_DATABASE_URL="$DATABASE_URL"
export CALLGATE_KAFKA_BROKERS="$KAFKA_BROKERS"
export CALLGATE_LISTEN="$LISTEN"
export CALLGATE_METRICS_LISTEN="$METRICS_LISTEN"
export CALLGATE_PUBLIC_BASE_URL="${CALLGATE_PUBLIC_BASE_URL:-http://$LISTEN}"
# The gateway's spool: where webhooks wait while the broker is slow or down. Thrown away at
# each start with the rest of the stack's state (its records would name a database that is gone).
if [ -z "${CALLGATE_SPOOL_DIR:-}" ]; then
    CALLGATE_SPOOL_DIR="$STATE/spool"
    rm -rf "$CALLGATE_SPOOL_DIR"
fi
export CALLGATE_SPOOL_DIR
target/release/callgate-worker migrate
target/release/callgate-worker demo-tenant
target/release/fake-calcom --listen "$CALCOM_LISTEN" &
track $!
# The local broker's fetch wait: lib.sh, BROKER_CONSUMER_PROPERTIES.
CALLGATE_KAFKA_CONSUMER_PROPERTIES="${CALLGATE_KAFKA_CONSUMER_PROPERTIES:-$BROKER_CONSUMER_PROPERTIES}" \
    CALLGATE_WORKER_LISTEN="$WORKER_LISTEN" CALLGATE_CALCOM_BASE_URL="${CALLGATE_CALCOM_BASE_URL:-http://$CALCOM_LISTEN}" \
    target/release/callgate-worker run &
track $!
start_prometheus "$PROMETHEUS_LISTEN" "callgate-gateway=$METRICS_LISTEN" "callgate-worker=$WORKER_LISTEN"

cat >&2 <<INFO

  callgate is running.
    webhooks   POST http://$LISTEN/v1/webhooks/{retell,vapi,twilio}   Cal.com: /v1/webhooks/calcom/<path> (tenant show)
    metrics    gateway http://$METRICS_LISTEN/metrics   worker http://$WORKER_LISTEN/metrics   (/healthz, /readyz on both)
    alerts     Prometheus http://$PROMETHEUS_LISTEN/alerts   (deploy/prometheus/callgate-rules.yml)
    demo       company "demo-dental": Retell +14155550100, Vapi +14155550101, Twilio +14155550102
               services "Teeth Cleaning" (cleaning, hygiene visit) and "Check-up" (checkup, exam)
    cal.com    a fake Cal.com on http://$CALCOM_LISTEN (key cal_demo_key, event types 1001, 1002)
    try it     deploy/local/demo-webhooks.sh   (a signed call per provider, then the rows they made)
    database   $DATABASE_URL
    broker     $KAFKA_BROKERS   topic call-events.v1
    spool      $CALLGATE_SPOOL_DIR   (webhooks wait here while the broker is down)

INFO
target/release/callgate-gateway serve &
GATEWAY_PID=$!
track "$GATEWAY_PID"
# Waiting on the gateway rather than running it in the foreground: a TERM to this script (not
# only Ctrl-C to the terminal's whole group) then stops the gateway too, and if the gateway
# exits the rest of the stack goes with it.
wait "$GATEWAY_PID"
