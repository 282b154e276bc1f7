#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust:
#   formatting, clippy (warnings are errors), unit tests with the official vectors, and
#   integration tests against a real Postgres and a real Kafka-protocol broker (nisshi, memory
#   storage; the tests that restart a broker run one of their own on SQLite).
#   Then the deploy checks (deploy/check/deploy.sh: hadolint, promtool, kustomize with
#   kubernetes-validate and the KEDA / Prometheus Operator schemas), and the short chaos run
#   (deploy/local/chaos.sh --short): about a minute of signed traffic
#   under faults, on a stack of its own, ending in a verdict on every accepted webhook.
# Installs what is missing, reuses what is there. The test stack has its own ports
# (Postgres 25433, broker 29093) and is torn down on exit.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_test_stack test "${CALLGATE_TEST_PG_PORT:-25433}" "${CALLGATE_TEST_KAFKA_PORT:-29093}"
ensure_deploy_tools
export CALLGATE_PROMETHEUS_BIN="$(command -v prometheus)"

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
# Arguments filter the tests (a developer's loop): then the deploy checks and the chaos run
# are left out.
if [ $# -eq 0 ]; then
    log "deploy checks (Dockerfile, alerts, Kubernetes manifests)"
    "$ROOT/deploy/check/deploy.sh"
    log "short chaos run"
    "$ROOT/deploy/local/chaos.sh" --short --debug
fi
