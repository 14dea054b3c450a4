# The clients in other languages (clients/go, clients/typescript, clients/java) and their
# conformance runs against a live gateway; included by the Makefile (uses its BIN and STAMP).

.PHONY: clients-test

## Build every client and run the shared conformance cases in each language.
clients-test: $(STAMP)
