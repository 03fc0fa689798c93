package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestVaultCommands(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, nil, devArgs(dataDir)...)
	grpcAddr := p.waitFor(t, upRE)[1]
	fi, err := os.Stat(filepath.Join(dataDir, "vault-keys"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev did not leave a 0600 vault key file: %v", err)
	}
	if n := strings.Count(p.stderr.String(), "generated the vault root key"); n != 1 {
		t.Errorf("dev said %d times that it generated the vault key, want once", n)
	}

	// The CLI finds the internal token in the data directory.
	env := map[string]string{"LATCHKEY_DATA_DIR": dataDir}
	vault := func(args ...string) (string, error) {
		var out, errOut testkit.SyncBuffer
		err := run(t.Context(), append([]string{"vault", "-addr", grpcAddr}, args...), config.MapEnv(env), &out, &errOut)
		return out.String(), err
	}
	steps := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{[]string{"status"}, `(?s)current version\s+1\n.*1\s+encrypts\s+0`, ""},
		{[]string{"rotate"}, `master key version 2 now encrypts`, ""},
		{[]string{"rewrap"}, `rewrapped 0 stored secrets`, ""},
		{[]string{"min-version", "3"}, ``, "between 1 and the current version 2"},
		{[]string{"min-version", "x"}, ``, "positive version number"},
		{[]string{"min-version", "2"}, `below 2`, ""},
		{[]string{"status"}, `(?s)minimum decryption\s+2\n.*1\s+disabled\s+0\n2\s+encrypts\s+0`, ""},
		{[]string{"frobnicate"}, ``, `unknown vault command "frobnicate"`},
	}
	for _, s := range steps {
		out, err := vault(s.args...)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("vault %v: %v, want an error with %q", s.args, err, s.wantErr)
			}
			continue
		}
		if err != nil || !regexp.MustCompile(s.want).MatchString(out) {
			t.Fatalf("vault %v = %q, %v; want %q", s.args, out, err, s.want)
		}
	}
	out, err := vault("-o", "json", "status")
	var st struct {
		CurrentVersion       int   `json:"currentVersion"`
		MinDecryptionVersion int   `json:"minDecryptionVersion"`
		Versions             []int `json:"versions"`
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.CurrentVersion != 2 || st.MinDecryptionVersion != 2 || len(st.Versions) != 2 {
		t.Fatalf("status -o json = %q, %v", out, err)
	}

	// Without the token, the CLI says how to get one; with a wrong one the vault refuses.
	env = map[string]string{"LATCHKEY_DATA_DIR": t.TempDir()}
	if _, err := vault("status"); err == nil || !strings.Contains(err.Error(), "LATCHKEY_INTERNAL_TOKEN") {
		t.Errorf("without a token: %v", err)
	}
	env["LATCHKEY_INTERNAL_TOKEN"] = "wrong"
	if _, err := vault("status"); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("with a wrong token: %v", err)
	}
}

func TestServeVaultNeedsKeys(t *testing.T) {
	nsrv, err := bus.StartEmbedded(t.Context(), bus.EmbeddedConfig{Port: bus.RandomPort, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nsrv.Shutdown)
	env := map[string]string{"LATCHKEY_NATS_URL": nsrv.ClientURL(), "LATCHKEY_INTERNAL_TOKEN": "tok"}
	dataDir := t.TempDir()
	err = run(t.Context(), []string{"serve", "vault", "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-data-dir", dataDir}, config.MapEnv(env), &testkit.SyncBuffer{}, &testkit.SyncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "LATCHKEY_VAULT_KEYS") {
		t.Fatalf("serve vault without keys: %v, want an error naming LATCHKEY_VAULT_KEYS", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "vault-keys")); err == nil {
		t.Error("serve generated a key file: replicas would each have their own key")
	}
}
