package dev.streamgate.client;

import io.grpc.ChannelCredentials;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import streamgate.v1.Generation.GenerateRequest;
import streamgate.v1.Generation.GenerateResponse;
import streamgate.v1.Generation.GenerateStreamRequest;
import streamgate.v1.Generation.ListModelsRequest;
import streamgate.v1.Generation.Model;
import streamgate.v1.GenerationServiceGrpc;
import streamgate.v1.GenerationServiceGrpc.GenerationServiceBlockingStub;

/**
 * A client of one streamgate gateway over one gRPC channel: a thin layer over the generated
 * {@code streamgate.v1} code, whose messages it takes and returns. It adds the connection (API
 * key, TLS), {@link #generateStream} as a closeable {@link java.util.Iterator}, and {@link
 * StreamgateException} with the gateway's google.rpc details decoded.
 *
 * <pre>{@code
 * try (var client = StreamgateClient.builder("127.0.0.1:50051").apiKey(key).build();
 *     var stream = client.generateStream(request)) {
 *   while (stream.hasNext()) {
 *     System.out.print(stream.next().getDelta().getText());
 *   }
 * }
 * }</pre>
 *
 * <p>It is safe for concurrent use. A {@code timeout} bounds a whole call (a stream's whole
 * duration); a call without one has no deadline.
 */
public final class StreamgateClient implements AutoCloseable {
  /** Where {@code streamgate serve} listens by default. */
  public static final String DEFAULT_TARGET = "127.0.0.1:50051";

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final ManagedChannel channel;
  private final GenerationServiceBlockingStub generation;
  private final HealthGrpc.HealthBlockingStub health;

  private StreamgateClient(ManagedChannel channel, String apiKey) {
    this.channel = channel;
    GenerationServiceBlockingStub stub = GenerationServiceGrpc.newBlockingStub(channel);
    HealthGrpc.HealthBlockingStub healthStub = HealthGrpc.newBlockingStub(channel);
    if (apiKey != null && !apiKey.isEmpty()) {
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, "Bearer " + apiKey);
      stub = stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
      healthStub = healthStub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    this.generation = stub;
    this.health = healthStub;
  }

  /** A builder for a client of the gateway at {@code target} ("host:port"). */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  /** Settings of a client; the connection is made at the first call. */
  public static final class Builder {
    private final String target;
    private String apiKey;
    private TlsOptions tls;

    private Builder(String target) {
      this.target = target;
    }

    /** Sent on every call as {@code authorization: Bearer <key>} (null or empty: none). */
    public Builder apiKey(String apiKey) {
      this.apiKey = apiKey;
      return this;
    }

    /** Connect over TLS (plaintext when never called). */
    public Builder tls(TlsOptions tls) {
      this.tls = tls;
      return this;
    }

    /** The client; fails when a TLS file cannot be read. */
    public StreamgateClient build() {
      ChannelCredentials credentials =
          tls == null ? InsecureChannelCredentials.create() : tls.credentials();
      return new StreamgateClient(Grpc.newChannelBuilder(target, credentials).build(), apiKey);
    }
  }

  /**
   * Starts a generation and returns its events as they arrive: a Start, a Delta per model step,
   * an End. Close the stream to cancel the call early (the gateway then stops the generation
   * upstream); errors are thrown by {@code hasNext} and {@code next}.
   */
  public GenerationStream generateStream(GenerateStreamRequest request) {
    return generateStream(request, null);
  }

  /** {@link #generateStream(GenerateStreamRequest)} with a deadline for the whole stream. */
  public GenerationStream generateStream(GenerateStreamRequest request, Duration timeout) {
    Context.CancellableContext call = Context.current().withCancellation();
    Context previous = call.attach();
    try {
      return new GenerationStream(withTimeout(generation, timeout).generateStream(request), call);
    } finally {
      call.detach(previous);
    }
  }

  /** The whole generation in one response. */
  public GenerateResponse generate(GenerateRequest request) {
    return generate(request, null);
  }

  /** {@link #generate(GenerateRequest)} with a deadline. */
  public GenerateResponse generate(GenerateRequest request, Duration timeout) {
    return StreamgateException.translating(
        () -> withTimeout(generation, timeout).generate(request));
  }

  /** The routes the gateway serves (to this API key). */
  public List<Model> listModels() {
    ListModelsRequest request = ListModelsRequest.getDefaultInstance();
    return StreamgateException.translating(() -> generation.listModels(request)).getModelsList();
  }

  /**
   * grpc.health.v1 Check of {@code service} ("" for the gateway, or
   * "streamgate.v1.GenerationService"): SERVING while a backend is healthy.
   */
  public HealthCheckResponse.ServingStatus health(String service) {
    HealthCheckRequest request = HealthCheckRequest.newBuilder().setService(service).build();
    return StreamgateException.translating(() -> health.check(request)).getStatus();
  }

  /** The channel, for the other generated stubs (AdminService). */
  public ManagedChannel channel() {
    return channel;
  }

  /** Closes the channel, waiting up to 5 s for calls in progress. */
  @Override
  public void close() {
    channel.shutdown();
    try {
      if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  private static <S extends AbstractStub<S>> S withTimeout(S stub, Duration timeout) {
    return timeout == null ? stub : stub.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
  }
}
