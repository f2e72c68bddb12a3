# infisical-kit: every automation entry point. `make help` lists the targets.
SHELL := /usr/bin/env bash
CARGO ?= cargo
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export TEST_REDIS_URL ?= redis://127.0.0.1:6379

.DEFAULT_GOAL := help
.PHONY: help dev test fmt fmt-check lint bench bench-criterion faults fuzz emulator services-check deploy-check e2e

help: ## list the targets with their one-line description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-24s %s\n", $$1, $$2}'

dev: ## the whole stack in one process (emulator, webhook, health, SQLite audit); prints URLs and the admin token
	$(CARGO) run -q -p ikit --features dev -- dev $(DEV_ARGS)

# The CLI's, ikit-migrate's and ikit-keys' tests turn on their sqlx features (`dev`, `audit`,
# `postgres`) through a dev-dependency on their own crate, so `cargo test` covers the featured
# code; `lint` also checks the default (lean) build of those crates.
test: ## run every test of the workspace against real PostgreSQL and Redis
	@if scripts/services-check; then \
	  $(CARGO) test --workspace --locked; \
	elif scripts/services-check --docker; then \
	  echo "nothing listens: the tests start PostgreSQL and Redis with testcontainers"; \
	  $(CARGO) test --workspace --locked --features ikit-common/containers; \
	else exit 1; fi

fmt: ## format the whole workspace
	$(CARGO) fmt --all

fmt-check: ## fail when anything is not formatted
	$(CARGO) fmt --all -- --check

lint: ## clippy over every target with warnings as errors, then the CLI's lean default build
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --locked -p ikit -p ikit-migrate -p ikit-keys --lib --bins -- -D warnings

bench: ## issue 17's table (P1-P8): each figure beside its same-run baseline, ratio, goal, met?
	$(CARGO) bench --locked -p ikit-suites --bench table $(BENCH_ROWS)
	$(MAKE) --no-print-directory bench-cli

bench-criterion: ## run the crates' criterion benches and print their figures
	$(CARGO) bench --workspace --exclude ikit-suites --bench '*' -- --warm-up-time 1 --measurement-time 3

faults: ## the fault suite R1-R8 (suites/tests/faults; also part of `make test`)
	$(CARGO) test --locked -p ikit-suites --test faults

FUZZ_CASES ?= 200000
fuzz: ## R7: the parsers of untrusted bytes under $(FUZZ_CASES) property-test cases each (minutes; not in CI)
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked -p ikit-suites --test faults r7_

bench-webhook: ## the webhook receiver on PostgreSQL and SQLite beside a bare axum handler: requests/s, p50, p99; 1, 2, 4 threads
	$(CARGO) bench -p ikit-webhook --bench webhook

bench-migrate: ## 10,000 keys planned and applied against the emulator: wall time and write requests
	$(CARGO) test -p ikit-migrate --test migrate ten_thousand -- --nocapture

bench-cli: ## ikit run -- true: warm (cached token, 304) vs true alone; cold (login + list) vs curl by hand
	$(CARGO) test -p ikit --test cli warm_start -- --nocapture

EMULATOR_ADDR ?= 127.0.0.1:8090
emulator: ## run ikit-emulator on $(EMULATOR_ADDR) with the demo seed (docs/demo-seed.json)
	$(CARGO) run -q -p ikit-emulator -- --addr $(EMULATOR_ADDR) --seed docs/demo-seed.json --admin-token demo-admin-token

services-check: ## fail early, with a hint, when PostgreSQL or Redis is not reachable
	@scripts/services-check

deploy-check: ## validate the Dockerfile, compose file, Kubernetes overlays, alert rules, dashboard, OpenAPI and config docs
	scripts/deploy-check

e2e: ## the end-to-end suite: emulator, two ikit-webhook, one ikit-health and the ikit CLI as processes on loopback
	$(CARGO) build --locked -p ikit-webhook -p ikit-health -p ikit-emulator -p ikit --bins
	$(CARGO) test --locked -p ikit-e2e --test e2e

# ---------------------------------------------------------------- Infisical operations
# Thin calls of `ikit`. By default against `make dev` (or `make infisical-dev-setup`): ikit reads
# the stack's URLs and credentials from $(DEV_STATE) through IKIT_DEV_STATE, filling only what is
# not set, so the usual variables (INFISICAL_DOMAIN, INFISICAL_TOKEN or
# INFISICAL_UNIVERSAL_AUTH_*, INFISICAL_PROJECT_ID, IKIT_HEALTH_URL, IKIT_ADMIN_TOKEN) point the
# same targets at a real server. IKIT_BIN=/path/to/ikit skips the build.
.PHONY: ikit-bin infisical-dev-setup infisical-dev-stop infisical-health infisical-migrate \
	infisical-rotate-jwt infisical-rotate-aes infisical-rotate-all infisical-cache-clear \
	infisical-secrets-list infisical-secrets-get infisical-secrets-set test-infisical \
	infisical-workflow-test jwks-check
IKIT_BIN ?= target/debug/ikit
DEV_STATE ?= .ikit/dev.json
DEV_LOG ?= .ikit/dev.log
PATTERN ?= /*
REASON ?= make $@
ROTATE_FLAGS ?= --force
# `plan` reads only; MIGRATE_COMMAND=apply writes (backup first)
MIGRATE_COMMAND ?= plan
MIGRATE_MAPPING ?= migrate.toml
MIGRATE_SOURCES ?= .env
MIGRATE_ARGS ?= $(MIGRATE_COMMAND) --mapping '$(MIGRATE_MAPPING)' $(MIGRATE_SOURCES)
# the state file is used when it exists and IKIT_DEV_STATE is not set (IKIT_DEV_STATE= turns it off)
IKIT = IKIT_DEV_STATE="$${IKIT_DEV_STATE-$$(test -f '$(DEV_STATE)' && echo '$(DEV_STATE)')}" $(IKIT_BIN)
# SECRET_VALUE reaches ikit on stdin from the shell's own variable: never in an argv or make's echo
export SECRET_VALUE

ikit-bin: ## build the ikit binary the infisical-* targets call, with `ikit dev` (skipped when IKIT_BIN is set)
	@$(if $(filter target/debug/ikit,$(IKIT_BIN)),$(CARGO) build -q -p ikit --features dev,true)

infisical-dev-setup: ikit-bin ## start `ikit dev` in the background and wait for $(DEV_STATE); log in $(DEV_LOG)
	@mkdir -p "$$(dirname '$(DEV_STATE)')" "$$(dirname '$(DEV_LOG)')"; rm -f '$(DEV_STATE)'
	@nohup $(IKIT_BIN) dev --state-file '$(DEV_STATE)' $(DEV_ARGS) > '$(DEV_LOG)' 2>&1 & echo $$! > '$(DEV_STATE).pid'
	@for i in $$(seq 1 600); do test -s '$(DEV_STATE)' && break; sleep 0.2; done; \
	  test -s '$(DEV_STATE)' || { echo "ikit dev did not start: see $(DEV_LOG)"; exit 1; }
	@echo "dev stack up (state in $(DEV_STATE), pid in $(DEV_STATE).pid); try: make infisical-health"

infisical-dev-stop: ## stop the stack infisical-dev-setup started
	@test -f '$(DEV_STATE).pid' && kill "$$(cat '$(DEV_STATE).pid')" && rm -f '$(DEV_STATE).pid' || echo "no stack started by infisical-dev-setup"

infisical-health: ikit-bin ## health of every part; exit 0 healthy, 1 degraded, 2 unhealthy
	$(IKIT) health

infisical-migrate: ikit-bin ## ikit migrate plan --mapping migrate.toml .env (MIGRATE_COMMAND, _MAPPING, _SOURCES, or MIGRATE_ARGS)
	$(IKIT) migrate $(MIGRATE_ARGS)

infisical-rotate-jwt: ikit-bin ## rotate the JWT signing key (ROTATE_FLAGS=--force by default, REASON=...)
	$(IKIT) rotate jwt $(ROTATE_FLAGS) --reason '$(REASON)'

infisical-rotate-aes: ikit-bin ## rotate the AES key (ROTATE_FLAGS=--force by default, REASON=...)
	$(IKIT) rotate aes $(ROTATE_FLAGS) --reason '$(REASON)'

infisical-rotate-all: ikit-bin ## rotate the JWT and AES keys (ROTATE_FLAGS=--force by default, REASON=...)
	$(IKIT) rotate all $(ROTATE_FLAGS) --reason '$(REASON)'

infisical-cache-clear: ikit-bin ## drop cached listings matching PATTERN (default /*) on every replica
	$(IKIT) cache clear '$(PATTERN)'

infisical-secrets-list: ikit-bin ## list the secrets (values shown) of the default folder
	$(IKIT) secrets

infisical-secrets-get: ikit-bin ## print the value of SECRET_NAME=...
	@test -n '$(SECRET_NAME)' || { echo "usage: make infisical-secrets-get SECRET_NAME=KEY"; exit 2; }
	$(IKIT) secrets get '$(SECRET_NAME)' --plain

infisical-secrets-set: ikit-bin ## set SECRET_NAME=... from SECRET_VALUE=... or SECRET_VALUE_FILE=...
	@test -n '$(SECRET_NAME)' || { echo "usage: make infisical-secrets-set SECRET_NAME=KEY SECRET_VALUE=... (or SECRET_VALUE_FILE=path)"; exit 2; }
	@if test -n '$(SECRET_VALUE_FILE)'; then \
	  $(IKIT) secrets set '$(SECRET_NAME)=@$(SECRET_VALUE_FILE)'; \
	elif test -n "$$SECRET_VALUE"; then \
	  printf '%s' "$$SECRET_VALUE" | $(IKIT) secrets set '$(SECRET_NAME)=-'; \
	else echo "set SECRET_VALUE=... or SECRET_VALUE_FILE=path"; exit 2; fi

test-infisical: ## the Infisical-facing tests: the ikit CLI, key manager, health service
	$(CARGO) test -p ikit -p ikit-keys -p ikit-health

infisical-workflow-test: ikit-bin ## login -> set -> get -> export -> rotate -> verify against the dev stack
	@set -euo pipefail; work="$$(mktemp -d)"; trap 'rm -rf "$$work"' EXIT; \
	token="$$($(IKIT) login --method universal-auth --silent --plain)"; \
	test "$$(printf '%s\n' "$$token" | wc -l)" -eq 1 && test -n "$$token"; echo "login: ok"; \
	export INFISICAL_TOKEN="$$token"; \
	value="workflow-$$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"; \
	printf '%s' "$$value" | $(IKIT) secrets set IKIT_WORKFLOW_CHECK=- > /dev/null; echo "set: ok"; \
	test "$$($(IKIT) secrets get IKIT_WORKFLOW_CHECK --plain)" = "$$value"; echo "get: ok"; \
	$(IKIT) export --format dotenv --output-file "$$work/workflow.env" 2> /dev/null; \
	grep -q '^IKIT_WORKFLOW_CHECK=' "$$work/workflow.env"; echo "export: ok"; \
	$(IKIT) rotate jwt --force --reason 'make infisical-workflow-test' > /dev/null; echo "rotate: ok"; \
	$(IKIT) verify rotation > /dev/null; echo "verify: ok"; \
	$(IKIT) secrets delete IKIT_WORKFLOW_CHECK 2> /dev/null; echo "workflow: ok"

jwks-check: ikit-bin ## check the served JWKS: keys present, every kid its key's RFC 7638 thumbprint
	$(IKIT) verify jwks
