package client

import (
	"errors"
	"testing"
)

func TestParseSnapshotRef(t *testing.T) {
	vol, snap, err := ParseSnapshotRef("demo@before")
	if err != nil || vol != "demo" || snap != "before" {
		t.Fatalf("ParseSnapshotRef(demo@before) = %q, %q, %v", vol, snap, err)
	}
	for _, bad := range []string{"", "demo", "@s", "demo@", "a@b@c", "Demo@s", "demo@S", "de mo@s"} {
		if _, _, err := ParseSnapshotRef(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseSnapshotRef(%q) error = %v, want invalid argument", bad, err)
		}
	}
}
