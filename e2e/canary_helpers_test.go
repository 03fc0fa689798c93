package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latchkey/latchkey/libs/testkit"
)

// The canary tests plant secrets and then look for them where they must never be.

// encodings are the canaries raw, in base64 and in hex: the forms JSON, protojson
// and debug output would carry them in.
func encodings(canaries [][]byte) [][]byte {
	var out [][]byte
	for _, c := range canaries {
		out = append(out, c, []byte(base64.StdEncoding.EncodeToString(c)[:len(c)]),
			[]byte(base64.RawURLEncoding.EncodeToString(c)[:len(c)]), []byte(hex.EncodeToString(c)))
	}
	return out
}

func containsAny(b []byte, needles [][]byte) bool {
	for _, n := range needles {
		if bytes.Contains(b, n) {
			return true
		}
	}
	return false
}

// scanDir returns the files under dir that contain any of needles.
func scanDir(t *testing.T, dir string, needles [][]byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil // a file the server just removed
		}
		if containsAny(b, needles) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// waitUntil polls cond until it holds, for up to 15 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, func() (bool, string) { return cond(), "waiting for " + what })
}
