package identity

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"writ.dev/writ/internal/quote"
)

// ParseTTL parses a TTL given by an operator in field: a Go duration ("90s",
// "1h30m") or a bare number of seconds ("3600"), because both forms are
// common in config files and CLI flags and neither is ambiguous.
//
// The TTL must be positive and a whole number of seconds: certificate
// validity is expressed in seconds, and a fraction would be silently
// dropped. When limit > 0 the TTL must also be at most limit. Errors name
// the field and the allowed range.
func ParseTTL(field, s string, limit time.Duration) (time.Duration, error) {
	allowed := ttlAllowed(limit)
	if s == "" {
		return 0, fieldErr(field, "is required; "+allowed)
	}
	var d time.Duration
	if isDigits(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > math.MaxInt64/int64(time.Second) {
			return 0, fieldErr(field, fmt.Sprintf("%s seconds is too long; %s", quote.String(s), allowed))
		}
		d = time.Duration(n) * time.Second
	} else {
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fieldErr(field, fmt.Sprintf("%s is neither a number of seconds nor a duration; %s", quote.String(s), allowed))
		}
	}
	if problem := checkTTL(d, limit); problem != "" {
		given := quote.String(s)
		if formatDuration(d) != s && d > 0 {
			given += " (" + formatDuration(d) + ")"
		}
		return 0, fieldErr(field, given+" "+problem+"; "+allowed)
	}
	return d, nil
}

// checkTTL says what is wrong with a positive TTL d, or "" if nothing is.
func checkTTL(d, limit time.Duration) string {
	switch {
	case d <= 0:
		return "is not positive"
	case d%time.Second != 0:
		return "is not a whole number of seconds"
	case limit > 0 && d > limit:
		return "is longer than the maximum " + formatDuration(limit)
	}
	return ""
}

func ttlAllowed(limit time.Duration) string {
	s := `give a positive whole number of seconds ("3600") or a duration ("90s", "1h30m")`
	if limit > 0 {
		s += " of at most " + formatDuration(limit)
	}
	return s
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// formatDuration prints d as an operator would write it: "24h" and "1h30m"
// rather than time.Duration's "24h0m0s" and "1h30m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
