package backoffice

import (
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// secretsHolder is a Reader that holds the secrets key; the ledger does
// (postgres.Ledger.SecretsKeyring), so that one key serves the process.
type secretsHolder interface {
	SecretsKeyring() *secrets.Keyring
}

// sealCredentials returns the payload to hash and the payload to send for
// a command of kind to (program, member) whose JSON payload is body: for an
// external program's upsert that carries a secret, the secret is hashed as
// a keyed digest and sent sealed (core.SealCommandCredentials); for any
// other command, body twice. Errors: unavailable, naming
// PUNTOS_SECRETS_KEY, when there is a secret and no key.
func (s *Server) sealCredentials(kind, program, member string,
	body []byte) (hashed, sent []byte, err error) {
	if kind != core.KindExternalUpsert {
		return body, body, nil
	}
	var k *secrets.Keyring
	if h, ok := s.read.(secretsHolder); ok {
		k = h.SecretsKeyring()
	}
	return core.SealCommandCredentials(k, program, member, body)
}
