// Checks callgate's Grafana dashboards (Grafana itself cannot be installed here):
//   - each file is a dashboard Grafana can provision: a unique uid, a title, panels with unique
//     ids, each target a PromQL expression on the `datasource` template variable;
//   - with a Prometheus URL, every panel's query evaluates without error against it and returns
//     data (run after traffic: deploy/local/chaos.sh does).
// Usage: node dashboards.mjs [--prometheus URL] deploy/grafana/dashboards/*.json
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
let prometheus = null;
if (args[0] === "--prometheus") {
  prometheus = args[1];
  args.splice(0, 2);
}
const problems = [];
const uids = new Set();
let queries = 0;
for (const file of args) {
  const dashboard = JSON.parse(readFileSync(file, "utf8"));
  const where = (what) => `${file}: ${what}`;
  if (!dashboard.uid || uids.has(dashboard.uid)) problems.push(where(`uid missing or repeated: ${dashboard.uid}`));
  uids.add(dashboard.uid);
  if (!dashboard.title) problems.push(where("no title"));
  const variable = (dashboard.templating?.list ?? []).find((v) => v.name === "datasource" && v.type === "datasource");
  if (!variable) problems.push(where("no `datasource` template variable"));
  const ids = new Set();
  for (const panel of dashboard.panels ?? []) {
    if (ids.has(panel.id)) problems.push(where(`panel id ${panel.id} repeated`));
    ids.add(panel.id);
    if (!panel.targets?.length) problems.push(where(`panel "${panel.title}" has no query`));
    for (const target of panel.targets ?? []) {
      if (target.datasource?.uid !== "${datasource}") problems.push(where(`panel "${panel.title}" does not use $datasource`));
      if (!target.expr) {
        problems.push(where(`panel "${panel.title}" target ${target.refId} has no expr`));
        continue;
      }
      if (!prometheus) continue;
      queries++;
      const url = `${prometheus}/api/v1/query?query=${encodeURIComponent(target.expr)}`;
      const answer = await (await fetch(url)).json();
      if (answer.status !== "success") {
        problems.push(where(`"${panel.title}": ${target.expr}: ${answer.error}`));
      } else if (!answer.data.result.length) {
        problems.push(where(`"${panel.title}": no data for ${target.expr}`));
      }
    }
  }
  if (!ids.size) problems.push(where("no panels"));
}
for (const problem of problems) console.error(`FAIL ${problem}`);
console.log(`${args.length} dashboards, ${queries} queries evaluated, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
