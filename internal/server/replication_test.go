package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/replica"
	"github.com/strata-storage/strata/internal/replset"
)

// newCluster starts three nodes sharing the first one's etcd, each with its
// own pool and replica server, with fast heartbeats and replica timeouts.
func newCluster(t *testing.T, opts ...func(*testNode)) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := 1; i <= 3; i++ {
		n := &testNode{t: t, dir: t.TempDir(), etcdClient: freeURL(t), etcdPr: freeURL(t),
			name: fmt.Sprintf("node%d", i), heartbeat: 200 * time.Millisecond, replicaTimeout: time.Second}
		for _, o := range opts {
			o(n)
		}
		if i > 1 {
			n.endpoints = []string{nodes[0].etcdClient}
		}
		n.start()
		nodes = append(nodes, n)
	}
	// Cleanups run last in, first out: node1, which holds the etcd the
	// others use, stops last.
	for _, n := range nodes {
		t.Cleanup(n.stop)
	}
	return nodes
}

// waitVolume polls volume name on node n until ok says yes.
func waitVolume(t *testing.T, n *testNode, name, what string, ok func(*pb.Volume) bool) *pb.Volume {
	t.Helper()
	ctx := authed(context.Background())
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := n.vols().GetVolume(ctx, &pb.GetVolumeRequest{Name: name})
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s never got %s: %v %v", name, what, v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitOnline waits until node n sees the named nodes online.
func waitOnline(t *testing.T, n *testNode, names ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		nodes, err := n.srv.placementNodes(context.Background())
		online := map[string]bool{}
		for _, pn := range nodes {
			online[pn.Name] = pn.Online
		}
		all := err == nil
		for _, name := range names {
			all = all && online[name]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes %v never all online: %v %v", names, online, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func modes(v *pb.Volume) string {
	var parts []string
	for _, r := range v.Replicas {
		parts = append(parts, r.Node+":"+r.Mode)
	}
	return strings.Join(parts, " ")
}

// chainBytes reads the volume's chain on node n directly.
func chainBytes(t *testing.T, n *testNode, name string, off, length int64) []byte {
	t.Helper()
	c, err := n.agent.Pool().Open(name)
	if err != nil {
		t.Fatalf("%s: open chain %s: %v", n.name, name, err)
	}
	p := make([]byte, length)
	if _, err := c.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// TestReplicatedVolume: a volume with three replicas keeps every
// acknowledged write through the loss of a replica's node, runs degraded
// meanwhile, and catches the node up with only what it missed when it
// returns; snapshots seal every replica; check finds them identical.
func TestReplicatedVolume(t *testing.T) {
	nodes := newCluster(t)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := authed(context.Background())

	v := must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "r", SizeBytes: 64 * mib, Replicas: 3}))
	if v.Node != "node1" || v.ReplicasWanted != 3 || modes(v) != "node1:in-sync node2:in-sync node3:in-sync" || v.Degraded {
		t.Fatalf("created: node %s, %s, degraded %v", v.Node, modes(v), v.Degraded)
	}
	base := v.Epoch
	// Idempotent with the same spec; another number of replicas is another spec.
	must[*pb.Volume](t, "create again")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "r", SizeBytes: 64 * mib, Replicas: 3}))
	_, err := n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "r", SizeBytes: 64 * mib, Replicas: 2})
	wantCode(t, "create with another replica count", err, codes.AlreadyExists)
	_, err = n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "r4", SizeBytes: 64 * mib, Replicas: 4})
	wantCode(t, "create with 4 replicas", err, codes.InvalidArgument)

	if err := n1.agent.Attach("r"); err != nil {
		t.Fatal(err)
	}
	eng := n1.agent.Engine("r")
	if _, err := eng.WriteAt(fill(1, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if got := chainBytes(t, n, "r", 0, 1<<20); !bytes.Equal(got, fill(1, 1<<20)) {
			t.Fatalf("%s does not hold the acknowledged write", n.name)
		}
	}
	waitVolume(t, n1, "r", "the attach's epoch", func(v *pb.Volume) bool { return v.Epoch == base+1 })

	// node3 dies: the next write leaves it out, raises the epoch and is
	// acknowledged by the two others.
	n3.stop()
	var written int64
	for i := range 64 {
		if _, err := eng.WriteAt(fill(byte(i+2), 4096), int64(2<<20+i*64<<10)); err != nil {
			t.Fatalf("write %d with node3 down: %v", i, err)
		}
		written += 4096
	}
	v = waitVolume(t, n1, "r", "node3 out", func(v *pb.Volume) bool { return strings.Contains(modes(v), "node3:out") })
	if !v.Degraded || v.State != "degraded" || v.Epoch != base+2 {
		t.Fatalf("with node3 out: state %s degraded %v epoch %d", v.State, v.Degraded, v.Epoch)
	}
	// Snapshots wait for every replica (each must seal the same layer).
	_, err = n1.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "r", Name: "s1"})
	wantCode(t, "snapshot while degraded", err, codes.Unavailable)

	// node3 returns: it catches up by copying only the blocks it missed.
	before := n1.srv.catchUpBytes.Load()
	n3.start()
	v = waitVolume(t, n1, "r", "three replicas in sync", func(v *pb.Volume) bool { return !v.Degraded && len(v.Replicas) == 3 })
	// The count is added once the catch-up call returns, just after the
	// replica is recorded in sync.
	var copied int64
	for deadline := time.Now().Add(10 * time.Second); copied == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		copied = n1.srv.catchUpBytes.Load() - before
	}
	if copied == 0 || copied > written*3/2 {
		t.Fatalf("catch-up copied %d bytes for %d written while node3 was out", copied, written)
	}
	if v.Epoch != base+3 { // +2 when node3 left, +3 when it rejoined
		t.Fatalf("epoch after the catch-up: %d, want %d", v.Epoch, base+3)
	}
	for i := range 64 {
		if got := chainBytes(t, n3, "r", int64(2<<20+i*64<<10), 4096); !bytes.Equal(got, fill(byte(i+2), 4096)) {
			t.Fatalf("node3 lacks write %d after the catch-up", i)
		}
	}
	chk := must[*pb.CheckVolumeResponse](t, "check")(n1.vols().CheckVolume(ctx, &pb.CheckVolumeRequest{Name: "r"}))
	if len(chk.Nodes) != 3 || len(chk.Differing) != 0 || chk.ComparedBytes != 64*mib {
		t.Fatalf("check: %v", chk)
	}

	// A snapshot seals the same point on every replica.
	must[*pb.Snapshot](t, "snapshot")(n1.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "r", Name: "s1"}))
	for _, n := range nodes {
		c, err := n.agent.Pool().Open("r")
		if err != nil {
			t.Fatal(err)
		}
		if s := c.Snapshots(); len(s) != 1 || s[0].Name != "s1" {
			t.Fatalf("%s: snapshots %v", n.name, s)
		}
	}

	// check notices a replica that differs behind the engine's back.
	c2, _ := n2.agent.Pool().Open("r")
	if _, err := c2.WriteAt(fill(0xee, 4096), 40<<20); err != nil {
		t.Fatal(err)
	}
	chk = must[*pb.CheckVolumeResponse](t, "check")(n1.vols().CheckVolume(ctx, &pb.CheckVolumeRequest{Name: "r", RegionBytes: 64 << 10}))
	if len(chk.Differing) != 1 || chk.Differing[0].Offset != 40<<20 || chk.Differing[0].Length != 64<<10 {
		t.Fatalf("check after corrupting node2: %v", chk.Differing)
	}
}

// snapshotsOn returns the snapshots of the volume's chain on node n.
func snapshotsOn(t *testing.T, n *testNode, name string) string {
	t.Helper()
	c, err := n.agent.Pool().Open(name)
	if err != nil {
		t.Fatalf("%s: open chain %s: %v", n.name, name, err)
	}
	var out []string
	for _, si := range c.Snapshots() {
		out = append(out, si.Name)
	}
	return strings.Join(out, ",")
}

// TestRevertAndSnapshotDeleteAcrossReplicas: revert and snapshot delete
// reach every replica of a replicated volume; a replica out at the time
// gets both when it returns (its stale snapshot goes, and what changed
// since the snapshot is copied), and check finds the replicas identical.
func TestRevertAndSnapshotDeleteAcrossReplicas(t *testing.T) {
	nodes := newCluster(t)
	n1, n3 := nodes[0], nodes[2]
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "rv", SizeBytes: 32 * mib, Replicas: 3}))
	if err := n1.agent.Attach("rv"); err != nil {
		t.Fatal(err)
	}
	eng := n1.agent.Engine("rv")
	write := func(b byte, off int64) {
		t.Helper()
		if _, err := eng.WriteAt(fill(b, 1<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	snap := func(name string) {
		t.Helper()
		must[*pb.Snapshot](t, "snapshot "+name)(n1.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "rv", Name: name}))
	}
	write(1, 0)
	snap("s1")
	write(2, 0)
	write(3, 8*mib)
	snap("s2")
	write(4, 0)

	// A revert past a later snapshot is refused before any replica moves.
	_, err := n1.vols().RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "rv", Snapshot: "s1"})
	wantCode(t, "revert past s2", err, codes.FailedPrecondition)
	for _, n := range nodes {
		if got := chainBytes(t, n, "rv", 0, 4096); !bytes.Equal(got, fill(4, 4096)) {
			t.Fatalf("%s changed by a refused revert", n.name)
		}
	}
	del := must[*pb.DeleteSnapshotResponse](t, "delete s2")
	del(n1.snaps().DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{Volume: "rv", Name: "s2"}))
	for _, n := range nodes {
		if got := snapshotsOn(t, n, "rv"); got != "s1" {
			t.Fatalf("%s: snapshots after deleting s2: %q, want s1", n.name, got)
		}
	}

	// node3 goes away and misses a write; the others revert to s1.
	n3.stop()
	write(5, 16*mib)
	waitVolume(t, n1, "rv", "node3 out", func(v *pb.Volume) bool { return strings.Contains(modes(v), "node3:out") })
	_, err = n1.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "rv", Name: "s3"})
	wantCode(t, "snapshot with a replica out", err, codes.Unavailable)
	must[*pb.Volume](t, "revert")(n1.vols().RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "rv", Snapshot: "s1"}))
	for _, n := range nodes[:2] {
		for _, c := range []struct {
			off  int64
			want byte
		}{{0, 1}, {8 * mib, 0}, {16 * mib, 0}} {
			if got := chainBytes(t, n, "rv", c.off, 1<<20); !bytes.Equal(got, fill(c.want, 1<<20)) {
				t.Fatalf("%s after the revert: %d MiB does not read %d", n.name, c.off>>20, c.want)
			}
		}
	}
	p := make([]byte, 4096)
	if _, err := eng.ReadAt(p, 0); err != nil || !bytes.Equal(p, fill(1, 4096)) {
		t.Fatalf("engine read after the revert: %v", err)
	}
	// s1 goes too, while node3 still holds it.
	del(n1.snaps().DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{Volume: "rv", Name: "s1"}))
	if got := snapshotsOn(t, nodes[1], "rv"); got != "" {
		t.Fatalf("node2: snapshots after deleting s1: %q", got)
	}

	// node3 returns: s1 is pruned and the reverted content copied.
	n3.start()
	waitVolume(t, n1, "rv", "three replicas in sync", func(v *pb.Volume) bool { return !v.Degraded && len(v.Replicas) == 3 })
	if got := snapshotsOn(t, n3, "rv"); got != "" {
		t.Fatalf("node3 kept snapshots %q deleted while it was away", got)
	}
	chk := must[*pb.CheckVolumeResponse](t, "check")(n1.vols().CheckVolume(ctx, &pb.CheckVolumeRequest{Name: "rv"}))
	if len(chk.Nodes) != 3 || len(chk.Differing) != 0 {
		t.Fatalf("check after node3's return: %v", chk)
	}
	if got := chainBytes(t, n3, "rv", 8*mib, 1<<20); !bytes.Equal(got, fill(0, 1<<20)) {
		t.Fatal("node3 still holds a write the revert dropped")
	}
}

// TestReplicatedClone: a clone of a replicated volume's snapshot may have
// replicas on the nodes holding the source's, made in O(1) on each (they
// share the source's layers there), written by one engine and identical.
func TestReplicatedClone(t *testing.T) {
	nodes := newCluster(t)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "src", SizeBytes: 16 * mib, Replicas: 2, Nodes: []string{"node1", "node2"}}))
	if err := n1.agent.Attach("src"); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.agent.Engine("src").WriteAt(fill(6, 2<<20), 0); err != nil {
		t.Fatal(err)
	}
	must[*pb.Snapshot](t, "snapshot")(n1.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "src", Name: "s"}))

	// Three replicas, or one on node3, cannot share the source's layers.
	_, err := n1.vols().CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "src@s", Name: "c3", Replicas: 3})
	wantCode(t, "clone with more replicas than the source", err, codes.FailedPrecondition)
	_, err = n1.vols().CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "src@s", Name: "cx", Replicas: 1, Nodes: []string{"node3"}})
	wantCode(t, "clone on a node without the source", err, codes.FailedPrecondition)
	_, err = n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "cz", FromSnapshot: "src@s", Replicas: 2, Zones: []string{"a"}})
	wantCode(t, "clone with zones", err, codes.InvalidArgument)
	for _, n := range nodes {
		if ok, _ := n.agent.Exists("c3"); ok {
			t.Fatalf("%s holds a chain of a refused clone", n.name)
		}
	}

	v := must[*pb.Volume](t, "clone")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "c", FromSnapshot: "src@s", Replicas: 2}))
	if modes(v) != "node1:in-sync node2:in-sync" || v.Node != "node1" || v.Parent != "src@s" {
		t.Fatalf("clone: node %s, %s, parent %s", v.Node, modes(v), v.Parent)
	}
	// Idempotent with the same spec.
	must[*pb.Volume](t, "clone again")(n1.vols().CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "src@s", Name: "c", Replicas: 2}))
	for _, n := range []*testNode{n1, n2} {
		c, err := n.agent.Pool().Open("c")
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		if got := c.Info(); got.Parent != "src@s" {
			t.Fatalf("%s: the clone's chain has parent %q: not a thin clone", n.name, got.Parent)
		}
	}
	if ok, _ := n3.agent.Exists("c"); ok {
		t.Fatal("node3 holds a replica of the clone")
	}
	if err := n1.agent.Attach("c"); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.agent.Engine("c").WriteAt(fill(7, 4096), 1<<20); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{n1, n2} {
		if got := chainBytes(t, n, "c", 0, 8192); !bytes.Equal(got, fill(6, 8192)) {
			t.Fatalf("%s: the clone does not read its snapshot's data", n.name)
		}
		if got := chainBytes(t, n, "c", 1<<20, 4096); !bytes.Equal(got, fill(7, 4096)) {
			t.Fatalf("%s: the clone's write is missing", n.name)
		}
		if got := chainBytes(t, n, "src", 1<<20, 4096); !bytes.Equal(got, fill(6, 4096)) {
			t.Fatalf("%s: the clone's write reached its source", n.name)
		}
	}
	chk := must[*pb.CheckVolumeResponse](t, "check")(n1.vols().CheckVolume(ctx, &pb.CheckVolumeRequest{Name: "c"}))
	if len(chk.Nodes) != 2 || len(chk.Differing) != 0 {
		t.Fatalf("check of the clone: %v", chk)
	}
	// Deleting the clone removes both replicas; the source keeps its data.
	must[*pb.DeleteVolumeResponse](t, "delete clone")(n1.vols().DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "c"}))
	for _, n := range []*testNode{n1, n2} {
		if ok, _ := n.agent.Exists("c"); ok {
			t.Fatalf("%s still holds the deleted clone", n.name)
		}
		if got := chainBytes(t, n, "src", 0, 4096); !bytes.Equal(got, fill(6, 4096)) {
			t.Fatalf("%s: the source lost data with its clone", n.name)
		}
	}
}

// snapshotBytes reads snapshot snap of the volume's chain on node n
// through a clone of it.
func snapshotBytes(t *testing.T, n *testNode, name, snap string, off, length int64) []byte {
	t.Helper()
	tmp := "read-" + snap
	c, err := n.agent.Pool().Clone(name, snap, tmp, 0)
	if err != nil {
		t.Fatalf("%s: clone %s@%s: %v", n.name, name, snap, err)
	}
	defer n.agent.Pool().Delete(tmp)
	p := make([]byte, length)
	if _, err := c.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestANewReplicaGetsTheSnapshots: a replica added by ha-update gets the
// volume's snapshots, each with its content, before the current data, so
// that it can be reverted and cloned like the others.
func TestANewReplicaGetsTheSnapshots(t *testing.T) {
	nodes := newCluster(t)
	n1, n3 := nodes[0], nodes[2]
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "hs", SizeBytes: 16 * mib, Replicas: 2, Nodes: []string{"node1", "node2"}}))
	if err := n1.agent.Attach("hs"); err != nil {
		t.Fatal(err)
	}
	eng := n1.agent.Engine("hs")
	write := func(b byte, off, n int64) {
		t.Helper()
		if _, err := eng.WriteAt(fill(b, int(n)), off); err != nil {
			t.Fatal(err)
		}
	}
	write(1, 0, 1<<20)
	write(2, 4<<20, 6<<20) // past a historyChunk
	must[*pb.Snapshot](t, "s1")(n1.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "hs", Name: "s1"}))
	write(3, 0, 4096)
	if err := eng.Trim(5<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	must[*pb.Snapshot](t, "s2")(n1.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "hs", Name: "s2"}))
	write(4, 8192, 4096)

	must[*pb.Volume](t, "ha-update 3")(n1.vols().UpdateVolumeReplicas(ctx, &pb.UpdateVolumeReplicasRequest{Name: "hs", Replicas: 3}))
	waitVolume(t, n1, "hs", "3 in sync", func(v *pb.Volume) bool {
		return modes(v) == "node1:in-sync node2:in-sync node3:in-sync"
	})
	if got := snapshotsOn(t, n3, "hs"); got != "s1,s2" {
		t.Fatalf("the new replica's snapshots: %q, want s1,s2", got)
	}
	for _, c := range []struct {
		snap   string
		off, n int64
		want   byte
		what   string
	}{
		{"s1", 0, 4096, 1, "s1's first write"},
		{"s1", 4 << 20, 6 << 20, 2, "s1's second write"},
		{"s2", 0, 4096, 3, "s2's write"},
		{"s2", 4096, 4096, 1, "s1's data under s2"},
		{"s2", 5 << 20, 1 << 20, 0, "s2's trim"},
		{"s2", 6 << 20, 1 << 20, 2, "s1's data after s2's trim"},
	} {
		if got := snapshotBytes(t, n3, "hs", c.snap, c.off, c.n); !bytes.Equal(got, fill(c.want, int(c.n))) {
			t.Fatalf("the new replica's %s@%s lacks %s", "hs", c.snap, c.what)
		}
	}
	if got := chainBytes(t, n3, "hs", 8192, 4096); !bytes.Equal(got, fill(4, 4096)) {
		t.Fatal("the new replica lacks the head's write")
	}
	chk := must[*pb.CheckVolumeResponse](t, "check")(n1.vols().CheckVolume(ctx, &pb.CheckVolumeRequest{Name: "hs"}))
	if len(chk.Nodes) != 3 || len(chk.Differing) != 0 {
		t.Fatalf("check: %v", chk)
	}
	// Reverting needs s2 on every replica; so does a clone on node3.
	must[*pb.Volume](t, "revert")(n1.vols().RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "hs", Snapshot: "s2"}))
	if got := chainBytes(t, n3, "hs", 8192, 4096); !bytes.Equal(got, fill(1, 4096)) {
		t.Fatal("the new replica was not reverted")
	}
	must[*pb.Volume](t, "clone")(n1.vols().CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "hs@s1", Name: "hs-c", Replicas: 3}))
	if ok, _ := n3.agent.Exists("hs-c"); !ok {
		t.Fatal("no clone replica on node3")
	}
	// No pinned snapshot clone is left behind.
	for _, n := range nodes {
		names, _ := n.agent.Pool().List()
		for _, c := range names {
			if strings.HasPrefix(c, historyClonePrefix) {
				t.Fatalf("%s keeps %s", n.name, c)
			}
		}
	}
}

// TestFailoverFencesTheOldEngine: attaching a volume on another node moves
// its engine there with every acknowledged write, and the old engine,
// still running, can no longer write to any replica (invariant 3).
func TestFailoverFencesTheOldEngine(t *testing.T) {
	nodes := newCluster(t)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := authed(context.Background())
	base := must[*pb.Volume](t, "create")(n2.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "f", SizeBytes: 16 * mib, Replicas: 2, Nodes: []string{"node2", "node3"}})).Epoch
	if err := n2.agent.Attach("f"); err != nil {
		t.Fatal(err)
	}
	old := n2.agent.Engine("f")
	if _, err := old.WriteAt(fill(7, 8192), 4096); err != nil {
		t.Fatal(err)
	}

	// Attach through node1, which holds no replica: refused, saying where they are.
	_, err := n1.vols().AttachVolume(ctx, &pb.AttachVolumeRequest{Name: "f"})
	wantCode(t, "attach on a node without a replica", err, codes.FailedPrecondition)
	// Attach on node3 named through node2's API: refused, naming node3's API.
	_, err = n2.vols().AttachVolume(ctx, &pb.AttachVolumeRequest{Name: "f", Node: "node3"})
	wantCode(t, "attach on another node", err, codes.FailedPrecondition)

	v := must[*pb.Volume](t, "attach")(n3.vols().AttachVolume(ctx, &pb.AttachVolumeRequest{Name: "f"}))
	if v.Node != "node3" {
		t.Fatalf("attached to %s", v.Node)
	}
	eng := n3.agent.Engine("f")
	p := make([]byte, 8192)
	if _, err := eng.ReadAt(p, 4096); err != nil || !bytes.Equal(p, fill(7, 8192)) {
		t.Fatalf("acknowledged write after failover: %v", err)
	}
	// The old engine is fenced: its write fails and reaches no replica.
	if _, err := old.WriteAt(fill(9, 4096), 4096); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("write of the old engine after failover: %v", err)
	}
	for _, n := range []*testNode{n2, n3} {
		if got := chainBytes(t, n, "f", 4096, 4096); !bytes.Equal(got, fill(7, 4096)) {
			t.Fatalf("%s: the fenced engine's write landed", n.name)
		}
	}
	// The new engine keeps both replicas in sync.
	if _, err := eng.WriteAt(fill(8, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if v := waitVolume(t, n3, "f", "in sync", func(v *pb.Volume) bool { return v.Epoch == base+2 }); v.Degraded {
		t.Fatalf("degraded after failover: %s", modes(v))
	}
}

// TestHAUpdate: replicas are added online (placed, then caught up) and
// removed (their data deleted).
func TestHAUpdate(t *testing.T) {
	nodes := newCluster(t)
	n1 := nodes[0]
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "h", SizeBytes: 16 * mib}))
	if err := n1.agent.Attach("h"); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.agent.Engine("h").WriteAt(fill(5, 1<<20), 3<<20); err != nil {
		t.Fatal(err)
	}
	must[*pb.Volume](t, "ha-update 3")(n1.vols().UpdateVolumeReplicas(ctx, &pb.UpdateVolumeReplicasRequest{Name: "h", Replicas: 3}))
	waitVolume(t, n1, "h", "3 in sync", func(v *pb.Volume) bool {
		return v.ReplicasWanted == 3 && modes(v) == "node1:in-sync node2:in-sync node3:in-sync"
	})
	for _, n := range nodes {
		if got := chainBytes(t, n, "h", 3<<20, 1<<20); !bytes.Equal(got, fill(5, 1<<20)) {
			t.Fatalf("%s lacks the data after ha-update", n.name)
		}
	}
	// Writes reach the new replicas.
	if _, err := n1.agent.Engine("h").WriteAt(fill(6, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if got := chainBytes(t, nodes[2], "h", 0, 4096); !bytes.Equal(got, fill(6, 4096)) {
		t.Fatal("a new replica misses a later write")
	}
	v := must[*pb.Volume](t, "ha-update 1")(n1.vols().UpdateVolumeReplicas(ctx, &pb.UpdateVolumeReplicasRequest{Name: "h", Replicas: 1}))
	if modes(v) != "node1:in-sync" {
		t.Fatalf("after ha-update 1: %s", modes(v))
	}
	for _, n := range nodes[1:] {
		if _, err := n.agent.Pool().Open("h"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("%s still holds a removed replica: %v", n.name, err)
		}
	}
	_, err := n1.vols().UpdateVolumeReplicas(ctx, &pb.UpdateVolumeReplicasRequest{Name: "h", Replicas: 0})
	wantCode(t, "ha-update 0", err, codes.InvalidArgument)
}

// TestResyncAfterEngineCrash: an engine that ended without detaching may
// leave replicas different where its writes were in flight; the next
// attach copies those regions from one replica to the others before any
// I/O (invariant 6).
func TestResyncAfterEngineCrash(t *testing.T) {
	nodes := newCluster(t)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := authed(context.Background())
	bg := context.Background()
	must[*pb.Volume](t, "create")(n2.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "c", SizeBytes: 64 * mib, Replicas: 2, Nodes: []string{"node2", "node3"}}))
	if err := n2.agent.Attach("c"); err != nil {
		t.Fatal(err)
	}
	eng := n2.agent.Engine("c")
	if _, err := eng.WriteAt(fill(3, 32<<20), 0); err != nil {
		t.Fatal(err)
	}
	// Two checkpoints: the regions written before the first are durable
	// everywhere and leave the dirty-region logs; the write at 40 MiB
	// stays.
	if err := eng.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.WriteAt(fill(4, 4096), 40<<20); err != nil {
		t.Fatal(err)
	}
	if err := eng.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	n2.stop()
	// The record as a crash leaves it: attached to node2, dirty; and a
	// write in flight reached node3 only.
	rec, err := n1.meta.GetVolume(bg, "c")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Replication.Engine != "" || rec.Replication.Dirty {
		t.Fatalf("a clean stop left the record attached: %+v", rec.Replication)
	}
	rec.Replication.Engine, rec.Replication.Dirty = "node2", true
	if _, err := n1.meta.UpdateVolume(bg, rec); err != nil {
		t.Fatal(err)
	}
	// The in-flight write goes through node3's fence at the engine's
	// epoch, as the replica server applies it, and so is logged.
	c3, err := n3.agent.Pool().Open("c")
	if err != nil {
		t.Fatal(err)
	}
	l3, err := replica.OpenLocal(c3, n3.agent.Epochs(), rec.Replication.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l3.WriteAt(fill(9, 4096), 1<<20); err != nil {
		t.Fatal(err)
	}

	n2.start()
	before := n2.srv.resyncCompared.Load()
	if err := n2.agent.Attach("c"); err != nil {
		t.Fatal(err)
	}
	if got := chainBytes(t, n3, "c", 1<<20, 4096); !bytes.Equal(got, fill(3, 4096)) {
		t.Fatal("the attach after a crash did not resync the replicas")
	}
	// Only the logged regions were compared: the one of the write in
	// flight and the one written since the previous checkpoint, not the
	// 33 MiB written since the volume was made.
	if got, want := n2.srv.resyncCompared.Load()-before, int64(2*replica.DirtyRegion); got != want {
		t.Fatalf("the resync compared %d bytes, want %d (two logged regions)", got, want)
	}
	chk := must[*pb.CheckVolumeResponse](t, "check")(n2.vols().CheckVolume(ctx, &pb.CheckVolumeRequest{Name: "c"}))
	if len(chk.Differing) != 0 {
		t.Fatalf("replicas differ after the resync: %v", chk.Differing)
	}
}

// TestReplacementOfAReplicaGoneTooLong: a replica out for longer than
// ReplaceAfter is replaced by a new one on another node, built from an
// in-sync replica; the old one's data is deleted when its node returns.
func TestReplacementOfAReplicaGoneTooLong(t *testing.T) {
	nodes := newCluster(t, func(n *testNode) { n.replaceAfter = time.Second })
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "g", SizeBytes: 16 * mib, Replicas: 2, Nodes: []string{"node1", "node2"}}))
	if err := n1.agent.Attach("g"); err != nil {
		t.Fatal(err)
	}
	eng := n1.agent.Engine("g")
	if _, err := eng.WriteAt(fill(4, 1<<20), 5<<20); err != nil {
		t.Fatal(err)
	}
	n2.stop()
	if _, err := eng.WriteAt(fill(5, 4096), 0); err != nil {
		t.Fatal(err)
	}
	v := waitVolume(t, n1, "g", "a replacement on node3", func(v *pb.Volume) bool {
		return modes(v) == "node1:in-sync node3:in-sync"
	})
	if v.Degraded {
		t.Fatalf("degraded after the replacement: %s", modes(v))
	}
	if got := chainBytes(t, n3, "g", 5<<20, 1<<20); !bytes.Equal(got, fill(4, 1<<20)) {
		t.Fatal("the new replica lacks the volume's data")
	}
	if got := chainBytes(t, n3, "g", 0, 4096); !bytes.Equal(got, fill(5, 4096)) {
		t.Fatal("the new replica lacks the write made while node2 was out")
	}
	// node2 returns: its stale replica goes.
	n2.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := n2.agent.Pool().Open("g")
		if errors.Is(err, errdefs.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node2 still holds its retired replica: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The record forgets node2 once the deletion is recorded, just after.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rec, err := n1.meta.GetVolume(context.Background(), "g")
		if err == nil && len(rec.Replication.Retired) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retired nodes after the deletion: %v %v", rec.Replication.Retired, err)
		}
	}
}

// TestRecreatedVolumeStartsAboveOldEpochs: replicas remember the epochs of
// a deleted volume; one made again under its name must still attach.
func TestRecreatedVolumeStartsAboveOldEpochs(t *testing.T) {
	nodes := newCluster(t)
	n1, n2 := nodes[0], nodes[1]
	ctx := authed(context.Background())
	spec := &pb.CreateVolumeRequest{Name: "again", SizeBytes: 16 * mib, Replicas: 2, Nodes: []string{"node1", "node2"}}
	must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, spec))
	if err := n1.agent.Attach("again"); err != nil {
		t.Fatal(err)
	}
	// A failover raises the replicas' epoch twice (attach here, then there).
	must[*pb.Volume](t, "attach on node2")(n2.vols().AttachVolume(ctx, &pb.AttachVolumeRequest{Name: "again"}))
	must[*pb.DeleteVolumeResponse](t, "delete")(n2.vols().DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "again"}))
	n1.stop() // lets go of the fenced engine
	n1.start()
	waitOnline(t, n1, "node1", "node2") // node2's heartbeats failed while node1's etcd was down
	time.Sleep(2 * time.Millisecond)    // epochs start at the creation's millisecond
	must[*pb.Volume](t, "create again")(n1.vols().CreateVolume(ctx, spec))
	if err := n1.agent.Attach("again"); err != nil {
		t.Fatalf("attach of the volume made again: %v", err)
	}
	if _, err := n1.agent.Engine("again").WriteAt(fill(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
}

// TestInterruptedReplicatedCreateIsUndone: a crash while a replicated
// volume's replicas were being made leaves a "creating" record; the next
// start of its node removes the replicas that were made, and the record.
func TestInterruptedReplicatedCreateIsUndone(t *testing.T) {
	nodes := newCluster(t)
	n1, n2 := nodes[0], nodes[1]
	bg := context.Background()
	repl, err := replset.New([]string{"node1", "node2"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n1.meta.CreateVolume(bg, meta.Volume{Name: "half", Size: 16 * mib, Node: "node1", Created: time.Now(), State: meta.StateCreating, Replication: repl}); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.agent.Create("half", 16*mib); err != nil { // made on node2 only
		t.Fatal(err)
	}
	n1.restart()
	if _, err := n1.meta.GetVolume(bg, "half"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("record after reconcile: %v", err)
	}
	if _, err := n2.agent.Pool().Open("half"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("node2's replica after reconcile: %v", err)
	}
}

// TestACatchingUpReplicaWhoseNodeDiesIsReplaced: a replica whose node goes
// away during its catch-up is recorded out, and replaced in time.
func TestACatchingUpReplicaWhoseNodeDiesIsReplaced(t *testing.T) {
	nodes := newCluster(t, func(n *testNode) { n.replaceAfter = time.Second })
	n1, n2 := nodes[0], nodes[1]
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n1.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "cu", SizeBytes: 16 * mib, Replicas: 2, Nodes: []string{"node1", "node2"}}))
	if err := n1.agent.Attach("cu"); err != nil {
		t.Fatal(err)
	}
	n2.stop()
	if _, err := n1.agent.Engine("cu").WriteAt(fill(1, 4096), 0); err != nil { // drops node2
		t.Fatal(err)
	}
	// The record as a catch-up cut short by the node's death leaves it.
	bg := context.Background()
	if _, _, err := n1.srv.changeRepl(bg, "cu", func(st replset.State) (replset.State, []replset.Action, error) {
		return st.ReplicaReturned("node2", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, n1, "cu", "a replacement on node3", func(v *pb.Volume) bool {
		return modes(v) == "node1:in-sync node3:in-sync"
	})
}
