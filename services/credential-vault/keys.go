package vault

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/latchkey/latchkey/services/credential-vault/internal/keyring"
)

// DevKeyFile is the file in the data directory where `latchkey dev` keeps the root
// key it generated.
const DevKeyFile = "vault-keys"

// ErrNoKeys is returned by LoadKeys when no root key is configured and none may be
// generated.
var ErrNoKeys = errors.New("the vault has no root keys: set LATCHKEY_VAULT_KEYS to \"v1:<32 random bytes in base64>\" " +
	"(for example from `openssl rand -base64 32`), or LATCHKEY_VAULT_KEY_FILE to a file holding that; " +
	"only `latchkey dev` with its embedded NATS server generates one by itself")

// KeySource says where the root keys come from, in order: Keys, then File, then (if
// DevDir is set) DevKeyFile in DevDir, generated on first use.
type KeySource struct {
	// Keys is "v1:base64,v2:base64" (LATCHKEY_VAULT_KEYS).
	Keys string
	// File holds the same (LATCHKEY_VAULT_KEY_FILE).
	File string
	// DevDir, when set, allows generating a key file there. Only a single-machine
	// stack may do this: its key file sits beside the store it protects.
	DevDir string
	// Rand generates a dev key; nil means crypto/rand.
	Rand io.Reader
}

// String implements fmt.Stringer without key material.
func (s KeySource) String() string {
	return fmt.Sprintf("vault keys (inline: %t, file: %q, dev dir: %q)", s.Keys != "", s.File, s.DevDir)
}

// GoString keeps %#v from printing key material.
func (s KeySource) GoString() string { return s.String() }

// LogValue implements slog.LogValuer without key material.
func (s KeySource) LogValue() slog.Value { return slog.StringValue(s.String()) }

// LoadKeys returns the root key ring from src, checked, as the string Config.Keys
// takes. When it generates the dev key file it logs so once (the path, never the key).
func LoadKeys(src KeySource, log *slog.Logger) (string, error) {
	switch {
	case strings.TrimSpace(src.Keys) != "":
		return checked(src.Keys, "LATCHKEY_VAULT_KEYS")
	case src.File != "":
		return readKeyFile(src.File, log)
	case src.DevDir == "":
		return "", ErrNoKeys
	}
	path := filepath.Join(src.DevDir, DevKeyFile)
	if _, err := os.Stat(path); err == nil {
		return readKeyFile(path, log)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading vault key file %s: %w", path, err)
	}
	random := src.Rand
	if random == nil {
		random = rand.Reader
	}
	var k keyring.Key
	if _, err := io.ReadFull(random, k[:]); err != nil {
		return "", fmt.Errorf("generating the vault root key: %w", err)
	}
	keys := keyring.FormatRoots(keyring.Roots{1: k})
	if err := writeNew(path, keys+"\n"); err != nil {
		return "", err
	}
	log.Info("generated the vault root key; back it up, nothing the vault stored can be decrypted without it", "file", path)
	return keys, nil
}

func checked(keys, where string) (string, error) {
	if _, err := keyring.ParseRoots(keys); err != nil {
		return "", fmt.Errorf("%s: %w", where, err)
	}
	return keys, nil
}

func readKeyFile(path string, log *slog.Logger) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("reading vault key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the vault key file is readable by other users: chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading vault key file: %w", err)
	}
	return checked(strings.TrimSpace(string(b)), "vault key file "+path)
}

// writeNew creates path with mode 0600 and writes s, removing it again on failure.
func writeNew(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating vault key file: %w", err)
	}
	_, werr := f.WriteString(s)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(path)
		return fmt.Errorf("writing vault key file %s: %w", path, err)
	}
	return nil
}
