package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"writ.dev/writ/delegation"
)

// tokenEndpointEnv names the token endpoint when --endpoint is not given.
const tokenEndpointEnv = "WRIT_TOKEN_ENDPOINT"

// runToken runs `writ token create|exchange`.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGroup(ctx, "writ token",
		"Tokens: one-time join tokens that let a new agent join the trust domain, and delegation tokens\n"+
			"for an agent acting for a person (RFC 8693 token exchange).", []subcommand{
			{"create", "make a one-time join token for a new agent", withStdout(tokenCreate)},
			{"exchange", "exchange a person's token for a delegation token, as this workload (RFC 8693)", withStdout(tokenExchange)},
		}, args, stdout, stderr)
}

// subjectTokenTypes are the short names --subject-token-type takes.
var subjectTokenTypes = map[string]string{
	"jwt":        delegation.TokenTypeJWT,
	"id_token":   delegation.TokenTypeIDToken,
	"delegation": delegation.TokenTypeURI,
}

// maxTokenFile bounds what a token flag reads: tokens are a few
// KiB; a wrong file (a binary, /dev/zero) stops here.
const maxTokenFile = 64 << 10

func tokenExchange(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ token exchange",
		"Act for a person: exchange the person's token at the token endpoint (RFC 8693) for a delegation\n"+
			"token naming the person as subject and this workload as actor, bound to this workload's\n"+
			"certificate. This process's X.509-SVID (mTLS) and a JWT-SVID for the endpoint's issuer (the\n"+
			"actor token) come from the Workload API at $SPIFFE_ENDPOINT_SOCKET. The server issues it only\n"+
			"when a live task has both as members. Prints the token, or with --json the whole answer.",
		"writ token exchange --subject-token FILE|- --audience AUD [--audience AUD...] [--subject-token-type jwt|id_token|delegation]\n"+
			"                           [--scope task:ID] [--endpoint https://HOST:PORT/token] [--issuer URL] [--json]")
	subjectFile := c.fs.String("subject-token", "", "`file` holding the person's token (a JWT-SVID, an ID token, or a delegation token to pass on); - reads standard input")
	subjectType := c.fs.String("subject-token-type", "jwt", "what the subject token is: `type` jwt (a JWT-SVID), id_token (from the people issuer) or delegation (passed on by another agent)")
	var audience stringList
	c.fs.Var(&audience, "audience", "`name` of a resource server the token is for; repeatable")
	scope := c.fs.String("scope", "", "which `task:ID` the delegation is under, when the two share several")
	endpoint := c.fs.String("endpoint", os.Getenv(tokenEndpointEnv), "the token endpoint's `URL`, https://HOST:PORT/token, or $"+tokenEndpointEnv)
	c.shownDefault["endpoint"] = "$" + tokenEndpointEnv
	issuer := c.fs.String("issuer", "", "the endpoint's issuer `URL`, the audience of the actor token (the server's token_endpoint.issuer)")
	c.shownDefault["issuer"] = "the --endpoint URL"
	asJSON := c.fs.Bool("json", false, "print the token endpoint's whole answer as JSON")
	timeout := c.fs.Duration("timeout", 30*time.Second, "how long to wait for the agent and the endpoint")
	c.required("subject-token", "audience", "endpoint")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	typ, ok := subjectTokenTypes[*subjectType]
	if !ok {
		return c.usageError("--subject-token-type: %s is not a type; use jwt, id_token or delegation", quote.String(*subjectType))
	}
	u, err := url.Parse(*endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return c.usageError("--endpoint: %s is not an https URL; give the token endpoint, e.g. https://writ.example.com:8443/token", quote.String(*endpoint))
	}
	if *issuer == "" {
		*issuer = *endpoint
	}
	var scopes []string
	if *scope != "" {
		scopes = strings.Fields(*scope)
	}
	subject, err := readTokenFile("subject-token", *subjectFile)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	id, err := workloadIdentity(ctx)
	if err != nil {
		return err
	}
	actor, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: *issuer, Subject: id.svid.ID})
	if err != nil {
		return fmt.Errorf("fetching this workload's JWT-SVID for %s (the actor token): %w", *issuer, err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(id.svid, id.bundle, serverAuthorizer(id.td))}}
	defer client.CloseIdleConnections()
	resp, err := delegation.Exchange(ctx, client, *endpoint, delegation.ExchangeRequest{
		SubjectToken: subject, SubjectTokenType: typ,
		ActorToken: actor.Marshal(), ActorTokenType: delegation.TokenTypeJWT,
		Audience: audience, Scope: scopes,
	})
	if err != nil {
		return fmt.Errorf("exchanging as %s: %w", id.svid.ID, err)
	}
	if *asJSON {
		b, err := json.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	// The token alone, so that $(writ token exchange ...) is the token.
	_, err = fmt.Fprintln(stdout, resp.AccessToken)
	return err
}

// readTokenFile reads one token from a file or standard input, for flag.
func readTokenFile(flag, name string) (string, error) {
	r, display := stdin, "standard input"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flag, err)
		}
		defer f.Close()
		r, display = f, name
	}
	data, err := io.ReadAll(io.LimitReader(r, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: reading %s: %w", flag, display, err)
	}
	if len(data) > maxTokenFile {
		return "", fmt.Errorf("%s: %s is larger than %d KiB, more than any token; name the file holding only the token", flag, display, maxTokenFile>>10)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%s: %s does not hold one token (empty, or several words); put the compact token alone in it", flag, display)
	}
	return tok, nil
}
