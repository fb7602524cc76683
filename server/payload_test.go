package server

import (
	"bytes"
	"maps"
	"slices"
	"testing"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

// TestIssuanceEventsOmitEmptyDetails mints an X.509-SVID without DNS names
// and checks its event carries no empty detail: one issuance event per SVID
// makes every byte count, and a null field says nothing.
func TestIssuanceEventsOmitEmptyDetails(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	_, csr := newCSR(t)
	if _, err := writv1.NewSVIDServiceClient(cc).MintX509SVID(t.Context(), &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/x", Csr: csr}); err != nil {
		t.Fatal(err)
	}
	resp, err := writv1.NewAuditServiceClient(cc).ReadEvents(t.Context(), &writv1.ReadAuditEventsRequest{Limit: maxAuditPage})
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	for _, e := range resp.GetEvents() {
		ev, err := audit.DecodeEvent(e.GetEvent())
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == audit.EventSVIDX509Mint {
			raw = e.GetEvent()
		}
	}
	if raw == nil {
		t.Fatal("no X.509-SVID issuance event")
	}
	t.Logf("%s event: %d bytes", audit.EventSVIDX509Mint, len(raw))
	for _, empty := range []string{"null", `""`, "[]", "{}", "dns_names"} {
		if bytes.Contains(raw, []byte(empty)) {
			t.Errorf("event %s holds an empty detail (%s)", raw, empty)
		}
	}
}

// TestOmitEmptyKeepsValues checks only details that say nothing go: a zero
// count or a false flag is an answer, not an absence.
func TestOmitEmptyKeepsValues(t *testing.T) {
	var nilSlice []string
	var nilPtr *int
	got := omitEmpty(map[string]any{
		"nil": nil, "empty": "", "nil_slice": nilSlice, "empty_slice": []string{}, "empty_map": map[string]string{}, "nil_ptr": nilPtr,
		"zero": 0, "false": false, "name": "x", "list": []string{"a"}, "facts": map[string]string{"k": "v"},
	})
	want := []string{"facts", "false", "list", "name", "zero"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("kept %v, want %v", keys, want)
	}
}
