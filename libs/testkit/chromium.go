package testkit

import (
	"os"
	"os/exec"
	"testing"
)

// ChromiumEnv names the variable that points at a Chromium binary.
const ChromiumEnv = "LATCHKEY_CHROMIUM_PATH"

// chromiumNames are the binaries looked for on PATH, in order.
func chromiumNames() []string {
	return []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}
}

// ChromiumPath returns the Chromium to test with: $LATCHKEY_CHROMIUM_PATH
// if set, else the first of chromium, chromium-browser, google-chrome on
// PATH. It fails the test if there is none. Start it with the flags of
// libs/browser.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(ChromiumEnv); p != "" {
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			t.Fatalf("testkit: %s=%q is not an executable file: %s", ChromiumEnv, p, installHint)
		}
		return p
	}
	for _, name := range chromiumNames() {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("testkit: no Chromium found (%s unset; none of %v on PATH): %s", ChromiumEnv, chromiumNames(), installHint)
	return ""
}
