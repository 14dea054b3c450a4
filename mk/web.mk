# The chat page (clients/web) and its tests in a real Chromium; included by the Makefile (uses
# its BIN and STAMP).

.PHONY: web-test

## Build the chat page and run its browser tests against a live gateway.
web-test: $(STAMP)
