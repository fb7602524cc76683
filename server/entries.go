package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

const (
	// maxBatchEntries bounds one CreateEntries call, which is stored in one
	// transaction.
	maxBatchEntries = 100_000
	defaultPageSize = 1000
	maxPageSize     = 10_000
)

type entryService struct {
	writv1.UnimplementedEntryServiceServer
	s *Server
}

func (e *entryService) CreateEntries(ctx context.Context, req *writv1.CreateEntriesRequest) (*writv1.CreateEntriesResponse, error) {
	n := len(req.GetEntries())
	if n == 0 {
		return nil, status.Error(codes.InvalidArgument, "entries: at least one entry is required")
	}
	if n > maxBatchEntries {
		return nil, status.Errorf(codes.InvalidArgument, "entries: %d entries in one call; at most %d: split the batch", n, maxBatchEntries)
	}
	// Validate the whole batch before writing anything, so a bad entry at the
	// end leaves the store untouched and the error names its index.
	recs := make([]store.Entry, n)
	for i, pe := range req.GetEntries() {
		if pe.GetRevision() != 0 || pe.GetCreatedAt() != 0 || pe.GetUpdatedAt() != 0 {
			return nil, status.Errorf(codes.InvalidArgument, "entries[%d]: revision, created_at and updated_at are set by the server: leave them empty", i)
		}
		r, err := e.s.ruleFromProto(pe)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "entries[%d].%v", i, err)
		}
		recs[i] = entryFromRule(r)
	}
	// IDs are assigned here rather than by the store so that each entry's
	// audit event, written in the same transaction, can name it.
	evs := make([]store.AuditEvent, n)
	for i := range recs {
		if recs[i].ID == "" {
			recs[i].ID = store.NewID()
		}
		ev, err := e.s.event(ctx, audit.EventEntryCreate, recs[i].ID, entryDetails(recs[i]))
		if err != nil {
			return nil, err
		}
		evs[i] = ev
	}
	out, err := e.s.store.CreateEntries(ctx, recs, evs...)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &writv1.CreateEntriesResponse{Entries: make([]*writv1.Entry, len(out))}
	for i, r := range out {
		resp.Entries[i] = entryToProto(r)
	}
	e.s.log.Info("entries created", "count", len(out), "revision", revisionOf(out), "caller", callerString(ctx))
	return resp, nil
}

func (e *entryService) UpdateEntry(ctx context.Context, req *writv1.UpdateEntryRequest) (*writv1.Entry, error) {
	pe := req.GetEntry()
	if pe == nil || pe.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "entry.id: is required to update an entry")
	}
	r, err := e.s.ruleFromProto(pe)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "entry.%v", err)
	}
	rec := entryFromRule(r)
	rec.Revision = pe.GetRevision()
	ev, err := e.s.event(ctx, audit.EventEntryUpdate, rec.ID, entryDetails(rec))
	if err != nil {
		return nil, err
	}
	out, err := e.s.store.UpdateEntry(ctx, rec, ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	e.s.log.Info("entry updated", "id", out.ID, "spiffe_id", out.SPIFFEID, "revision", out.Revision, "caller", callerString(ctx))
	return entryToProto(out), nil
}

func (e *entryService) DeleteEntry(ctx context.Context, req *writv1.DeleteEntryRequest) (*writv1.Entry, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	ev, err := e.s.event(ctx, audit.EventEntryDelete, req.GetId(), nil)
	if err != nil {
		return nil, err
	}
	out, err := e.s.store.DeleteEntry(ctx, req.GetId(), ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	e.s.log.Info("entry deleted", "id", out.ID, "spiffe_id", out.SPIFFEID, "caller", callerString(ctx))
	return entryToProto(out), nil
}

func (e *entryService) GetEntry(ctx context.Context, req *writv1.GetEntryRequest) (*writv1.Entry, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	out, err := e.s.store.GetEntry(ctx, req.GetId())
	if err != nil {
		return nil, storeStatus(err)
	}
	return entryToProto(out), nil
}

func (e *entryService) ListEntries(ctx context.Context, req *writv1.ListEntriesRequest) (*writv1.ListEntriesResponse, error) {
	f := store.EntryFilter{SPIFFEID: req.GetSpiffeId(), ParentID: req.GetParentId(), Hint: req.GetHint()}
	if f.SPIFFEID != "" {
		if _, err := identity.ParseID("spiffe_id", f.SPIFFEID); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if f.ParentID != "" {
		if _, err := identity.ParseID("parent_id", f.ParentID); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	for i, ps := range req.GetSelectors() {
		sel := identity.Selector{Type: ps.GetType(), Value: ps.GetValue()}
		if err := identity.ValidateSelector(fmt.Sprintf("selectors[%d]", i), sel); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		f.Selectors = append(f.Selectors, store.Selector{Type: sel.Type, Value: sel.Value})
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPageSize:
		return nil, status.Errorf(codes.InvalidArgument, "page_size: %d is out of range: 0 (default %d) to %d", size, defaultPageSize, maxPageSize)
	case size == 0:
		size = defaultPageSize
	}
	if tok := req.GetPageToken(); tok != "" {
		after, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(after) == 0 {
			return nil, status.Error(codes.InvalidArgument, "page_token: not a token this server issued: pass next_page_token from the previous response")
		}
		f.AfterID = string(after)
	}
	// One more than asked tells whether another page exists.
	f.Limit = size + 1
	recs, err := e.s.store.ListEntries(ctx, f)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &writv1.ListEntriesResponse{}
	if len(recs) > size {
		recs = recs[:size]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(recs[size-1].ID))
	}
	resp.Entries = make([]*writv1.Entry, len(recs))
	for i, r := range recs {
		resp.Entries[i] = entryToProto(r)
	}
	return resp, nil
}

// ruleFromProto parses and validates an API entry; errors name the field.
func (s *Server) ruleFromProto(pe *writv1.Entry) (identity.Rule, error) {
	var r identity.Rule
	var err error
	r.ID = pe.GetId()
	if r.SPIFFEID, err = parseOptionalID("spiffe_id", pe.GetSpiffeId()); err != nil {
		return r, err
	}
	if r.ParentID, err = parseOptionalID("parent_id", pe.GetParentId()); err != nil {
		return r, err
	}
	for i, ps := range pe.GetParentSelectors() {
		sel := identity.Selector{Type: ps.GetType(), Value: ps.GetValue()}
		if err := identity.ValidateSelector(fmt.Sprintf("parent_selectors[%d]", i), sel); err != nil {
			return r, err
		}
		r.ParentSelectors = append(r.ParentSelectors, sel)
	}
	for i, ps := range pe.GetSelectors() {
		sel := identity.Selector{Type: ps.GetType(), Value: ps.GetValue()}
		if err := identity.ValidateSelector(fmt.Sprintf("selectors[%d]", i), sel); err != nil {
			return r, err
		}
		r.Selectors = append(r.Selectors, sel)
	}
	if r.X509TTL, err = secondsField("x509_ttl_seconds", pe.GetX509TtlSeconds()); err != nil {
		return r, err
	}
	if r.JWTTTL, err = secondsField("jwt_ttl_seconds", pe.GetJwtTtlSeconds()); err != nil {
		return r, err
	}
	r.DNSNames = pe.GetDnsNames()
	r.Hint = pe.GetHint()
	if exp := pe.GetExpiresAt(); exp != 0 {
		if exp < 0 {
			return r, &identity.FieldError{Field: "expires_at", Msg: "must be unix seconds, or 0 for never"}
		}
		r.ExpiresAt = time.Unix(exp, 0).UTC()
		if !r.ExpiresAt.After(s.now()) {
			return r, &identity.FieldError{Field: "expires_at", Msg: fmt.Sprintf("%s is in the past: a rule must expire in the future, or 0 for never", r.ExpiresAt.Format(time.RFC3339))}
		}
	}
	if err := r.Validate(s.td, identity.Limits{MaxX509TTL: s.cfg.SVID.MaxX509TTL.Duration, MaxJWTTTL: s.cfg.SVID.MaxJWTTTL.Duration}); err != nil {
		return r, err
	}
	if err := checkNotReserved("spiffe_id", r.SPIFFEID); err != nil {
		return r, err
	}
	return r, nil
}

// checkNotReserved refuses IDs no rule and no minted SVID may carry: a
// workload holding spiffe://TD/writ/server/x could impersonate the server
// to every agent, and one holding a person's ID would act in their tasks.
func checkNotReserved(field string, id spiffeid.ID) error {
	return identity.CheckNotReserved(field, id)
}

// parseOptionalID leaves a missing ID zero so Validate reports it as
// required with the right field name.
func parseOptionalID(field, s string) (spiffeid.ID, error) {
	if s == "" {
		return spiffeid.ID{}, nil
	}
	return identity.ParseID(field, s)
}

func secondsField(field string, v int64) (time.Duration, error) {
	if v < 0 || v > int64(100*365*24*time.Hour/time.Second) {
		return 0, &identity.FieldError{Field: field, Msg: fmt.Sprintf("%d is out of range: whole seconds, 0 for the server default", v)}
	}
	return time.Duration(v) * time.Second, nil
}

func entryFromRule(r identity.Rule) store.Entry {
	e := store.Entry{
		ID:        r.ID,
		SPIFFEID:  r.SPIFFEID.String(),
		ParentID:  idString(r.ParentID),
		X509TTL:   r.X509TTL,
		JWTTTL:    r.JWTTTL,
		DNSNames:  r.DNSNames,
		Hint:      r.Hint,
		ExpiresAt: r.ExpiresAt,
	}
	for _, sel := range r.Selectors {
		e.Selectors = append(e.Selectors, store.Selector{Type: sel.Type, Value: sel.Value})
	}
	for _, sel := range r.ParentSelectors {
		e.ParentSelectors = append(e.ParentSelectors, store.Selector{Type: sel.Type, Value: sel.Value})
	}
	return e
}

// idString is id's text, empty for the zero ID (a rule whose parents are
// named by selectors has none).
func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// parentOf is an agent as a rule's parent: its ID and the node selectors
// it was attested with at join.
type parentOf struct {
	id   spiffeid.ID
	node identity.SelectorSet
}

func newParentOf(a store.Agent, id spiffeid.ID) parentOf {
	sels := make([]identity.Selector, len(a.Selectors))
	for i, s := range a.Selectors {
		sels[i] = identity.Selector{Type: s.Type, Value: s.Value}
	}
	return parentOf{id: id, node: identity.NewSelectorSet(sels)}
}

// rule reports whether the agent is a parent of e (identity.ParentIs).
func (p parentOf) rule(e store.Entry) bool {
	var parentID spiffeid.ID
	if e.ParentID != "" {
		id, err := spiffeid.FromString(e.ParentID)
		if err != nil {
			return false
		}
		parentID = id
	}
	sels := make([]identity.Selector, len(e.ParentSelectors))
	for i, s := range e.ParentSelectors {
		sels[i] = identity.Selector{Type: s.Type, Value: s.Value}
	}
	return identity.ParentIs(parentID, sels, p.id, p.node)
}

// entryDetails is what an entry's audit event records of it: the rule as
// requested, so the log alone says who could get which identity.
func entryDetails(e store.Entry) map[string]any {
	d := map[string]any{"spiffe_id": e.SPIFFEID, "parent_id": e.ParentID}
	sels := make([]string, len(e.Selectors))
	for i, sel := range e.Selectors {
		sels[i] = sel.Type + ":" + sel.Value
	}
	d["selectors"] = sels
	if len(e.ParentSelectors) > 0 {
		parents := make([]string, len(e.ParentSelectors))
		for i, sel := range e.ParentSelectors {
			parents[i] = sel.Type + ":" + sel.Value
		}
		d["parent_selectors"] = parents
	}
	if e.X509TTL != 0 {
		d["x509_ttl"] = e.X509TTL.String()
	}
	if e.JWTTTL != 0 {
		d["jwt_ttl"] = e.JWTTTL.String()
	}
	if len(e.DNSNames) > 0 {
		d["dns_names"] = e.DNSNames
	}
	if e.Hint != "" {
		d["hint"] = e.Hint
	}
	if !e.ExpiresAt.IsZero() {
		d["expires_at"] = e.ExpiresAt.UTC()
	}
	if e.Revision != 0 {
		d["if_revision"] = e.Revision
	}
	return d
}

func entryToProto(e store.Entry) *writv1.Entry {
	pe := &writv1.Entry{
		Id:             e.ID,
		SpiffeId:       e.SPIFFEID,
		ParentId:       e.ParentID,
		X509TtlSeconds: int64(e.X509TTL / time.Second),
		JwtTtlSeconds:  int64(e.JWTTTL / time.Second),
		DnsNames:       e.DNSNames,
		Hint:           e.Hint,
		Revision:       e.Revision,
		CreatedAt:      e.CreatedAt.Unix(),
		UpdatedAt:      e.UpdatedAt.Unix(),
	}
	if !e.ExpiresAt.IsZero() {
		pe.ExpiresAt = e.ExpiresAt.Unix()
	}
	for _, sel := range e.Selectors {
		pe.Selectors = append(pe.Selectors, &writv1.Selector{Type: sel.Type, Value: sel.Value})
	}
	for _, sel := range e.ParentSelectors {
		pe.ParentSelectors = append(pe.ParentSelectors, &writv1.Selector{Type: sel.Type, Value: sel.Value})
	}
	return pe
}

func revisionOf(es []store.Entry) int64 {
	if len(es) == 0 {
		return 0
	}
	return es[0].Revision
}

// storeStatus maps store errors to gRPC codes, keeping the store's message,
// which names the entry (and batch index) concerned.
func storeStatus(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error()+": the entry changed since it was read; read it again and retry")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		return status.Errorf(codes.Internal, "store: %v", err)
	}
}

func callerString(ctx context.Context) string {
	c, _ := CallerFrom(ctx)
	return c.String()
}
