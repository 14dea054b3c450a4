package streamgate_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"streamgate.dev/streamgate-go"
)

func TestFromErrorDecodesTheGatewaysDetails(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "rate limited").WithDetails(
		&errdetails.ErrorInfo{
			Reason:   "RATE_LIMITED",
			Domain:   "streamgate.dev",
			Metadata: map[string]string{"request_id": "r-1", "tokens_sent": "3"},
		},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{
			{Subject: "tenant acme", Description: "1 request a minute"},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := fmt.Errorf("calling: %w", streamgate.FromError(st.Err()))

	var e *streamgate.Error
	if !errors.As(wrapped, &e) {
		t.Fatalf("not an *Error: %v", wrapped)
	}
	if e.Code != codes.ResourceExhausted || e.Reason != "RATE_LIMITED" || e.Domain != "streamgate.dev" {
		t.Errorf("code/reason/domain: %v %q %q", e.Code, e.Reason, e.Domain)
	}
	if delay, ok := e.RetryDelay(); !ok || delay != 1500*time.Millisecond {
		t.Errorf("retry delay: %v %v", delay, ok)
	}
	if tokens, ok := e.TokensSent(); !ok || tokens != 3 {
		t.Errorf("tokens sent: %v %v", tokens, ok)
	}
	want := []streamgate.QuotaViolation{{Subject: "tenant acme", Description: "1 request a minute"}}
	if fmt.Sprint(e.QuotaViolations) != fmt.Sprint(want) {
		t.Errorf("quota violations: %v", e.QuotaViolations)
	}
	if status.Code(wrapped) != codes.ResourceExhausted {
		t.Errorf("status.Code: %v", status.Code(wrapped))
	}
	if got := e.Error(); got != "RESOURCE_EXHAUSTED RATE_LIMITED: rate limited [retry in 1.5s] [request r-1]" {
		t.Errorf("Error(): %s", got)
	}
}

func TestFieldViolationsAndAnErrorWithoutDetails(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "invalid request").WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT"},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "sampling.top_p", Description: "must be in (0, 1]"},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	e := streamgate.FromError(st.Err()).(*streamgate.Error)
	if got := e.Error(); got != "INVALID_ARGUMENT: invalid request (sampling.top_p: must be in (0, 1])" {
		t.Errorf("Error(): %s", got)
	}
	if _, ok := e.RetryDelay(); ok {
		t.Error("a retry delay without RetryInfo")
	}

	bare := streamgate.FromError(status.Error(codes.Unavailable, "connection refused")).(*streamgate.Error)
	if bare.Reason != "" || bare.RequestID() != "" || bare.Error() != "UNAVAILABLE: connection refused" {
		t.Errorf("bare: %q %q %q", bare.Reason, bare.RequestID(), bare.Error())
	}
	if _, ok := bare.TokensSent(); ok {
		t.Error("tokens sent without ErrorInfo")
	}
}

func TestFromErrorKeepsOtherErrorsAndNil(t *testing.T) {
	plain := errors.New("not a status")
	if streamgate.FromError(plain) != plain || streamgate.FromError(nil) != nil {
		t.Error("FromError changed a non-status error or nil")
	}
}

func TestCodeName(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.OK: "OK", codes.InvalidArgument: "INVALID_ARGUMENT", codes.Unauthenticated: "UNAUTHENTICATED",
		codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	} {
		if got := streamgate.CodeName(code); got != want {
			t.Errorf("CodeName(%v) = %s, want %s", code, got, want)
		}
	}
}
