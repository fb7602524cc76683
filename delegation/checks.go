package delegation

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// checkSPIFFEID requires s to be a SPIFFE ID of a workload or person, not
// of a trust domain alone.
func checkSPIFFEID(s, what string) error {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return fmt.Errorf("%s %q is not a SPIFFE ID: %w", what, truncate(s), err)
	}
	if id.Path() == "" {
		return fmt.Errorf("%s %q names a trust domain, not a workload or person: give its full SPIFFE ID", what, truncate(s))
	}
	return nil
}

// checkActors requires one to max actors, each a SPIFFE ID.
func checkActors(actors []string, max int) error {
	if len(actors) == 0 {
		return errors.New("no actor: a delegation token names the agent acting for the subject")
	}
	if len(actors) > max {
		return fmt.Errorf("actor chain of %d is deeper than the %d allowed", len(actors), max)
	}
	for i, a := range actors {
		if err := checkSPIFFEID(a, fmt.Sprintf("actor %d", i+1)); err != nil {
			return err
		}
	}
	return nil
}

// checkAudience requires at least one audience and no empty one.
func checkAudience(aud []string) error {
	if len(aud) == 0 {
		return errors.New("audience is empty: name the resource servers the token is for")
	}
	for i, a := range aud {
		if a == "" {
			return fmt.Errorf("audience %d of %d is an empty string", i+1, len(aud))
		}
	}
	return nil
}

// checkThumbprint requires the form Thumbprint produces.
func checkThumbprint(t string) error {
	if t == "" {
		return errors.New(`no certificate thumbprint ("cnf"): a delegation token is bound to its actor's certificate`)
	}
	if sum, err := b64.Strict().DecodeString(t); err != nil || len(sum) != 32 {
		return errors.New(`certificate thumbprint ("cnf" "x5t#S256") is not a base64url SHA-256 digest: compute it with Thumbprint`)
	}
	return nil
}

// checkIssuerURL requires an absolute https URL (http for loopback hosts,
// for local testing), since relying parties compare "iss" byte for byte
// with the token endpoint they trust.
func checkIssuerURL(s string) error {
	if s == "" {
		return errors.New("issuer is empty: give the token endpoint's https URL")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("issuer %q is not an absolute URL: give one like https://writ.example.org/token", s)
	}
	switch {
	case u.User != nil:
		return fmt.Errorf("issuer %q carries user information: remove it", s)
	case strings.ContainsAny(s, "?#"):
		return fmt.Errorf("issuer %q has a query or fragment: remove it", s)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("issuer %q must use https (http only for loopback hosts)", s)
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
