# The browser endpoint's generated Connect code, the chat page (clients/web) and its tests in a
# real Chromium; included by the Makefile (uses its VENV, BIN and STAMP).
#
#   make web                   build the chat page into the server package (`make run` does it)
#   make web-test              what `make test` runs: the Connect code's freshness, tsc and
#                              ESLint, the build, the browser tests (Debian's chromium, installed
#                              with apt-get when missing)
#   make connect-protos        regenerate server/streamgate/gateway/connect/v1/ from protos/
#   make connect-protos-check  fail when that checked-in code is stale
#   make bench-connect         the browser door vs the gRPC port: relay rate and added TTFT
#   make web-screenshot        docs/chat-page.png from a running `make run` (PAGE_URL)

.PHONY: web web-lint web-test web-screenshot connect-protos connect-protos-check chromium \
	bench-connect

WEB := clients/web
# The page is built into the package that serves it (git-ignored).
WEB_OUT := server/streamgate/gateway/connect/page
WEB_NODE_STAMP := $(WEB)/node_modules/.installed-stamp
WEB_GEN_STAMP := $(WEB)/src/gen/.generated-stamp
WEB_SOURCES := $(wildcard $(WEB)/src/*.ts $(WEB)/src/*.css) $(WEB)/index.html $(WEB)/vite.config.ts
WEB_PROTOS := $(sort $(wildcard protos/streamgate/v1/*.proto))
WEB_PROTOC := $(BIN)/python -m grpc_tools.protoc -I protos
CHROMIUM := /usr/bin/chromium
PAGE_URL ?= http://127.0.0.1:8080/

# protoc-gen-connectrpc writes the Connect runtime's glue (service protocols, ASGI applications)
# for google.protobuf messages; pinned with the runtime so that the checked-in code regenerates
# byte for byte.
CONNECT_GEN_VERSION := 0.13.0
CONNECT_GEN_STAMP := $(VENV)/.connect-gen-$(CONNECT_GEN_VERSION)
CONNECT_OUT := server/streamgate/gateway/connect/v1

# `make run` serves the chat page too, on 127.0.0.1:8080 (override with the variable).
run: web
run: export STREAMGATE_LISTEN__HTTP__ENABLED ?= true

$(CONNECT_GEN_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet 'protoc-gen-connectrpc==$(CONNECT_GEN_VERSION)'
	touch $@

# connect_code DIR: the Connect code of protos/ in DIR. The plugin imports the messages
# relatively (`from .generation_pb2`); they live in the client distribution.
define connect_code
	rm -rf $(1) && mkdir -p $(1)
	$(WEB_PROTOC) --plugin=protoc-gen-connectrpc=$(BIN)/protoc-gen-connectrpc \
		--connectrpc_out=$(1) --connectrpc_opt=protobuf=google,io=async $(WEB_PROTOS)
	mv $(1)/streamgate/v1/*_connect.py $(1)/ && rm -r $(1)/streamgate
	sed -i 's/^from \.\([a-z_]*_pb2\) import/from streamgate_client.v1.\1 import/' $(1)/*_connect.py
	printf '%s\n' '"""The Connect runtime'"'"'s glue for streamgate.v1, generated from protos/.' '' \
		'Regenerate with `make connect-protos`; `make connect-protos-check` fails when it is stale.' \
		'Do not edit.' '"""' > $(1)/__init__.py
endef

## Regenerate the browser endpoint's Connect code from protos/.
connect-protos: $(CONNECT_GEN_STAMP)
	$(call connect_code,$(CONNECT_OUT))

## Fail if the checked-in Connect code differs from what protos/ generates.
connect-protos-check: $(CONNECT_GEN_STAMP)
	@$(call connect_code,$(WEB)/build/connect-check)
	@diff -r -x __pycache__ $(WEB)/build/connect-check $(CONNECT_OUT) \
		|| { echo "error: $(CONNECT_OUT) is stale: run 'make connect-protos'" >&2; exit 1; }
	@echo "the browser endpoint's Connect code is up to date"

$(WEB_NODE_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null || { echo "the chat page needs npm (Node.js >= 20.19)" >&2; exit 1; }
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	touch $@

# The page's TypeScript for streamgate.v1 and google.rpc's error details (protoc-gen-es), from
# protos/ and the .proto files of googleapis-common-protos (a dependency of grpcio-status).
$(WEB_GEN_STAMP): $(WEB_NODE_STAMP) $(WEB_PROTOS) $(STAMP)
	rm -rf $(WEB)/src/gen && mkdir -p $(WEB)/src/gen
	$(WEB_PROTOC) -I "$$($(BIN)/python -c 'import google.rpc as r, pathlib as p; \
		print(p.Path(list(r.__path__)[0]).parents[1])')" \
		--plugin=protoc-gen-es=$(WEB)/node_modules/.bin/protoc-gen-es \
		--es_out=$(WEB)/src/gen --es_opt=target=ts $(WEB_PROTOS) google/rpc/error_details.proto
	touch $@

$(WEB_OUT)/index.html: $(WEB_GEN_STAMP) $(WEB_SOURCES)
	npm run --prefix $(WEB) --silent build

## Build the chat page into the server package (served at / by listen.http).
web: $(WEB_OUT)/index.html

## Type-check (tsc, strict) and lint (ESLint, typescript-eslint strict) the page and its tests.
web-lint: $(WEB_GEN_STAMP)
	npm run --prefix $(WEB) --silent typecheck
	npm run --prefix $(WEB) --silent lint

## Debian's chromium for the browser tests (playwright-core drives it; it downloads nothing).
## Its recommends are desktop services a headless run does not use; fonts make screenshots.
chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium fonts-liberation; }

## The Connect code's freshness, the page's checks and build, its tests in Chromium.
web-test: $(STAMP) connect-protos-check web-lint web chromium
	cd $(WEB) && STREAMGATE_PYTHON=$(abspath $(BIN)/python) CHROMIUM=$(CHROMIUM) npm test --silent

## A screenshot of the page answering, for the docs (a gateway running: `make run`).
web-screenshot: web chromium
	cd $(WEB) && npx tsc -p tsconfig.node.json \
		&& CHROMIUM=$(CHROMIUM) node build/scripts/screenshot.js $(PAGE_URL) ../../docs/chat-page.png

## The browser door vs the gRPC port of one gateway: relay rate and added TTFT (docs/benchmarks.md).
bench-connect: $(STAMP)
	$(BIN)/python loadtest/bench_connect.py
