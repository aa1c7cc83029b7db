package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// SecretsKeyring is the ledger's secrets key (the Secrets field): a gateway
// reading through the ledger seals with it the credentials it puts on the
// bus (core.SealCommandCredentials), so that gateway and ledger use the
// same keys.
func (l *Ledger) SecretsKeyring() *secrets.Keyring { return l.Secrets }

// upsertExternalSealed applies an external program's upsert whose
// credentials the gateway sealed for the command: upsertExternal gets a
// copy of cmd with them opened (openCommandCredentials), and so treats
// them as it treats a secret an earlier gateway sent in clear. cmd itself
// is not changed.
func (t *txn) upsertExternalSealed(ctx context.Context, prog *program,
	cmd *bus.Command) (any, error) {
	opened, err := t.openCommandCredentials(cmd)
	if err != nil {
		return nil, err
	}
	return t.upsertExternal(ctx, prog, opened)
}

// openCommandCredentials returns cmd, or a copy of it whose payload has the
// credentials in clear when the gateway sealed them for the command
// (core.CommandCredentialsAD). A sealed value of another kind (the row's
// own value that an earlier back office sent back, or a secret that only
// looks sealed) is left for storedCredentials to judge, as is a payload
// that does not decode.
//
// Errors: unavailable, naming PUNTOS_SECRETS_KEY, when a sealed value
// cannot be opened for want of its key: with no key, or one the ledger does
// not hold (a gateway configured with another key). Storing it as the
// secret would give the partner the sealed text as its token.
func (t *txn) openCommandCredentials(cmd *bus.Command) (*bus.Command, error) {
	var fields map[string]json.RawMessage
	var given string
	if json.Unmarshal(cmd.Payload, &fields) != nil ||
		json.Unmarshal(fields["credentials"], &given) != nil || !secrets.IsSealed(given) {
		return cmd, nil
	}
	if t.secrets == nil {
		return nil, core.Errorf(core.Unavailable, "credentials", "cannot be stored: no "+
			"secrets key is configured on the ledger's process (set PUNTOS_SECRETS_KEY); "+
			"nothing was changed")
	}
	plain, err := t.secrets.Open(given, core.CommandCredentialsAD(cmd.Program, cmd.Member))
	switch {
	case errors.Is(err, secrets.ErrUnknownKey):
		return nil, core.Errorf(core.Unavailable, "credentials", "cannot be stored: they "+
			"were encrypted with key id %s, which the ledger's process does not hold; give "+
			"every gateway, core and adapters process the same PUNTOS_SECRETS_KEY; nothing "+
			"was changed", secrets.KeyID(given))
	case err != nil:
		return cmd, nil
	}

	// The copy, with the secret in clear, lives only as long as the upsert.
	text, err := json.Marshal(plain)
	if err != nil {
		return nil, err
	}
	fields["credentials"] = text
	opened := *cmd
	if opened.Payload, err = json.Marshal(fields); err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return &opened, nil
}
