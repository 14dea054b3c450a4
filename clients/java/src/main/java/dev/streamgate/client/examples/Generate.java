package dev.streamgate.client.examples;

import dev.streamgate.client.GenerationStream;
import dev.streamgate.client.StreamgateClient;
import dev.streamgate.client.StreamgateException;
import dev.streamgate.client.TlsOptions;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import streamgate.v1.Generation.GenerateStreamRequest;
import streamgate.v1.Generation.GenerateStreamResponse;
import streamgate.v1.Generation.StoppingCriteria;

/**
 * {@code generate [--api-key KEY] [--ca-file PEM] [--max-new-tokens N] TARGET PROMPT}: streams
 * the gateway's reply to PROMPT to stdout as it is generated, then the finish reason and token
 * count to stderr. Ctrl-C cancels the call; an error exits 1.
 */
public final class Generate {
  private static final String USAGE =
      "usage: generate [--api-key KEY] [--ca-file PEM] [--max-new-tokens N] TARGET PROMPT";

  private Generate() {}

  private static void usage() {
    System.err.println(USAGE);
    System.exit(2);
  }

  public static void main(String[] args) {
    String apiKey = null;
    String caFile = null;
    GenerateStreamRequest.Builder request = GenerateStreamRequest.newBuilder();
    List<String> positional = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      if (!args[i].startsWith("--")) {
        positional.add(args[i]);
        continue;
      }
      if (i + 1 == args.length) {
        usage();
      }
      String value = args[i + 1];
      switch (args[i++]) {
        case "--api-key" -> apiKey = value;
        case "--ca-file" -> caFile = value;
        case "--max-new-tokens" -> request.setStopping(
            StoppingCriteria.newBuilder().setMaxNewTokens(Integer.parseInt(value)));
        default -> usage();
      }
    }
    if (positional.size() != 2) {
      usage();
    }
    StreamgateClient.Builder builder = StreamgateClient.builder(positional.get(0)).apiKey(apiKey);
    if (caFile != null) {
      builder.tls(TlsOptions.trusting(Path.of(caFile)));
    }
    request.setPrompt(positional.get(1));
    try (StreamgateClient client = builder.build();
        GenerationStream stream = client.generateStream(request.build())) {
      // Ctrl-C: cancel the call (the gateway stops the generation) before the JVM exits.
      Runtime.getRuntime().addShutdownHook(new Thread(stream::close));
      while (stream.hasNext()) {
        GenerateStreamResponse event = stream.next();
        if (event.hasDelta()) {
          System.out.print(event.getDelta().getText());
          System.out.flush();
        } else if (event.hasEnd()) {
          System.out.println();
          System.err.printf(
              "[%s, %d tokens]%n",
              event.getEnd().getFinishReason(), event.getEnd().getUsage().getCompletionTokens());
        }
      }
    } catch (StreamgateException e) {
      System.err.println("generate: " + e.getMessage());
      System.exit(1);
    }
  }
}
