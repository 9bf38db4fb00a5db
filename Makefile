# llmgw — one entry point for dev, tests and the demo. Everything runs from the local venv.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROTOS  := $(shell find proto -name '*.proto')

.PHONY: install run demo test test-unit check manifests proto lint typecheck bench bench-peers chaos clean

## install: create the venv and install everything in ONE pip resolve (faust's click<8.4 vs huggingface-hub;
## torch pinned to 2.13.0 so pip takes the local CPU build, never a multi-GB CUDA one)
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels) -e '.[all]'
	touch $@

## run: start the whole system on its embedded default (Tansu, Redis, fake providers), run a short demo, serve until Ctrl-C
run: install
	$(BIN)/llmgw up --demo

## demo: like run, but exit after the demo
demo: install
	$(BIN)/llmgw up --demo --exit-after-demo

## test: the whole suite (unit, integration against real Redis/Kafka/gRPC, end-to-end)
test: install
	$(BIN)/pytest

## check: lint, type-check, and validate the shipped configs (limits, prompts, deploy) as CI does
check: install
	$(BIN)/ruff check src services tests bench
	$(BIN)/mypy
	$(BIN)/python -m llmgw.contracts
	$(BIN)/llmgw limits check services/limiter/limits.yaml
	$(BIN)/llmgw prompts validate --dir prompts
	$(BIN)/llmgw eval validate
	$(BIN)/llmgw eval gate --rerun
	$(BIN)/python deploy/k8s/render.py --check

## manifests: sync the chart's files/ (limits, routes, prompts) and render deploy/k8s/manifests/base from the chart
manifests: install
	$(BIN)/python deploy/k8s/render.py

test-unit: install
	$(BIN)/pytest -m "not integration and not e2e"

## proto: regenerate Python code from proto/ (never edit generated code)
proto:
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=src --pyi_out=src --grpc_python_out=src $(PROTOS)
	for d in $$(cd proto && find llmgw -type d); do touch src/$$d/__init__.py; done

lint:
	$(BIN)/ruff check src services tests bench

typecheck:
	$(BIN)/mypy

## bench: gateway vs direct SDK latency, side by side in one run
bench: install
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.fallback
	$(BIN)/python -m bench.chaos
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.semantic_cache
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.limiter
	$(BIN)/python -m bench.drift

## bench-peers: llmgw beside LiteLLM's proxy and Portkey's gateway, same fake provider (installs them once under .llmgw/peers)
bench-peers: install
	$(BIN)/python -m bench.peers

## chaos: the fault matrix against the system as deployed (every service its own process), a few minutes
chaos: install
	$(BIN)/python -m bench.chaos_matrix

clean:
	rm -rf $(VENV) .pytest_cache
