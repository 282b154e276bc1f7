#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust:
#   formatting, clippy (warnings are errors), unit tests with the official vectors, and
#   integration tests against a real Postgres and a real Kafka-protocol broker (nisshi, memory
#   storage; the tests that restart a broker run one of their own on SQLite).
# Installs what is missing, reuses what is there. The test stack has its own ports
# (Postgres 25433, broker 29093) and is torn down on exit.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_test_stack test "${CALLGATE_TEST_PG_PORT:-25433}" "${CALLGATE_TEST_KAFKA_PORT:-29093}"

cd "$ROOT"
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
