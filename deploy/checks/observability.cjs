// Checks the alert rules and the Grafana dashboard without promtool:
//  - every rule has a name, an expression, a duration, a severity, a summary and a runbook_url
//    whose anchor is a heading of docs/operations.md;
//  - every PromQL expression parses (Prometheus' own lezer grammar, @prometheus-io/lezer-promql);
//  - every metric an expression selects is exported by the code (METRIC_* constants and the
//    names given to the metrics! macros in crates/ and services/).
// Usage: node deploy/checks/observability.cjs <repo root>   (NODE_PATH points at the packages)
"use strict";
const fs = require("fs");
const path = require("path");
const { parser } = require("@prometheus-io/lezer-promql");
const yaml = require("js-yaml");

const root = path.resolve(process.argv[2] || ".");
const failures = [];
const fail = (m) => failures.push(m);

// Metrics Prometheus adds itself, not the code.
const BUILTIN = new Set(["up"]);
const HISTOGRAM_SUFFIXES = ["_bucket", "_sum", "_count"];

function rustFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      // integration tests and benches export nothing a deployment scrapes
      if (!["target", "tests", "benches"].includes(entry.name)) out.push(...rustFiles(p));
    } else if (entry.name.endsWith(".rs")) out.push(p);
  }
  return out;
}

function exportedMetrics() {
  const names = new Set();
  const constant = /const\s+METRIC_[A-Z0-9_]+\s*:\s*&str\s*=\s*"([a-z_:][a-z0-9_:]*)"/g;
  const macro = /metrics::(?:counter|gauge|histogram|describe_counter|describe_gauge|describe_histogram)!\(\s*"([a-z_:][a-z0-9_:]*)"/g;
  for (const dir of ["crates", "services"]) {
    for (const file of rustFiles(path.join(root, dir))) {
      const text = fs.readFileSync(file, "utf8")
        // unit-test modules register throwaway names
        .split(/#\[cfg\(test\)\]\s*mod tests/)[0];
      for (const re of [constant, macro]) {
        for (const m of text.matchAll(re)) names.add(m[1]);
      }
    }
  }
  return names;
}

/** The metric names an expression selects; a syntax error is reported against `where`. */
function selectedMetrics(expr, where) {
  const tree = parser.parse(expr);
  const names = [];
  let broken = false;
  tree.iterate({
    enter(node) {
      if (node.type.isError) broken = true;
      if (node.name === "Identifier" && node.node.parent && node.node.parent.name === "VectorSelector") {
        names.push(expr.slice(node.from, node.to));
      }
      if (node.name === "UnquotedLabelMatcher" || node.name === "QuotedLabelMatcher") {
        const text = expr.slice(node.from, node.to);
        const m = text.match(/^__name__\s*=\s*"([^"]+)"$/);
        if (m) names.push(m[1]);
      }
    },
  });
  if (broken) fail(`${where}: PromQL does not parse: ${expr}`);
  return names;
}

function known(name, exported) {
  if (BUILTIN.has(name) || exported.has(name)) return true;
  return HISTOGRAM_SUFFIXES.some((s) => name.endsWith(s) && exported.has(name.slice(0, -s.length)));
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function anchors(markdown) {
  const out = new Set();
  for (const line of markdown.split("\n")) {
    const m = line.match(/^#{1,6}\s+(.*)$/);
    if (!m) continue;
    out.add(m[1].trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-"));
  }
  return out;
}

function checkRules(rulesDoc, exported, runbookAnchors, file) {
  const seen = new Set();
  const groups = (rulesDoc && rulesDoc.groups) || [];
  if (groups.length === 0) fail(`${file}: no rule groups`);
  let count = 0;
  for (const group of groups) {
    if (!group.name) fail(`${file}: a group has no name`);
    for (const rule of group.rules || []) {
      count++;
      const where = `${file}: ${rule.alert || rule.record || "(unnamed rule)"}`;
      if (!rule.alert) { fail(`${where}: not an alerting rule`); continue; }
      if (seen.has(rule.alert)) fail(`${where}: duplicate alert name`);
      seen.add(rule.alert);
      if (typeof rule.expr !== "string" || !rule.expr.trim()) { fail(`${where}: no expr`); continue; }
      if (rule.for !== undefined && !/^(\d+(ms|s|m|h|d|w|y))+$/.test(String(rule.for))) fail(`${where}: bad for ${rule.for}`);
      if (!rule.labels || !["info", "warning", "critical"].includes(rule.labels.severity)) fail(`${where}: severity must be info, warning or critical`);
      const ann = rule.annotations || {};
      if (!ann.summary) fail(`${where}: no summary`);
      const runbook = ann.runbook_url || "";
      const anchor = runbook.split("docs/operations.md#")[1];
      if (!anchor) fail(`${where}: runbook_url must point into docs/operations.md#<anchor>`);
      else if (!runbookAnchors.has(anchor)) fail(`${where}: docs/operations.md has no heading for #${anchor}`);
      for (const name of selectedMetrics(rule.expr, where)) {
        if (!known(name, exported)) fail(`${where}: metric ${name} is not exported by the code`);
      }
    }
  }
  return count;
}

function checkDashboard(dashboard, exported, file) {
  let count = 0;
  const walk = (panels) => {
    for (const panel of panels || []) {
      walk(panel.panels);
      for (const target of panel.targets || []) {
        count++;
        for (const name of selectedMetrics(target.expr || "", `${file}: panel "${panel.title}"`)) {
          if (!known(name, exported)) fail(`${file}: panel "${panel.title}": metric ${name} is not exported by the code`);
        }
      }
    }
  };
  walk(dashboard.panels);
  if (count === 0) fail(`${file}: no queries`);
  return count;
}

// The check checks itself first: a made-up metric, a syntax error and a missing anchor must fail.
function selfTest(exported) {
  const before = failures.length;
  checkRules({ groups: [{ name: "t", rules: [
    { alert: "A", expr: "rate(no_such_metric_total[5m]) > 0", labels: { severity: "warning" }, annotations: { summary: "s", runbook_url: "x/docs/operations.md#nowhere" } },
    { alert: "B", expr: "sum(rate(up[5m]) >", labels: { severity: "warning" }, annotations: { summary: "s", runbook_url: "x/docs/operations.md#here" } },
  ] }] }, exported, new Set(["here"]), "self-test");
  const caught = failures.splice(before);
  const want = ["no_such_metric_total", "does not parse", "#nowhere"];
  for (const w of want) {
    if (!caught.some((f) => f.includes(w))) fail(`self-test: the check missed "${w}" (${caught.join("; ")})`);
  }
}

const exported = exportedMetrics();
if (exported.size < 10) fail(`found only ${exported.size} exported metrics: the code scan is broken`);
selfTest(exported);
const rulesFile = "deploy/observability/prometheus/alerts.yml";
const dashFile = "deploy/observability/grafana/dashboards/ikit.json";
const ops = fs.readFileSync(path.join(root, "docs/operations.md"), "utf8");
const rules = checkRules(yaml.load(fs.readFileSync(path.join(root, rulesFile), "utf8")), exported, anchors(ops), rulesFile);
const queries = checkDashboard(JSON.parse(fs.readFileSync(path.join(root, dashFile), "utf8")), exported, dashFile);
for (const cfg of ["prometheus.compose.yml", "prometheus.k8s.yml"]) {
  const doc = yaml.load(fs.readFileSync(path.join(root, "deploy/observability/prometheus", cfg), "utf8"));
  if (!doc.scrape_configs || doc.scrape_configs.length === 0) fail(`${cfg}: no scrape_configs`);
  for (const f of doc.rule_files || []) {
    if (path.basename(f) !== "alerts.yml") fail(`${cfg}: rule file ${f} is not alerts.yml`);
  }
}
if (failures.length) {
  for (const f of failures) console.error(`FAIL ${f}`);
  process.exit(1);
}
console.log(`ok: ${rules} alert rules and ${queries} dashboard queries parse and use only the ${exported.size} metrics the code exports`);
