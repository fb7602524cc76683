package httpproxy

import (
	"context"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type callerKey struct{}

// RequireCaller is middleware for an upstream behind the gateway: it
// serves next only requests whose Writ-Caller header VerifyRequest
// accepts, with the verified caller in the context (CallerFromContext),
// and answers every other request 401 with the reason.
func RequireCaller(next http.Handler, bundles x509bundle.Source, gateways spiffeid.Matcher, audience string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := VerifyRequest(r, bundles, gateways, audience, time.Now())
		if err != nil {
			refuse(w, http.StatusUnauthorized, err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, v)))
	})
}

// CallerFromContext returns the caller RequireCaller verified.
func CallerFromContext(ctx context.Context) (VerifiedCaller, bool) {
	v, ok := ctx.Value(callerKey{}).(VerifiedCaller)
	return v, ok
}
