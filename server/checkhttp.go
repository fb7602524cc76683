package server

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	writv1 "writ.dev/writ/api/writ/v1"
)

// maxCheckBody bounds a JSON check request: the gRPC limit of Check
// (evidenceMessage) with room for base64, which makes DER a third larger.
const maxCheckBody = 128 << 10

// checkHTTP serves POST /v1/check: DecisionService.Check as JSON (the
// protobuf JSON mapping of CheckRequest and CheckResponse), for resource
// servers that speak HTTP. The resource server authenticates with its
// X.509-SVID on the TLS connection, as on gRPC.
func (s *Server) checkHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeJSONError(w, http.StatusUnauthorized, "present your X.509-SVID")
		return
	}
	id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		writeJSONError(w, http.StatusUnauthorized, "the client certificate is not an X.509-SVID: "+outsideError(err))
		return
	}
	// The body is capped by limitBody (tokenHandler).
	body, err := io.ReadAll(r.Body)
	if limit, ok := bodyTooLarge(err); ok {
		writeJSONError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes: send one CheckRequest", limit))
		return
	}
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "the body could not be read: send one CheckRequest in JSON")
		return
	}
	var req writv1.CheckRequest
	if err := (protojson.UnmarshalOptions{}).Unmarshal(body, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "the body is not a CheckRequest in JSON: "+outsideError(err))
		return
	}
	ctx := context.WithValue(r.Context(), callerKey{}, Caller{ID: id})
	if err := adminOrMember(s, Caller{ID: id}); err != nil {
		writeJSONError(w, http.StatusForbidden, err.Error())
		return
	}
	resp, err := (&decisionService{s: s}).Check(ctx, &req)
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.ResourceExhausted {
			w.Header().Set("Retry-After", s.requests.retryAfter())
		}
		writeJSONError(w, httpStatus(st.Code()), st.Message())
		return
	}
	out, err := protojson.Marshal(resp)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(out)
}

func httpStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := protojson.Marshal(&writv1.CheckResponse{Reason: msg})
	w.Write(b)
}
