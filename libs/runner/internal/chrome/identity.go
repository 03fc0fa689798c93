package chrome

import (
	"context"
	"strings"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/libs/browser"
)

// identity is how a browser presents itself to sites: the same Chromium's
// User-Agent without "Headless", and client hints to match. Many sites refuse or
// challenge "HeadlessChrome".
type identity struct {
	userAgent string
	metadata  *emulation.UserAgentMetadata
}

// readIdentity asks a started browser for its User-Agent and makes it a headed one.
func readIdentity(ctx context.Context) (identity, error) {
	v, err := chromedp.CallBrowser(ctx, cdpbrowser.GetVersion, cdp.Empty{})
	if err != nil {
		return identity{}, err
	}
	return newIdentity(v.Product, v.UserAgent), nil
}

// newIdentity turns the User-Agent and product ("HeadlessChrome/156.0.8078.73") a
// headless Chromium reports into those of the same Chromium with a window.
func newIdentity(product, ua string) identity {
	full := product[strings.LastIndexByte(product, '/')+1:]
	major, _, _ := strings.Cut(full, ".")
	// The brands a Chromium with a window sends: it claims to be no other browser.
	brands := []*emulation.UserAgentBrandVersion{{Brand: "Chromium", Version: major}, {Brand: "Not)A;Brand", Version: "24"}}
	fullList := []*emulation.UserAgentBrandVersion{{Brand: "Chromium", Version: full}, {Brand: "Not)A;Brand", Version: "24.0.0.0"}}
	return identity{
		userAgent: strings.Replace(ua, "HeadlessChrome/", "Chrome/", 1),
		metadata: &emulation.UserAgentMetadata{
			Brands: brands, FullVersionList: fullList, Platform: "Linux", PlatformVersion: "",
			Architecture: "x86", Model: "", Mobile: false, Bitness: "64",
		},
	}
}

// apply presents the identity in one tab: its requests' User-Agent and
// Accept-Language headers, its client hints and navigator.userAgent — or the
// session's own User-Agent and locale where its pin sets them. A custom User-Agent
// goes without client hints (they would name another browser than it does).
func (id identity) apply(tab context.Context, pin Pin) error {
	ua, meta, lang := id.userAgent, id.metadata, browser.AcceptLanguage
	if pin.UserAgent != "" {
		ua, meta = pin.UserAgent, nil
	}
	if pin.Locale != "" {
		lang = acceptLanguage(pin.Locale)
	}
	if ua == "" {
		return nil
	}
	if _, err := chromedp.Call(tab, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{
		UserAgent: ua, AcceptLanguage: lang, Platform: "Linux x86_64", UserAgentMetadata: meta,
	}); err != nil {
		return err
	}
	if pin.Locale == "" {
		return nil
	}
	// ICU's spelling of the tag: Intl's default locale in the session's pages.
	_, err := chromedp.Call(tab, emulation.SetLocaleOverride, emulation.SetLocaleOverrideParams{Locale: strings.ReplaceAll(pin.Locale, "-", "_")})
	return err
}

// acceptLanguage is the language list of a browser set to locale: the tag, then its
// language alone, then English as a fallback. Chromium adds the q-values itself:
// "de-DE,de,en" is sent as "de-DE,de;q=0.9,en;q=0.8".
func acceptLanguage(locale string) string {
	lang, _, hasRegion := strings.Cut(locale, "-")
	out := locale
	if hasRegion {
		out += "," + lang
	}
	if !strings.EqualFold(lang, "en") {
		out += ",en"
	}
	return out
}
