package console

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/task"
	"writ.dev/writ/task/review"
)

// accessPath is one way to reach a resource now.
type accessPath struct {
	Who     string // a SPIFFE ID pattern
	How     string // "task T, grant N" or "standing grant ID"
	Actions string
}

// approvalPath is a review rule under which an identity could reach a
// resource once a request is approved.
type approvalPath struct {
	Rule       string
	Actions    string
	Requesters string
	Approvers  string
}

type inventoryData struct {
	Resource   string
	Paths      []accessPath
	Approvals  []approvalPath
	Identities []*writv1.InventoryIdentity
	Stale      []*writv1.InventoryIdentity
	Flags      []string
}

// inventoryPage shows every identity writ knows with its flags (stale
// ones first), and for a resource, every grant that reaches it now.
func (c *Console) inventoryPage(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Inventory and access paths", Nav: "inventory"}
	data := &inventoryData{Resource: strings.TrimSpace(r.URL.Query().Get("resource"))}
	p.Data = data
	code := http.StatusOK
	if data.Resource != "" {
		if err := task.CheckResourceName(data.Resource); err != nil || len(data.Resource) > maxFilter {
			p.Error = "resource: not a resource name (segments of letters, digits, . _ - separated by /, no wildcards): " + firstLine(err)
			data.Resource = ""
			code = http.StatusBadRequest
		}
	}
	ctx, err := c.as(r, writv1.InventoryService_GetInventory_FullMethodName)
	var inv *writv1.Inventory
	if err == nil {
		inv, err = c.cfg.Services.Inventory.GetInventory(ctx, &writv1.GetInventoryRequest{})
	}
	if err != nil {
		code, p.Error = refusal(err)
		c.render(w, r, code, "inventory", p)
		return
	}
	data.Identities, data.Flags = inv.GetIdentities(), inv.GetFlags()
	for _, id := range inv.GetIdentities() {
		if slices.ContainsFunc(id.GetFlags(), func(f string) bool { return strings.Contains(f, "unseen") || strings.Contains(f, "stale") }) {
			data.Stale = append(data.Stale, id)
		}
	}
	if data.Resource != "" {
		data.Paths = pathsTo(data.Resource, inv.GetOpenTasks())
		sctx, err := c.as(r, writv1.TaskService_ListStandingGrants_FullMethodName)
		if err == nil {
			var sg *writv1.ListStandingGrantsResponse
			if sg, err = c.cfg.Services.Tasks.ListStandingGrants(sctx, &writv1.ListStandingGrantsRequest{}); err == nil {
				for _, g := range sg.GetGrants() {
					if covers(g.GetResources(), data.Resource) {
						data.Paths = append(data.Paths, accessPath{Who: g.GetSubject(), How: "standing grant " + g.GetId(), Actions: strings.Join(g.GetActions(), ", ")})
					}
				}
			}
		}
		if err != nil {
			_, p.Error = refusal(err)
		}
		data.Approvals = c.approvalsFor(r, data.Resource)
	}
	c.render(w, r, code, "inventory", p)
}

// pathsTo lists the grants of live tasks that cover resource. Grants are
// numbered from 0, as the server's findings and decisions number them.
func pathsTo(resource string, tasks []*writv1.Task) []accessPath {
	var out []accessPath
	for _, t := range tasks {
		for i, g := range t.GetGrants() {
			if !covers(g.GetResources(), resource) {
				continue
			}
			how := "task " + t.GetId() + " (" + t.GetTitle() + "), grant " + strconv.Itoa(i+1)
			for _, to := range g.GetTo() {
				out = append(out, accessPath{Who: to, How: how, Actions: strings.Join(g.GetActions(), ", ")})
			}
		}
	}
	return out
}

func covers(patterns []string, resource string) bool {
	for _, s := range patterns {
		if p, err := task.ParseResourcePattern(s); err == nil && p.Matches(resource) {
			return true
		}
	}
	return false
}

func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// approvalsFor lists the review rules under which a request for resource
// could be approved: who may ask and who must approve. A server without
// rules, or one that refuses to show them, gives none.
func (c *Console) approvalsFor(r *http.Request, resource string) []approvalPath {
	ctx, err := c.as(r, writv1.ReviewService_GetRules_FullMethodName)
	if err != nil {
		return nil
	}
	got, err := c.cfg.Services.Reviews.GetRules(ctx, &writv1.GetReviewRulesRequest{})
	if err != nil {
		return nil
	}
	rules, err := review.ParseRules([]byte(got.GetText()), sessionFrom(r.Context()).person.TrustDomain())
	if err != nil {
		return nil
	}
	var out []approvalPath
	for _, rule := range rules {
		if !slices.ContainsFunc(rule.Resources, func(p task.ResourcePattern) bool { return p.Matches(resource) }) {
			continue
		}
		ap := approvalPath{Rule: rule.Name, Actions: strings.Join(rule.Actions, ", "), Requesters: "anyone"}
		var who []string
		for _, k := range rule.RequesterKinds {
			who = append(who, string(k))
		}
		for _, p := range rule.Requesters {
			who = append(who, p.String())
		}
		if len(who) > 0 {
			ap.Requesters = strings.Join(who, ", ")
		}
		var groups []string
		for _, g := range rule.Require {
			var from []string
			for _, p := range g.From {
				from = append(from, p.String())
			}
			groups = append(groups, strconv.Itoa(g.Count)+" of "+strings.Join(from, ", ")+" ("+g.Name+")")
		}
		switch {
		case rule.AutoApprove != nil:
			ap.Approvers = "approved automatically when its condition holds"
		case len(groups) > 0:
			ap.Approvers = strings.Join(groups, " and ")
		default:
			ap.Approvers = "nobody: no group is required"
		}
		out = append(out, ap)
	}
	return out
}
