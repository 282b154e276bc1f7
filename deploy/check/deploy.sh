#!/usr/bin/env bash
# Checks everything under deploy/ that is not Rust, with the real tools:
#   - the Dockerfile with hadolint;
#   - the alert rules with `promtool check rules` and their unit tests with `promtool test rules`;
#   - the PrometheusRule generated from them is up to date;
#   - the Kubernetes overlay rendered with `kubectl kustomize`, every core object validated with
#     kubernetes-validate (strict), the KEDA and Prometheus Operator objects against their CRD
#     schemas (@kubernetes-models);
#   - every CALLGATE_* variable the manifests set is an option of the binary that reads it.
# Installs what is missing (lib.sh, ensure_deploy_tools) and reuses what is there. test.sh runs it; BIN_DIR picks the binaries
# (default target/debug).
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"

BIN_DIR="${BIN_DIR:-$ROOT/target/debug}"
K8S_VERSION=1.31.0

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

log "the Grafana dashboards are provisionable"
node deploy/check/dashboards.mjs deploy/grafana/dashboards/*.json

log "compose: its YAML, its Prometheus config, Grafana provisioning"
NODE_PATH="$NODE_MODULES" node --input-type=module -e '
  import { readFileSync } from "node:fs";
  const YAML = await import(process.env.NODE_PATH + "/yaml/dist/index.js");
  const compose = YAML.parse(readFileSync("deploy/compose/compose.yaml", "utf8"));
  const want = ["postgres", "kafka", "topics", "migrate", "gateway", "worker", "prometheus", "grafana"];
  const missing = want.filter((name) => !compose.services?.[name]);
  if (missing.length) { console.error("compose services missing: " + missing); process.exit(1); }
  console.log("compose: " + Object.keys(compose.services).length + " services");
  // Grafana provisioning: the dashboards provider reads the directory compose mounts them in,
  // and the datasource is the compose Prometheus.
  const provider = YAML.parse(readFileSync("deploy/grafana/provisioning/dashboards/callgate.yml", "utf8"));
  const source = YAML.parse(readFileSync("deploy/grafana/provisioning/datasources/prometheus.yml", "utf8"));
  const mounts = compose.services.grafana.volumes.join(" ");
  const path = provider.providers?.[0]?.options?.path;
  if (provider.apiVersion !== 1 || !path || !mounts.includes(":" + path + ":")) {
    console.error("the dashboards provider does not read the mounted dashboards: " + path); process.exit(1);
  }
  if (source.apiVersion !== 1 || source.datasources?.[0]?.type !== "prometheus" || !source.datasources[0].url.includes("prometheus:9090")) {
    console.error("the Grafana datasource is not the compose Prometheus"); process.exit(1);
  }
'
sed "s#/etc/prometheus/callgate-rules.yml#$ROOT/deploy/prometheus/callgate-rules.yml#" deploy/compose/prometheus.yml \
    >"$work/compose-prometheus.yml"
promtool check config "$work/compose-prometheus.yml"

log "every CALLGATE_* variable in the manifests and the compose file is an option of its binary"
"$BIN_DIR/callgate-gateway" serve --help >"$work/gateway.help"
{ "$BIN_DIR/callgate-worker" run --help; "$BIN_DIR/callgate-worker" migrate --help; } >"$work/worker.help"
unknown=0
for name in $(grep -oh 'CALLGATE_[A-Z_]*' "$work/rendered.yaml" deploy/compose/compose.yaml | sort -u); do
    if ! grep -qE "env: $name[]=]" "$work/gateway.help" "$work/worker.help"; then
        echo "not an option of callgate-gateway or callgate-worker: $name" >&2
        unknown=1
    fi
done
[ "$unknown" = 0 ] || die "the manifests set options the binaries do not have"
log "deploy checks passed"
