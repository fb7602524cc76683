package audit

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// MaxCheckpointSize bounds a signed checkpoint note; a real one is a few
// hundred bytes.
const MaxCheckpointSize = 16 << 10

// Checkpoint commits to the first Size leaves of the log named Origin.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// SignedCheckpoint is a checkpoint note exactly as it was signed, stored or
// exported. Source, when set, says where it came from (a file and line) so
// that reports can point at it.
type SignedCheckpoint struct {
	Note   []byte
	Source string
}

// Text is the checkpoint body: origin line, decimal size, base64 root, each
// ending in a newline.
func (c Checkpoint) Text() ([]byte, error) {
	if err := checkOrigin(c.Origin); err != nil {
		return nil, err
	}
	if c.Size < 0 {
		return nil, fmt.Errorf("audit: checkpoint size %d is negative", c.Size)
	}
	return fmt.Appendf(nil, "%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:])), nil
}

func checkOrigin(origin string) error {
	if origin == "" {
		return errors.New("audit: checkpoint origin is empty")
	}
	if !utf8.ValidString(origin) || strings.ContainsFunc(origin, func(r rune) bool { return unicode.IsControl(r) }) {
		return fmt.Errorf("audit: checkpoint origin %q has control characters or invalid UTF-8", origin)
	}
	return nil
}

// parseCheckpointText parses a checkpoint body. It accepts only the exact
// form Text produces: extension lines are refused, since writ writes none
// and an unexpected one means the note was not made by writ.
func parseCheckpointText(text string) (Checkpoint, error) {
	var c Checkpoint
	lines := strings.SplitAfter(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return c, fmt.Errorf("audit: checkpoint body has %d lines, want exactly 3 (origin, size, root hash)", strings.Count(text, "\n"))
	}
	origin := strings.TrimSuffix(lines[0], "\n")
	if err := checkOrigin(origin); err != nil {
		return c, err
	}
	sizeText := strings.TrimSuffix(lines[1], "\n")
	size, err := strconv.ParseInt(sizeText, 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != sizeText {
		return c, fmt.Errorf("audit: checkpoint size %q is not a non-negative decimal number in canonical form", sizeText)
	}
	rootText := strings.TrimSuffix(lines[2], "\n")
	root, err := base64.StdEncoding.Strict().DecodeString(rootText)
	if err != nil || len(root) != tlog.HashSize {
		return c, fmt.Errorf("audit: checkpoint root %q is not the base64 of a %d-byte hash", rootText, tlog.HashSize)
	}
	c.Origin, c.Size = origin, size
	copy(c.Root[:], root)
	return c, nil
}

// SignCheckpoint returns c as a note signed by s.
func SignCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	text, err := c.Text()
	if err != nil {
		return nil, err
	}
	msg, err := note.Sign(&note.Note{Text: string(text)}, s)
	if err != nil {
		return nil, fmt.Errorf("audit: signing checkpoint of size %d: %w", c.Size, err)
	}
	return msg, nil
}

// ParseCheckpoint verifies a signed checkpoint note with the trusted keys
// vs (note.VerifierList of one or more audit keys) and parses it. The note
// must carry a valid signature by one of them; signatures by other keys are
// allowed beside it (a witness may cosign), but the text must be a writ
// checkpoint.
func ParseCheckpoint(msg []byte, vs note.Verifiers) (Checkpoint, error) {
	if len(msg) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint note is %d bytes, more than the %d allowed", len(msg), MaxCheckpointSize)
	}
	if vs == nil {
		return Checkpoint{}, errors.New("audit: no verifier key given for checkpoints")
	}
	n, err := note.Open(msg, vs)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			var names []string
			for _, sig := range unverified.Note.UnverifiedSigs {
				names = append(names, fmt.Sprintf("%q (hash %08x)", sig.Name, sig.Hash))
			}
			return Checkpoint{}, fmt.Errorf("audit: checkpoint is signed only by keys not trusted here: %s; check that the right public keys were given", strings.Join(names, ", "))
		case errors.As(err, &invalid):
			return Checkpoint{}, fmt.Errorf("audit: checkpoint signature by %q does not verify: the checkpoint was altered or forged", invalid.Name)
		default:
			return Checkpoint{}, fmt.Errorf("audit: checkpoint is not a well-formed signed note: %w", err)
		}
	}
	return parseCheckpointText(n.Text)
}

// peekCheckpoint parses a note's body without checking any signature. It is
// only for ordering checkpoints in an export, never for trusting them.
func peekCheckpoint(msg []byte) (Checkpoint, error) {
	i := bytes.LastIndex(msg, []byte("\n\n"))
	if i < 0 {
		return Checkpoint{}, errors.New("audit: checkpoint is not a signed note: no blank line before the signatures")
	}
	return parseCheckpointText(string(msg[:i+1]))
}

// PeekSize is the size a checkpoint note claims, without checking its
// signature: for ordering output, never for trusting it.
func PeekSize(msg []byte) (int64, bool) {
	c, err := peekCheckpoint(msg)
	return c.Size, err == nil
}

// ed25519Signer signs notes with an Ed25519 key held behind crypto.Signer,
// so the private key can stay in writ's keystore.
type ed25519Signer struct {
	name string
	hash uint32
	key  crypto.Signer
}

// NewSigner returns a note.Signer named name that signs with key, which
// must be an Ed25519 crypto.Signer. The name is the key's name in notes,
// not the log's origin.
func NewSigner(name string, key crypto.Signer) (note.Signer, error) {
	if key == nil {
		return nil, errors.New("audit: no audit signing key")
	}
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("audit: audit signing key is %T, want an Ed25519 key", key.Public())
	}
	if err := checkKeyName(name); err != nil {
		return nil, err
	}
	return &ed25519Signer{name: name, hash: ed25519KeyHash(name, pub), key: key}, nil
}

func (s *ed25519Signer) Name() string    { return s.name }
func (s *ed25519Signer) KeyHash() uint32 { return s.hash }

func (s *ed25519Signer) Sign(msg []byte) ([]byte, error) {
	// Ed25519 signs the message itself, which crypto.Signer expresses as
	// a zero hash function.
	sig, err := s.key.Sign(nil, msg, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("audit: audit key %q failed to sign: %w", s.name, err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("audit: audit key %q returned a %d-byte signature, want %d", s.name, len(sig), ed25519.SignatureSize)
	}
	return sig, nil
}

// NewVerifier returns the note.Verifier for checkpoints signed by the
// Ed25519 key pub under name.
func NewVerifier(name string, pub ed25519.PublicKey) (note.Verifier, error) {
	if err := checkKeyName(name); err != nil {
		return nil, err
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("audit: audit public key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("audit: audit public key: %w", err)
	}
	return v, nil
}

func checkKeyName(name string) error {
	if name == "" || !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsSpace) || strings.Contains(name, "+") {
		return fmt.Errorf("audit: key name %q must be non-empty without spaces or '+'", name)
	}
	return nil
}

// ed25519KeyHash is the note key hash: the first four bytes of
// SHA-256(name, "\n", 0x01, public key), 0x01 naming Ed25519.
func ed25519KeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write([]byte{1})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}
