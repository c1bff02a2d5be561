# DataHarvest tasks. `make help` lists them. Everything installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest
CLIENTS := $(notdir $(wildcard examples/*))

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit test-integration test-e2e test-deploy lint format bench clean down

help: ## list the tasks
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt shared/pyproject.toml tools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -e shared -e tools
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Python (and npm) dependencies
	@if [ -x scripts/install-node-deps.sh ]; then scripts/install-node-deps.sh; fi
	@scripts/install-chromium.sh

demo: install ## run the choreography on the bundled example data and print the result
	@for client in $(CLIENTS); do $(BIN)/dataharvest run examples/$$client --client $$client || exit 1; done

test: install lint ## the whole test suite: lint, unit, integration, e2e, deploy checks
	$(PYTEST) tests -q

test-unit: install ## pure-logic tests (no services)
	$(PYTEST) tests/unit -q

test-integration: install ## tests on the real local stack
	$(PYTEST) tests/integration -q

test-e2e: install ## the dataharvest CLI end to end
	$(PYTEST) tests/e2e -q

test-deploy: install ## osls package, cfn-lint, IAM and artifact checks
	$(PYTEST) tests/deploy -q

lint: install ## ruff lint and format check, mypy --strict on the runtime package, bandit (no high finding), npm audit of the deploy tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	VENV_BIN=$(BIN) scripts/supply-chain-check.sh

format: install ## apply ruff formatting and fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## run the benchmarks (see BENCHMARKS.md)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

down: ## stop the local stack
	-$(BIN)/dataharvest down

clean: down ## remove local state and the virtualenv
	rm -rf $(VENV) .dataharvest node_modules
