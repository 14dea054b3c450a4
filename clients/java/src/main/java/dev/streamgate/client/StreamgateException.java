package dev.streamgate.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.function.Supplier;

/**
 * A call that ended with a non-OK gRPC status, with the google.rpc details the gateway sends
 * (docs/api.md, "Errors") decoded: ErrorInfo (reason, domain, metadata), RetryInfo, BadRequest
 * field violations, QuotaFailure. Every method of {@link StreamgateClient} throws it.
 */
public final class StreamgateException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** One invalid field of a request: its proto path and what is wrong with it. */
  public record FieldViolation(String field, String description) {}

  /** One exhausted limit: whose ("tenant acme") and what. */
  public record QuotaViolation(String subject, String description) {}

  private final transient Status status;
  private final String reason;
  private final String domain;
  private final Map<String, String> metadata;
  private final Duration retryDelay;
  private final List<FieldViolation> fieldViolations;
  private final List<QuotaViolation> quotaViolations;
  private final List<Message> details;

  private StreamgateException(Status status, List<Message> details, Throwable cause) {
    super(status.getCode().name(), cause);
    this.status = status;
    this.details = List.copyOf(details);
    ErrorInfo info = find(details, ErrorInfo.class);
    this.reason = info == null ? null : info.getReason();
    this.domain = info == null ? null : info.getDomain();
    this.metadata = info == null ? Map.of() : Map.copyOf(info.getMetadataMap());
    RetryInfo retry = find(details, RetryInfo.class);
    this.retryDelay =
        retry == null
            ? null
            : Duration.ofSeconds(
                retry.getRetryDelay().getSeconds(), retry.getRetryDelay().getNanos());
    List<FieldViolation> fields = new ArrayList<>();
    List<QuotaViolation> quotas = new ArrayList<>();
    for (Message detail : details) {
      if (detail instanceof BadRequest badRequest) {
        badRequest.getFieldViolationsList().stream()
            .map(v -> new FieldViolation(v.getField(), v.getDescription()))
            .forEach(fields::add);
      } else if (detail instanceof QuotaFailure quotaFailure) {
        quotaFailure.getViolationsList().stream()
            .map(v -> new QuotaViolation(v.getSubject(), v.getDescription()))
            .forEach(quotas::add);
      }
    }
    this.fieldViolations = List.copyOf(fields);
    this.quotaViolations = List.copyOf(quotas);
  }

  /** The error of a failed call (a StatusRuntimeException or StatusException) as this type. */
  public static StreamgateException from(Throwable error) {
    if (error instanceof StreamgateException known) {
      return known;
    }
    Status status = Status.fromThrowable(error);
    com.google.rpc.Status rich = StatusProto.fromThrowable(error);
    List<Message> details = new ArrayList<>();
    if (rich != null) {
      for (Any any : rich.getDetailsList()) {
        details.add(unpack(any));
      }
    }
    return new StreamgateException(status, details, error);
  }

  /** Runs a gRPC call, throwing its failure as a StreamgateException. */
  static <T> T translating(Supplier<T> call) {
    try {
      return call.get();
    } catch (StatusRuntimeException e) {
      throw from(e);
    }
  }

  private static Message unpack(Any any) {
    try {
      for (Class<? extends Message> type :
          List.of(ErrorInfo.class, RetryInfo.class, BadRequest.class, QuotaFailure.class)) {
        if (any.is(type)) {
          return any.unpack(type);
        }
      }
    } catch (InvalidProtocolBufferException e) {
      // A detail that does not parse stays packed, like one of an unknown type.
    }
    return any;
  }

  private static <T extends Message> T find(List<Message> details, Class<T> type) {
    return details.stream().filter(type::isInstance).map(type::cast).findFirst().orElse(null);
  }

  /** The gRPC status code. */
  public Status.Code code() {
    return status.getCode();
  }

  /** The status message. */
  public String statusMessage() {
    return status.getDescription() == null ? "" : status.getDescription();
  }

  /** ErrorInfo's stable reason ("RATE_LIMITED", "ROUTE_NOT_FOUND"), if the gateway sent one. */
  public Optional<String> reason() {
    return Optional.ofNullable(reason);
  }

  /** ErrorInfo's domain ("streamgate.dev"). */
  public Optional<String> domain() {
    return Optional.ofNullable(domain);
  }

  /** ErrorInfo's metadata: request_id, route, backend, tokens_sent... */
  public Map<String, String> metadata() {
    return metadata;
  }

  /** RetryInfo: how long to wait before retrying; empty when retrying cannot help. */
  public Optional<Duration> retryDelay() {
    return Optional.ofNullable(retryDelay);
  }

  /** BadRequest: one violation per invalid request field. */
  public List<FieldViolation> fieldViolations() {
    return fieldViolations;
  }

  /** QuotaFailure: the limits that refused the call. */
  public List<QuotaViolation> quotaViolations() {
    return quotaViolations;
  }

  /** Every detail, unpacked when of a known type (an {@link Any} otherwise). */
  public List<Message> details() {
    return details;
  }

  /** The gateway's id of the call. */
  public Optional<String> requestId() {
    return Optional.ofNullable(metadata.get("request_id"));
  }

  /** Tokens a stream delivered before it failed; empty when the gateway did not say. */
  public OptionalInt tokensSent() {
    String sent = metadata.get("tokens_sent");
    return sent == null ? OptionalInt.empty() : OptionalInt.of(Integer.parseInt(sent));
  }

  /** One line: {@code CODE REASON: message (field: why; ...) [retry in PT1S] [request ID]}. */
  @Override
  public String getMessage() {
    String code = code().name();
    StringBuilder line = new StringBuilder(code);
    if (reason != null && !reason.equals(code)) {
      line.append(' ').append(reason);
    }
    if (!statusMessage().isEmpty()) {
      line.append(": ").append(statusMessage());
    }
    if (!fieldViolations.isEmpty()) {
      List<String> parts =
          fieldViolations.stream().map(v -> v.field() + ": " + v.description()).toList();
      line.append(" (").append(String.join("; ", parts)).append(')');
    }
    retryDelay().ifPresent(delay -> line.append(" [retry in ").append(delay).append(']'));
    requestId().ifPresent(id -> line.append(" [request ").append(id).append(']'));
    return line.toString();
  }
}
