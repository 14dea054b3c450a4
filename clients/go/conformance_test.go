package streamgate_test

// The shared conformance cases (clients/conformance/cases.yaml) through this client, against
// the gateways of clients/conformance/launch.py: `make clients-test-go`, or by hand
//
//	../../.venv/bin/python ../conformance/launch.py -- go test ./...

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"streamgate.dev/streamgate-go"
	streamgatev1 "streamgate.dev/streamgate-go/gen/streamgate/v1"
)

const (
	envVar    = "STREAMGATE_CONFORMANCE_ENV"
	casesFile = "../conformance/cases.yaml"
	callLimit = 2 * time.Minute // bound of any one call, so that a hung call fails the test
)

// environment is launch.py's env.json.
type environment struct {
	Engine struct {
		MetricsURL string `json:"metrics_url"`
	} `json:"engine"`
	Gateways map[string]struct {
		Target     string `json:"target"`
		MetricsURL string `json:"metrics_url"`
		TLS        *struct {
			CAFile   string `json:"ca_file"`
			CertFile string `json:"cert_file"`
			KeyFile  string `json:"key_file"`
		} `json:"tls"`
	} `json:"gateways"`
	Keys map[string]string `json:"keys"`
}

// caseBase holds the keys every case may have.
type caseBase struct {
	ID      string `yaml:"id"`
	Kind    string `yaml:"kind"`
	Gateway string `yaml:"gateway"`
	APIKey  string `yaml:"api_key"`
	Trust   string `yaml:"trust"`
}

// requestCase holds the keys of a case that sends a generation request.
type requestCase struct {
	caseBase `yaml:",inline"`
	Request  map[string]any `yaml:"request"`
}

// conditions are metric samples by source ("engine", "gateway"): a value, or {increase: n}.
type conditions map[string]map[string]any

type runner struct {
	env     environment
	wait    time.Duration
	clients map[caseBase]*streamgate.Client
}

var kinds = map[string]func(*testing.T, *runner, *yaml.Node){
	"stream":      runStream,
	"list_models": runListModels,
	"health":      runHealth,
	"error":       runError,
	"rate_limit":  runRateLimit,
	"cancel":      runCancel,
	"deadline":    runDeadline,
}

func TestConformance(t *testing.T) {
	envFile := os.Getenv(envVar)
	if envFile == "" {
		t.Fatalf("go: %s is not set: run `make clients-test-go`, or this test under clients/conformance/launch.py", envVar)
	}
	r := &runner{clients: map[caseBase]*streamgate.Client{}}
	readJSON(t, envFile, &r.env)
	var suite struct {
		WaitSeconds float64     `yaml:"wait_seconds"`
		Cases       []yaml.Node `yaml:"cases"`
	}
	text, err := os.ReadFile(casesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(text, &suite); err != nil {
		t.Fatalf("%s: %v", casesFile, err)
	}
	r.wait = time.Duration(suite.WaitSeconds * float64(time.Second))
	t.Cleanup(func() {
		for _, client := range r.clients {
			client.Close()
		}
	})
	for i := range suite.Cases {
		node := &suite.Cases[i]
		var base caseBase
		if err := node.Decode(&base); err != nil {
			t.Fatal(err)
		}
		t.Run(base.ID, func(t *testing.T) {
			run, ok := kinds[base.Kind]
			if !ok {
				t.Fatalf("go: kind %q is not implemented in the Go runner", base.Kind)
			}
			run(t, r, node)
		})
	}
}

// decode reads a case into its kind's struct, failing on a key the struct lacks: a key the
// Go runner does not implement.
func decode[T any](t *testing.T, node *yaml.Node) T {
	t.Helper()
	text, err := yaml.Marshal(node)
	if err != nil {
		t.Fatal(err)
	}
	var value T
	decoder := yaml.NewDecoder(bytes.NewReader(text))
	decoder.KnownFields(true)
	if err := decoder.Decode(&value); err != nil {
		t.Fatalf("go: not implemented in the Go runner: %v", err)
	}
	return value
}

func readJSON(t *testing.T, path string, value any) {
	t.Helper()
	text, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(text, value)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func (c caseBase) gateway() string {
	if c.Gateway == "" {
		return "open"
	}
	return c.Gateway
}

// client is the client for the case's gateway, key and trust (one per combination and run).
func (r *runner) client(t *testing.T, c caseBase) *streamgate.Client {
	t.Helper()
	key := caseBase{Gateway: c.gateway(), APIKey: c.APIKey, Trust: c.Trust}
	if client, ok := r.clients[key]; ok {
		return client
	}
	gateway, ok := r.env.Gateways[key.Gateway]
	if !ok {
		t.Fatalf("no gateway %q in %s", key.Gateway, envVar)
	}
	var opts streamgate.Options
	if c.APIKey != "" {
		opts.APIKey = r.env.Keys[c.APIKey]
	}
	if tls := gateway.TLS; tls != nil {
		opts.TLS = &streamgate.TLSOptions{CAFile: tls.CAFile, CertFile: tls.CertFile, KeyFile: tls.KeyFile}
		if c.Trust == "system" {
			opts.TLS.CAFile = ""
		}
	}
	client, err := streamgate.New(gateway.Target, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.clients[key] = client
	return client
}

func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callLimit)
	t.Cleanup(cancel)
	return ctx
}

// requests makes the case's request (proto JSON) into both request messages.
func (c requestCase) requests(t *testing.T) (*streamgatev1.GenerateStreamRequest, *streamgatev1.GenerateRequest) {
	t.Helper()
	text, err := json.Marshal(c.Request)
	if err != nil {
		t.Fatal(err)
	}
	stream, unary := &streamgatev1.GenerateStreamRequest{}, &streamgatev1.GenerateRequest{}
	for _, message := range []proto.Message{stream, unary} {
		if err := protojson.Unmarshal(text, message); err != nil {
			t.Fatalf("request %s: %v", text, err)
		}
	}
	return stream, unary
}

// ---- the kinds ------------------------------------------------------------------------------

func runStream(t *testing.T, r *runner, node *yaml.Node) {
	c := decode[struct {
		requestCase `yaml:",inline"`
		Expect      struct {
			FinishReason       string  `yaml:"finish_reason"`
			CompletionTokens   *uint32 `yaml:"completion_tokens"`
			SameTextAsGenerate bool    `yaml:"same_text_as_generate"`
		} `yaml:"expect"`
	}](t, node)
	client := r.client(t, c.caseBase)
	streamRequest, unaryRequest := c.requests(t)
	var events []*streamgatev1.GenerateStreamResponse
	for event, err := range client.GenerateStream(callContext(t), streamRequest) {
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, event)
	}
	if len(events) < 3 || events[0].GetStart() == nil || events[len(events)-1].GetEnd() == nil {
		t.Fatalf("want Start, Delta..., End; got %v", events)
	}
	var text strings.Builder
	for _, event := range events[1 : len(events)-1] {
		if event.GetDelta() == nil {
			t.Fatalf("want only Deltas between Start and End; got %v", event)
		}
		text.WriteString(event.GetDelta().GetText())
	}
	end := events[len(events)-1].GetEnd()
	if end.GetUsage().GetPromptTokens() == 0 {
		t.Errorf("End.usage has no prompt tokens: %v", end)
	}
	if want := c.Expect.FinishReason; want != "" && end.GetFinishReason().String() != want {
		t.Errorf("finish reason %v, want %s", end.GetFinishReason(), want)
	}
	if want := c.Expect.CompletionTokens; want != nil && end.GetUsage().GetCompletionTokens() != *want {
		t.Errorf("completion tokens %d, want %d", end.GetUsage().GetCompletionTokens(), *want)
	}
	if c.Expect.SameTextAsGenerate {
		unary, err := client.Generate(callContext(t), unaryRequest)
		if err != nil {
			t.Fatal(err)
		}
		if unary.GetText() != text.String() || !proto.Equal(unary.GetEnd().GetUsage(), end.GetUsage()) {
			t.Errorf("Generate: %q %v; the stream: %q %v", unary.GetText(), unary.GetEnd().GetUsage(), text.String(), end.GetUsage())
		}
	}
}

func runListModels(t *testing.T, r *runner, node *yaml.Node) {
	c := decode[struct {
		caseBase `yaml:",inline"`
		Expect   struct {
			Models  []string `yaml:"models"`
			Default string   `yaml:"default"`
		} `yaml:"expect"`
	}](t, node)
	models, err := r.client(t, c.caseBase).ListModels(callContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var names, defaults []string
	for _, model := range models {
		names = append(names, model.GetName())
		if model.GetDefault() {
			defaults = append(defaults, model.GetName())
		}
	}
	if !slices.Equal(names, c.Expect.Models) || !slices.Equal(defaults, []string{c.Expect.Default}) {
		t.Errorf("models %v (default %v), want %v (default %s)", names, defaults, c.Expect.Models, c.Expect.Default)
	}
}

func runHealth(t *testing.T, r *runner, node *yaml.Node) {
	c := decode[struct {
		caseBase `yaml:",inline"`
		Services []string `yaml:"services"`
		Expect   struct {
			Status string `yaml:"status"`
		} `yaml:"expect"`
	}](t, node)
	for _, service := range c.Services {
		status, err := r.client(t, c.caseBase).Health(callContext(t), service)
		if err != nil || status.String() != c.Expect.Status {
			t.Errorf("health of %q: %v %v, want %s", service, status, err, c.Expect.Status)
		}
	}
}

type errorExpect struct {
	Code            string   `yaml:"code"`
	Reason          string   `yaml:"reason"`
	FieldViolations []string `yaml:"field_violations"`
}

func checkError(t *testing.T, err error, want errorExpect) *streamgate.Error {
	t.Helper()
	var e *streamgate.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an *Error %s, got %v", want.Code, err)
	}
	if streamgate.CodeName(e.Code) != want.Code || (want.Reason != "" && e.Reason != want.Reason) {
		t.Errorf("got %v, want %s %s", e, want.Code, want.Reason)
	}
	if want.FieldViolations != nil {
		var fields []string
		for _, v := range e.FieldViolations {
			fields = append(fields, v.Field)
		}
		if !slices.Equal(fields, want.FieldViolations) {
			t.Errorf("field violations %v, want %v", fields, want.FieldViolations)
		}
	}
	return e
}

func runError(t *testing.T, r *runner, node *yaml.Node) {
	c := decode[struct {
		requestCase `yaml:",inline"`
		Call        string      `yaml:"call"`
		Expect      errorExpect `yaml:"expect"`
	}](t, node)
	client := r.client(t, c.caseBase)
	var err error
	switch c.Call {
	case "generate_stream":
		request, _ := c.requests(t)
		for _, err = range client.GenerateStream(callContext(t), request) {
			if err != nil {
				break
			}
		}
	case "generate":
		_, request := c.requests(t)
		_, err = client.Generate(callContext(t), request)
	case "list_models":
		_, err = client.ListModels(callContext(t))
	default:
		t.Fatalf("go: call %q is not implemented in the Go runner", c.Call)
	}
	checkError(t, err, c.Expect)
}

func runRateLimit(t *testing.T, r *runner, node *yaml.Node) {
	c := decode[struct {
		requestCase `yaml:",inline"`
		MaxCalls    int `yaml:"max_calls"`
		Expect      struct {
			errorExpect       `yaml:",inline"`
			RetryDelaySeconds struct {
				Above  float64 `yaml:"above"`
				AtMost float64 `yaml:"at_most"`
			} `yaml:"retry_delay_seconds"`
		} `yaml:"expect"`
	}](t, node)
	_, request := c.requests(t)
	for range c.MaxCalls {
		_, err := r.client(t, c.caseBase).Generate(callContext(t), request)
		if err == nil {
			continue
		}
		delay, ok := checkError(t, err, c.Expect.errorExpect).RetryDelay()
		bounds := c.Expect.RetryDelaySeconds
		if !ok || delay.Seconds() <= bounds.Above || delay.Seconds() > bounds.AtMost {
			t.Errorf("retry delay %v (given: %v), want in (%vs, %vs]", delay, ok, bounds.Above, bounds.AtMost)
		}
		return
	}
	t.Fatalf("%d calls passed; the last should have been refused", c.MaxCalls)
}

func runCancel(t *testing.T, r *runner, node *yaml.Node) {
	c := decode[struct {
		requestCase `yaml:",inline"`
		Metrics     struct {
			Running  conditions `yaml:"running"`
			Released conditions `yaml:"released"`
		} `yaml:"metrics"`
	}](t, node)
	request, _ := c.requests(t)
	var released *metricsCheck
	for event, err := range r.client(t, c.caseBase).GenerateStream(callContext(t), request) {
		if err != nil {
			t.Fatal(err)
		}
		if event.GetDelta() != nil {
			if unmet := r.check(t, c.caseBase, c.Metrics.Running).unmet(t); len(unmet) > 0 {
				t.Fatalf("while generating: %v", unmet)
			}
			released = r.check(t, c.caseBase, c.Metrics.Released)
			break // leaving the loop cancels the call
		}
	}
	if released == nil {
		t.Fatal("the stream ended before its first Delta")
	}
	released.waitFor(t, r.wait)
}

func runDeadline(t *testing.T, r *runner, node *yaml.Node) {
	c := decode[struct {
		requestCase `yaml:",inline"`
		DeadlineMs  int         `yaml:"deadline_ms"`
		Expect      errorExpect `yaml:"expect"`
		Metrics     struct {
			Released conditions `yaml:"released"`
		} `yaml:"metrics"`
	}](t, node)
	request, _ := c.requests(t)
	released := r.check(t, c.caseBase, c.Metrics.Released)
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(c.DeadlineMs)*time.Millisecond)
	defer cancel()
	var err error
	for _, err = range r.client(t, c.caseBase).GenerateStream(ctx, request) {
		if err != nil {
			break
		}
	}
	checkError(t, err, c.Expect)
	released.waitFor(t, r.wait)
}

// ---- metrics --------------------------------------------------------------------------------

// metricsCheck compares /metrics samples with conditions; increases count from its creation.
type metricsCheck struct {
	urls       map[string]string
	conditions conditions
	before     map[string]map[string]float64
}

func (r *runner) check(t *testing.T, c caseBase, conds conditions) *metricsCheck {
	urls := map[string]string{"engine": r.env.Engine.MetricsURL, "gateway": r.env.Gateways[c.gateway()].MetricsURL}
	check := &metricsCheck{urls: urls, conditions: conds, before: map[string]map[string]float64{}}
	for source := range conds {
		check.before[source] = check.scrape(t, source)
	}
	return check
}

func (m *metricsCheck) scrape(t *testing.T, source string) map[string]float64 {
	t.Helper()
	url, ok := m.urls[source]
	if !ok {
		t.Fatalf("go: metrics source %q is not implemented in the Go runner", source)
	}
	response, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		cut := strings.LastIndexByte(line, ' ')
		if cut <= 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if value, err := strconv.ParseFloat(line[cut+1:], 64); err == nil {
			samples[line[:cut]] = value
		}
	}
	return samples
}

// unmet lists the conditions that do not hold now.
func (m *metricsCheck) unmet(t *testing.T) []string {
	var problems []string
	for source, samples := range m.conditions {
		now := m.scrape(t, source)
		for sample, want := range samples {
			got, ok := now[sample]
			target, isNumber := number(want)
			if increase, isMap := want.(map[string]any); isMap {
				target, isNumber = number(increase["increase"])
				got -= m.before[source][sample]
			}
			if !isNumber {
				t.Fatalf("go: condition %v of %s is not implemented in the Go runner", want, sample)
			}
			if !ok || got != target {
				problems = append(problems, fmt.Sprintf("%s %s: %v (want %v)", source, sample, got, target))
			}
		}
	}
	slices.Sort(problems)
	return problems
}

// waitFor polls until every condition holds, failing after wait.
func (m *metricsCheck) waitFor(t *testing.T, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		unmet := m.unmet(t)
		if len(unmet) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still unmet after %v: %v", wait, unmet)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func number(value any) (float64, bool) {
	switch v := value.(type) {
	case int:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}
