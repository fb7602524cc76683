package server

import (
	"context"
	"slices"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/task/review"
)

// pendingRequests lists the requests still waiting at now, oldest first,
// marking as stale those that have waited more than half their
// pending_ttl: a reviewer is probably missing.
func (s *Server) pendingRequests(ctx context.Context, now time.Time) ([]*writv1.PendingRequest, error) {
	recs, err := s.store.ListRequests(ctx, string(review.StatePending))
	if err != nil {
		return nil, storeStatus(err)
	}
	var srs []storedRequest
	for _, rec := range recs {
		sr, err := s.requestFromRecord(rec)
		if err != nil {
			return nil, err
		}
		if now.Before(sr.r.PendingUntil) {
			srs = append(srs, sr)
		}
	}
	slices.SortStableFunc(srs, func(a, b storedRequest) int { return a.r.CreatedAt.Compare(b.r.CreatedAt) })
	out := make([]*writv1.PendingRequest, len(srs))
	for i, sr := range srs {
		stale := now.Sub(sr.r.CreatedAt) > sr.r.PendingUntil.Sub(sr.r.CreatedAt)/2
		out[i] = &writv1.PendingRequest{Request: requestToProto(sr), Stale: stale}
	}
	return out, nil
}
