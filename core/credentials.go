package core

import (
	"encoding/json"
	"fmt"

	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// CommandCredentialsAD is the additional data that binds the credentials
// sealed inside an external program's upsert command to that command's
// program and external program code: the gateway seals them with it and
// the ledger opens them with it. It differs from the data that binds a
// stored value to its row, so a value taken from the bus is never a valid
// column value, nor the other way round.
func CommandCredentialsAD(program, code string) []byte {
	return []byte("external.upsert credentials\x00" + program + "\x00" + code)
}

// credentialsDigestPrefix marks the keyed digest that stands for a secret
// in the payload a command's hash is computed over.
const credentialsDigestPrefix = "digest:"

// SealCommandCredentials prepares the JSON payload of an external program's
// upsert to program's external program code for the bus. It returns the
// payload to hash (bus.Command.Seal) and the payload to send:
//   - without a secret to carry (credentials absent, empty or Masked) both
//     are payload as it is;
//   - else the payload to hash has the credentials replaced by a keyed
//     digest of the secret (secrets.Keyring.Digest), the same for every
//     retry of the request while the oldest key kept is the same (a
//     rotation to NEW,OLD keeps it), and useless
//     to whoever guesses secrets without the key; the payload to send has
//     them sealed with CommandCredentialsAD, a fresh nonce each time.
//
// Every other field is kept as it is. Errors: unavailable, naming
// PUNTOS_SECRETS_KEY, when there is a secret and no key (k is nil): a
// secret is never sent in clear; invalid, when the payload is not a JSON
// object or its credentials not a string.
func SealCommandCredentials(k *secrets.Keyring, program, code string,
	payload []byte) (hashed, sent []byte, err error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		return nil, nil, Errorf(Invalid, "", "the request must be a JSON object")
	}
	raw, ok := fields["credentials"]
	if !ok || string(raw) == "null" {
		return payload, payload, nil
	}
	var plain string
	if err := json.Unmarshal(raw, &plain); err != nil {
		return nil, nil, Errorf(Invalid, "credentials", "must be a string")
	}
	if plain == "" || plain == Masked {
		return payload, payload, nil
	}
	if k == nil {
		return nil, nil, Errorf(Unavailable, "credentials", "cannot be accepted: no secrets "+
			"key is configured on this gateway (set PUNTOS_SECRETS_KEY, the same as the "+
			"ledger's); nothing was sent")
	}

	// What the hash covers, then what travels.
	ad := CommandCredentialsAD(program, code)
	digest, err := k.Digest(plain, ad)
	if err != nil {
		return nil, nil, fmt.Errorf("digest credentials: %w", err)
	}
	if hashed, err = withCredentials(fields, credentialsDigestPrefix+digest); err != nil {
		return nil, nil, err
	}
	sealed, err := k.Seal(plain, ad)
	if err != nil {
		return nil, nil, fmt.Errorf("seal credentials: %w", err)
	}
	if sent, err = withCredentials(fields, sealed); err != nil {
		return nil, nil, err
	}
	return hashed, sent, nil
}

// withCredentials is the JSON object fields with its credentials set to v.
// Its keys come out sorted, so the same fields always give the same bytes.
func withCredentials(fields map[string]json.RawMessage, v string) ([]byte, error) {
	text, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	fields["credentials"] = text
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return out, nil
}

// KeyringHolder holds the process's secrets key. The ledger does
// (postgres.Ledger.SecretsKeyring), so the gateways find the key through
// the reader they already hold.
type KeyringHolder interface {
	SecretsKeyring() *secrets.Keyring
}

// SealPayload is what a gateway does to the JSON payload of a command of
// kind to (program, member) before it hashes and sends it: for an external
// program's upsert, SealCommandCredentials with the key of holder (none
// when holder is not a KeyringHolder); for any other kind, payload twice.
func SealPayload(holder any, kind, program, member string, payload []byte) (hashed,
	sent []byte, err error) {
	if kind != KindExternalUpsert {
		return payload, payload, nil
	}
	var k *secrets.Keyring
	if h, ok := holder.(KeyringHolder); ok {
		k = h.SecretsKeyring()
	}
	return SealCommandCredentials(k, program, member, payload)
}
