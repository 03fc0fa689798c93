package recorder

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	key, other := []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")
	now := time.Unix(1_800_000_000, 0)
	tok, err := mint(key, claims{Project: "acme", Session: "s1", Run: "run-1", Expiry: now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := parse(key, tok, now)
	if err != nil || c.Project != "acme" || c.Session != "s1" || c.Run != "run-1" {
		t.Fatalf("parse = %+v, %v", c, err)
	}
	again, _ := mint(key, claims{Project: "acme", Session: "s1", Run: "run-1", Expiry: now.Add(time.Minute).Unix()})
	c2, err := parse(key, again, now)
	if err != nil || again == tok || tokenID(c2) == tokenID(c) {
		t.Error("two tokens for the same recording are equal: each needs its own claim")
	}
	body, sig, _ := strings.Cut(tok, ".")
	// The signature's last character carries 2 spare bits: other spellings of the same
	// signature must be refused, or each would get a claim of its own.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	for i := last &^ 3; i < last&^3+4; i++ {
		if i == last {
			continue
		}
		variant := body + "." + sig[:len(sig)-1] + string(alphabet[i])
		if _, err := parse(key, variant, now); !errors.Is(err, errBadToken) {
			t.Errorf("another spelling of the signature was accepted: %v", err)
		}
	}
	// A token for another project, signed with the original signature.
	forged := strings.Replace(body, body[:4], "eyJx", 1) + "." + sig
	for name, tc := range map[string]struct {
		key   []byte
		token string
		at    time.Time
		want  error
	}{
		"expired":     {key, tok, now.Add(time.Minute), errExpired},
		"other key":   {other, tok, now, errBadToken},
		"forged body": {key, forged, now, errBadToken},
		"no dot":      {key, body, now, errBadToken},
		"too long":    {key, tok + strings.Repeat("a", maxTokenLen), now, errBadToken},
		"empty":       {key, "", now, errBadToken},
	} {
		if _, err := parse(tc.key, tc.token, tc.at); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
}

func TestInputChecks(t *testing.T) {
	for _, tc := range []struct {
		ev inputEvent
		ok bool
	}{
		{inputEvent{Type: "click", X: 0.5, Y: 0.5}, true},
		{inputEvent{Type: "click", X: 0.5, Y: 0.5, Button: "right"}, true},
		{inputEvent{Type: "click", X: 1.5, Y: 0.5}, false},
		{inputEvent{Type: "click", X: 0.5, Y: 0.5, Button: "side"}, false},
		{inputEvent{Type: "move", X: 0, Y: 1}, true},
		{inputEvent{Type: "wheel", X: 0.5, Y: 0.5, DY: 120}, true},
		{inputEvent{Type: "wheel", X: 0.5, Y: 0.5, DY: 1e9}, false},
		{inputEvent{Type: "key", Key: "Enter"}, true},
		{inputEvent{Type: "key", Key: "a"}, false},
		{inputEvent{Type: "text", Text: "pässword"}, true},
		{inputEvent{Type: "text", Text: ""}, false},
		{inputEvent{Type: "text", Text: strings.Repeat("x", maxTextRunes+1)}, false},
		{inputEvent{Type: "finish"}, true},
		{inputEvent{Type: "hello"}, false},
		{inputEvent{Type: "click", X: 0.5, Y: 0.5, Mods: 16}, false},
	} {
		_, err := tc.ev.toProto()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: err = %v, want ok %v", tc.ev, err, tc.ok)
		}
		if err != nil && tc.ev.Text != "" && strings.Contains(err.Error(), tc.ev.Text) {
			t.Errorf("the error quotes the typed text: %v", err)
		}
	}
}
