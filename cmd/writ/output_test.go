package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	writv1 "writ.dev/writ/api/writ/v1"
)

func TestHelp(t *testing.T) {
	type cmdFunc = func(context.Context, []string, io.Writer, io.Writer) error
	tests := []struct {
		run   cmdFunc
		args  []string
		flags []string
	}{
		{runEntry, []string{"create", "--help"}, []string{"--spiffe-id ID", "--parent-id ID", "--selector type:value", "--x509-ttl", "--jwt-ttl", "--dns", "--hint", "--expires-at", "--expires-in", "--id", "--file", "--json", "--socket"}},
		{runEntry, []string{"update", "-h"}, []string{"--id id", "--clear-dns", "--clear-expiry", "--selector", "--json", "--socket"}},
		{runEntry, []string{"delete", "--help"}, []string{"--id", "--socket"}},
		{runEntry, []string{"show", "--help"}, []string{"--id", "--json", "--socket"}},
		{runEntry, []string{"list", "--help"}, []string{"--spiffe-id", "--parent-id", "--selector", "--hint", "--json", "--socket"}},
		{runSVID, []string{"mint", "--help"}, []string{"--spiffe-id", "--ttl", "--dns", "--key-type type", "(default: ec-p256)", "--out directory", "--json", "--socket"}},
		{runBundle, []string{"show", "--help"}, []string{"--format format", "(default: pem)", "--socket"}},
		{runStatus, []string{"--help"}, []string{"--json", "(default: false)", "--socket"}},
		{runEntry, []string{"--help"}, []string{"create", "update", "delete", "show", "list"}},
		{runSVID, []string{"help"}, []string{"mint"}},
		{runBundle, []string{"-h"}, []string{"show"}},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if err := tt.run(context.Background(), tt.args, &out, &errOut); err != nil {
			t.Errorf("%v: %v", tt.args, err)
			continue
		}
		if errOut.Len() != 0 {
			t.Errorf("%v wrote to stderr: %q", tt.args, errOut.String())
		}
		help := out.String()
		if !strings.HasPrefix(help, "Usage: writ ") {
			t.Errorf("%v: help starts %q", tt.args, help[:min(40, len(help))])
		}
		for _, f := range tt.flags {
			if !strings.Contains(help, f) {
				t.Errorf("%v: help lacks %q:\n%s", tt.args, f, help)
			}
		}
		// Every flag line shows its default or says it is required.
		for _, line := range strings.Split(help, "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "--") && !strings.HasSuffix(line, ")") {
				t.Errorf("%v: flag line without default: %q", tt.args, line)
			}
		}
		if strings.Contains(help, "--socket") && !strings.Contains(help, "$WRIT_SOCKET, else ./.writ/admin.sock if it exists, else /var/lib/writ/admin.sock") {
			t.Errorf("%v: --socket default not explained", tt.args)
		}
	}
}

func TestFormatSeconds(t *testing.T) {
	for secs, want := range map[int64]string{
		1: "1s", 59: "59s", 60: "1m", 90: "1m30s", 300: "5m", 3600: "1h", 5400: "1h30m", 3630: "1h0m30s", 86400: "24h",
	} {
		if got := formatSeconds(secs); got != want {
			t.Errorf("formatSeconds(%d) = %q, want %q", secs, got, want)
		}
	}
	if formatTTL(0) != "default" {
		t.Errorf("formatTTL(0) = %q", formatTTL(0))
	}
}

func TestProtoJSONIsStable(t *testing.T) {
	e := &writv1.Entry{Id: "a", SpiffeId: "spiffe://example.org/a", Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:1"}}, X509TtlSeconds: 60}
	first, err := protoJSON(e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"id":"a","spiffe_id":"spiffe://example.org/a","parent_id":"","selectors":[{"type":"unix","value":"uid:1"}],"x509_ttl_seconds":"60","jwt_ttl_seconds":"0","dns_names":[],"hint":"","expires_at":"0","revision":"0","created_at":"0","updated_at":"0","parent_selectors":[]}`
	if string(first) != want {
		t.Errorf("protoJSON =\n%s\nwant\n%s", first, want)
	}
}
