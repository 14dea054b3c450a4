/**
 * The TypeScript client of the streamgate gateway (streamgate.v1 over gRPC) for Node.js.
 *
 * A thin layer over the generated code (`./gen/`, protobuf-es and connect): requests and
 * responses are the generated messages; `StreamgateClient` adds the connection (API key, TLS),
 * `generateStream` as an `AsyncIterable`, and `StreamgateError` with the google.rpc details
 * decoded.
 */
export {
  DEFAULT_TARGET,
  StreamgateClient,
  type ClientOptions,
  type GenerateRequestInit,
  type GenerateStreamRequestInit,
  type TlsOptions,
} from "./client.js";
export { StreamgateError, type FieldViolation, type QuotaViolation } from "./errors.js";
export { HealthCheckResponse_ServingStatus } from "./gen/health/v1/health_pb.js";
export * from "./gen/streamgate/v1/generation_pb.js";
