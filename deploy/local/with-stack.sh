#!/usr/bin/env bash
# Runs a command against a throwaway stack (Postgres and the broker on their own ports, torn
# down on exit), with the environment the test harness reads. Used for benchmarks:
#   deploy/local/with-stack.sh cargo bench -p callgate-tests --bench worker_throughput
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -gt 0 ] || die "usage: $0 COMMAND [ARGS...]"
start_test_stack bench "${CALLGATE_BENCH_PG_PORT:-25434}" "${CALLGATE_BENCH_KAFKA_PORT:-29094}"
cd "$ROOT"
"$@"
