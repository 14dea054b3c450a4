package streamgate

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a call that ended with a non-OK gRPC status, with the google.rpc details the gateway
// sends (docs/api.md, "Errors") decoded. Get it with errors.As; status.Code(err) works too.
type Error struct {
	// Code is the gRPC status code; Message the status message.
	Code    codes.Code
	Message string
	// Reason, Domain and Metadata come from ErrorInfo; Reason is stable and UPPER_SNAKE
	// ("RATE_LIMITED", "ROUTE_NOT_FOUND"), Metadata carries request_id, route, tokens_sent...
	Reason   string
	Domain   string
	Metadata map[string]string
	// FieldViolations come from BadRequest: one per invalid request field.
	FieldViolations []FieldViolation
	// QuotaViolations come from QuotaFailure: which limit refused the call.
	QuotaViolations []QuotaViolation
	// Details holds every detail message, decoded (an error value for an unknown type).
	Details []any

	retryDelay *time.Duration
	status     *status.Status
}

// FieldViolation is one invalid field of a request: its proto path and what is wrong.
type FieldViolation struct {
	Field, Description string
}

// QuotaViolation is one exhausted limit: whose ("tenant acme") and what.
type QuotaViolation struct {
	Subject, Description string
}

// FromError turns the error of a gRPC call into an *Error; nil stays nil, and an error that
// carries no gRPC status is returned unchanged.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var known *Error
	if errors.As(err, &known) {
		return known
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return newError(st)
}

func newError(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), Details: st.Details(), status: st}
	for _, detail := range e.Details {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			if e.Reason == "" {
				e.Reason, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
			}
		case *errdetails.RetryInfo:
			delay := d.GetRetryDelay().AsDuration()
			e.retryDelay = &delay
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{v.GetField(), v.GetDescription()})
			}
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				e.QuotaViolations = append(e.QuotaViolations, QuotaViolation{v.GetSubject(), v.GetDescription()})
			}
		}
	}
	return e
}

// RetryDelay is how long to wait before retrying, from RetryInfo; ok is false when the gateway
// gave none (retrying cannot help, or the failure is not a retryable one).
func (e *Error) RetryDelay() (delay time.Duration, ok bool) {
	if e.retryDelay == nil {
		return 0, false
	}
	return *e.retryDelay, true
}

// RequestID is the gateway's id of the call ("" when it sent none).
func (e *Error) RequestID() string { return e.Metadata["request_id"] }

// TokensSent is how many tokens a stream delivered before it failed; ok is false when the
// gateway did not say (the failure came before generation).
func (e *Error) TokensSent() (tokens int, ok bool) {
	tokens, err := strconv.Atoi(e.Metadata["tokens_sent"])
	return tokens, err == nil
}

// GRPCStatus makes status.FromError and status.Code work on an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Error is one line: "CODE REASON: message (field: why; ...) [retry in 1s] [request ID]".
func (e *Error) Error() string {
	var b strings.Builder
	code := CodeName(e.Code)
	b.WriteString(code)
	if e.Reason != "" && e.Reason != code {
		b.WriteString(" " + e.Reason)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if len(e.FieldViolations) > 0 {
		parts := make([]string, len(e.FieldViolations))
		for i, v := range e.FieldViolations {
			parts[i] = v.Field + ": " + v.Description
		}
		b.WriteString(" (" + strings.Join(parts, "; ") + ")")
	}
	if delay, ok := e.RetryDelay(); ok {
		fmt.Fprintf(&b, " [retry in %s]", delay)
	}
	if id := e.RequestID(); id != "" {
		b.WriteString(" [request " + id + "]")
	}
	return b.String()
}

// CodeName is a code as gRPC's other languages and docs/api.md spell it: "INVALID_ARGUMENT"
// (codes.Code's String is "InvalidArgument").
func CodeName(code codes.Code) string {
	var b strings.Builder
	previous := rune(0)
	for _, r := range code.String() {
		if unicode.IsUpper(r) && unicode.IsLower(previous) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
		previous = r
	}
	return b.String()
}
