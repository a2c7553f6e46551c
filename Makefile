# Two commands matter: `make serve` and `make test`. Both go through `make setup`, which is
# idempotent and fast when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-stamp
WEIGHTS_STAMP := models/yamnet/weights/.verified

.PHONY: setup serve test lint typecheck unit bench clean test-deps

setup: $(SETUP_STAMP) $(WEIGHTS_STAMP)

$(SETUP_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tympan needs Python 3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# Re-verified whenever the pinned sums change; downloads only when files are missing or corrupt.
# Then the model variants (dynamic batch, float) are prepared and checked against the original.
$(WEIGHTS_STAMP): $(SETUP_STAMP) models/yamnet/spec.py models/yamnet/variants.py
	$(PY) -m models.yamnet.fetch
	$(PY) -m models.yamnet.variants
	@touch $@

serve: setup
	$(VENV)/bin/tympan serve

# Test-only system tools from Debian's packages: espeak-ng speaks the test sentences, openssl
# makes the TLS test's certificate.
TEST_TOOLS := espeak-ng openssl
test-deps:
	@missing=""; for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

unit: setup test-deps
	$(PY) -m pytest -q

test: setup test-deps lint typecheck unit

bench: setup
	$(PY) -m benchmarks.latency --streams 50 --files 2 --duration 20 --out benchmarks/out/latest

clean:
	rm -rf $(VENV) models/yamnet/weights var .mypy_cache .ruff_cache .pytest_cache
