import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { type CallOptions, type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { StreamgateError } from "./errors.js";
import { Health, type HealthCheckResponse_ServingStatus } from "./gen/health/v1/health_pb.js";
import {
  type GenerateRequestSchema,
  type GenerateResponse,
  type GenerateStreamRequestSchema,
  type GenerateStreamResponse,
  GenerationService,
  type Model,
} from "./gen/streamgate/v1/generation_pb.js";

/** Where `streamgate serve` listens by default. */
export const DEFAULT_TARGET = "127.0.0.1:50051";

/** PEM files; unset fields keep the defaults. */
export interface TlsOptions {
  /** Certificates to trust; default: Node's roots. */
  caFile?: string;
  /** The client's certificate and key, for a gateway that requires mutual TLS (both or none). */
  certFile?: string;
  keyFile?: string;
  /** Checked against the gateway's certificate instead of the target's host. */
  serverName?: string;
}

export interface ClientOptions {
  /** Sent on every call as `authorization: Bearer <key>`. */
  apiKey?: string;
  /** TLS when set (`true`: Node's roots); plaintext otherwise. */
  tls?: TlsOptions | true;
  /** More connect interceptors, run after the client's own. */
  interceptors?: Interceptor[];
}

/** A `GenerateStreamRequest` as a plain object: `{input: {case: "prompt", value: "Hi"}}`. */
export type GenerateStreamRequestInit = MessageInitShape<typeof GenerateStreamRequestSchema>;
export type GenerateRequestInit = MessageInitShape<typeof GenerateRequestSchema>;

/**
 * A client of one gateway over one HTTP/2 connection (gRPC protocol). Every method rejects with
 * a `StreamgateError`. Per-call options are connect's `CallOptions`: `timeoutMs` (a deadline,
 * for a stream its whole duration), `signal` (cancel), `headers`, `onHeader`, `onTrailer`.
 */
export class StreamgateClient {
  private readonly session: Http2SessionManager;
  private readonly generation: Client<typeof GenerationService>;
  private readonly healthService: Client<typeof Health>;

  /** `target` is "host:port"; the connection is made at the first call. */
  constructor(target: string = DEFAULT_TARGET, options: ClientOptions = {}) {
    const { apiKey, tls } = options;
    const baseUrl = `${tls ? "https" : "http"}://${target}`;
    this.session = new Http2SessionManager(baseUrl, {}, tls ? secureOptions(tls) : {});
    const interceptors: Interceptor[] = [];
    if (apiKey) {
      interceptors.push((next) => (request) => {
        request.header.set("authorization", `Bearer ${apiKey}`);
        return next(request);
      });
    }
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.session,
      interceptors: [...interceptors, ...(options.interceptors ?? [])],
    });
    this.generation = createClient(GenerationService, transport);
    this.healthService = createClient(Health, transport);
  }

  /**
   * The events of a generation as they arrive: a Start, a Delta per model step, an End. The call
   * starts with the iteration; leaving the loop early (`break`, `return`, a throw) cancels it,
   * and the gateway then stops the generation upstream.
   */
  async *generateStream(
    request: GenerateStreamRequestInit,
    options: CallOptions = {},
  ): AsyncGenerator<GenerateStreamResponse, void, undefined> {
    const done = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, done.signal]) : done.signal;
    const events = this.generation.generateStream(request, { ...options, signal });
    const reader = events[Symbol.asyncIterator]();
    try {
      for (let next = await reader.next(); !next.done; next = await reader.next()) {
        yield next.value;
      }
    } catch (error) {
      throw StreamgateError.from(error);
    } finally {
      done.abort(); // a no-op once the stream has ended; cancels it otherwise
      // connect clears the call's timeoutMs timer only when the cancelled call is read again:
      // without this read, the timer would keep the process alive until it fires.
      await reader.next().catch(() => undefined);
    }
  }

  /** The whole generation in one response. */
  async generate(
    request: GenerateRequestInit,
    options: CallOptions = {},
  ): Promise<GenerateResponse> {
    return this.call(() => this.generation.generate(request, options));
  }

  /** The routes the gateway serves (to this API key). */
  async listModels(options: CallOptions = {}): Promise<Model[]> {
    return (await this.call(() => this.generation.listModels({}, options))).models;
  }

  /**
   * grpc.health.v1 Check of `service` ("" for the gateway, or "streamgate.v1.GenerationService"):
   * SERVING while a backend is healthy.
   */
  async health(
    service = "",
    options: CallOptions = {},
  ): Promise<HealthCheckResponse_ServingStatus> {
    return (await this.call(() => this.healthService.check({ service }, options))).status;
  }

  /** Close the connection; calls in progress fail. */
  close(): void {
    this.session.abort();
  }

  private async call<T>(send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (error) {
      throw StreamgateError.from(error);
    }
  }
}

function secureOptions(tls: TlsOptions | true): SecureClientSessionOptions {
  if (tls === true) return {};
  if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
    throw new Error("a client certificate needs both certFile and keyFile");
  }
  const read = (path: string | undefined) => (path ? readFileSync(path) : undefined);
  return {
    ca: read(tls.caFile),
    cert: read(tls.certFile),
    key: read(tls.keyFile),
    servername: tls.serverName,
  };
}
