# InferSight — the single entry point for developers and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: venv
venv: $(STAMP) ## Create the virtualenv and install InferSight with its dev tools

.PHONY: servers
servers: ## Create the model servers' own virtualenvs (MLServer, kserve, MLflow)
	./scripts/bootstrap_servers.sh

.PHONY: system-deps
system-deps: ## Install Debian packages the tests use (prometheus, alertmanager, postgresql, docker-compose) as root
	./scripts/bootstrap_system.sh

.PHONY: demo
demo: $(STAMP) ## Run the embedded demo: model, sidecar and traffic scenarios
	$(BIN)/infersight demo $(DEMO_ARGS)

.PHONY: test
test: $(STAMP) servers system-deps ## Run every test (unit, integration, end to end)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) ## Run the unit tests only (fast)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/ruff format --check app tests benchmarks
	$(BIN)/hadolint --config .hadolint.yaml Dockerfile docker/model-server/Dockerfile

.PHONY: typecheck
typecheck: $(STAMP) ## mypy --strict on app/
	$(BIN)/mypy app

.PHONY: audit
audit: $(STAMP) ## Audit the installed dependencies for known vulnerabilities (needs pypi.org's or OSV's vulnerability API)
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off $(AUDIT_ARGS)

.PHONY: fmt
fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format app tests benchmarks
	$(BIN)/ruff check --fix app tests benchmarks

.PHONY: bench
bench: $(STAMP) ## Measure the sidecar's overhead against calling the model server directly (under 5 minutes)
	@command -v wrk >/dev/null || ./scripts/bootstrap_system.sh wrk
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

.PHONY: bench-full
bench-full: $(STAMP) ## make bench plus 8 connections, V1 and MLflow, the drift cycle and the scale limits
	@command -v wrk >/dev/null || ./scripts/bootstrap_system.sh wrk
	$(BIN)/python -m benchmarks.run --connections 1,8,64 --protocols v2,v1,mlflow $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.drift_cycle
	$(BIN)/python -m benchmarks.scale_limits

.PHONY: soak
soak: $(STAMP) ## Ten minutes of steady load: RSS, open fds, threads and /metrics size must stay flat
	@command -v wrk >/dev/null || ./scripts/bootstrap_system.sh wrk
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: up
up: ## Start the full stack (model server, sidecar, Prometheus, Alertmanager, Grafana, Loki)
	$(COMPOSE) up -d --build

.PHONY: up-traffic
up-traffic: ## Start the full stack and play the demo scenarios against it
	$(COMPOSE) --profile traffic up -d --build

.PHONY: down
down: ## Stop the full stack (named volumes are kept)
	$(COMPOSE) --profile traffic down

.PHONY: clean
clean: ## Remove virtualenvs and caches
	rm -rf $(VENV) .venvs .mypy_cache .ruff_cache .pytest_cache .hypothesis
