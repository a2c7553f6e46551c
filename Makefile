# Two commands matter: `make serve` and `make test`. Both go through `make setup`, which is
# idempotent and fast when nothing changed. Python packages come from requirements.lock (every
# version and sha256 pinned; regenerate with `make lock`), system packages from Debian's.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-stamp
WEIGHTS_STAMP := models/yamnet/weights/.verified

.PHONY: setup serve test lint typecheck unit bench clean test-deps lock

setup: $(SETUP_STAMP) $(WEIGHTS_STAMP)

# Installs the Debian package $(1) unless the shell test $(2) already succeeds (root, or sudo).
define apt_install
	@if ! $(2) >/dev/null 2>&1; then \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: $(1) is missing and this is no Debian-like system: install it yourself" >&2; exit 1; }; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing $(1) from Debian's packages"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null \
	    || { echo "error: could not install $(1); run: apt-get install $(1)" >&2; exit 1; }; \
	fi
endef

$(SETUP_STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tympan needs Python 3.11 or newer")'
	$(call apt_install,python3-venv,$(PYTHON) -c 'import ensurepip')
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $@

# Re-verified whenever the pinned sums change; downloads only when files are missing or corrupt.
# Then the model variants are prepared, and each one's agreement with the exact semantics on
# this CPU is printed: one that disagrees is skipped by the server at start-up, not an error.
$(WEIGHTS_STAMP): $(SETUP_STAMP) models/yamnet/spec.py models/yamnet/variants.py models/yamnet/variant_meta.py models/yamnet/embedding.py
	$(PY) -m models.yamnet.fetch
	$(PY) -m models.yamnet.variants
	$(PY) -m models.yamnet.embedding
	@touch $@

# Maintainers: pin every Python package (and its sha256) after changing pyproject.toml.
lock:
	$(PY) -m pip install --quiet --disable-pip-version-check pip-tools
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --extra dev --all-build-deps --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

serve: setup
	$(VENV)/bin/tympan serve

# Test-only system tools from Debian's packages: espeak-ng speaks the test sentences, openssl
# makes the TLS test's certificate, qemu-user runs the model as an AVX2-only CPU would; node
# runs pyannoteAI's TypeScript media example with axios and tsx (pinned in tests/node/).
test-deps:
	$(call apt_install,espeak-ng,command -v espeak-ng)
	$(call apt_install,openssl,command -v openssl)
	$(call apt_install,qemu-user,command -v qemu-x86_64)
	$(call apt_install,nodejs npm,command -v npm)
	@if [ ! -f tests/node/node_modules/.package-lock.json ] || \
	    [ tests/node/package-lock.json -nt tests/node/node_modules/.package-lock.json ]; then \
	  npm ci --prefix tests/node --ignore-scripts --no-audit --no-fund; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

unit: setup test-deps
	$(PY) -m pytest -q

# System packages first, then set-up, then the checks, in this order even under make -j.
test: test-deps
	$(MAKE) --no-print-directory setup
	$(MAKE) --no-print-directory lint typecheck unit

bench: setup
	$(PY) -m benchmarks.latency --streams 50 --files 2 --duration 20 --out benchmarks/out/latest

clean:
	rm -rf $(VENV) models/yamnet/weights var .mypy_cache .ruff_cache .pytest_cache
