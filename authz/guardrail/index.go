package guardrail

// index finds the policies of one effect that can apply to an action and a
// resource, from their scopes alone. Scope constraints are exact, so a
// policy the index leaves out could not have matched; leaving it out
// changes neither the decision nor the errors, because Cedar evaluates a
// policy's conditions only when its scope matches.
type index struct {
	anyAction *resourceIndex
	byAction  map[string]*resourceIndex
}

// resourceIndex holds, for one action (or for all), policies by resource
// constraint. Positions refer to Set.policies.
type resourceIndex struct {
	any   []int
	exact map[string][]int
	under map[string][]int
}

func newIndex() index {
	return index{anyAction: newResourceIndex(), byAction: make(map[string]*resourceIndex)}
}

func newResourceIndex() *resourceIndex {
	return &resourceIndex{exact: make(map[string][]int), under: make(map[string][]int)}
}

// add indexes the policy at position n under its scope.
func (ix *index) add(n int, sc scope) {
	if sc.actions == nil {
		ix.anyAction.add(n, sc)
		return
	}
	done := make(map[string]bool, len(sc.actions))
	for _, a := range sc.actions {
		if done[a] {
			continue
		}
		done[a] = true
		ri := ix.byAction[a]
		if ri == nil {
			ri = newResourceIndex()
			ix.byAction[a] = ri
		}
		ri.add(n, sc)
	}
}

func (ri *resourceIndex) add(n int, sc scope) {
	switch sc.op {
	case exactResource:
		ri.exact[sc.resource] = append(ri.exact[sc.resource], n)
	case underResource:
		ri.under[sc.resource] = append(ri.under[sc.resource], n)
	default:
		ri.any = append(ri.any, n)
	}
}

// each calls yield with every candidate for action and resource, each
// once, until yield returns false.
func (ix *index) each(action, resource string, yield func(int) bool) {
	if !ix.anyAction.each(resource, yield) {
		return
	}
	if ri := ix.byAction[action]; ri != nil {
		ri.each(resource, yield)
	}
}

func (ri *resourceIndex) each(resource string, yield func(int) bool) bool {
	if !all(ri.any, yield) || !all(ri.exact[resource], yield) || !all(ri.under[resource], yield) {
		return false
	}
	return ancestors(resource, func(a string) bool { return all(ri.under[a], yield) })
}

// ancestors calls yield with every proper prefix of a hierarchical resource
// name that ends before a '/', longest first ("db/prod", then "db" for
// "db/prod/payments"), until yield returns false. The index and the
// resource entity's parents both come from here, so they always agree.
func ancestors(resource string, yield func(string) bool) bool {
	for i := len(resource) - 1; i > 0; i-- {
		if resource[i] == '/' && !yield(resource[:i]) {
			return false
		}
	}
	return true
}

func all(ns []int, yield func(int) bool) bool {
	for _, n := range ns {
		if !yield(n) {
			return false
		}
	}
	return true
}
