package server

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(strings.NewReader(`
trust_domain: prod.example.com
data_dir: /srv/writ
listen_address: ""
store:
  engine: postgres
  dsn: postgres://writ@db/writ?sslmode=verify-full
ca:
  key_type: ec-p384
  ttl: 48h
svid:
  x509_ttl: 1800
log:
  format: json
`))
	if err != nil {
		t.Fatal(err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ListenAddress != "" {
		t.Errorf("an explicit empty listen_address must disable the listener, got %q", c.ListenAddress)
	}
	if c.OpsAddress != "127.0.0.1:8082" {
		t.Errorf("ops_address default lost: %q", c.OpsAddress)
	}
	if c.SVID.X509TTL.Duration != 30*time.Minute || c.CA.TTL.Duration != 48*time.Hour {
		t.Errorf("durations: %v %v", c.SVID.X509TTL, c.CA.TTL)
	}
	if c.Limits.IssuancePerIdentity != DefaultIssuancePerIdentity || c.Limits.RefusalSummaryInterval.Duration != DefaultRefusalSummaryInterval {
		t.Errorf("limits defaults: %+v", c.Limits)
	}
	if c.AdminSocket != "/srv/writ/admin.sock" {
		t.Errorf("admin socket %q", c.AdminSocket)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		"trust_domain: Prod.Example":                         "trust_domain",
		"trust_domain: spiffe://example.org":                 "trust_domain",
		"store: {engine: mysql}":                             "store.engine",
		"store: {engine: postgres}":                          "store.dsn",
		"ca: {key_type: dsa}":                                "ca.key_type",
		"ca: {ttl: 10m}":                                     "ca.ttl",
		"svid: {x509_ttl: 48h}":                              "svid.x509_ttl",
		"log: {level: loud}":                                 "log.level",
		"listen_address: nowhere":                            "listen_address",
		"server_id: Has Spaces":                              "server_id",
		"admin_uids: [-1]":                                   "admin_uids[0]",
		"limits: {issuance_per_identity: {rate: -1}}":        "limits.issuance_per_identity.rate",
		"limits: {issuance_per_identity: {burst: -5}}":       "limits.issuance_per_identity.burst",
		"limits: {unauthenticated_per_source: {rate: .nan}}": "limits.unauthenticated_per_source.rate",
		"limits: {refusal_summary_interval: 2h}":             "limits.refusal_summary_interval",
		"limits: {requests_per_identity: {burst: -1}}":       "limits.requests_per_identity.burst",
	}
	for in, field := range cases {
		c, err := ParseConfig(strings.NewReader("data_dir: /srv/writ\n" + in))
		if err != nil {
			t.Errorf("%q: parse: %v", in, err)
			continue
		}
		c.Defaults()
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%q: got %v, want an error naming %s", in, err, field)
		}
	}
	for in, want := range map[string]string{
		"trust_domian: x":       "trust_domian",
		"svid: {x509_ttl: -5s}": "not a duration",
		"ca: [1, 2]":            "ca",
	} {
		if _, err := ParseConfig(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error mentioning %q", in, err, want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("trust_domain: example.org\ndata_dir: /tmp/x\n")
	f.Add("store: {engine: postgres, dsn: postgres://a@b/c}\nca: {ttl: 24h}\n")
	f.Add("svid:\n  x509_ttl: 3600\n  max_x509_ttl: 1h\n")
	f.Add("admin_uids: [0, 1000]\nlog: {level: debug, format: json}\n")
	f.Add("webhooks: [{url: https://hooks.example.com/w, events: [created, approved]}]\n")
	f.Add("webhooks: [{url: \"http://u:p@10.0.0.1/\"}]\n")
	f.Add("{{{")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseConfig(strings.NewReader(in))
		if err != nil {
			return
		}
		c.Defaults()
		if err := c.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatal("empty validation error")
			}
			return
		}
		// A valid config always yields a usable trust domain.
		if c.trustDomain().IsZero() {
			t.Fatalf("valid config %q has no trust domain", in)
		}
	})
}

// TestREADMEListsEverySetting keeps the README's configuration block the
// same as ConfigReference, which `writ server --help` prints.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(ConfigReference, "\n")
	for _, l := range lines[2:] {
		l = strings.TrimPrefix(l, "  ")
		if strings.TrimSpace(l) == "" {
			continue
		}
		if !strings.Contains(string(readme), l+"\n") {
			t.Errorf("README.md lacks the configuration line %q: copy ConfigReference into it", l)
		}
	}
}
