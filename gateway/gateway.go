// Package gateway is writ's enforcement point: front ends for TCP, HTTP and
// MCP traffic that authenticate callers by their X.509-SVID (and, when a
// caller acts for someone, a delegation token made for the gateway), ask
// the writ server for a decision per connection, request or tool call, and
// cut what is live the moment a decision stops holding.
//
// This file holds the two small interfaces the front ends are written
// against. The front ends (gateway/tcpproxy, gateway/httpproxy,
// gateway/mcpproxy) know nothing of gRPC or of the server; the core in this
// package implements Decider and Holder over the server's DecisionService.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// Caller is the evidence a front end received from whoever connected: the
// verified certificate chain from the mTLS handshake and, when the caller
// acts for someone, the delegation token it presented. The server turns it
// into the chain of identities the decision is made for; the gateway never
// names identities itself.
type Caller struct {
	// Certificates is the peer's chain as the TLS handshake verified it,
	// leaf first.
	Certificates []*x509.Certificate
	// DelegationToken is a token from writ's token endpoint whose audience
	// is the gateway, bound to Certificates[0]; "" when the caller acts only
	// for itself.
	DelegationToken string
	// SourceAddress is the peer's address (host:port) as the listener saw
	// it, for guardrails on it.
	SourceAddress string
}

// Request is what a caller wants to do, in writ's terms.
type Request struct {
	// Action is a task action such as "connect", "read", "call".
	Action string
	// Resource is a resource name such as "tcp/orders-db" or
	// "mcp/github/tool/create_issue".
	Resource string
	// Arguments, when not nil, is a JSON object (an MCP tool call's
	// arguments, say) the server puts in the guardrails' context as
	// context.arguments.
	Arguments map[string]any
}

// Decision is the server's answer for one Request.
type Decision struct {
	Allow bool
	// Reason says why not, naming the identity and the condition; it is
	// safe to show the caller.
	Reason string
	// Chain is the identities the decision was made for, caller first.
	Chain []string
}

// Decider decides requests. An error means no decision could be had (the
// server is unreachable, the evidence is malformed): front ends treat it as
// a denial and say so, and never let traffic through on an error.
type Decider interface {
	Decide(ctx context.Context, c Caller, r Request) (Decision, error)
}

// Holder keeps track of what is live: a TCP connection, a streaming HTTP
// response, an MCP session. Hold is called after an allowing decision; the
// returned context is cancelled as soon as the same decision would no
// longer allow (a lock lands, the task closes, a dual-control watcher
// leaves) or when release is called. Front ends cut the connection or
// session when the context is done. release must be called exactly once.
type Holder interface {
	Hold(ctx context.Context, c Caller, r Request) (live context.Context, release func())
}

// ErrNoPeerCertificate is returned by CallerFromTLS for a connection whose
// peer presented no certificate.
var ErrNoPeerCertificate = errors.New("the caller presented no X.509-SVID: connect with mTLS using an SVID from the Workload API")

// CallerFromTLS builds a Caller from a completed handshake. The listener's
// tls.Config must have verified the chain against the trust bundle; this
// only reads what was verified.
func CallerFromTLS(state *tls.ConnectionState, remoteAddr, delegationToken string) (Caller, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return Caller{}, ErrNoPeerCertificate
	}
	return Caller{Certificates: state.PeerCertificates, DelegationToken: delegationToken, SourceAddress: remoteAddr}, nil
}
