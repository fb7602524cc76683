package guardrail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"

	"writ.dev/writ/internal/quote"
)

const (
	// MaxArgumentsBytes bounds the JSON text of a request's arguments:
	// far beyond a tool call's arguments, small enough that the guardrail
	// context of one decision stays cheap to build.
	MaxArgumentsBytes = 64 << 10
	// MaxArgumentsDepth bounds how deeply the arguments nest, the object
	// itself being depth 1.
	MaxArgumentsDepth = 16
	// maxPathKey bounds each key an error's path repeats.
	maxPathKey = 32
)

// Arguments are the arguments of a request (an MCP tool call's, say) as the
// guardrails see them: the record context.arguments. The zero value means
// the request has none, and the context has no arguments attribute.
type Arguments struct {
	rec cedar.Record
	set bool
}

// ParseArguments reads a JSON object into Arguments. JSON strings, booleans,
// arrays and objects become Cedar strings, booleans, sets and records;
// whole numbers become longs and numbers with at most four decimal places
// decimals; a null leaves its attribute out, as Cedar has no null. It
// refuses text over MaxArgumentsBytes, nesting over MaxArgumentsDepth, a
// key given twice (the upstream might read the other one) and numbers
// Cedar cannot hold, naming where.
func ParseArguments(data []byte) (Arguments, error) {
	if len(data) > MaxArgumentsBytes {
		return Arguments{}, fmt.Errorf("arguments: %d bytes is more than the %d allowed: send smaller arguments", len(data), MaxArgumentsBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return Arguments{}, fmt.Errorf("arguments: not JSON: %s", jsonError(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return Arguments{}, errors.New("arguments: want a JSON object ({...})")
	}
	p := argParser{dec: dec}
	rec, err := p.object("arguments", 1)
	if err != nil {
		return Arguments{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Arguments{}, errors.New("arguments: text follows the JSON object: send one object")
	}
	return Arguments{rec: rec, set: true}, nil
}

// IsSet reports whether the request has arguments.
func (a Arguments) IsSet() bool { return a.set }

type argParser struct{ dec *json.Decoder }

func (p *argParser) object(path string, depth int) (cedar.Record, error) {
	m := cedar.RecordMap{}
	// seen holds every key, nulls included, so a key given twice is
	// refused even when one of the two is null.
	seen := map[string]struct{}{}
	for {
		tok, err := p.dec.Token()
		if err != nil {
			return cedar.Record{}, fmt.Errorf("%s: not JSON: %s", path, jsonError(err))
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return cedar.NewRecord(m), nil
		}
		key, ok := tok.(string)
		if !ok {
			return cedar.Record{}, fmt.Errorf("%s: not JSON: a key must be a string", path)
		}
		at := path + "." + quote.Max(key, maxPathKey)
		if _, dup := seen[key]; dup {
			return cedar.Record{}, fmt.Errorf("%s: the key is given twice: give each key once", at)
		}
		seen[key] = struct{}{}
		v, present, err := p.value(at, depth)
		if err != nil {
			return cedar.Record{}, err
		}
		if present {
			m[cedar.String(key)] = v
		}
	}
}

func (p *argParser) value(path string, depth int) (cedar.Value, bool, error) {
	tok, err := p.dec.Token()
	if err != nil {
		return nil, false, fmt.Errorf("%s: not JSON: %s", path, jsonError(err))
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth+1 > MaxArgumentsDepth {
			return nil, false, fmt.Errorf("%s: nested more than %d levels deep: flatten the arguments", path, MaxArgumentsDepth)
		}
		switch t {
		case '{':
			r, err := p.object(path, depth+1)
			return r, err == nil, err
		case '[':
			s, err := p.array(path, depth+1)
			return s, err == nil, err
		}
		return nil, false, fmt.Errorf("%s: not JSON: unexpected %q", path, t)
	case string:
		return cedar.String(t), true, nil
	case bool:
		return cedar.Boolean(t), true, nil
	case nil:
		return nil, false, nil
	case json.Number:
		v, err := number(t)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %v", path, err)
		}
		return v, true, nil
	}
	return nil, false, fmt.Errorf("%s: not JSON", path)
}

func (p *argParser) array(path string, depth int) (cedar.Set, error) {
	var vals []cedar.Value
	for i := 0; ; i++ {
		if !p.dec.More() {
			if _, err := p.dec.Token(); err != nil { // the closing ]
				return cedar.Set{}, fmt.Errorf("%s: not JSON: %s", path, jsonError(err))
			}
			return cedar.NewSet(vals...), nil
		}
		v, present, err := p.value(fmt.Sprintf("%s[%d]", path, i), depth)
		if err != nil {
			return cedar.Set{}, err
		}
		if present {
			vals = append(vals, v)
		}
	}
}

// number turns a JSON number into a Cedar long or decimal.
func number(n json.Number) (cedar.Value, error) {
	s := n.String()
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return cedar.Long(i), nil
	}
	if !strings.ContainsAny(s, "eE") {
		if d, err := types.ParseDecimal(s); err == nil {
			return d, nil
		}
	}
	// An exponent form may still be an exact decimal (1e3, 2.5E-1).
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) {
		if f == math.Trunc(f) && math.Abs(f) < 1<<62 {
			return cedar.Long(int64(f)), nil
		}
		if d, err := types.ParseDecimal(strconv.FormatFloat(f, 'f', -1, 64)); err == nil {
			return d, nil
		}
	}
	return nil, fmt.Errorf("the number %s is neither a whole number in 64 bits nor a decimal with at most 4 places: Cedar cannot hold it; send it as a string", quote.Max(s, maxPathKey))
}

// jsonError says what the decoder found wrong without repeating the input.
func jsonError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return "the text ends early"
	}
	return "malformed"
}
