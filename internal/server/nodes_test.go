package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

// TestVolumeOfAnotherNode: with a shared etcd, a node must not act on the
// data of a volume another node holds (it would change the records and not
// the data, orphaning the chain); it refuses and names the node to call.
// Reads of the records still work from any node.
func TestVolumeOfAnotherNode(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	bg := context.Background()
	vc, sc := n.vols(), n.snaps()

	if _, err := n.meta.PutNode(bg, meta.Node{Name: "node2", Addresses: map[string]string{"api": "127.0.0.2:7420"}, Heartbeat: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, rec := range []meta.Volume{
		{Name: "far", Size: mib, Node: "node2", Created: time.Now(), State: meta.StateReady},
	} {
		if _, err := n.meta.CreateVolume(bg, rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.meta.CreateSnapshot(bg, meta.Snapshot{Volume: "far", Name: "s", Size: mib, Created: time.Now(), State: meta.StateReady}); err != nil {
		t.Fatal(err)
	}

	refused := func(what string, err error) {
		t.Helper()
		wantCode(t, what, err, codes.FailedPrecondition)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "lives on node node2 (API 127.0.0.2:7420)") {
			t.Errorf("%s: message %q does not name the volume's node", what, msg)
		}
	}
	_, err := vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "far"})
	refused("delete", err)
	_, err = vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "far", SizeBytes: 2 * mib})
	refused("resize", err)
	_, err = vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "far", Snapshot: "s"})
	refused("revert", err)
	_, err = vc.ExportVolume(ctx, &pb.ExportVolumeRequest{Name: "far"})
	refused("export", err)
	_, err = vc.MountVolume(ctx, &pb.MountVolumeRequest{Name: "far", Target: t.TempDir()})
	refused("mount", err)
	_, err = vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "far@s", Name: "near"})
	refused("clone", err)
	_, err = sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "far", Name: "s2"})
	refused("snapshot", err)
	_, err = sc.DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{Volume: "far", Name: "s"})
	refused("delete snapshot", err)

	// Nothing changed, and the records read from here.
	v := must[*pb.Volume](t, "get")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "far"}))
	if v.Node != "node2" || v.State != meta.StateReady || v.SizeBytes != mib {
		t.Fatalf("far after the refusals: %v", v)
	}
	snaps := must[*pb.ListSnapshotsResponse](t, "list snapshots")(sc.ListSnapshots(ctx, &pb.ListSnapshotsRequest{Volume: "far"}))
	if len(snaps.Snapshots) != 1 {
		t.Fatalf("snapshots of far: %v", snaps.Snapshots)
	}
	if _, err := n.meta.GetVolume(bg, "near"); err == nil {
		t.Fatal("a refused clone left a record")
	}
}
