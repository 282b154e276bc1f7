#!/usr/bin/env bash
# Sends signed webhooks for one call per provider to the gateway started by deploy/local/run.sh,
# with the demo tenant's secrets; shows what the gateway answered and counted, and the rows the
# worker made of them (the Retell call asks for a cleaning next week, which the worker books in
# the fake Cal.com).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE="${CALLGATE_URL:-http://127.0.0.1:8080}"
BIN="$ROOT/target/release/callgate-gateway"
[ -x "$BIN" ] || die "build first: deploy/local/run.sh"
body="$(mktemp)"
trap 'rm -f "$body"' EXIT
call="demo-$(date +%s)"

printf '{"event":"call_started","call":{"call_id":"%s","call_type":"phone_call","direction":"inbound","from_number":"+12025550123","to_number":"+14155550100","call_status":"ongoing"}}' "$call" >"$body"
# The demo tenant's secrets go to `sign` on standard input, never as arguments.
sig="$(printf %s demo-retell-api-key | "$BIN" sign --provider retell --secret-file - --body-file "$body")"
curl -sS -o /dev/null -w "retell  call_started      → %{http_code}\n" -H "x-retell-signature: $sig" \
    -H 'content-type: application/json' --data-binary @"$body" "$BASE/v1/webhooks/retell"

start="$(date -d 'next monday 10:30' +%Y-%m-%dT%H:%M)"
analysis="{\"appointment_start\":\"$start\",\"service\":\"cleaning\",\"customer_name\":\"Ana Lima\",\"customer_email\":\"ana@example.com\"}"
printf '{"event":"call_analyzed","call":{"call_id":"%s","call_type":"phone_call","direction":"inbound","from_number":"+12025550123","to_number":"+14155550100","call_status":"ended","duration_ms":61000,"disconnection_reason":"user_hangup","transcript":"User: I need a cleaning next Monday at 10:30.","call_analysis":{"call_summary":"Wants a cleaning.","custom_analysis_data":%s}}}' "$call" "$analysis" >"$body"
sig="$(printf %s demo-retell-api-key | "$BIN" sign --provider retell --secret-file - --body-file "$body")"
curl -sS -o /dev/null -w "retell  call_analyzed     → %{http_code}\n" -H "x-retell-signature: $sig" \
    -H 'content-type: application/json' --data-binary @"$body" "$BASE/v1/webhooks/retell"

printf '{"message":{"type":"assistant-request","call":{"id":"%s"},"phoneNumber":{"number":"+14155550101"}}}' "$call" >"$body"
printf 'vapi    assistant-request → '
curl -sS -w " %{http_code}\n" -H 'x-vapi-secret: demo-vapi-secret' -H 'content-type: application/json' \
    --data-binary @"$body" "$BASE/v1/webhooks/vapi"

printf 'CallSid=CA%s&CallStatus=completed&Direction=inbound&From=%%2B12025550123&To=%%2B14155550102&CallDuration=42&SequenceNumber=0' "$call" >"$body"
url="$BASE/v1/webhooks/twilio"
sig="$(printf %s demo-twilio-auth-token | "$BIN" sign --provider twilio --secret-file - --url "$url" \
    --content-type application/x-www-form-urlencoded --body-file "$body")"
curl -sS -o /dev/null -w "twilio  completed         → %{http_code}\n" -H "x-twilio-signature: $sig" \
    -H 'content-type: application/x-www-form-urlencoded' --data-binary @"$body" "$url"

curl -sS -o /dev/null -w "retell  forged signature  → %{http_code}\n" -H "x-retell-signature: v=$(($(date +%s%N) / 1000000)),d=$(printf '0%.0s' {1..64})" \
    -H 'content-type: application/json' --data '{"event":"call_ended","call":{"call_id":"x","to_number":"+14155550100"}}' \
    "$BASE/v1/webhooks/retell"

echo
curl -sS "${CALLGATE_GATEWAY_OPS_URL:-http://127.0.0.1:9091}/metrics" | grep '^callgate_gateway_requests_total'
sleep 3  # the worker polls for appointments to push every second
echo
curl -sS "${CALLGATE_WORKER_URL:-http://127.0.0.1:9090}/metrics" | grep -E '^callgate_worker_(events_total|appointments_created_total)'
stack_env dev "${CALLGATE_DEV_PG_PORT:-25432}" "${CALLGATE_DEV_KAFKA_PORT:-29092}"
echo
psql -X "$DATABASE_URL" -c "SELECT provider, provider_call_id, status, caller_e164, customer_link, review_reason FROM calls ORDER BY last_event_at" \
    -c "SELECT a.starts_at, a.timezone, s.name AS service, a.customer_name, a.status, a.calcom_sync_status, a.calcom_booking_uid FROM appointments a JOIN services s ON s.id = a.service_id"
