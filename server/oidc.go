package server

import (
	"net/http"
	"strings"

	"writ.dev/writ/ca"
)

// oidcCacheControl lets relying parties cache discovery and keys for a few
// minutes. A successor key signs as soon as it is made, so a relying party
// with a cached JWKS may refuse its first tokens for up to this long; the
// prepared → active rotation journal will publish keys before they sign.
const oidcCacheControl = "public, max-age=300"

// jwksURL is where the JWKS is served under issuer.
func jwksURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/keys"
}

// oidcHandler serves what a cloud IAM reads to trust JWT-SVIDs: the OIDC
// discovery document and the JWKS of the trust domain's JWT keys.
func (s *Server) oidcHandler() http.Handler {
	issuer := s.cfg.OIDCIssuer
	discovery, discoveryErr := ca.OIDCDiscovery(issuer, jwksURL(issuer))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if discoveryErr != nil {
			s.log.Error("OIDC discovery document", "err", discoveryErr)
			http.Error(w, "discovery unavailable", http.StatusInternalServerError)
			return
		}
		writeJSON(w, discovery)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		body, err := ca.JWKS(s.jwt.Keys())
		if err != nil {
			s.log.Error("JWKS", "err", err)
			http.Error(w, "keys unavailable", http.StatusInternalServerError)
			return
		}
		writeJSON(w, body)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", oidcCacheControl)
	_, _ = w.Write(body)
}
