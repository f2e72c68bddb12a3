#!/usr/bin/env python3
"""Checks what schema validation cannot see in a rendered overlay (kubectl kustomize output):
the auth-delegator binding names the ServiceAccount in its own namespace, the NetworkPolicy
selects every Deployment's pods, every container is hardened, probed and limited, and no
secret-bearing variable is set from a literal.

Usage: k8s.py RENDERED.yaml [--replicas webhook=3,health=2]
"""
import sys

import yaml

SECRET_VARS = {
    "IKIT_DATABASE_URL", "IKIT_REDIS_URL", "IKIT_CACHE_KEY", "IKIT_WEBHOOK_SECRET",
    "IKIT_WEBHOOK_SECRET_PREVIOUS", "IKIT_WEBHOOK_STATE_KEY", "IKIT_EVENTS_TOKEN",
    "IKIT_ADMIN_TOKEN", "IKIT_ADMIN_TOKEN_PREVIOUS", "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET",
    "INFISICAL_TOKEN", "INFISICAL_JWT", "IKIT_SNAPSHOT_KEY",
}


def check(docs, replicas):
    failures = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    if by_kind.get("Secret"):
        failures.append("a Secret is rendered: secrets are created outside the repository")
    for cm in by_kind.get("ConfigMap", []):
        for key in (cm.get("data") or {}):
            if key in SECRET_VARS:
                failures.append(f"ConfigMap {cm['metadata']['name']} holds {key}")
    accounts = {(sa["metadata"]["name"], sa["metadata"].get("namespace")) for sa in by_kind.get("ServiceAccount", [])}
    bindings = [b for b in by_kind.get("ClusterRoleBinding", []) if b["roleRef"]["name"] == "system:auth-delegator"]
    if not bindings:
        failures.append("no ClusterRoleBinding to system:auth-delegator")
    for b in bindings:
        for s in b.get("subjects", []):
            if (s["name"], s.get("namespace")) not in accounts:
                failures.append(f"binding {b['metadata']['name']} names {s['namespace']}/{s['name']}, not a rendered ServiceAccount")
    policies = by_kind.get("NetworkPolicy", [])
    if not policies:
        failures.append("no NetworkPolicy")
    pdbs = {p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") for p in by_kind.get("PodDisruptionBudget", [])}
    services = {s["spec"]["selector"].get("app.kubernetes.io/name") for s in by_kind.get("Service", [])}
    for dep in by_kind.get("Deployment", []):
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        spec = pod["spec"]
        short = name.removeprefix("ikit-")
        if short in replicas and dep["spec"].get("replicas") != replicas[short]:
            failures.append(f"{name}: {dep['spec'].get('replicas')} replicas, want {replicas[short]}")
        if name not in pdbs:
            failures.append(f"{name}: no PodDisruptionBudget")
        if name not in services:
            failures.append(f"{name}: no Service")
        for np in policies:
            wanted = np["spec"]["podSelector"].get("matchLabels", {})
            if any(labels.get(k) != v for k, v in wanted.items()):
                failures.append(f"{name}: NetworkPolicy {np['metadata']['name']} does not select its pods")
        ann = pod["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
            failures.append(f"{name}: no Prometheus scrape annotations")
        if spec.get("serviceAccountName") != "ikit":
            failures.append(f"{name}: not running as ServiceAccount ikit")
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            failures.append(f"{name}: runAsNonRoot is not set")
        for c in spec["containers"]:
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                failures.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                failures.append(f"{where}: privilege escalation allowed")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                failures.append(f"{where}: capabilities not dropped")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(kind, {})):
                    failures.append(f"{where}: resource {kind} incomplete")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                failures.append(f"{where}: readiness probe is not /readyz")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                failures.append(f"{where}: liveness probe is not /healthz")
            for env in c.get("env", []):
                if env["name"] in SECRET_VARS and "value" in env:
                    failures.append(f"{where}: {env['name']} is a literal, not a secretKeyRef")
    if len(by_kind.get("Deployment", [])) != 2:
        failures.append(f"{len(by_kind.get('Deployment', []))} Deployments, want ikit-webhook and ikit-health")
    return failures


def main():
    path = sys.argv[1]
    replicas = {}
    if len(sys.argv) > 3 and sys.argv[2] == "--replicas":
        for pair in sys.argv[3].split(","):
            k, v = pair.split("=")
            replicas[k] = int(v)
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    failures = check(docs, replicas)
    # the check checks itself: a literal admin token must be caught
    tampered = yaml.safe_load(yaml.safe_dump(docs))
    for d in tampered:
        if d["kind"] == "Deployment":
            d["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append({"name": "IKIT_ADMIN_TOKEN", "value": "literal"})
    if not any("is a literal" in f for f in check(tampered, replicas)):
        failures.append("self-test: a literal IKIT_ADMIN_TOKEN went unnoticed")
    for f in failures:
        print(f"FAIL {path}: {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"ok: {path}: {len(docs)} objects, hardened, probed, secrets by reference")


if __name__ == "__main__":
    main()
