package dev.streamgate.client;

import io.grpc.Context;
import java.util.Iterator;
import streamgate.v1.Generation.GenerateStreamResponse;

/**
 * The events of one {@code GenerateStream} call, read as they arrive. {@link #close()} cancels
 * the call if it is still running (use try-with-resources when stopping early). {@code hasNext}
 * and {@code next} throw {@link StreamgateException} when the call fails.
 */
public final class GenerationStream implements Iterator<GenerateStreamResponse>, AutoCloseable {
  private final Iterator<GenerateStreamResponse> events;
  private final Context.CancellableContext call;

  GenerationStream(Iterator<GenerateStreamResponse> events, Context.CancellableContext call) {
    this.events = events;
    this.call = call;
  }

  @Override
  public boolean hasNext() {
    return StreamgateException.translating(events::hasNext);
  }

  @Override
  public GenerateStreamResponse next() {
    return StreamgateException.translating(events::next);
  }

  /** Cancels the call (nothing happens once it has ended). */
  @Override
  public void close() {
    call.cancel(null);
  }
}
