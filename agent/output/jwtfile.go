package output

import (
	"fmt"
	"path/filepath"
	"strings"

	"writ.dev/writ/internal/atomicfile"
)

// WriteJWT writes one JWT-SVID on its own into dir, under the name a Writer
// gives the token for audience (jwt-AUDIENCE.token, mode 0600, replaced
// atomically), and returns the file's path. It is for a token minted once,
// with no X.509-SVID beside it (`writ svid mint --jwt --out`): a token for
// several audiences is named after the first, the one it was asked for.
func WriteJWT(dir, audience, token string) (string, error) {
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("output: nothing was written: the JWT-SVID for audience %q is empty or contains white space: a compact JWS is expected", audience)
	}
	names, err := jwtFileNames([]string{audience})
	if err != nil {
		return "", err
	}
	abs, err := prepareDir(dir)
	if err != nil {
		return "", err
	}
	path := filepath.Join(abs, names[0])
	if err := atomicfile.Write(path, []byte(token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("output: %w", err)
	}
	return path, nil
}
