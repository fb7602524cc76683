// Package login runs the OpenID Connect sign-in flows that give a person an
// ID token, which the writ server exchanges for a short-lived X.509-SVID.
//
// The ID token is returned as issued and is not verified here: the writ
// server verifies it against the issuer's keys, and it is the only party
// whose verdict counts.
package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"golang.org/x/oauth2"
)

// Config says which identity provider to sign in with and how to talk to
// the person signing in.
type Config struct {
	// Issuer is the identity provider's issuer URL. Its discovery document
	// is fetched from Issuer/.well-known/openid-configuration. It must be
	// https, except for loopback http issuers (http://127.0.0.1,
	// http://localhost), which serve tests and local identity providers.
	Issuer string
	// ClientID names writ's public client at the identity provider. Public
	// clients have no secret, so none is ever sent.
	ClientID string
	// Scopes to request; default openid, email and profile.
	Scopes []string
	// HTTPClient talks to the identity provider; default http.DefaultClient.
	HTTPClient *http.Client
	// Out receives what the person must do: the URL to open, or the device
	// code and where to enter it. Default os.Stderr, so that instructions
	// never mix with a command's output.
	Out io.Writer
	// OpenBrowser opens a URL in the person's browser; nil prints it only.
	OpenBrowser func(url string) error
}

// defaultScopes asks for the person's email, which is what writ maps to an
// identity.
var defaultScopes = []string{"openid", "email", "profile"}

// provider is what the flows need from the identity provider's discovery
// document.
type provider struct {
	Issuer             string `json:"issuer"`
	AuthorizationURL   string `json:"authorization_endpoint"`
	TokenURL           string `json:"token_endpoint"`
	DeviceAuthorizeURL string `json:"device_authorization_endpoint"`
}

// setup checks c, fills in defaults, and discovers the provider's endpoints.
// The returned context carries c.HTTPClient for golang.org/x/oauth2.
func setup(ctx context.Context, c *Config) (context.Context, *provider, error) {
	if c.ClientID == "" {
		return nil, nil, errors.New("login: no client ID configured; set the OIDC client ID writ is registered with at the identity provider")
	}
	if len(c.Scopes) == 0 {
		c.Scopes = defaultScopes
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.Out == nil {
		c.Out = os.Stderr
	}
	p, err := discover(ctx, c.HTTPClient, c.Issuer)
	if err != nil {
		return nil, nil, err
	}
	return context.WithValue(ctx, oauth2.HTTPClient, c.HTTPClient), p, nil
}

// discover fetches and checks the issuer's discovery document.
func discover(ctx context.Context, hc *http.Client, issuer string) (*provider, error) {
	if err := checkURL("issuer", issuer); err != nil {
		return nil, err
	}
	docURL := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, docURL, nil)
	if err != nil {
		return nil, fmt.Errorf("login: building discovery request for %s: %w", issuer, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("login: fetching %s: %w; check the issuer URL and your network", docURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("login: fetching %s: %s; check the issuer URL", docURL, resp.Status)
	}
	var p provider
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&p); err != nil {
		return nil, fmt.Errorf("login: reading discovery document %s: %w", docURL, err)
	}
	if err := p.check(issuer); err != nil {
		return nil, fmt.Errorf("login: discovery document %s: %w", docURL, err)
	}
	return &p, nil
}

// check refuses a document that names another issuer, since tokens from it
// would carry that issuer and be refused later with a more confusing error,
// and endpoints that would send codes or tokens over plain http.
func (p *provider) check(issuer string) error {
	if p.Issuer != issuer {
		return fmt.Errorf("it names issuer %q, not %q; configure the issuer URL exactly as the identity provider states it", p.Issuer, issuer)
	}
	if err := checkURL("authorization_endpoint", p.AuthorizationURL); err != nil {
		return err
	}
	if err := checkURL("token_endpoint", p.TokenURL); err != nil {
		return err
	}
	if p.DeviceAuthorizeURL == "" {
		return nil
	}
	return checkURL("device_authorization_endpoint", p.DeviceAuthorizeURL)
}

// checkURL requires https, so that codes and tokens never cross a network in
// the clear; plain http is allowed only on loopback, where nothing crosses one.
func checkURL(what, raw string) error {
	if raw == "" {
		return fmt.Errorf("login: no %s URL is set", what)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("login: %s %q is not a URL: %w", what, raw, err)
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("login: %s %q must be an https URL (plain http is allowed only for 127.0.0.1 and localhost)", what, raw)
}

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// oauthConfig is the golang.org/x/oauth2 view of c and p. Credentials go in
// the request body because a public client has no secret to put in a
// Basic authorization header.
func oauthConfig(c *Config, p *provider, redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    c.ClientID,
		RedirectURL: redirectURL,
		Scopes:      c.Scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL:       p.AuthorizationURL,
			TokenURL:      p.TokenURL,
			DeviceAuthURL: p.DeviceAuthorizeURL,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
	}
}

// idTokenOf takes the ID token out of a token response.
func idTokenOf(tok *oauth2.Token) (string, error) {
	s, ok := tok.Extra("id_token").(string)
	if !ok || s == "" {
		return "", errors.New("login: the identity provider's token response has no id_token; check that the openid scope is allowed for this client")
	}
	return s, nil
}
