package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"writ.dev/writ/agent/output"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
	"writ.dev/writ/internal/pemfile"
	"writ.dev/writ/person/login"
)

const (
	// serverEnv points client commands at a server's remote API, reached
	// over mTLS with the identity `writ login` saved, instead of the admin
	// socket.
	serverEnv = "WRIT_SERVER"
	// identityDirEnv overrides where `writ login` keeps the identity.
	identityDirEnv = "WRIT_IDENTITY_DIR"
)

// identityDir is where a person's SVID, key and bundle live.
func identityDir() (string, error) {
	if d := os.Getenv(identityDirEnv); d != "" {
		return d, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory for the identity: set %s", identityDirEnv)
	}
	return filepath.Join(base, "writ", "identity"), nil
}

func runLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ login",
		"Sign in as a person: the company's identity provider vouches for you (a browser sign-in,\n"+
			"or --device on a machine without one), and the server gives you a short-lived X.509-SVID,\n"+
			"spiffe://TD/person/DOMAIN/NAME, for a key made here that never leaves this machine. It is saved\n"+
			"in $"+identityDirEnv+" (default ~/.config/writ/identity); with "+serverEnv+" set, writ commands\n"+
			"reach the server with it over mTLS.",
		"writ login --server HOST:PORT --bundle FILE [--device] [--trust-domain NAME]")
	serverAddr := c.fs.String("server", os.Getenv(serverEnv), "the server's gRPC `address` (default $"+serverEnv+")")
	bundleFile := c.fs.String("bundle", "", "PEM `file` of the trust domain's authorities, to verify the server with ('writ bundle show')")
	td := c.fs.String("trust-domain", "", "the trust `domain`, when the bundle's authorities do not name it")
	device := c.fs.Bool("device", false, "sign in with a code on another device (for machines without a browser)")
	timeout := c.fs.Duration("timeout", 10*time.Minute, "how long to wait for the sign-in")
	c.required("server", "bundle")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	bundle, trust, err := loadTrust(*bundleFile, *td)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*serverAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(bundle, serverAuthorizer(trust)))))
	if err != nil {
		return err
	}
	defer conn.Close()
	api := writv1.NewPersonServiceClient(conn)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	lc, err := api.GetLoginConfig(ctx, &writv1.GetLoginConfigRequest{})
	if err != nil {
		return fmt.Errorf("asking the server how to sign in: %w", err)
	}
	cfg := login.Config{Issuer: lc.GetIssuer(), ClientID: lc.GetClientId(), Out: stderr, OpenBrowser: openBrowser}
	flow := login.AuthCode
	if *device {
		flow = login.Device
	}
	idToken, err := flow(ctx, cfg)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	resp, err := api.Login(ctx, &writv1.LoginRequest{IdToken: idToken, Csr: csr})
	if err != nil {
		return fmt.Errorf("signing in: %w", err)
	}
	chain, err := parseDERs(resp.GetCertChain())
	if err != nil {
		return err
	}
	roots, err := parseDERs(resp.GetBundle())
	if err != nil {
		return err
	}
	dir, err := identityDir()
	if err != nil {
		return err
	}
	w, err := output.New(output.Options{Dir: dir})
	if err != nil {
		return err
	}
	if _, err := w.Write(ctx, output.Material{Chain: chain, Key: key, Bundle: roots}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "signed in as %s until %s (saved in %s)\n", resp.GetSpiffeId(),
		time.Unix(resp.GetExpiresAt(), 0).UTC().Format(time.RFC3339), dir)
	return err
}

// loadTrust reads the trust anchors and names their trust domain.
func loadTrust(file, tdName string) (*x509bundle.Bundle, spiffeid.TrustDomain, error) {
	certs, err := pemfile.ReadCertificates(file)
	if err != nil {
		return nil, spiffeid.TrustDomain{}, err
	}
	var td spiffeid.TrustDomain
	if tdName != "" {
		if td, err = spiffeid.TrustDomainFromString(tdName); err != nil {
			return nil, td, err
		}
	}
	for _, c := range certs {
		for _, u := range c.URIs {
			if id, err := spiffeid.FromURI(u); err == nil && td.IsZero() {
				td = id.TrustDomain()
			}
		}
	}
	if td.IsZero() {
		return nil, td, errors.New("the bundle's authorities do not name the trust domain: pass --trust-domain")
	}
	return x509bundle.FromX509Authorities(td, certs), td, nil
}

// serverAuthorizer accepts only the trust domain's writ servers.
func serverAuthorizer(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if !id.MemberOf(td) || !identity.IsServerID(id) {
			return fmt.Errorf("%s is not a writ server of %s", id, td)
		}
		return nil
	})
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// openBrowser opens url with the desktop's opener, when there is one.
func openBrowser(url string) error {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return err
	}
	return exec.Command(path, url).Start()
}
