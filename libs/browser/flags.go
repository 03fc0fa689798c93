// Package browser holds what every Latchkey component that starts Chromium
// shares.
package browser

import (
	"strings"

	"github.com/chromedp/chromedp"
)

// Flags returns the command-line flags Latchkey starts Chromium with:
// headless, no sandbox (runners and tests run as root in containers), and
// everything that would reach the internet on its own (component updates,
// sync, metrics upload, QUIC probes) turned off, so a browser works on a
// machine with no internet and only talks to the sites a Run visits.
// Each call returns a new slice.
func Flags() []string {
	return []string{
		"--headless=new",
		"--no-sandbox",
		"--disable-gpu",
		"--disable-dev-shm-usage",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-default-apps",
		"--disable-extensions",
		"--disable-quic",
		"--disable-breakpad",
		"--disable-domain-reliability",
		"--disable-client-side-phishing-detection",
		"--disable-features=Translate,MediaRouter,OptimizationHints",
		"--metrics-recording-only",
		"--mute-audio",
		"--hide-scrollbars",
		"--password-store=basic",
		"--use-mock-keychain",
		// A browser a site takes for a person's: no navigator.webdriver, a laptop's
		// window and a language (the User-Agent is set per context: chrome.Context).
		"--disable-blink-features=AutomationControlled",
		"--window-size=" + WindowSize,
		"--lang=" + Language,
	}
}

// WindowSize and Language are the window and the language Chromium presents.
const (
	WindowSize = "1366,768"
	Language   = "en-US"
	// AcceptLanguage is the Accept-Language every context sends.
	AcceptLanguage = "en-US,en;q=0.9"
)

// AllocatorOptions returns Flags as chromedp exec allocator options, to be
// appended after chromedp.ExecPath:
//
//	opts := append([]chromedp.ExecAllocatorOption{chromedp.ExecPath(path)}, browser.AllocatorOptions()...)
//	allocCtx, cancel := chromedp.NewExecAllocator(ctx, opts...)
func AllocatorOptions() []chromedp.ExecAllocatorOption {
	flags := Flags()
	opts := make([]chromedp.ExecAllocatorOption, 0, len(flags))
	for _, f := range flags {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if hasValue {
			opts = append(opts, chromedp.Flag(name, value))
		} else {
			opts = append(opts, chromedp.Flag(name, true))
		}
	}
	return opts
}
