#!/usr/bin/env bash
# The work an unauthenticated sender can make the gateway do: a Twilio form body for the demo
# tenant's number with hundreds of thousands of distinct empty parameters and a forged
# signature, sent N times at once (default 4). Prints each answer, and the gateway's peak RSS
# (VmHWM) and CPU time consumed. Needs deploy/local/run.sh running (BENCHMARKS.md, "Crafted
# requests").
#   deploy/local/crafted-twilio.sh [N]
set -euo pipefail
BASE="${CALLGATE_BASE:-http://127.0.0.1:8080}"
N="${1:-4}"
pid="$(pgrep -f 'callgate-gateway serve' | head -n 1)" || { echo "no gateway running: start deploy/local/run.sh" >&2; exit 1; }
body="$(mktemp)"
trap 'rm -f "$body"' EXIT
# About 7.9 MB: the default --max-body-bytes is 8 MiB.
python3 - "$body" <<'PY'
import sys
parts = ["CallSid=CAcrafted", "CallStatus=completed", "Direction=inbound", "To=%2B14155550102", "From=%2B12025550123"]
size = sum(len(p) + 1 for p in parts)
i = 0
while size < 7_900_000:
    p = f"p{i:07d}="
    parts.append(p); size += len(p) + 1; i += 1
open(sys.argv[1], "w").write("&".join(parts))
print(f"{i} empty parameters, {size} bytes", file=sys.stderr)
PY
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
ticks="$(getconf CLK_TCK)"
before="$(cpu)"
for _ in $(seq "$N"); do
    curl -sS -o /dev/null -w "%{http_code} in %{time_total} s\n" -H 'x-twilio-signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=' \
        -H 'content-type: application/x-www-form-urlencoded' --data-binary @"$body" "$BASE/v1/webhooks/twilio" &
done
wait
after="$(cpu)"
echo "gateway peak RSS (VmHWM): $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status"), CPU: $(( (after - before) * 1000 / ticks )) ms for $N requests"
