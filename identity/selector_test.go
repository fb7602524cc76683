package identity

import (
	"slices"
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	valid := []struct {
		in   string
		want Selector
	}{
		{"unix:uid:1000", Selector{"unix", "uid:1000"}},
		{"k8s:ns:payments", Selector{"k8s", "ns:payments"}},
		{"docker:label:com.example.name:web", Selector{"docker", "label:com.example.name:web"}},
		{"a:b", Selector{"a", "b"}},
		{"x_y-1:v", Selector{"x_y-1", "v"}},
		{"unix::", Selector{"unix", ":"}},
		{"unix:path:/usr/bin/my app", Selector{"unix", "path:/usr/bin/my app"}},
		{"k8s:label:team:π", Selector{"k8s", "label:team:π"}},
		{strings.Repeat("t", MaxSelectorTypeLen) + ":" + strings.Repeat("v", MaxSelectorValueLen),
			Selector{strings.Repeat("t", MaxSelectorTypeLen), strings.Repeat("v", MaxSelectorValueLen)}},
	}
	for _, tc := range valid {
		got, err := ParseSelector(tc.in)
		if err != nil {
			t.Errorf("ParseSelector(%q) = %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSelector(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}

	invalid := []struct {
		in   string
		want []string
	}{
		{"", []string{"required", "type:value"}},
		{"unix", []string{"no ':'", "type:value"}},
		{":uid:1000", []string{"type", "empty"}},
		{"unix:", []string{"value", "empty"}},
		{"UNIX:uid:1000", []string{"lowercase", `"unix"`}},
		{"un ix:uid:1000", []string{"' '", "a type is 1 to 64"}},
		{"un.ix:uid:1000", []string{"'.'"}},
		{strings.Repeat("t", MaxSelectorTypeLen+1) + ":v", []string{"65 bytes"}},
		{"unix:" + strings.Repeat("v", MaxSelectorValueLen+1), []string{"1025 bytes", "1 to 1024 bytes"}},
		{"unix:uid\n1000", []string{"control", `'\n'`}},
		{"unix:uid\x001000", []string{"control"}},
		{"unix:uid\x7f", []string{"control"}},
		{"unix:uid\u0085", []string{"control"}},
		{"unix:\xff", []string{"UTF-8"}},
		{"unix: uid:1000", []string{"whitespace"}},
		{"unix:uid:1000 ", []string{"whitespace"}},
		{"unix:uid:1000\u00a0", []string{"whitespace"}},
	}
	for _, tc := range invalid {
		got, err := ParseSelector(tc.in)
		if err == nil {
			t.Errorf("ParseSelector(%q) = %#v, want error", tc.in, got)
			continue
		}
		wantFieldError(t, err, "selector", tc.want...)
	}
}

func TestSortSelectors(t *testing.T) {
	sels := []Selector{{"unix", "uid:1000"}, {"k8s", "ns:a"}, {"unix", "gid:0"}, {"k8s", "ns:"}}
	if err := SortSelectors(sels); err != nil {
		t.Fatal(err)
	}
	want := []Selector{{"k8s", "ns:"}, {"k8s", "ns:a"}, {"unix", "gid:0"}, {"unix", "uid:1000"}}
	if !slices.Equal(sels, want) {
		t.Errorf("sorted = %v, want %v", sels, want)
	}

	dup := []Selector{{"unix", "uid:1000"}, {"k8s", "ns:a"}, {"unix", "gid:0"}, {"k8s", "ns:a"}}
	before := slices.Clone(dup)
	err := SortSelectors(dup)
	wantFieldError(t, err, "selectors[3]", "selectors[1]", `"k8s:ns:a"`)
	if !slices.Equal(dup, before) {
		t.Errorf("SortSelectors reordered a list it refused: %v", dup)
	}

	if err := SortSelectors(nil); err != nil {
		t.Errorf("SortSelectors(nil) = %v", err)
	}
}

func TestSelectorSet(t *testing.T) {
	set := NewSelectorSet([]Selector{{"unix", "uid:1000"}, {"unix", "gid:1000"}, {"unix", "uid:1000"}})
	if len(set) != 2 {
		t.Errorf("len = %d, want duplicates collapsed to 2", len(set))
	}
	for _, tc := range []struct {
		sels []Selector
		want bool
	}{
		{nil, true},
		{[]Selector{{"unix", "uid:1000"}}, true},
		{[]Selector{{"unix", "gid:1000"}, {"unix", "uid:1000"}}, true},
		{[]Selector{{"unix", "uid:1000"}, {"unix", "uid:0"}}, false},
		{[]Selector{{"unix", "uid:100"}}, false},
		{[]Selector{{"unixx", "uid:1000"}}, false},
		// Type and value are compared separately, not as joined text.
		{[]Selector{{"unix:uid", "1000"}}, false},
	} {
		if got := set.ContainsAll(tc.sels); got != tc.want {
			t.Errorf("ContainsAll(%v) = %v, want %v", tc.sels, got, tc.want)
		}
	}
	if !NewSelectorSet(nil).ContainsAll(nil) {
		t.Error("empty set should contain the empty list")
	}
}

func TestValidateSelector(t *testing.T) {
	if err := ValidateSelector("selectors[0]", Selector{"unix", "uid:1000"}); err != nil {
		t.Fatal(err)
	}
	wantFieldError(t, ValidateSelector("selectors[4]", Selector{"unix:uid", "1000"}), "selectors[4]", "':'", "type")
	wantFieldError(t, ValidateSelector("selectors[1]", Selector{"unix", ""}), "selectors[1]", "value")
}
