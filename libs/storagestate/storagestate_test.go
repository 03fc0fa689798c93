package storagestate

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// playwrightJSON is what Playwright's context.storageState() writes.
const playwrightJSON = `{
  "cookies": [
    {"name": "sid", "value": "s3cr3t-cookie", "domain": "portal.example", "path": "/", "expires": 1893456000.5, "httpOnly": true, "secure": false, "sameSite": "Lax"},
    {"name": "pref", "value": "dark", "domain": ".example", "path": "/app", "expires": -1, "httpOnly": false, "secure": true, "sameSite": "None"}
  ],
  "origins": [
    {"origin": "http://portal.example:7490", "localStorage": [{"name": "apiToken", "value": "tok-123"}]}
  ]
}`

func TestPlaywrightRoundTrip(t *testing.T) {
	t.Parallel()
	st, err := FromPlaywright([]byte(playwrightJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := &latchkeyv1.StorageState{
		Cookies: []*latchkeyv1.Cookie{
			{Name: "sid", Value: "s3cr3t-cookie", Domain: "portal.example", Path: "/", Expires: 1893456000.5, HttpOnly: true, SameSite: "Lax"},
			{Name: "pref", Value: "dark", Domain: ".example", Path: "/app", Expires: -1, Secure: true, SameSite: "None"},
		},
		Origins: []*latchkeyv1.OriginStorage{{
			Origin: "http://portal.example:7490", LocalStorage: []*latchkeyv1.StorageItem{{Name: "apiToken", Value: "tok-123"}},
		}},
	}
	if d := cmp.Diff(want, st, protocmp.Transform()); d != "" {
		t.Fatalf("parsed (-want +got):\n%s", d)
	}
	out, err := ToPlaywright(st)
	if err != nil {
		t.Fatal(err)
	}
	again, err := FromPlaywright(out)
	if err != nil {
		t.Fatalf("re-parsing our own JSON: %v\n%s", err, out)
	}
	if d := cmp.Diff(st, again, protocmp.Transform()); d != "" {
		t.Fatalf("JSON round trip (-first +second):\n%s", d)
	}
	if !strings.Contains(string(out), `"localStorage"`) || strings.Contains(string(out), `"sessionStorage"`) {
		t.Errorf("JSON is not Playwright's shape:\n%s", out)
	}
	sealed, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := Unmarshal(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(st, opened, protocmp.Transform()); d != "" {
		t.Fatalf("binary round trip (-want +got):\n%s", d)
	}
}

func TestPlaywrightDefaults(t *testing.T) {
	t.Parallel()
	st, err := FromPlaywright([]byte(`{"cookies":[{"name":"a","value":"b","domain":"x.example"}],"origins":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c := st.GetCookies()[0]; c.GetPath() != "/" || c.GetExpires() != -1 {
		t.Errorf("defaults: path %q expires %v, want / and -1", c.GetPath(), c.GetExpires())
	}
}

func TestFromPlaywrightRefusesBadInput(t *testing.T) {
	t.Parallel()
	cookie := func(fields string) string {
		return `{"cookies":[{` + fields + `}],"origins":[]}`
	}
	big := `{"cookies":[{"name":"a","value":"` + strings.Repeat("v", MaxBytes) + `","domain":"x"}],"origins":[]}`
	many := make([]string, MaxCookies+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"name":"c%d","value":"v","domain":"x"}`, i)
	}
	cases := []struct {
		name, json string
		want       error
		msg        string
	}{
		{"not json", `{"cookies": [`, ErrInvalid, "ends early"},
		{"syntax", `{"cookies": x}`, ErrInvalid, "syntax error"},
		{"trailing data", `{"cookies":[],"origins":[]} {}`, ErrInvalid, "extra data"},
		{"unknown field", `{"cookies":[],"origins":[],"cookie":[]}`, ErrInvalid, "unknown field"},
		{"wrong type", cookie(`"name":"a","value":"b","domain":"x","expires":"soon"`), ErrInvalid, "expires"},
		{"no name", cookie(`"name":"","value":"b","domain":"x"`), ErrInvalid, "name is empty"},
		{"no domain", cookie(`"name":"a","value":"b","domain":""`), ErrInvalid, "domain"},
		{"domain is a url", cookie(`"name":"a","value":"b","domain":"https://x"`), ErrInvalid, "domain"},
		{"relative path", cookie(`"name":"a","value":"b","domain":"x","path":"app"`), ErrInvalid, "path"},
		{"bad expiry", cookie(`"name":"a","value":"b","domain":"x","expires":-5`), ErrInvalid, "expires"},
		{"bad sameSite", cookie(`"name":"a","value":"b","domain":"x","sameSite":"lax"`), ErrInvalid, "sameSite"},
		{"duplicate cookie", `{"cookies":[{"name":"a","value":"1","domain":"x"},{"name":"a","value":"2","domain":"x"}]}`, ErrInvalid, "twice"},
		{"origin with path", `{"cookies":[],"origins":[{"origin":"https://x/app","localStorage":[]}]}`, ErrInvalid, "scheme://host"},
		{"origin not http", `{"cookies":[],"origins":[{"origin":"file:///etc","localStorage":[]}]}`, ErrInvalid, "scheme://host"},
		{"duplicate origin", `{"origins":[{"origin":"https://x","localStorage":[]},{"origin":"https://x","localStorage":[]}]}`, ErrInvalid, "twice"},
		{"empty item name", `{"origins":[{"origin":"https://x","localStorage":[{"name":"","value":"v"}]}]}`, ErrInvalid, "empty name"},
		{"over the size limit", big, ErrTooLarge, "at most"},
		{"too many cookies", `{"cookies":[` + strings.Join(many, ",") + `]}`, ErrTooLarge, "cookies"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := FromPlaywright([]byte(tc.json))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestErrorsNeverQuoteValues(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"cookies":[{"name":"a","value":"CANARY","domain":"x","sameSite":"bad"}]}`,
		`{"cookies":[{"name":"a","value":"CANARY","domain":"x"}], "x": "CANARY"}`,
		`{"cookies":[{"name":"a","value":"CANARY" "domain":"x"}]}`,
		`{"origins":[{"origin":"https://x","localStorage":[{"name":"k","value":"CANARY"},{"name":"k","value":"CANARY"}]}]}`,
	} {
		_, err := FromPlaywright([]byte(in))
		if err == nil || strings.Contains(err.Error(), "CANARY") {
			t.Errorf("error %v for %s quotes a value", err, in)
		}
	}
}

func TestUnmarshalRefusesGarbage(t *testing.T) {
	t.Parallel()
	if _, err := Unmarshal([]byte{0xff, 0xff, 0xff}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	if _, err := Unmarshal(make([]byte, MaxBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestCryptoContextBindsProjectAndSession(t *testing.T) {
	t.Parallel()
	c := CryptoContext("acme", "s1")
	if c.GetProjectId() != "acme" || c.GetKind() != "storage_state" || c.GetId() != "s1" {
		t.Fatalf("context %v", c)
	}
}
