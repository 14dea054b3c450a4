// Package streamgate is the Go client of the streamgate gateway (streamgate.v1 over gRPC).
//
// It is a thin layer over the generated code in gen/streamgate/v1 (package streamgatev1):
// requests and responses are the generated messages; the client adds the connection (API key,
// TLS), GenerateStream as a Go iterator, and errors of type *Error with the gateway's google.rpc
// details decoded.
//
//	client, err := streamgate.New("127.0.0.1:50051", streamgate.Options{APIKey: key})
//	...
//	for event, err := range client.GenerateStream(ctx, request) {
//		if err != nil { ... }              // an *Error
//		fmt.Print(event.GetDelta().GetText())
//	}
package streamgate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	streamgatev1 "streamgate.dev/streamgate-go/gen/streamgate/v1"
)

// DefaultTarget is where `streamgate serve` listens by default.
const DefaultTarget = "127.0.0.1:50051"

// Options are the settings of a Client; the zero value is a plaintext connection without a key.
type Options struct {
	// APIKey is sent on every call as "authorization: Bearer <key>" (empty: none).
	APIKey string
	// TLS connects over TLS when set; nil is plaintext.
	TLS *TLSOptions
	// DialOptions are added after the client's own (user agent, keepalive, interceptors...).
	DialOptions []grpc.DialOption
}

// TLSOptions name PEM files; empty fields keep the defaults.
type TLSOptions struct {
	// CAFile holds the certificates to trust; empty: the system's roots.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key, for a gateway that requires
	// mutual TLS (both or neither).
	CertFile, KeyFile string
	// ServerName is checked against the gateway's certificate instead of the target's host.
	ServerName string
}

// Client calls one gateway over one gRPC connection. It is safe for concurrent use; Close it
// when done.
type Client struct {
	conn       *grpc.ClientConn
	generation streamgatev1.GenerationServiceClient
	health     healthpb.HealthClient
}

// New connects to target ("host:port"). The connection is made lazily, at the first call.
func New(target string, opts Options) (*Client, error) {
	transport := insecure.NewCredentials()
	if opts.TLS != nil {
		config, err := opts.TLS.config()
		if err != nil {
			return nil, err
		}
		transport = credentials.NewTLS(config)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(transport)}
	if opts.APIKey != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer(opts.APIKey)))
	}
	conn, err := grpc.NewClient(target, append(dial, opts.DialOptions...)...)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn:       conn,
		generation: streamgatev1.NewGenerationServiceClient(conn),
		health:     healthpb.NewHealthClient(conn),
	}, nil
}

func (o *TLSOptions) config() (*tls.Config, error) {
	config := &tls.Config{ServerName: o.ServerName, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("streamgate: CA file: %w", err)
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("streamgate: no PEM certificate in %s", o.CAFile)
		}
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("streamgate: a client certificate needs both CertFile and KeyFile")
	}
	if o.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("streamgate: client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// bearer sends the API key with every call.
type bearer string

func (k bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

// RequireTransportSecurity is false: a gateway on a trusted network may run without TLS.
func (bearer) RequireTransportSecurity() bool { return false }

// Close closes the connection; calls in progress fail.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for the other generated clients (AdminService).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// GenerateStream starts a generation when the loop over it starts and yields its events as they
// arrive: a Start, a Delta per model step, an End. A failure is yielded once, as an *Error, and
// ends the loop. Leaving the loop early cancels the call (the gateway then stops the
// generation upstream), as does cancelling ctx; a deadline on ctx bounds the whole stream.
func (c *Client) GenerateStream(
	ctx context.Context, req *streamgatev1.GenerateStreamRequest, opts ...grpc.CallOption,
) iter.Seq2[*streamgatev1.GenerateStreamResponse, error] {
	return func(yield func(*streamgatev1.GenerateStreamResponse, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.generation.GenerateStream(ctx, req, opts...)
		if err != nil {
			yield(nil, FromError(err))
			return
		}
		for {
			event, err := stream.Recv()
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(nil, FromError(err))
				return
			}
			if !yield(event, nil) {
				return
			}
		}
	}
}

// Generate runs a whole generation and returns it in one response.
func (c *Client) Generate(
	ctx context.Context, req *streamgatev1.GenerateRequest, opts ...grpc.CallOption,
) (*streamgatev1.GenerateResponse, error) {
	response, err := c.generation.Generate(ctx, req, opts...)
	return response, FromError(err)
}

// ListModels returns the routes the gateway serves (to this API key).
func (c *Client) ListModels(ctx context.Context, opts ...grpc.CallOption) ([]*streamgatev1.Model, error) {
	response, err := c.generation.ListModels(ctx, &streamgatev1.ListModelsRequest{}, opts...)
	if err != nil {
		return nil, FromError(err)
	}
	return response.GetModels(), nil
}

// Health asks grpc.health.v1 about service ("" for the whole gateway, or
// "streamgate.v1.GenerationService"): SERVING while a backend is healthy.
func (c *Client) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	response, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, FromError(err)
	}
	return response.GetStatus(), nil
}
