package delegation

import "testing"

// Token issuance beside its limit, ca's BenchmarkECDSAP256Sign: one ES256
// signature plus the claims checks, JSON and base64url around it.
func BenchmarkIssueES256(b *testing.B) {
	s := newTestSigner(b, newP256(b))
	c := testClaims(newCert(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Issue(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueEdDSA(b *testing.B) {
	s := newTestSigner(b, newEd25519(b))
	c := testClaims(newCert(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Issue(c); err != nil {
			b.Fatal(err)
		}
	}
}
