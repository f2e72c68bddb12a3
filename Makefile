# infisical-kit: every automation entry point. `make help` lists the targets.
SHELL := /usr/bin/env bash
CARGO ?= cargo
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export TEST_REDIS_URL ?= redis://127.0.0.1:6379

.DEFAULT_GOAL := help
.PHONY: help dev test fmt fmt-check lint bench emulator services-check deploy-check e2e

help: ## list the targets with their one-line description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

dev: ## the whole stack in one process (emulator, webhook, health, SQLite audit); prints URLs and the admin token
	$(CARGO) run -q -p ikit -- dev $(DEV_ARGS)

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

lint: ## clippy over every target with warnings as errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

bench: ## run the criterion benches and print their figures (and the 10,000-key migration)
	$(CARGO) bench --workspace --bench '*' -- --warm-up-time 1 --measurement-time 3
	$(MAKE) bench-migrate

bench-webhook: ## the webhook receiver beside a bare axum handler: requests/s, p50, p99
	$(CARGO) bench -p ikit-webhook --bench webhook

bench-migrate: ## 10,000 keys planned and applied against the emulator: wall time and write requests
	$(CARGO) test -p ikit-migrate --test migrate ten_thousand -- --nocapture

bench-cli: ## ikit run -- true: warm (cached token) vs true alone vs cold (login + list), medians
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
