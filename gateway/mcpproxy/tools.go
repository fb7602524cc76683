package mcpproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"writ.dev/writ/gateway"
	"writ.dev/writ/internal/quote"
)

// ActionCall is the task action of an MCP tool call.
const ActionCall = "call"

// Resource is the resource name of tool on upstream server.
func Resource(server, tool string) string { return "mcp/" + server + "/tool/" + tool }

// listConcurrency bounds the decisions one tools/list asks for at once.
const listConcurrency = 8

// middleware answers tools/list and tools/call itself, from the upstream,
// and passes everything else (initialize, ping, ...) to the SDK's server,
// which has no tools, resources or prompts of its own.
func (e *endpoint) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		switch method {
		case "tools/list":
			return e.listTools(ctx, req)
		case "tools/call":
			r, ok := req.(*mcp.CallToolRequest)
			if !ok {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "tools/call without parameters"}
			}
			return e.callTool(ctx, r)
		}
		return next(ctx, method, req)
	}
}

func (e *endpoint) callTool(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	caller, ok := callerOf(req)
	if !ok {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the gateway lost the caller's identity; retry the call"}
	}
	name := req.Params.Name
	if !validToolName(name) {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("tool name %s is not 1 to 128 of A-Z, a-z, 0-9, '_', '-' and '.'", quote.String(name))}
	}
	args, err := arguments(req.Params.Arguments)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, e.p.cfg.Limits.CallTimeout)
	defer cancel()
	r := gateway.Request{Action: ActionCall, Resource: Resource(e.up.name, name), Arguments: args}
	d, err := e.p.decider.Decide(ctx, caller, r)
	if errors.Is(err, gateway.ErrEvidenceRefused) {
		return denied(fmt.Sprintf("writ refused the call of %s: %s", name, strings.TrimPrefix(err.Error(), "gateway: "))), nil
	}
	if err != nil {
		return denied(fmt.Sprintf("writ could not decide whether you may call %s, so the call was not made: %v", name, err)), nil
	}
	if !d.Allow {
		return denied(fmt.Sprintf("writ denied the call of %s: %s", name, d.Reason)), nil
	}
	s := e.p.sessions.get(req.Session, sessionOwner(caller))
	live, err := e.p.sessions.hold(s, caller, r, d.Chain)
	if err != nil {
		return denied(fmt.Sprintf("the call of %s was not made: %v", name, err)), nil
	}
	if live.Err() != nil {
		// Revoked between the decision and the hold: the cut is on its way.
		return denied(fmt.Sprintf("the call of %s was not made: the decision stopped holding before the call", name)), nil
	}
	// The call runs under the session: a cut ends it upstream at once.
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	// What was decided is what is sent: the arguments as decoded, not the
	// caller's text, which another parser might read differently.
	params := &mcp.CallToolParams{Name: name, Arguments: args}
	res, err := e.up.callTool(ctx, params)
	if s.ctx.Err() != nil {
		return nil, &jsonrpc.Error{Code: codeSessionCut, Message: context.Cause(s.ctx).Error()}
	}
	if err != nil {
		var down *unavailableError
		if errors.As(err, &down) {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("MCP server %s is unavailable, the call was not made: %v", e.up.name, down.err)}
		}
		// The server's own JSON-RPC error (unknown tool, bad arguments)
		// is its answer to the caller.
		var rpcErr *jsonrpc.Error
		if errors.As(err, &rpcErr) {
			return nil, rpcErr
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("MCP server %s failed the call: %v", e.up.name, err)}
	}
	return res, nil
}

// denied is a refusal as a tool error, so the model driving the client
// reads the reason and can ask for access instead of retrying blindly.
func denied(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

func (e *endpoint) listTools(ctx context.Context, req mcp.Request) (*mcp.ListToolsResult, error) {
	caller, ok := callerOf(req)
	if !ok {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the gateway lost the caller's identity; retry"}
	}
	ctx, cancel := context.WithTimeout(ctx, e.p.cfg.Limits.CallTimeout)
	defer cancel()
	tools, err := e.up.listTools(ctx)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("MCP server %s is unavailable: %v", e.up.name, err)}
	}
	allowed := make([]bool, len(tools))
	errs := make([]error, len(tools))
	var wg sync.WaitGroup
	sem := make(chan struct{}, listConcurrency)
	for i, t := range tools {
		if t == nil || !validToolName(t.Name) {
			continue // a name no call could be decided on
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			d, err := e.p.decider.Decide(ctx, caller, gateway.Request{Action: ActionCall, Resource: Resource(e.up.name, t.Name)})
			allowed[i], errs[i] = err == nil && d.Allow, err
		}()
	}
	wg.Wait()
	res := &mcp.ListToolsResult{Tools: []*mcp.Tool{}}
	for i, t := range tools {
		if errs[i] != nil {
			// A partial list would look like a policy answer; it is not one.
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("writ could not decide which tools you may call: %v; try again", errs[i])}
		}
		if allowed[i] {
			res.Tools = append(res.Tools, t)
		}
	}
	return res, nil
}

// validToolName follows the MCP tool name rule (1 to 128 of A-Z, a-z,
// 0-9, '_', '-', '.'), which also keeps "/" out of resource names.
func validToolName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// maxArgumentsDepth bounds how deeply arguments nest; tool arguments are
// shallow, and the decision copies them.
const maxArgumentsDepth = 32

// arguments decodes a call's arguments for the decision: a JSON object,
// or nothing. A key given twice anywhere is refused: the decision would
// see one value and the upstream's parser might read the other. Numbers
// stay json.Number so a guardrail compares what was sent, not a float
// rounding of it.
func arguments(raw json.RawMessage) (map[string]any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '{' {
		return nil, errors.New("the tool call's arguments are not a JSON object")
	}
	v, err := decodeObject(dec, "arguments", 1)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("the tool call's arguments have data after the JSON object")
	}
	return v, nil
}

func decodeObject(dec *json.Decoder, path string, depth int) (map[string]any, error) {
	if depth > maxArgumentsDepth {
		return nil, fmt.Errorf("the tool call's arguments nest deeper than %d levels", maxArgumentsDepth)
	}
	obj := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errors.New("the tool call's arguments are not valid JSON")
		}
		key := tok.(string) // json.Decoder yields only string keys in objects
		if _, dup := obj[key]; dup {
			return nil, fmt.Errorf("the tool call's arguments give %s more than once in %s: send each key once", quote.Max(key, 40), quote.Max(path, 60))
		}
		v, err := decodeValue(dec, path+"."+key, depth)
		if err != nil {
			return nil, err
		}
		obj[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, errors.New("the tool call's arguments are not valid JSON")
	}
	return obj, nil
}

func decodeValue(dec *json.Decoder, path string, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, errors.New("the tool call's arguments are not valid JSON")
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return decodeObject(dec, path, depth+1)
		case '[':
			if depth+1 > maxArgumentsDepth {
				return nil, fmt.Errorf("the tool call's arguments nest deeper than %d levels", maxArgumentsDepth)
			}
			arr := []any{}
			for dec.More() {
				v, err := decodeValue(dec, path+"[]", depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, errors.New("the tool call's arguments are not valid JSON")
			}
			return arr, nil
		}
		return nil, errors.New("the tool call's arguments are not valid JSON")
	default:
		return t, nil
	}
}
