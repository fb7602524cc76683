package ca

import (
	"testing"
	"time"

	"writ.dev/writ/keystore"
)

// JWT-SVID issuance beside its limit, BenchmarkECDSAP256Sign: one ES256
// signature plus the header, claims and base64url around it.

func jwtBenchSetup(b *testing.B) (*JWTAuthority, JWTSVIDParams, time.Time) {
	now := time.Now()
	a := newTestJWTAuthority(b, keystore.ECP256, now.Add(24*time.Hour))
	return a, testJWTParams(b), now
}

func BenchmarkSignJWTSVID(b *testing.B) {
	a, p, now := jwtBenchSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.SignJWTSVID(p, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignJWTSVIDParallel(b *testing.B) {
	a, p, now := jwtBenchSetup(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.SignJWTSVID(p, now); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The same through a signer that shows nothing but crypto.Signer, as an
// HSM-backed keystore would, to show the wrapper itself costs nothing.
func BenchmarkSignJWTSVIDOpaqueSigner(b *testing.B) {
	a, p, now := jwtBenchSetup(b)
	a.Signer = wrapSigner(a.Signer)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.SignJWTSVID(p, now); err != nil {
			b.Fatal(err)
		}
	}
}
