package storetest

import (
	"strings"
	"testing"

	"writ.dev/writ/store"
)

// The concurrency reader resumes from the last revision it checked, so
// gapFreeFrom must catch what a rescan from 1 would have caught in the
// changes read since.
func TestGapFreeFrom(t *testing.T) {
	revs := func(rs ...int64) []store.Change {
		var cs []store.Change
		for _, r := range rs {
			cs = append(cs, store.Change{Revision: r})
		}
		return cs
	}
	cases := []struct {
		name           string
		changes        []store.Change
		after, through int64
		want           int64
		err            string
	}{
		{"whole revisions", revs(4, 4, 5, 6), 3, 6, 6, ""},
		{"past what was seen", revs(4, 5, 6, 7), 3, 5, 7, ""},
		{"nothing new", nil, 3, 3, 3, ""},
		{"a skipped revision", revs(4, 6), 3, 6, 4, "change at revision 6 follows revision 4"},
		{"a late revision below the cursor", revs(2, 4), 3, 4, 3, "change at revision 2 follows revision 3"},
		{"the cursor's revision again", revs(3, 4), 3, 4, 3, "change at revision 3 follows revision 3"},
		{"short of what was seen", revs(4), 3, 5, 4, "changes end at revision 4, revision 5 is committed"},
	}
	for _, c := range cases {
		got, err := gapFreeFrom(c.changes, c.after, c.through)
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: gapFreeFrom = %d, %v; want %d, %q", c.name, got, err, c.want, c.err)
		}
	}
	if err := checkGapFree(revs(1, 2, 2, 3), 3); err != nil {
		t.Errorf("checkGapFree of revisions 1..3: %v", err)
	}
	if err := checkGapFree(revs(1, 3), 3); err == nil {
		t.Error("checkGapFree missed revision 2")
	}
}
