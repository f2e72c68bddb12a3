#!/usr/bin/env python3
"""What the compose specification's schema cannot see in docker-compose.yml: the topology the
docs promise (two webhook replicas behind one name, healthchecks, start order on healthy
dependencies, the three profiles) and that .env.example documents every variable the file
interpolates.

Usage: compose.py docker-compose.yml .env.example
"""
import re
import sys

import yaml

REQUIRED_SERVICES = {"postgres", "redis", "emulator", "ikit-webhook", "ikit-health",
                     "otel-collector", "prometheus", "grafana"}
PROFILES = {"emulator", "real", "observability"}
# set by compose itself or only meaningful inside a container
NOT_FROM_ENV_FILE = {"POSTGRES_USER", "POSTGRES_DB"}


def check(compose_text, env_text):
    failures = []
    doc = yaml.safe_load(compose_text)
    services = doc.get("services", {})
    missing = REQUIRED_SERVICES - set(services)
    if missing:
        failures.append(f"services missing: {sorted(missing)}")
    seen_profiles = set()
    for name, svc in services.items():
        seen_profiles.update(svc.get("profiles", []))
        one_shot = svc.get("restart") == "no"
        if "healthcheck" not in svc and not one_shot:
            failures.append(f"{name}: no healthcheck")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if isinstance(cond, dict):
                want = "service_completed_successfully" if services.get(dep, {}).get("restart") == "no" else "service_healthy"
                if cond.get("condition") != want:
                    failures.append(f"{name}: depends_on {dep} without condition {want}")
            else:
                failures.append(f"{name}: depends_on {dep} without a condition")
    if PROFILES - seen_profiles:
        failures.append(f"profiles missing: {sorted(PROFILES - seen_profiles)}")
    webhook = services.get("ikit-webhook", {})
    if webhook.get("deploy", {}).get("replicas") != 2:
        failures.append("ikit-webhook must run 2 replicas")
    if "container_name" in webhook:
        failures.append("ikit-webhook: container_name forbids replicas")
    for name in ("ikit-webhook", "ikit-health"):
        svc = services.get(name, {})
        if svc.get("profiles"):
            failures.append(f"{name} must run in every profile")
        for dep in ("postgres", "redis"):
            if dep not in (svc.get("depends_on") or {}):
                failures.append(f"{name}: does not wait for {dep}")
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", env_text, re.M))
    for var in sorted(used - documented - NOT_FROM_ENV_FILE):
        failures.append(f".env.example does not document {var}")
    for var in sorted(documented - used - {"COMPOSE_PROFILES"}):
        failures.append(f".env.example documents {var}, which docker-compose.yml never reads")
    return failures


def main():
    compose_text = open(sys.argv[1]).read()
    env_text = open(sys.argv[2]).read()
    failures = check(compose_text, env_text)
    tampered = compose_text.replace("replicas: 2", "replicas: 1")
    if not any("2 replicas" in f for f in check(tampered, env_text)):
        failures.append("self-test: one webhook replica went unnoticed")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"ok: {sys.argv[1]}: topology, healthchecks, start order, profiles; {sys.argv[2]} documents every variable")


if __name__ == "__main__":
    main()
