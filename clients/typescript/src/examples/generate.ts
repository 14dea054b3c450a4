#!/usr/bin/env node
/**
 * generate [--api-key KEY] [--ca-file PEM] [--max-new-tokens N] TARGET PROMPT
 *
 * Streams the gateway's reply to PROMPT to stdout as it is generated, then the finish reason and
 * token count to stderr. Ctrl-C cancels the call (exit 130); an error exits 1.
 */
import { parseArgs } from "node:util";

import { FinishReason, StreamgateClient, StreamgateError } from "../index.js";

const USAGE = "usage: generate [--api-key KEY] [--ca-file PEM] [--max-new-tokens N] TARGET PROMPT";

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      "api-key": { type: "string" },
      "ca-file": { type: "string" },
      "max-new-tokens": { type: "string" },
    },
  });
  const [target, prompt] = positionals;
  const maxNewTokens = values["max-new-tokens"];
  if (positionals.length !== 2 || target === undefined || prompt === undefined) {
    console.error(USAGE);
    return 2;
  }
  const client = new StreamgateClient(target, {
    apiKey: values["api-key"],
    tls: values["ca-file"] ? { caFile: values["ca-file"] } : undefined,
  });
  const interrupt = new AbortController();
  process.once("SIGINT", () => {
    interrupt.abort();
  });
  try {
    const request = {
      input: { case: "prompt" as const, value: prompt },
      stopping: maxNewTokens ? { maxNewTokens: Number(maxNewTokens) } : {},
    };
    for await (const { event } of client.generateStream(request, { signal: interrupt.signal })) {
      if (event.case === "delta") {
        process.stdout.write(event.value.text);
      } else if (event.case === "end") {
        const tokens = event.value.usage?.completionTokens ?? 0;
        process.stdout.write("\n");
        const reason = FinishReason[event.value.finishReason];
        console.error(`[FINISH_REASON_${reason}, ${String(tokens)} tokens]`);
      }
    }
    return 0;
  } catch (error) {
    if (interrupt.signal.aborted) return 130;
    console.error(`generate: ${error instanceof StreamgateError ? error.message : String(error)}`);
    return 1;
  } finally {
    client.close();
  }
}

process.exitCode = await main();
