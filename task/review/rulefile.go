package review

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

// Bounds on a rules file. A review policy is read by people; anything
// larger than this is generated, and a mistake in it would go unseen.
const (
	MaxRulesFileSize = 256 << 10
	MaxRules         = 256
	MaxGroups        = 16
	MaxPatterns      = 64 // per list: resources, requester, from, watchers
	MaxCount         = 64
	MaxConditions    = 16
	MaxActions       = 32
)

// Keys of a rules file, in the order errors list them.
var (
	fileKeys        = []string{"rules"}
	ruleKeys        = []string{"name", "match", "require", "deny_if", "auto_approve", "max_ttl", "pending_ttl", "access_clock", "dual_control"}
	matchKeys       = []string{"actions", "resources", "requester_kind", "requester"}
	groupKeys       = []string{"name", "from", "count"}
	conditionKeys   = []string{"requester_kind", "requester", "acting_for_person", "within_hours", "outside_hours", "ttl_over"}
	windowKeys      = []string{"days", "from", "to", "zone"}
	dualControlKeys = []string{"watchers", "count", "on_leave", "heartbeat"}
)

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// RulesError is a problem at a place in a rules file.
type RulesError struct {
	Line int
	Path string // e.g. rules[2].require[0].count; empty for the document
	Msg  string
}

func (e *RulesError) Error() string {
	loc := fmt.Sprintf("line %d: ", e.Line)
	if e.Path == "" {
		return loc + e.Msg
	}
	return loc + e.Path + ": " + e.Msg
}

// ParseRules parses a rules file for trust domain td: a YAML document
// {rules: [...]} whose rules are tried in order (see Select). Every key is
// checked against the known ones, so a misspelt condition is refused with
// its name and line rather than silently ignored (a deny_if that does not
// apply is a hole). Anchors and aliases are refused: they make a small file
// expand into a large one, and a policy should read as written. Nothing is
// returned unless the whole file is valid.
func ParseRules(data []byte, td spiffeid.TrustDomain) ([]Rule, error) {
	if len(data) > MaxRulesFileSize {
		return nil, fmt.Errorf("the rules file is %d bytes; at most %d are allowed, split the policy or make its patterns broader", len(data), MaxRulesFileSize)
	}
	if td.IsZero() {
		return nil, errors.New("cannot check the rules: no trust domain is configured")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the rules file is empty; it should hold a document like {rules: [{name: ..., match: {...}, require: [...]}]}")
		}
		return nil, fmt.Errorf("the rules file is not valid YAML: %s", boundYAMLError(err))
	}
	var more yaml.Node
	switch err := dec.Decode(&more); {
	case err == nil:
		return nil, &RulesError{Line: more.Line, Msg: "a second YAML document starts here; put every rule in one document's rules list"}
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("the rules file is not valid YAML: %s", boundYAMLError(err))
	}
	if err := refuseAliases(&doc); err != nil {
		return nil, err
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	p := parser{td: td}
	var list *yaml.Node
	if err := p.mapping(root, "", fileKeys, func(_ string, v *yaml.Node) error { list = v; return nil }); err != nil {
		return nil, err
	}
	if list == nil || isNull(list) {
		return nil, &RulesError{Line: root.Line, Msg: "there is no rules list; give rules: [...]"}
	}
	items, err := p.seq(list, "rules", MaxRules)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, &RulesError{Line: list.Line, Path: "rules", Msg: "is empty; with no rules no request can be approved"}
	}
	rules := make([]Rule, len(items))
	for i, item := range items {
		path := fmt.Sprintf("rules[%d]", i)
		if err := p.rule(item, path, &rules[i]); err != nil {
			return nil, err
		}
		for j := range i {
			if rules[j].Name == rules[i].Name {
				return nil, &RulesError{Line: item.Line, Path: path + ".name", Msg: fmt.Sprintf("%s is also the name of rules[%d] (line %d); give each rule its own name", identity.Quote(rules[i].Name), j, rules[j].Line)}
			}
		}
	}
	return rules, nil
}

// boundYAMLError keeps the YAML library's message to one bounded line: it
// may quote the input.
func boundYAMLError(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", "; ")
	q := identity.Quote(s)
	return q[1 : len(q)-1]
}

func refuseAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return &RulesError{Line: n.Line, Msg: "anchors and aliases (& and *) are not allowed; write each rule out in full, so the file reads as it applies"}
	}
	for _, c := range n.Content {
		if err := refuseAliases(c); err != nil {
			return err
		}
	}
	return nil
}

type parser struct {
	td spiffeid.TrustDomain
}

func (p *parser) rule(n *yaml.Node, path string, r *Rule) error {
	r.Line = n.Line
	r.PendingTTL, r.MaxTTL = DefaultPendingTTL, DefaultMaxTTL
	r.AccessClock = ClockApproval
	var matchSeen, nameSeen bool
	var requireLine, autoLine int
	err := p.mapping(n, path, ruleKeys, func(key string, v *yaml.Node) error {
		field := path + "." + key
		switch key {
		case "name":
			nameSeen = true
			s, err := p.scalar(v, field)
			if err != nil {
				return err
			}
			if err := checkID(field, s, true); err != nil {
				return place(v.Line, err)
			}
			r.Name = s
		case "match":
			matchSeen = true
			return p.match(v, field, r)
		case "require":
			requireLine = v.Line
			items, err := p.seq(v, field, MaxGroups)
			if err != nil {
				return err
			}
			r.Require = make([]Group, len(items))
			for i, item := range items {
				if err := p.group(item, fmt.Sprintf("%s[%d]", field, i), &r.Require[i]); err != nil {
					return err
				}
				for j := range i {
					if a, b := r.Require[j].Name, r.Require[i].Name; a != "" && a == b {
						return &RulesError{Line: item.Line, Path: fmt.Sprintf("%s[%d].name", field, i), Msg: fmt.Sprintf("%s repeats %s[%d]'s name; give each group its own", identity.Quote(b), field, j)}
					}
				}
			}
		case "deny_if":
			items, err := p.seq(v, field, MaxConditions)
			if err != nil {
				return err
			}
			r.DenyIf = make([]Condition, len(items))
			for i, item := range items {
				if err := p.condition(item, fmt.Sprintf("%s[%d]", field, i), &r.DenyIf[i], false); err != nil {
					return err
				}
			}
		case "auto_approve":
			autoLine = v.Line
			r.AutoApprove = &Condition{}
			return p.condition(v, field, r.AutoApprove, true)
		case "max_ttl", "pending_ttl":
			limit := map[string]time.Duration{"max_ttl": MaxMaxTTL, "pending_ttl": MaxPendingTTL}[key]
			d, err := p.duration(v, field, limit)
			if err != nil {
				return err
			}
			if key == "max_ttl" {
				r.MaxTTL = d
			} else {
				r.PendingTTL = d
			}
		case "access_clock":
			s, err := p.scalar(v, field)
			if err != nil {
				return err
			}
			switch AccessClock(s) {
			case ClockApproval, ClockFirstUse:
				r.AccessClock = AccessClock(s)
			default:
				return &RulesError{Line: v.Line, Path: field, Msg: identity.Quote(s) + " is not an access clock; use approval (the access time counts from approval, the default) or first_use (from the first decision it allows)"}
			}
		case "dual_control":
			r.DualControl = &DualControl{}
			return p.dualControl(v, field, r.DualControl)
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case !nameSeen:
		return &RulesError{Line: n.Line, Path: path, Msg: "has no name; give each rule a name (shown with every request it decides), e.g. name: prod-write"}
	case !matchSeen:
		return &RulesError{Line: n.Line, Path: path, Msg: "has no match; say which requests it decides, e.g. match: {actions: [write], resources: [db/prod/**]}"}
	case r.AutoApprove != nil && len(r.Require) > 0:
		return &RulesError{Line: autoLine, Path: path + ".auto_approve", Msg: fmt.Sprintf("is given with require (line %d); a rule that requires reviewers never approves automatically, so keep one: put the automatic case in its own rule before this one", requireLine)}
	case r.AutoApprove == nil && len(r.Require) == 0:
		line := n.Line
		if requireLine != 0 {
			line = requireLine
		}
		return &RulesError{Line: line, Path: path, Msg: "has neither require nor auto_approve; give the groups that must approve, e.g. require: [{from: [spiffe://example.org/person/**], count: 1}], or auto_approve: {} with its conditions"}
	}
	return nil
}

func (p *parser) match(n *yaml.Node, path string, r *Rule) error {
	var actionsSeen, resourcesSeen bool
	err := p.mapping(n, path, matchKeys, func(key string, v *yaml.Node) error {
		field := path + "." + key
		switch key {
		case "actions":
			actionsSeen = true
			items, lines, err := p.strings(v, field, MaxActions)
			if err != nil {
				return err
			}
			for i, a := range items {
				f := fmt.Sprintf("%s[%d]", field, i)
				if a != task.AnyAction {
					if err := task.CheckAction(a); err != nil {
						return &RulesError{Line: lines[i], Path: f, Msg: err.Error()}
					}
				}
				if j := slices.Index(items, a); j < i {
					return &RulesError{Line: lines[i], Path: f, Msg: fmt.Sprintf("%s repeats %s[%d]; list each action once", identity.Quote(a), field, j)}
				}
			}
			r.Actions = items
		case "resources":
			resourcesSeen = true
			items, lines, err := p.strings(v, field, MaxPatterns)
			if err != nil {
				return err
			}
			r.Resources = make([]task.ResourcePattern, len(items))
			for i, s := range items {
				if r.Resources[i], err = task.ParseResourcePattern(s); err != nil {
					return &RulesError{Line: lines[i], Path: fmt.Sprintf("%s[%d]", field, i), Msg: err.Error()}
				}
			}
		case "requester_kind":
			kinds, err := p.kinds(v, field)
			if err != nil {
				return err
			}
			r.RequesterKinds = kinds
		case "requester":
			pats, err := p.patterns(v, field)
			if err != nil {
				return err
			}
			r.Requesters = pats
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case !actionsSeen || len(r.Actions) == 0:
		return &RulesError{Line: n.Line, Path: path + ".actions", Msg: "is required; list the actions the rule decides, e.g. [read, write], or ['*'] for any"}
	case !resourcesSeen || len(r.Resources) == 0:
		return &RulesError{Line: n.Line, Path: path + ".resources", Msg: "is required; list the resource patterns the rule decides, e.g. [db/prod/**]"}
	}
	return nil
}

func (p *parser) group(n *yaml.Node, path string, g *Group) error {
	var countLine int
	err := p.mapping(n, path, groupKeys, func(key string, v *yaml.Node) error {
		field := path + "." + key
		switch key {
		case "name":
			s, err := p.scalar(v, field)
			if err != nil {
				return err
			}
			if err := checkID(field, s, true); err != nil {
				return place(v.Line, err)
			}
			g.Name = s
		case "from":
			pats, err := p.patterns(v, field)
			if err != nil {
				return err
			}
			g.From = pats
		case "count":
			countLine = v.Line
			c, err := p.count(v, field)
			if err != nil {
				return err
			}
			g.Count = c
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case len(g.From) == 0:
		return &RulesError{Line: n.Line, Path: path + ".from", Msg: "is required; list who may approve as SPIFFE ID patterns, e.g. [spiffe://example.org/person/example.com/*]"}
	case g.Count == 0:
		return &RulesError{Line: n.Line, Path: path + ".count", Msg: fmt.Sprintf("is required; give how many distinct approvers the group needs, 1 to %d", MaxCount)}
	}
	if named, ok := literalCount(g.From); ok && g.Count > named {
		return &RulesError{Line: countLine, Path: path + ".count", Msg: fmt.Sprintf("is %d but from names only %d identities, so the group could never be met; lower the count or name more approvers", g.Count, named)}
	}
	return nil
}

// literalCount returns how many identities pats name when none is a
// wildcard.
func literalCount(pats []task.Pattern) (int, bool) {
	for _, p := range pats {
		if !p.IsLiteral() {
			return 0, false
		}
	}
	return len(pats), true
}

func (p *parser) condition(n *yaml.Node, path string, c *Condition, emptyOK bool) error {
	seen := 0
	err := p.mapping(n, path, conditionKeys, func(key string, v *yaml.Node) error {
		seen++
		field := path + "." + key
		var err error
		switch key {
		case "requester_kind":
			c.RequesterKinds, err = p.kinds(v, field)
		case "requester":
			c.Requesters, err = p.patterns(v, field)
		case "acting_for_person":
			var b bool
			b, err = p.boolean(v, field)
			c.ActingForPerson = &b
		case "within_hours", "outside_hours":
			w := &Window{}
			err = p.window(v, field, w)
			if key == "within_hours" {
				c.WithinHours = w
			} else {
				c.OutsideHours = w
			}
		case "ttl_over":
			c.TTLOver, err = p.duration(v, field, MaxMaxTTL)
		}
		return err
	})
	if err != nil {
		return err
	}
	if seen == 0 && !emptyOK {
		return &RulesError{Line: n.Line, Path: path, Msg: "has no condition, so it would deny every request; give at least one of " + strings.Join(conditionKeys, ", ")}
	}
	return nil
}

func (p *parser) window(n *yaml.Node, path string, w *Window) error {
	w.Zone = time.UTC
	daysSeen := false
	var from, to string
	var fromLine int
	err := p.mapping(n, path, windowKeys, func(key string, v *yaml.Node) error {
		field := path + "." + key
		switch key {
		case "days":
			daysSeen = true
			items, lines, err := p.strings(v, field, 7)
			if err != nil {
				return err
			}
			if len(items) == 0 {
				return &RulesError{Line: v.Line, Path: field, Msg: "is empty; list days as mon, tue, wed, thu, fri, sat, sun, or leave it out for every day"}
			}
			for i, s := range items {
				d := slices.Index(dayNames, s)
				if d < 0 {
					return &RulesError{Line: lines[i], Path: fmt.Sprintf("%s[%d]", field, i), Msg: identity.Quote(s) + " is not a day; use mon, tue, wed, thu, fri, sat or sun"}
				}
				if w.Days[d] {
					return &RulesError{Line: lines[i], Path: fmt.Sprintf("%s[%d]", field, i), Msg: identity.Quote(s) + " is listed twice; list each day once"}
				}
				w.Days[d] = true
			}
		case "from", "to":
			s, err := p.scalar(v, field)
			if err != nil {
				return err
			}
			m, ok := parseClock(s, key == "to")
			if !ok {
				return &RulesError{Line: v.Line, Path: field, Msg: identity.Quote(s) + ` is not a time of day; give HH:MM on a 24-hour clock, e.g. "08:00" (quoted)`}
			}
			if key == "from" {
				from, w.From, fromLine = s, m, v.Line
			} else {
				to, w.To = s, m
			}
		case "zone":
			s, err := p.scalar(v, field)
			if err != nil {
				return err
			}
			loc, problem := loadZone(s)
			if problem != "" {
				return &RulesError{Line: v.Line, Path: field, Msg: problem}
			}
			w.Zone = loc
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case from == "" || to == "":
		return &RulesError{Line: n.Line, Path: path, Msg: `needs from and to, e.g. {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00", zone: Europe/Paris}`}
	case w.From >= w.To:
		return &RulesError{Line: fromLine, Path: path + ".from", Msg: fmt.Sprintf("%s is not before to %s; a window never spans midnight, so split a night shift into two conditions", identity.Quote(from), identity.Quote(to))}
	}
	if !daysSeen {
		w.Days = [7]bool{true, true, true, true, true, true, true}
	}
	var days []string
	for d, on := range w.Days {
		if on {
			days = append(days, dayNames[d])
		}
	}
	w.text = fmt.Sprintf("%s-%s %s on %s", from, to, w.Zone, strings.Join(days, ","))
	return nil
}

// parseClock parses "HH:MM" as minutes after midnight; "24:00" is allowed
// as an end.
func parseClock(s string, end bool) (int, bool) {
	if len(s) != 5 || s[2] != ':' || !isDigits(s[:2]) || !isDigits(s[3:]) {
		return 0, false
	}
	h, _ := strconv.Atoi(s[:2])
	m, _ := strconv.Atoi(s[3:])
	switch {
	case end && h == 24 && m == 0:
		return 24 * 60, true
	case h > 23 || m > 59:
		return 0, false
	}
	return h*60 + m, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// loadZone loads an IANA time zone; the name is checked first so that no
// odd string reaches the zone database's file lookup.
func loadZone(s string) (*time.Location, string) {
	const allowed = "give an IANA time zone name such as UTC or Europe/Paris"
	if s == "" || len(s) > 64 || strings.Contains(s, "..") || strings.HasPrefix(s, "/") || strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '_' || r == '-' || r == '+')
	}) {
		return nil, identity.Quote(s) + " is not a time zone name; " + allowed
	}
	if s == "Local" {
		return nil, `"Local" depends on the server's settings; ` + allowed
	}
	loc, err := time.LoadLocation(s)
	if err != nil {
		return nil, identity.Quote(s) + " is not a time zone this server knows; " + allowed
	}
	return loc, ""
}

func (p *parser) dualControl(n *yaml.Node, path string, dc *DualControl) error {
	dc.Heartbeat = DefaultHeartbeat
	err := p.mapping(n, path, dualControlKeys, func(key string, v *yaml.Node) error {
		field := path + "." + key
		var err error
		switch key {
		case "watchers":
			dc.Watchers, err = p.patterns(v, field)
		case "count":
			dc.Count, err = p.count(v, field)
		case "on_leave":
			var s string
			if s, err = p.scalar(v, field); err != nil {
				return err
			}
			switch OnLeave(s) {
			case OnLeavePause, OnLeaveTerminate:
				dc.OnLeave = OnLeave(s)
			default:
				return &RulesError{Line: v.Line, Path: field, Msg: identity.Quote(s) + " is not an action; use pause (the grant is dead until a watcher returns) or terminate (the task closes)"}
			}
		case "heartbeat":
			var s string
			if s, err = p.scalar(v, field); err != nil {
				return err
			}
			d, perr := time.ParseDuration(s)
			if perr != nil || d < MinHeartbeat || d > MaxHeartbeat || d%time.Second != 0 {
				return &RulesError{Line: v.Line, Path: field, Msg: fmt.Sprintf("%s is not a whole number of seconds from %s to %s; give e.g. 2s", identity.Quote(s), MinHeartbeat, formatDuration(MaxHeartbeat))}
			}
			dc.Heartbeat = d
		}
		return err
	})
	if err != nil {
		return err
	}
	switch {
	case len(dc.Watchers) == 0:
		return &RulesError{Line: n.Line, Path: path + ".watchers", Msg: "is required; list who may watch as SPIFFE ID patterns"}
	case dc.Count == 0:
		return &RulesError{Line: n.Line, Path: path + ".count", Msg: fmt.Sprintf("is required; give how many watchers must be present, 1 to %d", MaxCount)}
	case dc.OnLeave == "":
		return &RulesError{Line: n.Line, Path: path + ".on_leave", Msg: "is required; say what happens when a watcher leaves: pause or terminate"}
	}
	if named, ok := literalCount(dc.Watchers); ok && dc.Count > named {
		return &RulesError{Line: n.Line, Path: path + ".count", Msg: fmt.Sprintf("is %d but watchers names only %d identities, so the grant could never be live; lower the count or name more watchers", dc.Count, named)}
	}
	return nil
}

// mapping calls fn for each key of mapping n in order, refusing keys not in
// known (with the key's name and line) and keys given twice.
func (p *parser) mapping(n *yaml.Node, path string, known []string, fn func(key string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		what := "the document"
		if path != "" {
			what = "it"
		}
		return &RulesError{Line: n.Line, Path: path, Msg: fmt.Sprintf("%s is %s; it should be a mapping with the keys %s", what, describeNode(n), strings.Join(known, ", "))}
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return &RulesError{Line: k.Line, Path: path, Msg: fmt.Sprintf("has %s as a key; keys are field names: %s", describeNode(k), strings.Join(known, ", "))}
		}
		key := k.Value
		where := key
		if !slices.Contains(known, key) {
			where = identity.Quote(key)
		}
		if path != "" {
			where = path + "." + where
		}
		if !slices.Contains(known, key) {
			return &RulesError{Line: k.Line, Path: where, Msg: "unknown key; the keys here are " + strings.Join(known, ", ")}
		}
		if first, dup := seen[key]; dup {
			return &RulesError{Line: k.Line, Path: where, Msg: fmt.Sprintf("is given twice (first on line %d); keep one", first)}
		}
		seen[key] = k.Line
		if err := fn(key, v); err != nil {
			return err
		}
	}
	return nil
}

// seq returns the items of list n, at most max.
func (p *parser) seq(n *yaml.Node, path string, max int) ([]*yaml.Node, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, &RulesError{Line: n.Line, Path: path, Msg: fmt.Sprintf("is %s; it should be a list", describeNode(n))}
	}
	if len(n.Content) > max {
		return nil, &RulesError{Line: n.Line, Path: path, Msg: fmt.Sprintf("has %d items; at most %d are allowed", len(n.Content), max)}
	}
	return n.Content, nil
}

// scalar reads a scalar as the text written, so "08:00" or 3600 reach the
// parsers unchanged.
func (p *parser) scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return "", &RulesError{Line: n.Line, Path: path, Msg: fmt.Sprintf("is %s; it should be a single value", describeNode(n))}
	}
	return n.Value, nil
}

func (p *parser) strings(n *yaml.Node, path string, max int) ([]string, []int, error) {
	items, err := p.seq(n, path, max)
	if err != nil {
		return nil, nil, err
	}
	out, lines := make([]string, len(items)), make([]int, len(items))
	for i, item := range items {
		if out[i], err = p.scalar(item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return nil, nil, err
		}
		lines[i] = item.Line
	}
	return out, lines, nil
}

func (p *parser) patterns(n *yaml.Node, path string) ([]task.Pattern, error) {
	items, lines, err := p.strings(n, path, MaxPatterns)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, &RulesError{Line: n.Line, Path: path, Msg: "is empty; list SPIFFE ID patterns, e.g. [spiffe://" + p.td.Name() + "/person/example.com/*], or leave the key out"}
	}
	out := make([]task.Pattern, len(items))
	for i, s := range items {
		f := fmt.Sprintf("%s[%d]", path, i)
		pat, err := task.ParsePattern(s)
		if err != nil {
			return nil, &RulesError{Line: lines[i], Path: f, Msg: err.Error()}
		}
		if pat.TrustDomain() != p.td {
			return nil, &RulesError{Line: lines[i], Path: f, Msg: fmt.Sprintf("%s is in trust domain %q; patterns must be in %q", identity.Quote(s), pat.TrustDomain().Name(), p.td.Name())}
		}
		if j := slices.Index(items, s); j < i {
			return nil, &RulesError{Line: lines[i], Path: f, Msg: fmt.Sprintf("%s repeats %s[%d]; list each pattern once", identity.Quote(s), path, j)}
		}
		out[i] = pat
	}
	return out, nil
}

var kindNames = []identity.Kind{identity.KindPerson, identity.KindAgent, identity.KindWorkload, identity.KindNode}

func (p *parser) kinds(n *yaml.Node, path string) ([]identity.Kind, error) {
	items, lines, err := p.strings(n, path, len(kindNames))
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, &RulesError{Line: n.Line, Path: path, Msg: "is empty; list kinds (person, agent, workload, node), or leave the key out"}
	}
	out := make([]identity.Kind, len(items))
	for i, s := range items {
		f := fmt.Sprintf("%s[%d]", path, i)
		k := identity.Kind(s)
		if !slices.Contains(kindNames, k) {
			return nil, &RulesError{Line: lines[i], Path: f, Msg: identity.Quote(s) + " is not an identity kind; use person, agent, workload or node"}
		}
		if slices.Contains(out[:i], k) {
			return nil, &RulesError{Line: lines[i], Path: f, Msg: identity.Quote(s) + " is listed twice; list each kind once"}
		}
		out[i] = k
	}
	return out, nil
}

func (p *parser) count(n *yaml.Node, path string) (int, error) {
	s, err := p.scalar(n, path)
	if err != nil {
		return 0, err
	}
	c, convErr := strconv.Atoi(s)
	if convErr != nil || !isDigits(s) || c < 1 || c > MaxCount {
		return 0, &RulesError{Line: n.Line, Path: path, Msg: fmt.Sprintf("%s is not a whole number from 1 to %d", identity.Quote(s), MaxCount)}
	}
	return c, nil
}

func (p *parser) boolean(n *yaml.Node, path string) (bool, error) {
	s, err := p.scalar(n, path)
	if err != nil {
		return false, err
	}
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, &RulesError{Line: n.Line, Path: path, Msg: identity.Quote(s) + " is not true or false"}
}

func (p *parser) duration(n *yaml.Node, path string, limit time.Duration) (time.Duration, error) {
	s, err := p.scalar(n, path)
	if err != nil {
		return 0, err
	}
	d, err := identity.ParseTTL(path, s, limit)
	if err != nil {
		return 0, place(n.Line, err)
	}
	return d, nil
}

// place puts a FieldError at a line.
func place(line int, err error) error {
	var fe *identity.FieldError
	if errors.As(err, &fe) {
		return &RulesError{Line: line, Path: fe.Field, Msg: fe.Msg}
	}
	return &RulesError{Line: line, Msg: err.Error()}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "empty"
		}
		return "the value " + identity.Quote(n.Value)
	case yaml.DocumentNode:
		return "a document"
	}
	return "something else"
}
