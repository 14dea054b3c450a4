// An answer's figures, from its End message.

import type { End } from "./gen/streamgate/v1/generation_pb";

/** "TTFT 0.12 s · 42 tokens · 35.1 tokens/s": time to first token, tokens generated, and the
 * rate after the first token (the model's decoding speed). */
export function describeEnd(end: End): string {
  const ttft = end.timings?.timeToFirstTokenSeconds ?? 0;
  const total = end.timings?.totalSeconds ?? 0;
  const tokens = end.usage?.completionTokens ?? 0;
  const count = `${String(tokens)} ${tokens === 1 ? "token" : "tokens"}`;
  const parts = [`TTFT ${ttft.toFixed(2)} s`, count];
  if (tokens > 1 && total > ttft) {
    parts.push(`${((tokens - 1) / (total - ttft)).toFixed(1)} tokens/s`);
  }
  return parts.join(" · ");
}
