package dev.streamgate.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.ListValue;
import com.google.protobuf.Message;
import com.google.protobuf.NullValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import com.google.protobuf.util.JsonFormat;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.TestInstance;
import org.yaml.snakeyaml.Yaml;
import streamgate.v1.Generation.End;
import streamgate.v1.Generation.GenerateRequest;
import streamgate.v1.Generation.GenerateResponse;
import streamgate.v1.Generation.GenerateStreamRequest;
import streamgate.v1.Generation.GenerateStreamResponse;
import streamgate.v1.Generation.Model;

/**
 * The shared conformance cases (clients/conformance/cases.yaml) through this client, against the
 * gateways of clients/conformance/launch.py: {@code make clients-test-java}, or by hand {@code
 * ../../.venv/bin/python ../conformance/launch.py -- mvn test}.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ConformanceTest {
  private static final String ENV_VAR = "STREAMGATE_CONFORMANCE_ENV";
  private static final Path CASES_FILE = Path.of("..", "conformance", "cases.yaml");
  // Bound of any one call, so that a hung call fails the test.
  private static final Duration CALL_LIMIT = Duration.ofMinutes(2);
  private static final Set<String> COMMON_KEYS =
      Set.of("id", "kind", "gateway", "api_key", "trust", "expect");

  /** What a kind of case does, and the case and expect keys it implements. */
  private record Kind(CaseRunner run, Set<String> keys, Set<String> expect) {}

  @FunctionalInterface
  private interface CaseRunner {
    void run(Case c) throws Exception;
  }

  private final Map<String, Kind> kinds =
      Map.of(
          "stream",
          new Kind(
              this::runStream,
              Set.of("request"),
              Set.of("finish_reason", "completion_tokens", "same_text_as_generate")),
          "list_models",
          new Kind(this::runListModels, Set.of(), Set.of("models", "default")),
          "health",
          new Kind(this::runHealth, Set.of("services"), Set.of("status")),
          "error",
          new Kind(
              this::runError,
              Set.of("call", "request"),
              Set.of("code", "reason", "field_violations")),
          "rate_limit",
          new Kind(
              this::runRateLimit,
              Set.of("request", "max_calls"),
              Set.of("code", "reason", "retry_delay_seconds")),
          "cancel",
          new Kind(this::runCancel, Set.of("request", "metrics"), Set.of()),
          "deadline",
          new Kind(this::runDeadline, Set.of("request", "deadline_ms", "metrics"), Set.of("code")));

  private final Map<String, StreamgateClient> clients = new HashMap<>();
  private final HttpClient http = HttpClient.newHttpClient();
  private Map<String, Object> env;
  private Duration wait;

  @TestFactory
  Stream<DynamicTest> conformance() throws IOException {
    Map<String, Object> spec = load(CASES_FILE);
    wait = Duration.ofMillis(Math.round(number(spec.get("wait_seconds")) * 1000));
    String envFile = System.getenv(ENV_VAR);
    env = envFile == null ? null : load(Path.of(envFile));
    return list(spec.get("cases")).stream()
        .map(ConformanceTest::map)
        .map(raw -> DynamicTest.dynamicTest(String.valueOf(raw.get("id")), () -> run(raw)));
  }

  @AfterAll
  void closeClients() {
    clients.values().forEach(StreamgateClient::close);
  }

  /** Runs one case; a failure names it (surefire's report numbers the cases). */
  private void run(Map<String, Object> raw) throws Exception {
    try {
      check(raw);
      kinds.get(String.valueOf(raw.get("kind"))).run().run(new Case(raw));
    } catch (AssertionError | RuntimeException e) {
      throw new AssertionError("case " + raw.get("id") + ": " + e.getMessage(), e);
    }
  }

  /** Fails, naming the language, on a kind or a key this runner does not implement. */
  private void check(Map<String, Object> raw) {
    assertNotNull(env, "java: " + ENV_VAR + " is not set: run `make clients-test-java`");
    Kind kind = kinds.get(String.valueOf(raw.get("kind")));
    if (kind == null) {
      fail("java: kind " + raw.get("kind") + " is not implemented in the Java runner");
    }
    Set<String> unknown = new TreeSet<>(raw.keySet());
    unknown.removeAll(COMMON_KEYS);
    unknown.removeAll(kind.keys());
    Set<String> expectKeys = new HashSet<>(map(raw.getOrDefault("expect", Map.of())).keySet());
    expectKeys.removeAll(kind.expect());
    unknown.addAll(expectKeys);
    assertTrue(unknown.isEmpty(), "java: " + raw.get("kind") + " does not implement " + unknown);
  }

  // ---- the kinds ----------------------------------------------------------------------------

  private void runStream(Case c) throws Exception {
    StreamgateClient client = client(c);
    List<GenerateStreamResponse> events = new ArrayList<>();
    try (GenerationStream stream = client.generateStream(c.streamRequest(), CALL_LIMIT)) {
      stream.forEachRemaining(events::add);
    }
    assertTrue(events.size() >= 3, "want Start, Delta..., End: " + events);
    assertTrue(events.get(0).hasStart(), "the first event is not Start");
    assertTrue(events.get(events.size() - 1).hasEnd(), "the last event is not End");
    StringBuilder text = new StringBuilder();
    for (GenerateStreamResponse event : events.subList(1, events.size() - 1)) {
      assertTrue(event.hasDelta(), "not a Delta between Start and End: " + event);
      text.append(event.getDelta().getText());
    }
    End end = events.get(events.size() - 1).getEnd();
    assertTrue(end.getUsage().getPromptTokens() > 0, "End.usage has no prompt tokens");
    Map<String, Object> expect = c.expect();
    if (expect.containsKey("finish_reason")) {
      assertEquals(expect.get("finish_reason"), end.getFinishReason().name());
    }
    if (expect.containsKey("completion_tokens")) {
      assertEquals(
          number(expect.get("completion_tokens")), end.getUsage().getCompletionTokens(), 0);
    }
    if (Boolean.TRUE.equals(expect.get("same_text_as_generate"))) {
      GenerateResponse unary = client.generate(c.unaryRequest(), CALL_LIMIT);
      assertEquals(text.toString(), unary.getText());
      assertEquals(end.getUsage(), unary.getEnd().getUsage());
    }
  }

  private void runListModels(Case c) {
    List<Model> models = client(c).listModels();
    assertEquals(c.expect().get("models"), models.stream().map(Model::getName).toList());
    assertEquals(
        List.of(c.expect().get("default")),
        models.stream().filter(Model::getDefault).map(Model::getName).toList());
  }

  private void runHealth(Case c) {
    for (Object service : list(c.raw.get("services"))) {
      assertEquals(c.expect().get("status"), client(c).health(String.valueOf(service)).name());
    }
  }

  private static StreamgateException checkError(
      StreamgateException error, Map<String, Object> expect) {
    assertEquals(expect.get("code"), error.code().name(), error.getMessage());
    if (expect.containsKey("reason")) {
      assertEquals(expect.get("reason"), error.reason().orElse(null), error.getMessage());
    }
    if (expect.containsKey("field_violations")) {
      assertEquals(
          expect.get("field_violations"),
          error.fieldViolations().stream().map(StreamgateException.FieldViolation::field).toList());
    }
    return error;
  }

  private void runError(Case c) {
    StreamgateClient client = client(c);
    String call = String.valueOf(c.raw.get("call"));
    StreamgateException error =
        assertThrows(
            StreamgateException.class,
            () -> {
              switch (call) {
                case "generate_stream" ->
                    drain(client.generateStream(c.streamRequest(), CALL_LIMIT));
                case "generate" -> client.generate(c.unaryRequest(), CALL_LIMIT);
                case "list_models" -> client.listModels();
                default -> fail("java: call " + call + " is not implemented in the Java runner");
              }
            });
    checkError(error, c.expect());
  }

  private void runRateLimit(Case c) throws Exception {
    int calls = (int) number(c.raw.get("max_calls"));
    for (int i = 0; i < calls; i++) {
      try {
        client(c).generate(c.unaryRequest(), CALL_LIMIT);
      } catch (StreamgateException error) {
        Duration delay =
            checkError(error, c.expect())
                .retryDelay()
                .orElseThrow(() -> new AssertionError("no RetryInfo"));
        Map<String, Object> bounds = map(c.expect().get("retry_delay_seconds"));
        double seconds = delay.toNanos() / 1e9;
        assertTrue(
            seconds > number(bounds.get("above")) && seconds <= number(bounds.get("at_most")),
            "retry delay " + delay);
        return;
      }
    }
    fail(calls + " calls passed; the last should have been refused");
  }

  private void runCancel(Case c) throws Exception {
    MetricsCheck released = null;
    try (GenerationStream stream = client(c).generateStream(c.streamRequest(), CALL_LIMIT)) {
      while (stream.hasNext()) {
        if (stream.next().hasDelta()) {
          assertEquals(List.of(), new MetricsCheck(c, "running").unmet());
          released = new MetricsCheck(c, "released");
          break; // closing the stream cancels the call
        }
      }
    }
    assertNotNull(released, "the stream ended before its first Delta");
    released.waitFor(wait);
  }

  private void runDeadline(Case c) throws Exception {
    MetricsCheck released = new MetricsCheck(c, "released");
    Duration deadline = Duration.ofMillis((long) number(c.raw.get("deadline_ms")));
    StreamgateException error =
        assertThrows(
            StreamgateException.class,
            () -> drain(client(c).generateStream(c.streamRequest(), deadline)));
    checkError(error, c.expect());
    released.waitFor(wait);
  }

  /** Reads a stream to its end (or its error), then closes it. */
  private static void drain(GenerationStream stream) {
    try (stream) {
      stream.forEachRemaining(event -> {});
    }
  }

  // ---- cases, clients, metrics ----------------------------------------------------------------

  /** One case of the file. */
  private final class Case {
    private final Map<String, Object> raw;

    Case(Map<String, Object> raw) {
      this.raw = raw;
    }

    Map<String, Object> expect() {
      return map(raw.getOrDefault("expect", Map.of()));
    }

    Map<String, Object> gateway() {
      Object name = raw.getOrDefault("gateway", "open");
      Object gateway = map(env.get("gateways")).get(name);
      assertNotNull(gateway, "no gateway " + name + " in " + ENV_VAR);
      return map(gateway);
    }

    GenerateStreamRequest streamRequest() throws InvalidProtocolBufferException {
      return merge(GenerateStreamRequest.newBuilder()).build();
    }

    GenerateRequest unaryRequest() throws InvalidProtocolBufferException {
      return merge(GenerateRequest.newBuilder()).build();
    }

    /** The case's request (proto JSON) merged into a request builder. */
    private <B extends Message.Builder> B merge(B builder) throws InvalidProtocolBufferException {
      Value request = value(raw.getOrDefault("request", Map.of()));
      JsonFormat.parser().merge(JsonFormat.printer().print(request), builder);
      return builder;
    }
  }

  /** The client for the case's gateway, key and trust (one per combination and run). */
  private StreamgateClient client(Case c) {
    String key = c.raw.get("gateway") + "/" + c.raw.get("api_key") + "/" + c.raw.get("trust");
    return clients.computeIfAbsent(
        key,
        k -> {
          Map<String, Object> gateway = c.gateway();
          StreamgateClient.Builder builder =
              StreamgateClient.builder(String.valueOf(gateway.get("target")));
          if (c.raw.containsKey("api_key")) {
            builder.apiKey(String.valueOf(map(env.get("keys")).get(c.raw.get("api_key"))));
          }
          if (gateway.containsKey("tls")) {
            Map<String, Object> tls = map(gateway.get("tls"));
            TlsOptions roots =
                "system".equals(c.raw.get("trust"))
                    ? TlsOptions.systemRoots()
                    : TlsOptions.trusting(Path.of(String.valueOf(tls.get("ca_file"))));
            builder.tls(
                roots.withClientCertificate(
                    Path.of(String.valueOf(tls.get("cert_file"))),
                    Path.of(String.valueOf(tls.get("key_file")))));
          }
          return builder.build();
        });
  }

  /** Compares /metrics samples with a case's conditions; increases count from its creation. */
  private final class MetricsCheck {
    private final Map<String, String> urls = new HashMap<>();
    private final Map<String, Object> conditions;
    private final Map<String, Map<String, Double>> before = new HashMap<>();

    MetricsCheck(Case c, String phase) throws Exception {
      urls.put("engine", String.valueOf(map(env.get("engine")).get("metrics_url")));
      urls.put("gateway", String.valueOf(c.gateway().get("metrics_url")));
      conditions = map(map(c.raw.get("metrics")).getOrDefault(phase, Map.of()));
      for (String source : conditions.keySet()) {
        before.put(source, scrape(source));
      }
    }

    private Map<String, Double> scrape(String source) throws Exception {
      String url = urls.get(source);
      assertNotNull(url, "java: metrics source " + source + " is not implemented in the runner");
      HttpRequest request = HttpRequest.newBuilder(URI.create(url)).timeout(CALL_LIMIT).build();
      String text = http.send(request, HttpResponse.BodyHandlers.ofString()).body();
      Map<String, Double> samples = new HashMap<>();
      for (String line : text.split("\n")) {
        int cut = line.lastIndexOf(' ');
        if (cut > 0 && !line.startsWith("#")) {
          samples.put(line.substring(0, cut), Double.parseDouble(line.substring(cut + 1)));
        }
      }
      return samples;
    }

    /** The conditions that do not hold now. */
    List<String> unmet() throws Exception {
      List<String> problems = new ArrayList<>();
      for (Map.Entry<String, Object> source : conditions.entrySet()) {
        Map<String, Double> now = scrape(source.getKey());
        for (Map.Entry<String, Object> sample : map(source.getValue()).entrySet()) {
          Double value = now.get(sample.getKey());
          Object want = sample.getValue();
          double target;
          if (want instanceof Map<?, ?> increase) {
            target = number(increase.get("increase"));
            Double start = before.get(source.getKey()).get(sample.getKey());
            value = value == null || start == null ? null : value - start;
          } else {
            target = number(want);
          }
          if (value == null || value != target) {
            problems.add(
                source.getKey() + " " + sample.getKey() + ": " + value + " (want " + target + ")");
          }
        }
      }
      problems.sort(null);
      return problems;
    }

    /** Polls until every condition holds; fails after {@code limit}. */
    void waitFor(Duration limit) throws Exception {
      long deadline = System.nanoTime() + limit.toNanos();
      List<String> unmet = unmet();
      while (!unmet.isEmpty()) {
        assertFalse(System.nanoTime() > deadline, "still unmet after " + limit + ": " + unmet);
        Thread.sleep(50);
        unmet = unmet();
      }
    }
  }

  // ---- YAML values ----------------------------------------------------------------------------

  private static Map<String, Object> load(Path path) {
    try {
      return map(new Yaml().load(Files.readString(path)));
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  @SuppressWarnings("unchecked") // YAML mappings have string keys here
  private static Map<String, Object> map(Object value) {
    return (Map<String, Object>) value;
  }

  private static List<?> list(Object value) {
    return (List<?>) value;
  }

  private static double number(Object value) {
    return ((Number) value).doubleValue();
  }

  /** A YAML value as a protobuf Value, whose JSON JsonFormat can read into a request. */
  private static Value value(Object yaml) {
    Value.Builder value = Value.newBuilder();
    if (yaml instanceof Map<?, ?> fields) {
      Struct.Builder struct = Struct.newBuilder();
      fields.forEach((k, v) -> struct.putFields(String.valueOf(k), value(v)));
      return value.setStructValue(struct).build();
    }
    if (yaml instanceof List<?> items) {
      ListValue.Builder list = ListValue.newBuilder();
      items.forEach(item -> list.addValues(value(item)));
      return value.setListValue(list).build();
    }
    if (yaml instanceof Number n) {
      return value.setNumberValue(n.doubleValue()).build();
    }
    if (yaml instanceof Boolean b) {
      return value.setBoolValue(b).build();
    }
    return yaml == null
        ? value.setNullValue(NullValue.NULL_VALUE).build()
        : value.setStringValue(String.valueOf(yaml)).build();
  }
}
