// Validates the custom resources of rendered manifests (stdin: multi-document YAML) against
// the KEDA and Prometheus Operator CRD schemas, with the @kubernetes-models packages. Core
// kinds are left to kubernetes-validate; a custom kind this script does not know fails.
// Usage: kubectl kustomize … | NODE_PATH=… node validate-crds.mjs
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// The packages live in a cache outside this repository (deploy/check/deploy.sh installs them);
// ES modules ignore NODE_PATH, so they are imported by path.
const modules = process.env.NODE_PATH;
const load = (path) => import(pathToFileURL(join(modules, path)).href);
const YAML = await load("yaml/dist/index.js");
const keda = await load("@kubernetes-models/keda/keda.sh/v1alpha1/index.js");
const monitoring = await load("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js");

const models = {
  "keda.sh/v1alpha1": keda,
  "monitoring.coreos.com/v1": monitoring,
};

let checked = 0;
let failed = 0;
for (const doc of YAML.parseAllDocuments(readFileSync(0, "utf8"))) {
  const object = doc.toJS();
  if (!object || !object.apiVersion || !object.apiVersion.includes(".")) continue;
  const group = models[object.apiVersion];
  if (!group && !object.apiVersion.endsWith(".k8s.io/v1")) {
    console.error(`FAIL ${object.kind}/${object.metadata?.name}: no schema for ${object.apiVersion}`);
    failed++;
    continue;
  }
  if (!group) continue;
  const Model = group[object.kind];
  try {
    if (!Model) throw new Error(`unknown kind ${object.kind} in ${object.apiVersion}`);
    new Model(object).validate();
    console.log(`ok   ${object.apiVersion} ${object.kind}/${object.metadata.name}`);
    checked++;
  } catch (error) {
    console.error(`FAIL ${object.kind}/${object.metadata?.name}: ${error.message}`);
    failed++;
  }
}
console.log(`${checked} custom resources valid, ${failed} invalid`);
process.exit(failed > 0 || checked === 0 ? 1 : 0);
