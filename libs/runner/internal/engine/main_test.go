package engine

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMain(m *testing.M) {
	path := os.Getenv("LATCHKEY_CHROMIUM_PATH")
	if path == "" {
		path, _ = exec.LookPath("chromium")
	}
	if path == "" {
		fmt.Fprintln(os.Stderr, "no Chromium found (LATCHKEY_CHROMIUM_PATH or chromium on PATH); run scripts/install-deps.sh")
		os.Exit(1)
	}
	sharedPool = chrome.NewPool(path, 1, 0, slog.New(slog.DiscardHandler))
	code := m.Run()
	sharedPool.Close()
	if code == 0 {
		if err := goleak.Find(testkit.LibraryGoroutines()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
