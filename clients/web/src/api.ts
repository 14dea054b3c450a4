// The gateway's services over Connect, from this page's own origin.

import { createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { create } from "@bufbuild/protobuf";
import {
  GenerationService,
  GenerateStreamRequestSchema,
  MessageSchema,
  MessagesSchema,
  type GenerateStreamResponse,
  type Model,
} from "./gen/streamgate/v1/generation_pb";

/** One turn of the conversation, as the route's chat template receives it. */
export interface Turn {
  role: "user" | "assistant";
  content: string;
}

const transport = createConnectTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
});

const client: Client<typeof GenerationService> = createClient(GenerationService, transport);

function options(apiKey: string, signal?: AbortSignal): CallOptions {
  const headers: Record<string, string> = {};
  if (apiKey) {
    headers.authorization = `Bearer ${apiKey}`;
  }
  return { headers, signal };
}

/** The models (routes) the key may use. */
export async function listModels(apiKey: string): Promise<Model[]> {
  const response = await client.listModels({}, options(apiKey));
  return response.models;
}

/** The assistant's reply to `turns` on `model`, event by event, until `signal` aborts it. */
export function streamReply(
  turns: readonly Turn[],
  model: string,
  apiKey: string,
  signal: AbortSignal,
): AsyncIterable<GenerateStreamResponse> {
  const request = create(GenerateStreamRequestSchema, {
    model,
    input: {
      case: "chat",
      value: create(MessagesSchema, {
        messages: turns.map((turn) => create(MessageSchema, turn)),
      }),
    },
  });
  return client.generateStream(request, options(apiKey, signal));
}
