import { Code, ConnectError } from "@connectrpc/connect";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** One invalid field of a request: its proto path and what is wrong with it. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** One exhausted limit: whose ("tenant acme") and what. */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/**
 * A call that ended with a non-OK gRPC status, with the google.rpc details the gateway sends
 * (docs/api.md, "Errors") decoded. Every method of `StreamgateClient` rejects with one.
 */
export class StreamgateError extends Error {
  /** The gRPC status code (connect's `Code` has gRPC's numbers). */
  readonly code: Code;
  /** The code as gRPC spells it: "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED". */
  readonly codeName: string;
  /** ErrorInfo's stable reason ("RATE_LIMITED", "ROUTE_NOT_FOUND"), domain and metadata. */
  readonly reason: string | undefined;
  readonly domain: string | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  /** BadRequest: one violation per invalid request field. */
  readonly fieldViolations: readonly FieldViolation[];
  /** QuotaFailure: the limits that refused the call. */
  readonly quotaViolations: readonly QuotaViolation[];
  /** RetryInfo: milliseconds to wait before retrying; undefined when retrying cannot help. */
  readonly retryDelayMs: number | undefined;
  /** The status message without the code. */
  readonly rawMessage: string;
  override readonly cause: ConnectError;

  constructor(cause: ConnectError) {
    const info = cause.findDetails(ErrorInfoSchema)[0];
    const retry = cause.findDetails(RetryInfoSchema)[0]?.retryDelay;
    const codeName = codeNameOf(cause.code);
    const reason = info?.reason;
    const fieldViolations = cause
      .findDetails(BadRequestSchema)
      .flatMap((d) => d.fieldViolations.map(({ field, description }) => ({ field, description })));
    const head = reason && reason !== codeName ? `${codeName} ${reason}` : codeName;
    const parts = [cause.rawMessage ? `${head}: ${cause.rawMessage}` : head];
    if (fieldViolations.length > 0) {
      parts.push(`(${fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ")})`);
    }
    const retryDelayMs =
      retry === undefined ? undefined : Number(retry.seconds) * 1000 + retry.nanos / 1e6;
    if (retryDelayMs !== undefined) parts.push(`[retry in ${String(retryDelayMs / 1000)} s]`);
    const requestId = info?.metadata.request_id;
    if (requestId) parts.push(`[request ${requestId}]`);
    super(parts.join(" "), { cause });
    this.name = "StreamgateError";
    this.cause = cause;
    this.code = cause.code;
    this.codeName = codeName;
    this.reason = reason;
    this.domain = info?.domain;
    this.metadata = info?.metadata ?? {};
    this.fieldViolations = fieldViolations;
    this.quotaViolations = cause
      .findDetails(QuotaFailureSchema)
      .flatMap((d) => d.violations.map(({ subject, description }) => ({ subject, description })));
    this.retryDelayMs = retryDelayMs;
    this.rawMessage = cause.rawMessage;
  }

  /** Any error of a call (a ConnectError, an AbortError...) as a StreamgateError. */
  static from(error: unknown): StreamgateError {
    if (error instanceof StreamgateError) return error;
    const cause = ConnectError.from(error);
    // gRPC reports a connection that could not be secured as UNAVAILABLE (as it does a refused
    // one); connect-node reports Node's TLS errors as INTERNAL.
    if (cause.code === Code.Internal && isTlsFailure(cause.cause)) {
      return new StreamgateError(
        new ConnectError(cause.rawMessage, Code.Unavailable, cause.metadata, [], cause),
      );
    }
    return new StreamgateError(cause);
  }

  /** The gateway's id of the call, when it sent one. */
  get requestId(): string | undefined {
    return this.metadata.request_id;
  }

  /** Tokens a stream delivered before it failed; undefined when the gateway did not say. */
  get tokensSent(): number | undefined {
    const sent = this.metadata.tokens_sent;
    return sent === undefined ? undefined : Number(sent);
  }
}

/** OpenSSL's certificate verification codes and Node's TLS and SSL error codes. */
const TLS_ERROR_CODE = /^(ERR_TLS_|ERR_SSL_|EPROTO$)|CERT|UNABLE_TO_|INVALID_CA|HOSTNAME_MISMATCH/;

function isTlsFailure(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if ("code" in e && typeof e.code === "string" && TLS_ERROR_CODE.test(e.code)) return true;
  }
  return false;
}

/** "InvalidArgument" (connect's enum name) as "INVALID_ARGUMENT". */
function codeNameOf(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
