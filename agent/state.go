package agent

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"writ.dev/writ/internal/atomicfile"
	"writ.dev/writ/internal/pemfile"
	"writ.dev/writ/keystore"
)

// stateFile names, in the data dir, the agent's current certificate and the
// keystore name of its key, and the trust bundle it last had. The key
// itself is in the keystore (DATA_DIR/keys, mode 0600).
const stateFile = "agent.json"

type savedState struct {
	Version  int    `json:"version"`
	SPIFFEID string `json:"spiffe_id"`
	KeyName  string `json:"key_name"`
	ChainPEM string `json:"chain_pem"`
	// BundlePEM is the trust bundle, so a restarted agent can reach the
	// server and serve workloads before it has synced.
	BundlePEM string `json:"bundle_pem"`
}

const stateVersion = 1

// agentState is the agent's own identity.
type agentState struct {
	keyName string
	chain   []*x509.Certificate
	bundle  []*x509.Certificate
}

func readState(dir string) (*agentState, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var s savedState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("agent state %s: %w", stateFile, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("agent state %s: version %d is not %d", stateFile, s.Version, stateVersion)
	}
	if err := keystore.ValidateName(s.KeyName); err != nil {
		return nil, fmt.Errorf("agent state %s: %w", stateFile, err)
	}
	chain, err := pemfile.ParseCertificates(stateFile, []byte(s.ChainPEM))
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("agent state %s: no certificate (%v)", stateFile, err)
	}
	bundle, err := pemfile.ParseCertificates(stateFile, []byte(s.BundlePEM))
	if err != nil || len(bundle) == 0 {
		return nil, fmt.Errorf("agent state %s: no bundle (%v)", stateFile, err)
	}
	return &agentState{keyName: s.KeyName, chain: chain, bundle: bundle}, nil
}

func writeState(dir string, st *agentState, id string) error {
	data, err := json.MarshalIndent(savedState{
		Version:   stateVersion,
		SPIFFEID:  id,
		KeyName:   st.keyName,
		ChainPEM:  string(encodePEMCerts(st.chain)),
		BundlePEM: string(encodePEMCerts(st.bundle)),
	}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, stateFile), append(data, '\n'), 0o600)
}

func encodePEMCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
