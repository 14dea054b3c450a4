# The clients in other languages (clients/go, clients/typescript, clients/java) and their
# conformance runs against live gateways; included by the Makefile (uses its BIN and STAMP, and
# mk/protos.mk's TOOLS_DIR, BUF and BUF_STAMP).
#
#   make clients-test         the generated code is fresh, every client builds, lints and passes
#                             its unit tests and the conformance cases (one launch of the gateways)
#   make clients-test-go      one language (also -ts, -java), with its own launch
#   make clients-protos       regenerate clients/go/gen and clients/typescript/src/gen
#   make clients-protos-check fail when they are stale
#   make conformance-serve    start the conformance gateways and wait (run a suite by hand)
#
# Downloads are cached: Go modules in Go's module cache, Maven artifacts in ~/.m2, the protoc
# plugins for Go in .tools/go/bin, npm packages in clients/typescript/node_modules.

PROTOC_GEN_GO_VERSION ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2
GO_PLUGINS_STAMP := $(TOOLS_DIR)/.go-plugins-$(PROTOC_GEN_GO_VERSION)-$(PROTOC_GEN_GO_GRPC_VERSION)
TS_DIR := clients/typescript
TS_STAMP := $(TS_DIR)/node_modules/.installed-stamp
MVN := mvn -B -ntp -Dstyle.color=never -f clients/java/pom.xml
# Starts the engine and the gateways, runs the rest of the line against them, stops them.
LAUNCH := $(BIN)/python clients/conformance/launch.py --
CLIENT_LANGUAGES := go ts java

.PHONY: clients clients-test clients-protos clients-protos-check conformance-serve clients-lint-launcher \
	$(foreach l,$(CLIENT_LANGUAGES),clients-build-$(l) clients-run-$(l) clients-test-$(l))

## Build every client and run the shared conformance cases in each language.
# One language at a time (-j1, even under make -j): the cancel and deadline cases read the
# engine's and gateways' metrics, which another language's calls would change.
clients-test: clients-protos-check clients $(STAMP)
	$(LAUNCH) $(MAKE) --no-print-directory -j1 -k $(foreach l,$(CLIENT_LANGUAGES),clients-run-$(l))

## Build, vet and lint the Go, TypeScript and Java clients (examples and tests included) and
## the conformance launcher.
clients: $(foreach l,$(CLIENT_LANGUAGES),clients-build-$(l)) clients-lint-launcher

$(foreach l,$(CLIENT_LANGUAGES),clients-test-$(l)): clients-test-%: clients-build-% $(STAMP)
	$(LAUNCH) $(MAKE) --no-print-directory clients-run-$*

## Regenerate the Go and TypeScript code from protos/.
clients-protos: $(BUF_STAMP) $(GO_PLUGINS_STAMP) $(TS_STAMP)
	BUF=$(BUF) scripts/gen_client_protos.sh

## Fail if the checked-in Go or TypeScript code differs from what protos/ generates.
clients-protos-check: $(BUF_STAMP) $(GO_PLUGINS_STAMP) $(TS_STAMP)
	BUF=$(BUF) scripts/gen_client_protos.sh --check

## Start the conformance gateways and keep them up; prints the STREAMGATE_CONFORMANCE_ENV to set.
conformance-serve: $(STAMP)
	$(BIN)/python clients/conformance/launch.py --serve

# The launcher is Python outside the packages `make lint` and `make typecheck` cover.
clients-lint-launcher: $(STAMP)
	$(BIN)/ruff check clients/conformance
	$(BIN)/ruff format --check clients/conformance
	$(BIN)/mypy clients/conformance/launch.py

# ---- per language: build (before the gateways start) and run (against them) -----------------

clients-build-go:
	cd clients/go && go vet ./...
	@cd clients/go && test -z "$$(gofmt -l .)" || { gofmt -l . >&2; echo "gofmt: files above need formatting" >&2; exit 1; }

clients-run-go:
	cd clients/go && go test -count=1 ./...

clients-build-ts: $(TS_STAMP)
	npm --prefix $(TS_DIR) run --silent build
	npm --prefix $(TS_DIR) run --silent lint

clients-run-ts:
	npm --prefix $(TS_DIR) test

clients-build-java:
	@command -v mvn >/dev/null || { echo "the Java client needs Maven (mvn) and a JDK 17" >&2; exit 1; }
	$(MVN) -q test-compile

clients-run-java:
	$(MVN) surefire:test

# ---- tools ---------------------------------------------------------------------------------

$(GO_PLUGINS_STAMP):
	@command -v go >/dev/null || { echo "the Go client needs Go (go)" >&2; exit 1; }
	GOBIN=$(abspath $(TOOLS_DIR))/go/bin go install \
		google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(abspath $(TOOLS_DIR))/go/bin go install \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	touch $@

$(TS_STAMP): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "the TypeScript client needs Node.js 20+ and npm" >&2; exit 1; }
	npm ci --prefix $(TS_DIR) --no-audit --no-fund --loglevel=error
	touch $@
