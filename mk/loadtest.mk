# Load tests: ghz, the token-aware load generator, the soak, the capacity measurement
# (docs/reliability.md, docs/benchmarks.md); included by the Makefile (uses its BIN and STAMP).
#
#   make loadtest     ghz + the load generator against a gateway it starts; prints the report's path
#   make soak         10,000 streams + 1,000 cancellations + 1,000 short deadlines; leak checks
#   make capacity     concurrent streams the gateway carries on one core at 20 ms/token
#   make loadtest-ci  the CI-sized ghz runs and soak (part of `make test`)
#   make ghz          install ghz (Go module proxy) into .tools/bin

GHZ_VERSION ?= v0.121.0
GHZ_BIN := .tools/bin
GHZ := $(GHZ_BIN)/ghz
# One stamp per version, so changing GHZ_VERSION reinstalls.
GHZ_STAMP := $(GHZ_BIN)/.ghz-$(GHZ_VERSION)
# The CI soak: a tenth of the full one (about two and a half minutes, of which two are the idle
# minutes the leak checks wait for: the gateway at rest after the warm-up and after the run).
CI_SOAK := --streams 1000 --cancels 100 --deadlines 100 --warmup 300

.PHONY: ghz loadtest loadtest-ci soak capacity

$(GHZ_STAMP):
	@command -v go >/dev/null || { echo "ghz needs Go to install it (go install)" >&2; exit 1; }
	GOBIN=$(abspath $(GHZ_BIN)) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	touch $@

## Install ghz at the pinned version into .tools/bin.
ghz: $(GHZ_STAMP)

## ghz and the load generator against a gateway in front of a paced fake TGI; writes
## bench-results/loadtest/report.html. LOADTEST_ARGS: e.g. --backend embedded --rate 5.
loadtest: $(STAMP) $(GHZ_STAMP)
	$(BIN)/python -m loadtest --ghz $(GHZ) $(LOADTEST_ARGS)

## The soak (docs/reliability.md): bench-results/soak/soak.html. SOAK_ARGS to change its size.
soak: $(STAMP)
	$(BIN)/python -m loadtest.soak $(SOAK_ARGS)

## The gateway's capacity on one core (docs/benchmarks.md): bench-results/capacity/.
## CAPACITY_ARGS: e.g. --levels 8,16,32 --rounds 2, or --nice -10 (as root, on a shared machine).
capacity: $(STAMP)
	$(BIN)/python -m loadtest.capacity $(CAPACITY_ARGS)

## The CI-sized load tests (part of `make test`): ghz's configs, each through reflection and
## the protoset (any error or missing response fails), then the scaled-down soak.
loadtest-ci: $(STAMP) $(GHZ_STAMP)
	$(BIN)/python -m loadtest.ghz --ghz $(GHZ) --out bench-results/ci/ghz
	$(BIN)/python -m loadtest.soak $(CI_SOAK) --out bench-results/ci/soak
