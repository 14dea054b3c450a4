# Protobuf targets, included by the Makefile (`include mk/protos.mk`); uses its BIN and STAMP.
#
#   make protos       regenerate clients/python/streamgate_client/v1/ and loadtest/streamgate.protoset
#   make protos-check fail when the checked-in generated code or protoset is stale
#   make buf-lint     buf lint (STANDARD) on protos/, installing buf from npm into .tools/
#   make protoset     regenerate only loadtest/streamgate.protoset (ghz/grpcurl -protoset)

BUF_VERSION ?= 1.75.0
TOOLS_DIR := .tools
BUF := $(TOOLS_DIR)/node_modules/.bin/buf
# One stamp per version, so changing BUF_VERSION reinstalls.
BUF_STAMP := $(TOOLS_DIR)/.buf-$(BUF_VERSION)
GEN_PROTOS := PYTHON=$(BIN)/python scripts/gen_protos.sh

.PHONY: protos protos-check buf-lint protoset

## Regenerate the Python package streamgate_client.v1 and the loadtest protoset from protos/.
protos: $(STAMP)
	$(GEN_PROTOS)

## Fail if the generated code or the protoset differs from what protos/ generates.
protos-check: $(STAMP)
	$(GEN_PROTOS) --check

## Regenerate loadtest/streamgate.protoset (the service and all its imports).
protoset: $(STAMP)
	$(GEN_PROTOS) --protoset

$(BUF_STAMP):
	@command -v npm >/dev/null || { echo "buf-lint needs npm (Node.js) to install buf" >&2; exit 1; }
	npm install --prefix $(TOOLS_DIR) --no-save --no-audit --no-fund --loglevel=error \
		@bufbuild/buf@$(BUF_VERSION)
	touch $@

## Lint protos/ with buf (rules in protos/buf.yaml).
buf-lint: $(BUF_STAMP)
	$(BUF) lint protos
