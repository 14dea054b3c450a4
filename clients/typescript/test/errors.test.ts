/** StreamgateError decodes the gateway's google.rpc details (no gateway needed). */
import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

import { StreamgateError } from "../src/index.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../src/gen/google/rpc/error_details_pb.js";

void test("the details of a refused call are decoded", () => {
  const cause = new ConnectError("rate limited", Code.ResourceExhausted, undefined, [
    {
      desc: ErrorInfoSchema,
      value: {
        reason: "RATE_LIMITED",
        domain: "streamgate.dev",
        metadata: { request_id: "r-1", tokens_sent: "3" },
      },
    },
    {
      desc: RetryInfoSchema,
      value: { retryDelay: create(DurationSchema, { seconds: 1n, nanos: 500_000_000 }) },
    },
    {
      desc: QuotaFailureSchema,
      value: { violations: [{ subject: "tenant acme", description: "1 request a minute" }] },
    },
  ]);
  const error = StreamgateError.from(cause);
  assert.equal(error.code, Code.ResourceExhausted);
  assert.equal(error.codeName, "RESOURCE_EXHAUSTED");
  assert.equal(error.reason, "RATE_LIMITED");
  assert.equal(error.retryDelayMs, 1500);
  assert.equal(error.requestId, "r-1");
  assert.equal(error.tokensSent, 3);
  assert.deepEqual(error.quotaViolations, [
    { subject: "tenant acme", description: "1 request a minute" },
  ]);
  assert.equal(
    error.message,
    "RESOURCE_EXHAUSTED RATE_LIMITED: rate limited [retry in 1.5 s] [request r-1]",
  );
  assert.equal(StreamgateError.from(error), error);
});

void test("field violations, and an error without details", () => {
  const invalid = StreamgateError.from(
    new ConnectError("invalid request", Code.InvalidArgument, undefined, [
      { desc: ErrorInfoSchema, value: { reason: "INVALID_ARGUMENT" } },
      {
        desc: BadRequestSchema,
        value: { fieldViolations: [{ field: "sampling.top_p", description: "must be in (0, 1]" }] },
      },
    ]),
  );
  assert.equal(
    invalid.message,
    "INVALID_ARGUMENT: invalid request (sampling.top_p: must be in (0, 1])",
  );
  assert.equal(invalid.retryDelayMs, undefined);

  const bare = StreamgateError.from(new ConnectError("connection refused", Code.Unavailable));
  assert.equal(bare.reason, undefined);
  assert.equal(bare.tokensSent, undefined);
  assert.equal(bare.message, "UNAVAILABLE: connection refused");
});

void test("a TLS failure is UNAVAILABLE, as in gRPC", () => {
  const tls = Object.assign(new Error("unable to verify the first certificate"), {
    code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  });
  const error = StreamgateError.from(
    new ConnectError("handshake", Code.Internal, undefined, [], tls),
  );
  assert.equal(error.codeName, "UNAVAILABLE");
  const other = StreamgateError.from(
    new ConnectError("boom", Code.Internal, undefined, [], new Error("x")),
  );
  assert.equal(other.codeName, "INTERNAL");
});
