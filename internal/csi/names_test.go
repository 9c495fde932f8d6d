package csi

import (
	"strings"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestStrataName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"pvc-0b1e5c3a-4f61-4d7e-9c2e-1a2b3c4d5e6f", "pvc-0b1e5c3a-4f61-4d7e-9c2e-1a2b3c4d5e6f"}, // a Strata name already
		{"db", "db"},
	} {
		if got := strataName(c.in); got != c.want {
			t.Errorf("strataName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := "Sanity-Controller-CREATE-maxlen-" + strings.Repeat("a", 96)
	names := map[string]string{}
	for _, in := range []string{
		"Sanity-7A3F", "sanity-7a3f-", "sanity_7a3f", "-", "ÉTÉ", "a/b@c", long, long + "b", strings.Repeat("x", 64), "",
	} {
		got := strataName(in)
		if err := errdefs.ValidateName("volume", got); err != nil {
			t.Errorf("strataName(%q) = %q, not a Strata name: %v", in, got, err)
		}
		if again := strataName(in); again != got {
			t.Errorf("strataName(%q) is not deterministic: %q then %q", in, got, again)
		}
		if other, ok := names[got]; ok {
			t.Errorf("strataName(%q) = strataName(%q) = %q", in, other, got)
		}
		names[got] = in
	}
	// Readable: the sanitized start of the name stays.
	if got := strataName("Sanity-7A3F"); !strings.HasPrefix(got, "sanity-7a3f-") {
		t.Errorf("strataName(Sanity-7A3F) = %q, want the lower-cased name and a hash", got)
	}
	if got := strataName("ÉTÉ"); !strings.HasPrefix(got, "t-") {
		t.Errorf("strataName(ÉTÉ) = %q", got)
	}
	if got := strataName("-"); !strings.HasPrefix(got, "csi-") {
		t.Errorf("strataName(-) = %q, want csi-HASH", got)
	}
}

func TestNameLabel(t *testing.T) {
	if got := nameLabel("My-Claim"); got != "My-Claim" {
		t.Errorf("nameLabel keeps a printable name: %q", got)
	}
	for _, in := range []string{strings.Repeat("n", 254), "tab\there", "ÉTÉ"} {
		got := nameLabel(in)
		if !strings.HasPrefix(got, "sha256:") || len(got) != 7+64 {
			t.Errorf("nameLabel(%q) = %q, want sha256:HEX", in, got)
		}
	}
}

func TestSnapshotIDs(t *testing.T) {
	if id := snapshotID("db", "nightly"); id != "db@nightly" {
		t.Errorf("snapshotID = %q", id)
	}
	if vol, snap, ok := parseSnapshotID("db@nightly"); !ok || vol != "db" || snap != "nightly" {
		t.Errorf("parseSnapshotID(db@nightly) = %q %q %v", vol, snap, ok)
	}
	for _, bad := range []string{"", "db", "@x", "db@", "DB@x", "db@x@y", "non-existing-snapshot-id"} {
		if _, _, ok := parseSnapshotID(bad); ok {
			t.Errorf("parseSnapshotID(%q) accepted", bad)
		}
	}
	name := cloneSnapshotName("pvc-1")
	if !isCloneSnapshot(name) || name != cloneSnapshotName("pvc-1") || name == cloneSnapshotName("pvc-2") {
		t.Errorf("cloneSnapshotName: %q", name)
	}
	if err := errdefs.ValidateName("snapshot", name); err != nil {
		t.Error(err)
	}
	if isCloneSnapshot("nightly") {
		t.Error("a user's snapshot taken for a clone snapshot")
	}
}
