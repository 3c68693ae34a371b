# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint typecheck unit venv clean lock system-deps openclaw

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q -c requirements.lock -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,redis,otel]'
	touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-dev

run: $(VENV)/.installed-run
	$(BIN)/dash-stream serve --dev --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check dash_stream bridge tests loadtest
	$(BIN)/ruff format --check dash_stream bridge tests loadtest

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict dash_stream bridge

# real services the tests start themselves: redis-server (apt or PyPI fallback); promtool (apt);
# chromium (apt) for the dashboard's browser tests, driven by Playwright (never `playwright install`)
system-deps: $(VENV)/.installed-dev
	scripts/ensure-redis.sh $(BIN)
	scripts/ensure-promtool.sh
	scripts/ensure-chromium.sh

# pinned Node 24 + openclaw for tests/integration (once into .cache/openclaw/, then instant)
openclaw:
	bash scripts/ensure-openclaw.sh >/dev/null

unit: $(VENV)/.installed-dev system-deps openclaw
	$(BIN)/pytest -q

test: lint typecheck unit

lock: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,redis,otel]'
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
