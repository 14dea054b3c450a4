# Load tests: ghz, the token-aware load generator, the soak; included by the Makefile (uses its
# BIN and STAMP).

.PHONY: loadtest-ci

## The CI-sized load tests (part of `make test`).
loadtest-ci: $(STAMP)
