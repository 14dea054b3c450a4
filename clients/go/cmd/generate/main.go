// Command generate streams a gateway's reply to a prompt to stdout as it is generated, then the
// finish reason and token count to stderr. Ctrl-C cancels the call (exit 130); an error exits 1.
//
//	go run ./cmd/generate [-api-key KEY] [-ca-file PEM] [-max-new-tokens N] TARGET PROMPT
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"google.golang.org/protobuf/proto"

	"streamgate.dev/streamgate-go"
	streamgatev1 "streamgate.dev/streamgate-go/gen/streamgate/v1"
)

func main() {
	apiKey := flag.String("api-key", "", "API key (sent as \"authorization: Bearer KEY\")")
	caFile := flag.String("ca-file", "", "connect over TLS, trusting the CA certificates in this PEM file")
	maxNewTokens := flag.Uint("max-new-tokens", 0, "tokens to generate at most (0: the route's default)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: generate [-api-key KEY] [-ca-file PEM] [-max-new-tokens N] TARGET PROMPT")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	opts := streamgate.Options{APIKey: *apiKey}
	if *caFile != "" {
		opts.TLS = &streamgate.TLSOptions{CAFile: *caFile}
	}
	request := &streamgatev1.GenerateStreamRequest{
		Input: &streamgatev1.GenerateStreamRequest_Prompt{Prompt: flag.Arg(1)},
	}
	if *maxNewTokens > 0 {
		request.Stopping = &streamgatev1.StoppingCriteria{MaxNewTokens: proto.Uint32(uint32(*maxNewTokens))}
	}
	os.Exit(run(flag.Arg(0), opts, request))
}

func run(target string, opts streamgate.Options, request *streamgatev1.GenerateStreamRequest) int {
	client, err := streamgate.New(target, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		return 1
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	for event, err := range client.GenerateStream(ctx, request) {
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return 130
			}
			fmt.Fprintln(os.Stderr, "generate:", err)
			return 1
		}
		switch e := event.GetEvent().(type) {
		case *streamgatev1.GenerateStreamResponse_Delta:
			fmt.Print(e.Delta.GetText())
		case *streamgatev1.GenerateStreamResponse_End:
			fmt.Println()
			fmt.Fprintf(os.Stderr, "[%v, %d tokens]\n", e.End.GetFinishReason(), e.End.GetUsage().GetCompletionTokens())
		}
	}
	return 0
}
