package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// devKeyFile is the file, in the data directory, of the development key
// that encrypts the credentials of external programs when no key is set.
const devKeyFile = "secrets.key"

// secretsKeyError names the setting in an error about its value.
func secretsKeyError(err error) error {
	return fmt.Errorf("secrets-key (PUNTOS_SECRETS_KEY): %w", err)
}

// maskSecretsKey shows the secrets-key setting in the start-up log: the ids
// of its keys, which stored values name, never the keys.
func maskSecretsKey(v string) string {
	if strings.TrimSpace(v) == "" {
		return "(none: development key on a loopback address only)"
	}
	k, err := secrets.Parse(v)
	if err != nil {
		return "***"
	}
	return "key ids " + strings.Join(k.IDs(), ",")
}

// secretsKeyring returns the keys that encrypt the credentials of external
// programs, and the development key's file when that is where they come
// from:
//   - the keys of PUNTOS_SECRETS_KEY when it is set;
//   - else, when the process listens on a loopback address only (a
//     developer's machine, as `make run` starts it), the development key in
//     <data-dir>/secrets.key, made on first use, readable by its owner only;
//   - else none (nil): the ledger then refuses to store credentials and the
//     conversion adapter cannot use encrypted ones, each with an error that
//     names the setting.
func (c *Config) secretsKeyring() (*secrets.Keyring, string, error) {
	if strings.TrimSpace(c.SecretsKey) != "" {
		k, err := secrets.Parse(c.SecretsKey)
		if err != nil {
			return nil, "", secretsKeyError(err)
		}
		return k, "", nil
	}
	if c.DataDir == "" || !loopbackOnly(c.HTTPAddr) {
		return nil, "", nil
	}
	path := filepath.Join(c.DataDir, devKeyFile)
	k, err := devKeyring(path)
	if err != nil {
		return nil, "", fmt.Errorf("development secrets key %s (set PUNTOS_SECRETS_KEY to "+
			"use another): %w", path, err)
	}
	return k, path, nil
}

// loopbackOnly tells whether addr is a loopback address: the process is not
// reachable from other machines.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// devKeyring reads the development key at path, making it first when there
// is none. The key is written to a temporary file and linked into place, so
// that processes starting together end up with one key, whole.
func devKeyring(path string) (*secrets.Keyring, error) {
	k, err := readKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	_, text, err := secrets.Generate()
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".secrets.key-*") // mode 0600
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(text + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return readKeyFile(path)
}

// readKeyFile reads a key file, which only its owner may read.
func readKeyFile(path string) (*secrets.Keyring, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("others may read it (mode %04o); make it private with "+
			"chmod 600", perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return secrets.Parse(strings.TrimSpace(string(b)))
}

// useSecretsKey gives the ledger the keys that encrypt the credentials of
// external programs (a gateway seals them with the same keys before it
// puts them on the bus) and, in the core, encrypts those still stored in
// plain text (written before they were encrypted) or with an older key. A value
// that cannot be encrypted again is logged and left as it is: the process
// starts, and the conversion adapter reports that external program.
func (a *App) useSecretsKey(ctx context.Context) error {
	k, devFile, err := a.cfg.secretsKeyring()
	if err != nil {
		return err
	}
	a.Ledger.Secrets = k
	switch {
	case k == nil:
		a.log.Warn("No secrets key configured: credentials of external programs can be " +
			"neither stored nor used; set PUNTOS_SECRETS_KEY")
		return nil
	case devFile != "":
		a.log.Warn("No secrets key configured: credentials of external programs are "+
			"encrypted with the development key", "file", devFile, "key_id", k.IDs()[0])
	}
	if !a.roles.Core {
		return nil
	}
	n, err := a.Ledger.SealCredentials(ctx)
	if n > 0 {
		a.log.Info("Encrypted the stored credentials of external programs", "count", n,
			"key_id", k.IDs()[0])
	}
	if err != nil {
		a.log.Error("Credentials of external programs left as they were", "error", err)
	}
	return nil
}
