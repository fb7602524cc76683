package output

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// JWT file names are jwtFilePrefix + the audience made safe + jwtFileSuffix.
const (
	jwtFilePrefix = "jwt-"
	jwtFileSuffix = ".token"
	// maxNameLen caps the audience part, keeping the whole name well under
	// the usual 255-byte limit even with a hash appended.
	maxNameLen = 100
)

// jwtFileNames gives each audience a distinct file name, in the order given.
// The name is the audience with anything outside [A-Za-z0-9._-] replaced by
// '_' and cut at maxNameLen bytes. That mapping loses information, so when
// two audiences end up with the same name, or the name would be empty, "."
// or "..", a short hash of the audience is appended: the names stay
// readable in the common case and distinct in every case.
func jwtFileNames(audiences []string) ([]string, error) {
	safe := make([]string, len(audiences))
	count := make(map[string]int, len(audiences))
	for i, a := range audiences {
		safe[i] = safeName(a)
		count[safe[i]]++
	}
	names := make([]string, len(audiences))
	seen := make(map[string]bool, len(audiences))
	owner := make(map[string]string, len(audiences))
	for i, a := range audiences {
		if seen[a] {
			return nil, fmt.Errorf("audience %q is listed twice: ask for each audience once", a)
		}
		seen[a] = true
		s := safe[i]
		if count[s] > 1 || s == "" || s == "." || s == ".." {
			s += "-" + audienceHash(a)
		}
		name := jwtFilePrefix + s + jwtFileSuffix
		if prev, ok := owner[name]; ok {
			return nil, fmt.Errorf("audiences %q and %q both map to file name %s: rename one of them", prev, a, name)
		}
		owner[name] = a
		names[i] = name
	}
	return names, nil
}

// safeName keeps the bytes of a that are safe in a file name and replaces
// every other character by '_', stopping at maxNameLen bytes so a huge
// audience costs no more than a short one.
func safeName(a string) string {
	b := make([]byte, 0, min(len(a), maxNameLen))
	for _, r := range a {
		if len(b) == maxNameLen {
			break
		}
		if r < 0x80 && safeByte(byte(r)) {
			b = append(b, byte(r))
		} else {
			b = append(b, '_')
		}
	}
	return string(b)
}

func safeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// audienceHash is short enough to keep names readable and long enough that
// two audiences in one Material sharing it is not a practical concern; if
// they do, jwtFileNames reports it rather than overwrite a token.
func audienceHash(a string) string {
	sum := sha256.Sum256([]byte(a))
	return hex.EncodeToString(sum[:4])
}
