// Package pemfile reads certificates and private keys from PEM files for
// every side of writ (server, agent, CLI). It imports only the standard
// library so that the agent and the client can use it without pulling in
// the CA, the store or the audit log.
package pemfile

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// ReadCertificates reads every CERTIFICATE block of a PEM file, in order, and
// refuses a file without one or with other block types, which usually means
// the wrong file was named.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCertificates(path, data)
}

// ParseCertificates is ReadCertificates's parser; path only names
// the source in errors. The agent and the client read trust bundles and
// node certificates with it too.
func ParseCertificates(path string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: found a %q PEM block where only CERTIFICATE blocks belong", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	return certs, nil
}

// ReadPrivateKey reads one private key from a PEM file that only its
// owner can access: whoever reads it can act as its certificate (an
// upstream CA, a node proving itself with x509pop).
func ReadPrivateKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible by group or others (mode %v): chmod 600 it", path, perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePrivateKey(path, data)
}

// ParsePrivateKey is ReadPrivateKey's parser; path only names the source in errors.
func ParsePrivateKey(path string, data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM private key block (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", path)
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS":
			continue // written ahead of the key by some tools
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%s: the key is encrypted: give an unencrypted key file readable only by the server's user", path)
		default:
			return nil, fmt.Errorf("%s: %q is not a private key PEM block", path, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: key of type %T cannot sign", path, key)
		}
		return signer, nil
	}
}
