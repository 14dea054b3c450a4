package dev.streamgate.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.protobuf.util.Durations;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RetryInfo;
import com.google.rpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.OptionalInt;
import org.junit.jupiter.api.Test;

/** StreamgateException decodes the gateway's google.rpc details (no gateway needed). */
class StreamgateExceptionTest {
  @Test
  void theDetailsOfARefusedCallAreDecoded() {
    Status status =
        Status.newBuilder()
            .setCode(Code.RESOURCE_EXHAUSTED_VALUE)
            .setMessage("rate limited")
            .addDetails(
                Any.pack(
                    ErrorInfo.newBuilder()
                        .setReason("RATE_LIMITED")
                        .setDomain("streamgate.dev")
                        .putMetadata("request_id", "r-1")
                        .putMetadata("tokens_sent", "3")
                        .build()))
            .addDetails(
                Any.pack(
                    RetryInfo.newBuilder()
                        .setRetryDelay(Durations.fromMillis(1500))
                        .build()))
            .addDetails(
                Any.pack(
                    QuotaFailure.newBuilder()
                        .addViolations(
                            QuotaFailure.Violation.newBuilder()
                                .setSubject("tenant acme")
                                .setDescription("1 request a minute"))
                        .build()))
            .build();
    StatusRuntimeException cause = StatusProto.toStatusRuntimeException(status);

    StreamgateException error = StreamgateException.from(cause);

    assertEquals(io.grpc.Status.Code.RESOURCE_EXHAUSTED, error.code());
    assertEquals(Optional.of("RATE_LIMITED"), error.reason());
    assertEquals(Optional.of("streamgate.dev"), error.domain());
    assertEquals(Optional.of(Duration.ofMillis(1500)), error.retryDelay());
    assertEquals(Optional.of("r-1"), error.requestId());
    assertEquals(OptionalInt.of(3), error.tokensSent());
    assertEquals(
        List.of(new StreamgateException.QuotaViolation("tenant acme", "1 request a minute")),
        error.quotaViolations());
    assertEquals(
        "RESOURCE_EXHAUSTED RATE_LIMITED: rate limited [retry in PT1.5S] [request r-1]",
        error.getMessage());
    assertSame(cause, error.getCause());
    assertSame(error, StreamgateException.from(error));
  }

  @Test
  void fieldViolationsAndAnErrorWithoutDetails() {
    Status status =
        Status.newBuilder()
            .setCode(Code.INVALID_ARGUMENT_VALUE)
            .setMessage("invalid request")
            .addDetails(Any.pack(ErrorInfo.newBuilder().setReason("INVALID_ARGUMENT").build()))
            .addDetails(
                Any.pack(
                    BadRequest.newBuilder()
                        .addFieldViolations(
                            BadRequest.FieldViolation.newBuilder()
                                .setField("sampling.top_p")
                                .setDescription("must be in (0, 1]"))
                        .build()))
            .build();
    StreamgateException invalid =
        StreamgateException.from(StatusProto.toStatusRuntimeException(status));
    assertEquals(
        "INVALID_ARGUMENT: invalid request (sampling.top_p: must be in (0, 1])",
        invalid.getMessage());
    assertTrue(invalid.retryDelay().isEmpty());

    StreamgateException bare =
        StreamgateException.from(
            io.grpc.Status.UNAVAILABLE.withDescription("connection refused").asRuntimeException());
    assertEquals("UNAVAILABLE: connection refused", bare.getMessage());
    assertTrue(bare.reason().isEmpty() && bare.tokensSent().isEmpty() && bare.details().isEmpty());
  }
}
