package secrets

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
)

// digestLabel names what the subkey of Digest is for, so that it differs
// from any other key ever derived from the same key.
const digestLabel = "puntos secrets digest v1"

// digestKey derives the subkey of Digest from a raw key: an HMAC-SHA256 of
// a fixed label. The sealing key itself never keys a digest.
func digestKey(raw []byte) []byte {
	m := hmac.New(sha256.New, raw)
	m.Write([]byte(digestLabel))
	return m.Sum(nil)
}

// Digest is a keyed digest of plain for the record named by ad, with a
// subkey of the last key of the ring, the oldest one kept:
// "<key id>:<base64 of HMAC-SHA256>". Unlike Seal it is the same every
// time for the same plain, record and keys, so that two requests can be
// compared without their secrets; unlike a plain hash it cannot be checked
// against guesses without the key. The oldest key rather than the current
// one, so that a rotation (NEW,OLD on some processes, OLD alone on others
// still) keeps every digest as it was: the digests change only when OLD is
// dropped. Errors: ErrNoKey.
func (k *Keyring) Digest(plain string, ad []byte) (string, error) {
	if k == nil {
		return "", ErrNoKey
	}
	dk := k.byID[k.ids[len(k.ids)-1]]
	m := hmac.New(sha256.New, dk.digest)
	// The length of ad first: no ad and plain split differently give the
	// same input.
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(ad)))
	m.Write(n[:])
	m.Write(ad)
	m.Write([]byte(plain))
	return dk.id + ":" + base64.RawStdEncoding.EncodeToString(m.Sum(nil)), nil
}
