package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"writ.dev/writ/agent/output"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// runSVID runs `writ svid mint [flags]`.
func runSVID(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Work with SVIDs, the certificates that carry SPIFFE IDs."
	return runGroup(ctx, "writ svid", summary, []subcommand{
		{"mint", "make a key here and have the server certify it as an X.509-SVID, written to files; or, with --jwt, mint a JWT-SVID", svidMint},
	}, args, stdout, stderr)
}

var keyTypes = []string{"ec-p256", "ec-p384", "rsa-2048", "rsa-3072"}

func generateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "ec-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ec-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("key-type: %q is not supported; use one of %s", keyType, strings.Join(keyTypes, ", "))
}

func svidMint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ svid mint",
		"Mint an X.509-SVID. The private key is generated on this machine and never sent: the server\n"+
			"receives a certificate request and certifies its public key. Written to the --out directory\n"+
			"(created with mode 0700 if missing): "+output.SVIDFile+" (the certificate, then intermediates),\n"+
			output.KeyFile+" (PKCS#8 private key, mode 0600) and "+output.BundleFile+" (the trust domain's roots),\n"+
			"the same files 'writ agent --out' and 'writ fetch --out' write. Each file is replaced\n"+
			"atomically, so a reader never sees half a file.\n\n"+
			"With --jwt, mint a JWT-SVID for the given audiences instead and print the token, or write it\n"+
			"to DIR/jwt-AUDIENCE.token (the first audience; mode 0600, replaced atomically) with --out.",
		"writ svid mint --spiffe-id ID --out DIR [--ttl DURATION] [--dns NAME...] [--key-type TYPE] [--json]",
		"writ svid mint --jwt --spiffe-id ID --audience A [--audience B...] [--ttl DURATION] [--out DIR] [--json]")
	spiffeID := c.fs.String("spiffe-id", "", "SPIFFE `ID` to certify")
	ttl := c.fs.String("ttl", "", "lifetime, a `duration` (1h) or seconds (3600); unset means the server default")
	var dns stringList
	c.fs.Var(&dns, "dns", "DNS `name` to include; repeatable")
	keyType := c.fs.String("key-type", "ec-p256", "`type` of key to generate: "+strings.Join(keyTypes, ", "))
	out := c.fs.String("out", "", "`directory` to write the files to; required for an X.509-SVID")
	jwt := c.fs.Bool("jwt", false, "mint a JWT-SVID rather than an X.509-SVID")
	var audience stringList
	c.fs.Var(&audience, "audience", "`name` of a party that may accept the JWT-SVID; repeatable, at least one with --jwt")
	asJSON := c.fs.Bool("json", false, "print the result as JSON")
	socket := c.socketFlag()
	// Which flags are needed depends on --jwt: checked below, all at once.
	c.showRequired("spiffe-id")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	needed := []string{"spiffe-id", "out"}
	if *jwt {
		needed[1] = "audience"
		for _, f := range []string{"dns", "key-type"} {
			if c.set(f) {
				return c.usageError("--%s is for X.509-SVIDs; a JWT-SVID has no key of its own or DNS names", f)
			}
		}
	} else if c.set("audience") {
		return c.usageError("--audience is for JWT-SVIDs: add --jwt")
	}
	if err := c.need(needed...); err != nil {
		return err
	}
	id, err := identity.ParseID("spiffe-id", *spiffeID)
	if err != nil {
		return err
	}
	var ttlSeconds int64
	if c.set("ttl") {
		if ttlSeconds, err = parseTTLSeconds("ttl", *ttl); err != nil {
			return err
		}
	}
	for i, a := range audience {
		if strings.TrimSpace(a) == "" {
			return fmt.Errorf("audience: value %d of %d is empty", i+1, len(audience))
		}
	}
	if *jwt {
		return svidMintJWT(ctx, *socket, id.String(), audience, ttlSeconds, *out, *asJSON, stdout)
	}
	dir, err := filepath.Abs(*out)
	if err != nil {
		return fmt.Errorf("out: %w", err)
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return fmt.Errorf("out: %s exists and is not a directory", dir)
	}

	key, err := generateKey(*keyType)
	if err != nil {
		return err
	}
	// The server uses only the CSR's public key; the SPIFFE ID and DNS names
	// go in too so the request reads correctly to anyone inspecting it.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs:     []*url.URL{id.URL()},
		DNSNames: dns,
	}, key)
	if err != nil {
		return fmt.Errorf("cannot build the certificate request: %w", err)
	}

	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.svids.MintX509SVID(ctx, &writv1.MintX509SVIDRequest{
		SpiffeId:   id.String(),
		Csr:        csr,
		TtlSeconds: ttlSeconds,
		DnsNames:   dns,
	})
	if err != nil {
		return cl.explain(err)
	}
	leaf, err := checkMinted(resp, key.Public(), id.String(), time.Now())
	if err != nil {
		return fmt.Errorf("the server's answer is unusable, nothing was written: %w", err)
	}

	chain, err := parseDERs(resp.GetCertChain())
	if err != nil {
		return err
	}
	roots, err := parseDERs(resp.GetBundle())
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
	paths := map[string]string{}
	for _, name := range []string{output.SVIDFile, output.KeyFile, output.BundleFile} {
		paths[name] = filepath.Join(w.Dir(), name)
	}

	expires := leaf.NotAfter
	if resp.GetExpiresAt() != 0 {
		expires = time.Unix(resp.GetExpiresAt(), 0)
	}
	if *asJSON {
		b, err := json.Marshal(struct {
			SPIFFEID  string `json:"spiffe_id"`
			ExpiresAt string `json:"expires_at"`
			SVID      string `json:"svid"`
			Key       string `json:"key"`
			Bundle    string `json:"bundle"`
		}{id.String(), expires.UTC().Format(time.RFC3339), paths[output.SVIDFile], paths[output.KeyFile], paths[output.BundleFile]})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SPIFFE ID:\t%s\n", id)
	fmt.Fprintf(tw, "Expires at:\t%s\n", expires.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "Certificate:\t%s\n", paths[output.SVIDFile])
	fmt.Fprintf(tw, "Private key:\t%s\n", paths[output.KeyFile])
	fmt.Fprintf(tw, "Bundle:\t%s\n", paths[output.BundleFile])
	return tw.Flush()
}

// svidMintJWT has the server sign a JWT-SVID and prints it, or writes it to
// dir. The token is checked to be a JWT-SVID for id before anything is written.
func svidMintJWT(ctx context.Context, socket target, id string, audience []string, ttlSeconds int64, out string, asJSON bool, stdout io.Writer) error {
	if out != "" {
		if fi, err := os.Stat(out); err == nil && !fi.IsDir() {
			return fmt.Errorf("out: %s exists and is not a directory", out)
		}
	}
	cl, err := dial(socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.svids.MintJWTSVID(ctx, &writv1.MintJWTSVIDRequest{
		SpiffeId:   id,
		Audience:   audience,
		TtlSeconds: ttlSeconds,
	})
	if err != nil {
		return cl.explain(err)
	}
	if err := checkMintedJWT(resp.GetToken(), id); err != nil {
		return fmt.Errorf("the server's answer is unusable, nothing was written: %w", err)
	}
	expires := time.Unix(resp.GetExpiresAt(), 0).UTC().Format(time.RFC3339)
	var path string
	if out != "" {
		if path, err = output.WriteJWT(out, audience[0], resp.GetToken()); err != nil {
			return err
		}
	}
	switch {
	case asJSON:
		v := struct {
			SPIFFEID  string   `json:"spiffe_id"`
			Audience  []string `json:"audience"`
			ExpiresAt string   `json:"expires_at"`
			Token     string   `json:"token,omitempty"`
			File      string   `json:"file,omitempty"`
		}{SPIFFEID: id, Audience: audience, ExpiresAt: expires, File: path}
		if path == "" {
			v.Token = resp.GetToken()
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	case path != "":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "SPIFFE ID:\t%s\n", id)
		fmt.Fprintf(tw, "Audience:\t%s\n", strings.Join(audience, ", "))
		fmt.Fprintf(tw, "Expires at:\t%s\n", expires)
		fmt.Fprintf(tw, "Token:\t%s\n", path)
		return tw.Flush()
	default:
		// The token alone, so that $(writ svid mint --jwt ...) is the token.
		_, err := fmt.Fprintln(stdout, resp.GetToken())
		return err
	}
}

// checkMintedJWT makes sure the token is a compact JWS whose subject is id;
// the signature is for relying parties to check against the bundle.
func checkMintedJWT(token, id string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errors.New("the token is not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("the token's claims: %w", err)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return fmt.Errorf("the token's claims: %w", err)
	}
	if claims.Sub != id {
		return fmt.Errorf("the token is for %q, not %s", claims.Sub, id)
	}
	return nil
}

// checkMinted makes sure the answer is a chain for our key and the asked-for
// SPIFFE ID that verifies against the returned bundle, so that a broken
// answer never replaces working files.
func checkMinted(resp *writv1.MintX509SVIDResponse, pub crypto.PublicKey, spiffeID string, now time.Time) (*x509.Certificate, error) {
	if len(resp.GetCertChain()) == 0 {
		return nil, errors.New("no certificate")
	}
	if len(resp.GetBundle()) == 0 {
		return nil, errors.New("no bundle")
	}
	chain := make([]*x509.Certificate, len(resp.GetCertChain()))
	for i, der := range resp.GetCertChain() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		chain[i] = cert
	}
	leaf := chain[0]
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return nil, errors.New("the certificate is not for the key generated here")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeID {
		return nil, fmt.Errorf("the certificate does not name %s as its only URI", spiffeID)
	}
	roots := x509.NewCertPool()
	for i, der := range resp.GetBundle() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("bundle certificate %d: %w", i, err)
		}
		roots.AddCert(cert)
	}
	inter := x509.NewCertPool()
	for _, cert := range chain[1:] {
		inter.AddCert(cert)
	}
	// A server clock slightly ahead of ours is not the server's fault; the
	// check is about the chain and the key.
	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("the certificate does not verify against the bundle: %w", err)
	}
	return leaf, nil
}

func pemCerts(ders [][]byte) []byte {
	var buf bytes.Buffer
	for _, der := range ders {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return buf.Bytes()
}
