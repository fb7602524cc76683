package workload

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"writ.dev/writ/identity"
)

// AttestAll runs every attestor on p and returns the union of their
// selectors, sorted by type then value, without duplicates.
//
// If any attestor fails, AttestAll fails and returns no selectors: an
// identity decided on some of the facts could be one the workload should
// not get, or miss one it should. It also refuses a selector that is
// invalid or whose type is not its attestor's, because one attestor must
// not be able to vouch for facts that another is trusted to establish.
func AttestAll(ctx context.Context, attestors []Attestor, p Peer) ([]identity.Selector, error) {
	var all []identity.Selector
	for _, a := range attestors {
		sels, err := attestOne(ctx, a, p)
		if err != nil {
			return nil, err
		}
		all = append(all, sels...)
	}
	slices.SortFunc(all, func(a, b identity.Selector) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Value, b.Value))
	})
	return slices.Compact(all), nil
}

// attestOne runs a and checks what it returns.
func attestOne(ctx context.Context, a Attestor, p Peer) ([]identity.Selector, error) {
	typ := a.Type()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("attesting pid %d: %w", p.PID, err)
	}
	sels, err := a.Attest(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("attesting pid %d: the %q attestor failed, so no identity can be decided: %w", p.PID, typ, err)
	}
	for i, sel := range sels {
		if sel.Type != typ {
			return nil, fmt.Errorf("attesting pid %d: the %q attestor returned selector %q of another type; fix the attestor", p.PID, typ, sel.String())
		}
		if err := identity.ValidateSelector(fmt.Sprintf("%s selectors[%d]", typ, i), sel); err != nil {
			return nil, fmt.Errorf("attesting pid %d: the %q attestor returned an invalid selector; fix the attestor: %w", p.PID, typ, err)
		}
	}
	return sels, nil
}
