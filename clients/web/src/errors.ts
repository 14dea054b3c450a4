// Failures in words a person understands, from the Connect error's code and google.rpc details.

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb";

/** "retry in 19 s" from RetryInfo, else "retry in a moment". */
function retryHint(error: ConnectError): string {
  const [retry] = error.findDetails(RetryInfoSchema);
  const delay = retry?.retryDelay;
  if (delay === undefined) {
    return "retry in a moment";
  }
  const seconds = Math.max(1, Math.ceil(Number(delay.seconds) + delay.nanos / 1e9));
  return `retry in ${String(seconds)} s`;
}

function badFields(error: ConnectError): string {
  const [request] = error.findDetails(BadRequestSchema);
  const fields = request?.fieldViolations ?? [];
  return fields.map((v) => `${v.field}: ${v.description}`).join("; ") || error.rawMessage;
}

/** What went wrong, and what the person can do about it. */
export function describeError(cause: unknown): string {
  const error = ConnectError.from(cause);
  const [info] = error.findDetails(ErrorInfoSchema);
  const model = info?.metadata.model ?? "";
  switch (info?.reason) {
    case "API_KEY_MISSING":
      return "This gateway needs an API key: enter yours in the API key field.";
    case "API_KEY_INVALID":
      return "The API key was not accepted: check the API key field.";
    case "ROUTE_NOT_ALLOWED":
      return `Your API key may not use the model “${model}”: pick another one.`;
    case "ROUTE_NOT_FOUND":
      return `There is no model “${model}” here: pick another one.`;
    case "RATE_LIMITED":
      return `Rate limit reached, ${retryHint(error)}.`;
    case "TOO_MANY_STREAMS":
      return `Too many answers at once for your key, ${retryHint(error)}.`;
    case "REQUEST_OVER_QUOTA":
      return "This conversation is larger than your key's token limit: start a new chat.";
    case "QUEUE_FULL":
    case "QUEUE_TIMEOUT":
    case "BACKEND_OVERLOADED":
      return `The model is busy, ${retryHint(error)}.`;
    case "NO_HEALTHY_BACKEND":
    case "BACKEND_UNAVAILABLE":
    case "DRAINING":
      return `The model is not available right now, ${retryHint(error)}.`;
    default:
      break;
  }
  switch (error.code) {
    case Code.InvalidArgument:
      return `The request was refused: ${badFields(error)}.`;
    case Code.DeadlineExceeded:
      return "The answer took too long and was stopped.";
    case Code.Unavailable:
      return info === undefined
        ? "The gateway cannot be reached: is it running?"
        : `The model is not available right now, ${retryHint(error)}.`;
    default:
      return `Something went wrong (${Code[error.code]}): ${error.rawMessage}`;
  }
}

/** The call was aborted by this page (Stop, New chat). */
export function isAbort(cause: unknown): boolean {
  return ConnectError.from(cause).code === Code.Canceled;
}
