// Package secrets seals short secrets, such as the credentials Puntos sends
// to other companies' programs, for storage in a database column.
//
// A sealed value is text: "enc:v1:<key id>:<base64 of nonce and
// ciphertext>". The cipher is AES-256-GCM with a random 96-bit nonce per
// value. The caller passes additional data naming the record the value
// belongs to; a value opens only with the same additional data, so a value
// copied onto another record does not open there. The key id is a short
// digest of the key: a keyring holds the current key, which seals, and
// older ones, which still open what they sealed, so that keys can be rotated.
//
// The package knows nothing of where keys come from or which records hold
// sealed values; its errors never contain a secret or a sealed value.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// Prefix starts every sealed value, whatever its version.
const Prefix = "enc:"

// v1 starts the values of this format: AES-256-GCM, 12-byte nonce first.
const v1 = Prefix + "v1:"

// Errors of Seal and Open. They say what is wrong without the value.
var (
	// ErrNoKey: there is no keyring to seal or open with.
	ErrNoKey = errors.New("no secrets key is configured")
	// ErrUnknownKey: the value names a key that the keyring does not hold.
	ErrUnknownKey = errors.New("sealed with a key that is not configured")
	// ErrOpen: the key named by the value does not open it; the value was
	// altered, copied from another record, or the key with its id differs.
	ErrOpen = errors.New("the value does not open with its key: it was altered or " +
		"copied from another record")
	// ErrMalformed: the value starts like a sealed value but is not one of
	// a version this package reads.
	ErrMalformed = errors.New("not a sealed value this version of Puntos reads")
)

// Keyring holds the keys: the current one seals, each opens what it sealed.
// A nil *Keyring is valid: it seals and opens nothing (ErrNoKey).
type Keyring struct {
	current *key
	byID    map[string]*key
	ids     []string // in the order given
}

type key struct {
	id   string
	aead cipher.AEAD
	// digest keys Digest: a subkey derived from the key, never the key.
	digest []byte
}

// New returns a keyring of raw keys, each KeySize bytes; the first is the
// current one.
func New(raw ...[]byte) (*Keyring, error) {
	if len(raw) == 0 {
		return nil, errors.New("no key given")
	}
	k := &Keyring{byID: map[string]*key{}}
	for i, r := range raw {
		if len(r) != KeySize {
			return nil, fmt.Errorf("key %d is %d bytes, want %d", i+1, len(r), KeySize)
		}
		block, err := aes.NewCipher(r)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		one := &key{id: keyID(r), aead: aead, digest: digestKey(r)}
		if _, dup := k.byID[one.id]; dup {
			return nil, fmt.Errorf("key %d repeats an earlier key", i+1)
		}
		k.byID[one.id] = one
		k.ids = append(k.ids, one.id)
		if k.current == nil {
			k.current = one
		}
	}
	return k, nil
}

// Parse reads a keyring from its setting: the standard base64 of each key,
// comma separated, the current key first. Its errors name the key by its
// position, never by its value.
func Parse(setting string) (*Keyring, error) {
	var raw [][]byte
	for i, part := range strings.Split(setting, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("key %d is empty (keys are separated by commas, "+
				"the current one first)", i+1)
		}
		if _, err := hex.DecodeString(part); err == nil && len(part) == 2*KeySize {
			return nil, fmt.Errorf("key %d is written in hex; give the base64 of %d "+
				"random bytes (make one with: openssl rand -base64 32)", i+1, KeySize)
		}
		b, err := base64.StdEncoding.DecodeString(part)
		if err != nil || part == "" {
			return nil, fmt.Errorf("key %d is not standard base64 (make one with: "+
				"openssl rand -base64 32)", i+1)
		}
		if len(b) != KeySize {
			return nil, fmt.Errorf("key %d is %d bytes, want the base64 of %d random bytes "+
				"(make one with: openssl rand -base64 32)", i+1, len(b), KeySize)
		}
		raw = append(raw, b)
	}
	return New(raw...)
}

// Generate makes a random key and returns it as a keyring and in the
// form Parse reads.
func Generate() (*Keyring, string, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, "", fmt.Errorf("make a key: %w", err)
	}
	k, err := New(raw)
	if err != nil {
		return nil, "", err
	}
	return k, base64.StdEncoding.EncodeToString(raw), nil
}

// keyID is the id of a key in its sealed values: the first four bytes of a
// SHA-256 digest of the key, in hex. It shows which key a value needs
// without telling anything of the key.
func keyID(raw []byte) string {
	h := sha256.New()
	h.Write([]byte("puntos secrets key id\x00"))
	h.Write(raw)
	return hex.EncodeToString(h.Sum(nil)[:4])
}

// IDs lists the ids of the keyring's keys, the current one first.
func (k *Keyring) IDs() []string {
	if k == nil {
		return nil
	}
	return append([]string(nil), k.ids...)
}

// IsSealed tells whether s is a sealed value (of any version) rather than
// plain text.
func IsSealed(s string) bool { return strings.HasPrefix(s, Prefix) }

// Seal encrypts plain for the record named by ad with the current key.
// Errors: ErrNoKey.
func (k *Keyring) Seal(plain string, ad []byte) (string, error) {
	if k == nil {
		return "", ErrNoKey
	}
	aead := k.current.aead
	buf := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("make a nonce: %w", err)
	}
	buf = aead.Seal(buf, buf, []byte(plain), ad)
	return v1 + k.current.id + ":" + base64.StdEncoding.EncodeToString(buf), nil
}

// Open decrypts a sealed value of the record named by ad.
// Errors: ErrNoKey, ErrMalformed, ErrUnknownKey (wrapped, naming the key
// id), ErrOpen.
func (k *Keyring) Open(sealed string, ad []byte) (string, error) {
	id, data, err := split(sealed)
	if err != nil {
		return "", err
	}
	if k == nil {
		return "", ErrNoKey
	}
	one, ok := k.byID[id]
	if !ok {
		return "", fmt.Errorf("%w (key id %s)", ErrUnknownKey, id)
	}
	n := one.aead.NonceSize()
	if len(data) < n+one.aead.Overhead() {
		return "", ErrMalformed
	}
	plain, err := one.aead.Open(nil, data[:n], data[n:], ad)
	if err != nil {
		return "", ErrOpen
	}
	return string(plain), nil
}

// Current tells whether sealed was sealed with the keyring's current key:
// when not, sealing it again (after Open) moves it to that key.
func (k *Keyring) Current(sealed string) bool {
	id, _, err := split(sealed)
	return err == nil && k != nil && id == k.current.id
}

// KeyID is the id of the key that sealed a value, or "" when the value is
// not a sealed one.
func KeyID(sealed string) string {
	id, _, err := split(sealed)
	if err != nil {
		return ""
	}
	return id
}

// split takes a sealed value apart into its key id and its nonce and
// ciphertext. Errors: ErrMalformed.
func split(sealed string) (string, []byte, error) {
	rest, ok := strings.CutPrefix(sealed, v1)
	if !ok {
		return "", nil, ErrMalformed
	}
	id, text, ok := strings.Cut(rest, ":")
	if !ok || id == "" {
		return "", nil, ErrMalformed
	}
	data, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return "", nil, ErrMalformed
	}
	return id, data, nil
}
