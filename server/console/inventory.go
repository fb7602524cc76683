package console

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/task"
)

// accessPath is one way to reach a resource now.
type accessPath struct {
	Who     string // a SPIFFE ID pattern
	How     string // "task T, grant N" or "standing grant ID"
	Actions string
}

type inventoryData struct {
	Resource   string
	Paths      []accessPath
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
	}
	c.render(w, r, code, "inventory", p)
}

// pathsTo lists the grants of live tasks that cover resource.
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
