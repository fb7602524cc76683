package server

import (
	"bytes"
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
