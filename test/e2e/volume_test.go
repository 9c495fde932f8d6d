package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotCloneRevertOverNBD is the single-node workflow through the CLI
// and a real NBD client: write, snapshot, overwrite, clone the snapshot,
// revert, and check what every volume reads.
func TestSnapshotCloneRevertOverNBD(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "nbdinfo")
	n := newNode(t)

	n.run("volume", "create", "prod", "--size", "64MiB")
	uri := strings.TrimSpace(n.run("volume", "export", "prod"))
	if uri != n.uri("prod") {
		t.Fatalf("export printed %q, want %q", uri, n.uri("prod"))
	}
	if out := tool(t, "nbdinfo", "--size", uri); strings.TrimSpace(out) != "67108864" {
		t.Fatalf("nbdinfo --size = %q", out)
	}

	qemuIO(t, uri, "write -P 0xa1 0 1M", "write -P 0xa2 10M 64k", "flush")
	if got := strings.TrimSpace(n.run("snapshot", "create", "prod", "--name", "v1")); got != "prod@v1" {
		t.Fatalf("snapshot create printed %q, want prod@v1", got)
	}
	qemuIO(t, uri, "write -P 0xb1 0 512k", "write -z 10M 64k", "flush")

	n.run("volume", "clone", "prod@v1", "dev1")
	qemuIO(t, n.uri("dev1"), "read -P 0xa1 0 1M", "read -P 0xa2 10M 64k")
	qemuIO(t, uri, "read -P 0xb1 0 512k", "read -P 0xa1 512k 512k", "read -P 0 10M 64k")

	// The clone diverges without touching the parent.
	qemuIO(t, n.uri("dev1"), "write -P 0xc1 0 4k", "flush")
	qemuIO(t, uri, "read -P 0xb1 0 4k")

	n.run("volume", "revert", "prod", "--to", "v1")
	qemuIO(t, uri, "read -P 0xa1 0 1M", "read -P 0xa2 10M 64k")

	// A clone created with --from behaves like volume clone.
	n.run("volume", "create", "dev2", "--size", "128MiB", "--from", "prod@v1")
	qemuIO(t, n.uri("dev2"), "read -P 0xa1 0 1M", "read -P 0 100M 1M")

	var vols []map[string]any
	if err := json.Unmarshal([]byte(n.run("volume", "list", "-o", "json")), &vols); err != nil {
		// list -o json may wrap the array in an object.
		var wrapped map[string][]map[string]any
		if err2 := json.Unmarshal([]byte(n.run("volume", "list", "-o", "json")), &wrapped); err2 != nil {
			t.Fatalf("volume list -o json: %v / %v", err, err2)
		}
		vols = wrapped["volumes"]
	}
	if len(vols) != 3 {
		t.Fatalf("volume list shows %d volumes, want 3: %v", len(vols), vols)
	}
	inspect := n.run("volume", "inspect", "dev1", "-o", "yaml")
	if !strings.Contains(inspect, "prod@v1") {
		t.Errorf("inspect dev1 does not name its parent prod@v1:\n%s", inspect)
	}

	// Deleting a snapshot that clones use keeps their data.
	out := n.run("snapshot", "delete", "prod@v1")
	if !strings.Contains(out, "clone") {
		t.Errorf("snapshot delete output does not mention the clones keeping its data: %q", out)
	}
	qemuIO(t, n.uri("dev1"), "read -P 0xc1 0 4k", "read -P 0xa1 4k 1020k")
	n.run("volume", "delete", "dev1")
	n.run("volume", "delete", "dev2")
	qemuIO(t, uri, "read -P 0xa1 0 1M", "read -P 0xa2 10M 64k")
}

// TestKillNineKeepsFlushedData writes through NBD, flushes, kills the node
// with SIGKILL and restarts it: volumes, snapshots and flushed data survive.
func TestKillNineKeepsFlushedData(t *testing.T) {
	needTools(t, "qemu-io")
	n := newNode(t)
	n.run("volume", "create", "db", "--size", "32MiB")
	qemuIO(t, n.uri("db"), "write -P 0x11 0 4M", "flush")
	n.run("snapshot", "create", "db", "--name", "s1")
	qemuIO(t, n.uri("db"), "write -P 0x22 1M 1M", "write -P 0x33 20M 3M", "flush")
	n.run("volume", "clone", "db@s1", "db-clone")

	n.kill9()
	n.start()

	qemuIO(t, n.uri("db"), "read -P 0x11 0 1M", "read -P 0x22 1M 1M", "read -P 0x11 2M 2M", "read -P 0x33 20M 3M")
	qemuIO(t, n.uri("db-clone"), "read -P 0x11 0 4M", "read -P 0 20M 3M")
	if out := n.run("snapshot", "list", "db"); !strings.Contains(out, "s1") {
		t.Fatalf("snapshot s1 lost after kill -9:\n%s", out)
	}
	// A clean restart keeps everything too.
	n.stop()
	n.start()
	qemuIO(t, n.uri("db"), "read -P 0x22 1M 1M")
}

// TestRefusals checks that bad input gets one clear error line and changes nothing.
func TestRefusals(t *testing.T) {
	n := newNode(t)
	n.run("volume", "create", "good", "--size", "16MiB")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "create", "Bad_Name", "--size", "1GiB"}, "name"},
		{[]string{"volume", "create", "-lead", "--size", "1GiB"}, ""},
		{[]string{"volume", "create", strings.Repeat("a", 64), "--size", "1GiB"}, "63"},
		{[]string{"volume", "create", "nosize"}, "size"},
		{[]string{"volume", "create", "zero", "--size", "0"}, "size"},
		{[]string{"volume", "create", "neg", "--size", "-5GiB"}, "size"},
		{[]string{"volume", "create", "junk", "--size", "ten"}, "size"},
		{[]string{"volume", "create", "good", "--size", "32MiB"}, "exists"},
		{[]string{"volume", "resize", "good", "--size", "8MiB"}, "shrink"},
		{[]string{"volume", "clone", "good@nope", "c1"}, "not found"},
		{[]string{"volume", "clone", "missing@s", "c2"}, "not found"},
		{[]string{"volume", "clone", "nosnap", "c3"}, "@"},
		{[]string{"volume", "revert", "good", "--to", "nope"}, "not found"},
		{[]string{"volume", "delete", "missing"}, "not found"},
		{[]string{"volume", "inspect", "good", "-o", "xml"}, "xml"},
		{[]string{"snapshot", "delete", "good@nope"}, "not found"},
		{[]string{"snapshot", "create", "missing"}, "not found"},
	} {
		errOut := n.fail(tc.args...)
		if !strings.Contains(strings.ToLower(errOut), tc.want) {
			t.Errorf("strata %s: error %q does not mention %q", strings.Join(tc.args, " "), errOut, tc.want)
		}
	}
	n.run("snapshot", "create", "good", "--name", "s1")
	if errOut := n.fail("snapshot", "create", "good", "--name", "s1"); !strings.Contains(errOut, "exists") {
		t.Errorf("duplicate snapshot: %q", errOut)
	}
	// Nothing above changed the volume or made a half volume.
	out := n.run("volume", "list")
	if strings.Count(out, "\n") != 2 || !strings.Contains(out, "good") {
		t.Fatalf("volume list after refusals:\n%s", out)
	}
	if !strings.Contains(n.run("volume", "inspect", "good"), "16MiB") {
		t.Errorf("refused calls changed the size of good:\n%s", n.run("volume", "inspect", "good"))
	}
	// Without a token nothing works.
	os.Remove(filepath.Join(n.dir, "config", "strata", "config.yaml"))
	if _, errOut, err := n.try("--token", "wrong", "volume", "list"); err == nil || !strings.Contains(strings.ToLower(errOut), "token") {
		t.Errorf("a wrong token: err %v, stderr %q", err, errOut)
	}
}
