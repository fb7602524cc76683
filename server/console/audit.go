package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

const (
	// recentEvents is how far back the audit page looks for events that
	// pass its filters.
	recentEvents = 500
	// auditPage is how many events one ReadEvents call asks for.
	auditPage = 1000
	// tailInterval is how often the live tail looks for new events.
	tailInterval = time.Second
	// maxFilter bounds a filter's text.
	maxFilter = 256
)

// eventRow is one decoded event as the page shows it.
type eventRow struct {
	Index   int64
	Time    string
	Type    string
	Actor   string
	Subject string
	Details string
}

// auditFilter selects events by identity (actor or subject), task
// (subject or named in the details) and type.
type auditFilter struct {
	Identity, Task, Type string
}

func (f auditFilter) match(e audit.Event) bool {
	if f.Type != "" && e.Type != f.Type && !strings.HasPrefix(e.Type, f.Type+".") {
		return false
	}
	if f.Identity != "" && e.Actor != f.Identity && e.Subject != f.Identity && !strings.Contains(string(e.Details), `"`+f.Identity+`"`) {
		return false
	}
	if f.Task != "" && e.Subject != f.Task && !strings.Contains(string(e.Details), `"task":"`+f.Task+`"`) {
		return false
	}
	return true
}

func filterOf(r *http.Request) (auditFilter, error) {
	q := r.URL.Query()
	f := auditFilter{Identity: strings.TrimSpace(q.Get("identity")), Task: strings.TrimSpace(q.Get("task")), Type: strings.TrimSpace(q.Get("type"))}
	if len(f.Identity) > maxFilter || len(f.Task) > maxFilter || len(f.Type) > maxFilter {
		return auditFilter{}, fmt.Errorf("a filter is longer than %d bytes: shorten it", maxFilter)
	}
	return f, nil
}

func rowOf(index int64, raw []byte) eventRow {
	e, err := audit.DecodeEvent(raw)
	if err != nil {
		return eventRow{Index: index, Type: "(undecodable)", Details: err.Error()}
	}
	return eventRow{Index: index, Time: e.Time.UTC().Format(time.RFC3339), Type: e.Type, Actor: e.Actor, Subject: e.Subject, Details: string(e.Details)}
}

type auditData struct {
	Filter  auditFilter
	TailURL string
	Events  []eventRow
	Size    int64
	Verify  *verification
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Audit log", Nav: "audit"}
	data := &auditData{}
	p.Data = data
	code := http.StatusOK
	f, err := filterOf(r)
	if err != nil {
		p.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "audit", p)
		return
	}
	data.Filter = f
	data.TailURL = "/audit/events?" + url.Values{"identity": {f.Identity}, "task": {f.Task}, "type": {f.Type}}.Encode()
	ctx, err := c.as(r, writv1.AuditService_ReadEvents_FullMethodName)
	if err == nil {
		err = c.recent(ctx, data)
	}
	if err == nil && r.URL.Query().Get("verify") != "" {
		data.Verify = c.verify(r)
	}
	if err != nil {
		code, p.Error = refusal(err)
	}
	c.render(w, r, code, "audit", p)
}

// recent fills data with the latest events that pass its filter, newest first.
func (c *Console) recent(ctx context.Context, data *auditData) error {
	head, err := c.cfg.Services.Audit.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: 0, Limit: 1})
	if err != nil {
		return err
	}
	data.Size = head.GetSize()
	start := max(0, data.Size-recentEvents)
	resp, err := c.cfg.Services.Audit.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: start, Limit: recentEvents})
	if err != nil {
		return err
	}
	evs := resp.GetEvents()
	for i := len(evs) - 1; i >= 0; i-- {
		e, derr := audit.DecodeEvent(evs[i].GetEvent())
		if derr == nil && !data.Filter.match(e) {
			continue
		}
		data.Events = append(data.Events, rowOf(evs[i].GetIndex(), evs[i].GetEvent()))
	}
	return nil
}

// auditEvents is the live tail: new events that pass the filter, as
// server-sent events, for as long as the page stays open.
func (c *Console) auditEvents(w http.ResponseWriter, r *http.Request) {
	f, err := filterOf(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, err := c.as(r, writv1.AuditService_ReadEvents_FullMethodName)
	if err != nil {
		_, msg := refusal(err)
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	head, err := c.cfg.Services.Audit.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: 0, Limit: 1})
	if err != nil {
		code, msg := refusal(err)
		http.Error(w, msg, code)
		return
	}
	next := head.GetSize()
	ev, err := newEventStream(w)
	if err != nil {
		return
	}
	tick := time.NewTicker(tailInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.closing:
			_ = ev.send("end", map[string]string{"message": "the server is shutting down: reload the page in a moment"})
			return
		case <-tick.C:
		}
		resp, err := c.cfg.Services.Audit.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: next, Limit: auditPage})
		if err != nil {
			_, msg := refusal(err)
			_ = ev.send("end", map[string]string{"message": msg})
			return
		}
		for _, e := range resp.GetEvents() {
			next = e.GetIndex() + 1
			if d, err := audit.DecodeEvent(e.GetEvent()); err == nil && !f.match(d) {
				continue
			}
			if err := ev.send("event", rowOf(e.GetIndex(), e.GetEvent())); err != nil {
				return
			}
		}
	}
}

// verification is the log's state as 'writ audit verify' computes it.
type verification struct {
	OK      bool
	Summary string
}

// verify recomputes the log's tree from every event and checks it against
// the signed checkpoints, trusting only the keys given out of band.
func (c *Console) verify(r *http.Request) *verification {
	fail := func(err error) *verification {
		_, msg := refusal(err)
		return &verification{Summary: "NOT VERIFIED: " + msg}
	}
	if c.cfg.AuditKeys == nil {
		return &verification{Summary: "NOT VERIFIED: no trusted audit keys are configured (console.audit_keys): the keys the database lists prove nothing."}
	}
	raw, err := c.cfg.AuditKeys()
	if err != nil {
		return &verification{Summary: "NOT VERIFIED: reading the trusted audit keys: " + err.Error()}
	}
	keys, err := audit.ParseKeys(raw, "console.audit_keys")
	if err != nil {
		return &verification{Summary: "NOT VERIFIED: " + err.Error()}
	}
	verifiers, err := keys.Verifiers()
	if err != nil {
		return &verification{Summary: "NOT VERIFIED: " + err.Error()}
	}
	ctx, err := c.as(r, writv1.AuditService_GetCheckpoints_FullMethodName)
	if err != nil {
		return fail(err)
	}
	cps, err := c.cfg.Services.Audit.GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{})
	if err != nil {
		return fail(err)
	}
	var checkpoints []audit.SignedCheckpoint
	for _, cp := range cps.GetCheckpoints() {
		checkpoints = append(checkpoints, audit.SignedCheckpoint{Note: cp.GetNote(), Source: fmt.Sprintf("checkpoint of size %d by server %s", cp.GetSize(), cp.GetServerId())})
	}
	var events audit.Assembly
	rctx, err := c.as(r, writv1.AuditService_ReadEvents_FullMethodName)
	if err != nil {
		return fail(err)
	}
	for {
		resp, err := c.cfg.Services.Audit.ReadEvents(rctx, &writv1.ReadAuditEventsRequest{Start: events.Next(), Limit: auditPage})
		if err != nil {
			return fail(err)
		}
		events.Head(resp.GetSize())
		for _, e := range resp.GetEvents() {
			events.Add(e.GetIndex(), e.GetEvent())
		}
		if len(resp.GetEvents()) < auditPage {
			break
		}
	}
	hctx, err := c.as(r, writv1.AuditService_ReadHashes_FullMethodName)
	if err != nil {
		return fail(err)
	}
	rep, err := audit.Verify(ctx, &events, checkpoints, verifiers, audit.WithStoredHashes(storedHashes{ctx: hctx, api: c.cfg.Services.Audit}, events.HeadSize()))
	var verr *audit.VerifyError
	switch {
	case errors.As(err, &verr):
		return &verification{Summary: "FAILED: " + rep.Summary()}
	case err != nil:
		return fail(err)
	}
	return &verification{OK: true, Summary: fmt.Sprintf("OK: %d events, root %s, every event covered by checkpoints signed with the %d trusted keys (%d checkpoints checked)",
		rep.Leaves, rep.Root, len(keys.Keys), len(rep.Checkpoints))}
}

// storedHashes reads the store's tree hashes; Verify trusts them only where
// a signed checkpoint authenticates them.
type storedHashes struct {
	ctx context.Context
	api writv1.AuditServiceServer
}

func (h storedHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	resp, err := h.api.ReadHashes(h.ctx, &writv1.ReadAuditHashesRequest{Indexes: indexes})
	if err != nil {
		return nil, err
	}
	if len(resp.GetHashes()) != len(indexes) {
		return nil, fmt.Errorf("asked for %d stored hashes, got %d", len(indexes), len(resp.GetHashes()))
	}
	out := make([]tlog.Hash, len(indexes))
	for i, b := range resp.GetHashes() {
		if len(b) != len(tlog.Hash{}) {
			return nil, fmt.Errorf("stored hash %d is %d bytes", indexes[i], len(b))
		}
		out[i] = tlog.Hash(b)
	}
	return out, nil
}
