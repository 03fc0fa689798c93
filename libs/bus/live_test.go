package bus_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/latchkey/latchkey/libs/bus"
)

func TestLiveMessagesOpenOnlyForTheirSubjectAndKey(t *testing.T) {
	key := bus.DeriveKey("internal-token", bus.LiveKeyPurpose)
	other := bus.DeriveKey("another-token", bus.LiveKeyPurpose)
	if bytes.Equal(key, bus.DeriveKey("internal-token", "recorder-url/v1")) {
		t.Fatal("two purposes derived the same key")
	}
	plain := []byte("hunter2")
	sealed, err := bus.SealLive(key, "lk.live.run-1.input", plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("the sealed message holds the plaintext")
	}
	got, err := bus.OpenLive(key, "lk.live.run-1.input", sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("OpenLive = %q, %v", got, err)
	}
	for name, open := range map[string]func() ([]byte, error){
		"other subject": func() ([]byte, error) { return bus.OpenLive(key, "lk.live.run-2.input", sealed) },
		"other key":     func() ([]byte, error) { return bus.OpenLive(other, "lk.live.run-1.input", sealed) },
		"truncated":     func() ([]byte, error) { return bus.OpenLive(key, "lk.live.run-1.input", sealed[:10]) },
	} {
		if _, err := open(); !errors.Is(err, bus.ErrLiveMessage) {
			t.Errorf("%s: err = %v, want ErrLiveMessage", name, err)
		}
	}
}
