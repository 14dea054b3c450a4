/**
 * The shared conformance cases (clients/conformance/cases.yaml) through this client, against the
 * gateways of clients/conformance/launch.py: `make clients-test-ts`, or by hand
 * `../../.venv/bin/python ../conformance/launch.py -- npm test`.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, test } from "node:test";

import { type DescEnum, equals, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { parse } from "yaml";

import {
  FinishReasonSchema,
  GenerateRequestSchema,
  GenerateStreamRequestSchema,
  type GenerateStreamResponse,
  StreamgateClient,
  StreamgateError,
  UsageSchema,
} from "../src/index.js";
import { HealthCheckResponse_ServingStatusSchema } from "../src/gen/health/v1/health_pb.js";

const ENV_VAR = "STREAMGATE_CONFORMANCE_ENV";
const CASES_FILE = new URL("../../../conformance/cases.yaml", import.meta.url);
const CALL_LIMIT_MS = 120_000; // bound of any one call, so that a hung call fails the test

/** launch.py's env.json. */
interface Environment {
  engine: { metrics_url: string };
  gateways: Record<
    string,
    {
      target: string;
      metrics_url: string;
      tls?: { ca_file: string; cert_file: string; key_file: string };
    }
  >;
  keys: Record<string, string>;
}

/** Metric samples by source ("engine", "gateway"): a value, or grown by `increase`. */
type Conditions = Record<string, Record<string, number | { increase: number }>>;

interface Expect {
  finish_reason?: string;
  completion_tokens?: number;
  same_text_as_generate?: boolean;
  models?: string[];
  default?: string;
  status?: string;
  code?: string;
  reason?: string;
  field_violations?: string[];
  retry_delay_seconds?: { above: number; at_most: number };
}

interface Case {
  id: string;
  kind: string;
  gateway?: string;
  api_key?: string;
  trust?: string;
  request?: JsonObject;
  call?: string;
  services?: string[];
  max_calls?: number;
  deadline_ms?: number;
  expect?: Expect;
  metrics?: { running?: Conditions; released?: Conditions };
}

const spec = parse(readFileSync(CASES_FILE, "utf8")) as { wait_seconds: number; cases: Case[] };
const envFile = process.env[ENV_VAR];
const env = envFile ? (JSON.parse(readFileSync(envFile, "utf8")) as Environment) : undefined;
const clients = new Map<string, StreamgateClient>();

function gatewayOf(c: Case) {
  const gateway = env?.gateways[c.gateway ?? "open"];
  assert.ok(gateway, `no gateway ${String(c.gateway)} in ${ENV_VAR}`);
  return gateway;
}

/** The client for the case's gateway, key and trust (one per combination and run). */
function clientOf(c: Case): StreamgateClient {
  const key = JSON.stringify([c.gateway, c.api_key, c.trust]);
  let client = clients.get(key);
  if (!client) {
    const { target, tls } = gatewayOf(c);
    const apiKey = c.api_key === undefined ? undefined : env?.keys[c.api_key];
    client = new StreamgateClient(target, {
      apiKey,
      tls: tls && {
        caFile: c.trust === "system" ? undefined : tls.ca_file,
        certFile: tls.cert_file,
        keyFile: tls.key_file,
      },
    });
    clients.set(key, client);
  }
  return client;
}

const limit = () => ({ timeoutMs: CALL_LIMIT_MS });
/** An enum value's name in the proto ("FINISH_REASON_LENGTH"; TypeScript's drops the prefix). */
const nameOf = (schema: DescEnum, value: number) =>
  schema.values.find((v) => v.number === value)?.name;
const streamRequest = (c: Case) => fromJson(GenerateStreamRequestSchema, c.request ?? {});
const unaryRequest = (c: Case) => fromJson(GenerateRequestSchema, c.request ?? {});

// ---- the kinds -------------------------------------------------------------------------------

async function runStream(c: Case): Promise<void> {
  const client = clientOf(c);
  const events: GenerateStreamResponse[] = [];
  for await (const event of client.generateStream(streamRequest(c), limit())) events.push(event);
  const [first, last] = [events[0]?.event, events.at(-1)?.event];
  assert.equal(first?.case, "start");
  assert.equal(last?.case, "end");
  const deltas = events.slice(1, -1).map(({ event }) => {
    assert.equal(event.case, "delta");
    return event.value;
  });
  assert.ok(deltas.length > 0, "no Delta");
  const end = last.value;
  assert.ok((end.usage?.promptTokens ?? 0) > 0, "End.usage has no prompt tokens");
  const expect = c.expect ?? {};
  if (expect.finish_reason !== undefined) {
    assert.equal(nameOf(FinishReasonSchema, end.finishReason), expect.finish_reason);
  }
  if (expect.completion_tokens !== undefined) {
    assert.equal(end.usage?.completionTokens, expect.completion_tokens);
  }
  if (expect.same_text_as_generate) {
    const unary = await client.generate(unaryRequest(c), limit());
    assert.equal(unary.text, deltas.map((d) => d.text).join(""));
    assert.ok(unary.end?.usage && end.usage && equals(UsageSchema, unary.end.usage, end.usage));
  }
}

async function runListModels(c: Case): Promise<void> {
  const models = await clientOf(c).listModels(limit());
  assert.deepEqual(
    models.map((m) => m.name),
    c.expect?.models,
  );
  assert.deepEqual(
    models.filter((m) => m.default).map((m) => m.name),
    [c.expect?.default],
  );
}

async function runHealth(c: Case): Promise<void> {
  for (const service of c.services ?? []) {
    const status = await clientOf(c).health(service, limit());
    assert.equal(nameOf(HealthCheckResponse_ServingStatusSchema, status), c.expect?.status);
  }
}

function checkError(error: unknown, expect: Expect = {}): StreamgateError {
  assert.ok(error instanceof StreamgateError, `not a StreamgateError: ${String(error)}`);
  assert.equal(error.codeName, expect.code, error.message);
  if (expect.reason !== undefined) assert.equal(error.reason, expect.reason, error.message);
  if (expect.field_violations !== undefined) {
    assert.deepEqual(
      error.fieldViolations.map((v) => v.field),
      expect.field_violations,
    );
  }
  return error;
}

/** What a promise rejected with (fails when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  return assert.fail("the call succeeded");
}

/** Reads a stream to its end (or its error). */
async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  const events = stream[Symbol.asyncIterator]();
  while (!(await events.next()).done);
}

async function runError(c: Case): Promise<void> {
  const client = clientOf(c);
  const calls: Record<string, (() => Promise<unknown>) | undefined> = {
    generate_stream: () => drain(client.generateStream(streamRequest(c), limit())),
    generate: () => client.generate(unaryRequest(c), limit()),
    list_models: () => client.listModels(limit()),
  };
  const call = calls[c.call ?? ""];
  assert.ok(call, `typescript: call ${String(c.call)} is not implemented in the TypeScript runner`);
  checkError(await rejection(call()), c.expect);
}

async function runRateLimit(c: Case): Promise<void> {
  for (let i = 0; i < (c.max_calls ?? 0); i++) {
    try {
      await clientOf(c).generate(unaryRequest(c), limit());
    } catch (error) {
      const { retryDelayMs } = checkError(error, c.expect);
      const bounds = c.expect?.retry_delay_seconds;
      assert.ok(retryDelayMs !== undefined && bounds, "no retry delay");
      assert.ok(retryDelayMs > bounds.above * 1000 && retryDelayMs <= bounds.at_most * 1000);
      return;
    }
  }
  assert.fail(`${String(c.max_calls)} calls passed; the last should have been refused`);
}

async function runCancel(c: Case): Promise<void> {
  let released: MetricsCheck | undefined;
  for await (const { event } of clientOf(c).generateStream(streamRequest(c), limit())) {
    if (event.case === "delta") {
      assert.deepEqual(await (await MetricsCheck.start(c, c.metrics?.running)).unmet(), []);
      released = await MetricsCheck.start(c, c.metrics?.released);
      break; // leaving the loop cancels the call
    }
  }
  assert.ok(released, "the stream ended before its first Delta");
  await released.waitFor(spec.wait_seconds);
}

async function runDeadline(c: Case): Promise<void> {
  const released = await MetricsCheck.start(c, c.metrics?.released);
  const stream = clientOf(c).generateStream(streamRequest(c), { timeoutMs: c.deadline_ms });
  checkError(await rejection(drain(stream)), c.expect);
  await released.waitFor(spec.wait_seconds);
}

// ---- metrics ---------------------------------------------------------------------------------

/** Compares /metrics samples with conditions; increases count from its start. */
class MetricsCheck {
  private constructor(
    private readonly urls: Record<string, string>,
    private readonly conditions: Conditions,
    private readonly before: Record<string, Map<string, number>>,
  ) {}

  static async start(c: Case, conditions: Conditions = {}): Promise<MetricsCheck> {
    const urls = { engine: env?.engine.metrics_url ?? "", gateway: gatewayOf(c).metrics_url };
    const check = new MetricsCheck(urls, conditions, {});
    for (const source of Object.keys(conditions)) check.before[source] = await check.scrape(source);
    return check;
  }

  private async scrape(source: string): Promise<Map<string, number>> {
    const url = this.urls[source];
    assert.ok(
      url,
      `typescript: metrics source ${source} is not implemented in the TypeScript runner`,
    );
    const text = await (await fetch(url)).text();
    const samples = new Map<string, number>();
    for (const line of text.split("\n")) {
      const cut = line.lastIndexOf(" ");
      if (cut > 0 && !line.startsWith("#"))
        samples.set(line.slice(0, cut), Number(line.slice(cut + 1)));
    }
    return samples;
  }

  /** The conditions that do not hold now. */
  async unmet(): Promise<string[]> {
    const problems: string[] = [];
    for (const [source, samples] of Object.entries(this.conditions)) {
      const now = await this.scrape(source);
      for (const [sample, want] of Object.entries(samples)) {
        const value = now.get(sample);
        const [got, target] =
          typeof want === "number"
            ? [value, want]
            : [
                value === undefined ? undefined : value - (this.before[source]?.get(sample) ?? 0),
                want.increase,
              ];
        if (got !== target)
          problems.push(`${source} ${sample}: ${String(got)} (want ${String(target)})`);
      }
    }
    return problems.sort();
  }

  /** Polls until every condition holds; fails after `seconds`. */
  async waitFor(seconds: number): Promise<void> {
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      const unmet = await this.unmet();
      if (unmet.length === 0) return;
      assert.ok(
        Date.now() < deadline,
        `still unmet after ${String(seconds)} s: ${unmet.join(", ")}`,
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

// ---- the run ---------------------------------------------------------------------------------

interface Kind {
  run: (c: Case) => Promise<void>;
  keys?: string[];
  expect?: string[];
}

const COMMON_KEYS = ["id", "kind", "gateway", "api_key", "trust", "expect"];
const KINDS: Record<string, Kind | undefined> = {
  stream: {
    run: runStream,
    keys: ["request"],
    expect: ["finish_reason", "completion_tokens", "same_text_as_generate"],
  },
  list_models: { run: runListModels, expect: ["models", "default"] },
  health: { run: runHealth, keys: ["services"], expect: ["status"] },
  error: {
    run: runError,
    keys: ["call", "request"],
    expect: ["code", "reason", "field_violations"],
  },
  rate_limit: {
    run: runRateLimit,
    keys: ["request", "max_calls"],
    expect: ["code", "reason", "retry_delay_seconds"],
  },
  cancel: { run: runCancel, keys: ["request", "metrics"] },
  deadline: { run: runDeadline, keys: ["request", "deadline_ms", "metrics"], expect: ["code"] },
};

void describe("conformance", () => {
  after(() => {
    for (const client of clients.values()) client.close();
  });
  for (const c of spec.cases) {
    void test(c.id, async () => {
      assert.ok(env, `typescript: ${ENV_VAR} is not set: run \`make clients-test-ts\` (launch.py)`);
      const kind = KINDS[c.kind];
      assert.ok(kind, `typescript: kind ${c.kind} is not implemented in the TypeScript runner`);
      const known = new Set([...COMMON_KEYS, ...(kind.keys ?? [])]);
      const unknown = [
        ...Object.keys(c).filter((k) => !known.has(k)),
        ...Object.keys(c.expect ?? {}).filter((k) => !(kind.expect ?? []).includes(k)),
      ];
      assert.deepEqual(
        unknown,
        [],
        `typescript: ${c.kind} does not implement ${unknown.join(", ")}`,
      );
      await kind.run(c);
    });
  }
});
