package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
)

const vaultUsage = `usage: latchkey vault COMMAND

Operator commands for the credential vault. They authenticate with the internal
token: $LATCHKEY_INTERNAL_TOKEN, or the internal-token file of the data directory
($LATCHKEY_DATA_DIR, default ~/.latchkey) that ` + "`latchkey dev`" + ` leaves.

  status            master key versions, the minimum decryption version, and how
                    many stored secrets each version wraps
  rotate            create a new master key version and encrypt with it from now on
  rewrap            re-wrap every stored secret's data key under the newest version
  min-version N     refuse to decrypt anything wrapped under a version below N
                    (refused while stored secrets still need an older version)
`

// vaultCommand runs `latchkey vault ...`.
func vaultCommand(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 || slices.Contains([]string{"-h", "--help", "help"}, args[0]) {
		fmt.Fprint(c.stdout, vaultUsage)
		if len(args) == 0 {
			return errors.New("vault needs a command: status, rotate, rewrap or min-version")
		}
		return nil
	}
	vc, err := c.vaultClient()
	if err != nil {
		return err
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "status":
		return vaultStatus(ctx, c, vc, rest)
	case "rotate":
		r, err := vc.RotateKey(ctx, &vaultv1.RotateKeyRequest{})
		if err != nil {
			return fmt.Errorf("rotating the master key: %w", err)
		}
		return c.print(r, fmt.Sprintf("master key version %d now encrypts; run `latchkey vault rewrap` to move stored secrets to it", r.GetNewVersion()))
	case "rewrap":
		r, err := vc.Rewrap(ctx, &vaultv1.RewrapRequest{})
		if err != nil {
			return fmt.Errorf("rewrapping: %w", err)
		}
		return c.print(r, fmt.Sprintf("rewrapped %d stored secrets", r.GetRewrapped()))
	case "min-version":
		if len(rest) != 1 {
			return errors.New("usage: latchkey vault min-version N")
		}
		n, err := strconv.ParseUint(rest[0], 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("min-version needs a positive version number, got %q", rest[0])
		}
		r, err := vc.SetMinDecryptionVersion(ctx, &vaultv1.SetMinDecryptionVersionRequest{MinDecryptionVersion: uint32(n)})
		if err != nil {
			return fmt.Errorf("setting the minimum decryption version: %w", err)
		}
		return c.print(r, fmt.Sprintf("the vault no longer decrypts anything wrapped under versions below %d", n))
	default:
		fmt.Fprint(c.stderr, vaultUsage)
		return fmt.Errorf("unknown vault command %q", cmd)
	}
}

func vaultStatus(ctx context.Context, c *cli, vc vaultv1.VaultServiceClient, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(args, " "))
	}
	r, err := vc.KeyStatus(ctx, &vaultv1.KeyStatusRequest{})
	if err != nil {
		return fmt.Errorf("reading the key status: %w", err)
	}
	if c.output == "json" {
		return c.printJSON(r)
	}
	fmt.Fprintf(c.stdout, "current version         %d\nminimum decryption      %d\n\n", r.GetCurrentVersion(), r.GetMinDecryptionVersion())
	w := c.table()
	fmt.Fprintln(w, "VERSION\tSTATE\tSTORED SECRETS")
	for _, v := range r.GetVersions() {
		state := "decrypts"
		switch {
		case v == r.GetCurrentVersion():
			state = "encrypts"
		case v < r.GetMinDecryptionVersion():
			state = "disabled"
		}
		fmt.Fprintf(w, "%d\t%s\t%d\n", v, state, r.GetWrappedByVersion()[v])
	}
	return w.Flush()
}

// print writes m as JSON with -o json, or line otherwise.
func (c *cli) print(m proto.Message, line string) error {
	if c.output == "json" {
		return c.printJSON(m)
	}
	_, err := fmt.Fprintln(c.stdout, line)
	return err
}

// vaultClient dials the vault with the internal token.
func (c *cli) vaultClient() (vaultv1.VaultServiceClient, error) {
	token := envOr(c.env, "LATCHKEY_INTERNAL_TOKEN", "")
	if token == "" {
		dir := envOr(c.env, "LATCHKEY_DATA_DIR", "")
		if dir == "" {
			dir = filepath.Join(envOr(c.env, "HOME", "."), ".latchkey")
		}
		b, err := os.ReadFile(filepath.Join(dir, internalTokenFile))
		if err != nil {
			return nil, errors.New("no internal token: set LATCHKEY_INTERNAL_TOKEN (the vault only answers Latchkey's services and operators holding it), or run `latchkey dev`, which leaves one in its data directory")
		}
		token = strings.TrimSpace(string(b))
	}
	conn, err := c.connect(token, "latchkey-cli")
	if err != nil {
		return nil, err
	}
	return vaultv1.NewVaultServiceClient(conn), nil
}
