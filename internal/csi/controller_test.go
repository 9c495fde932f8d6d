package csi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/client/clienttest"
)

// fixture is a driver serving on a unix socket over the fake API, whose
// node is "node-1" in zone "a".
type fixture struct {
	api  *clienttest.Server
	ctrl csi.ControllerClient
	id   csi.IdentityClient
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	api := clienttest.New(t)
	c, err := client.Dial(context.Background(), api.Addr, clienttest.Token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d, err := New(Backend{Volumes: c.Volumes, Snapshots: c.Snapshots, Cluster: c.Cluster},
		Options{NodeName: "node-1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "csi.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fixture{api: api, ctrl: csi.NewControllerClient(conn), id: csi.NewIdentityClient(conn)}
}

func mountCap(fs string) []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}},
	}}
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v, want %v saying %q", what, err, code, msg)
	}
}

// TestCreateVolumeRecordsTheClaim: the volume gets the CSI name, the
// filesystem and the claim as labels, QoS limits as asked, the node's
// topology; the same request again returns it; another spec is refused.
func TestCreateVolumeRecordsTheClaim(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	req := &csi.CreateVolumeRequest{
		Name:               "pvc-0b1e5c3a",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapabilities: mountCap(""),
		Parameters: map[string]string{
			"fs": "xfs", "max_iops": "500", "zones": "a,b",
			LabelPVCName: "data", LabelPVCNamespace: "db", "csi.storage.k8s.io/pv/name": "pvc-0b1e5c3a",
		},
	}
	resp, err := f.ctrl.CreateVolume(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	v := resp.GetVolume()
	if v.GetVolumeId() != "pvc-0b1e5c3a" || v.GetCapacityBytes() != 1<<30 || v.GetVolumeContext()["fs"] != "xfs" {
		t.Errorf("volume: %v", v)
	}
	if seg := v.GetAccessibleTopology()[0].GetSegments(); seg[TopologyNode] != "node-1" || seg[TopologyZone] != "a" {
		t.Errorf("topology: %v", seg)
	}
	r := f.api.LastRequest("/CreateVolume").(*stratav1.CreateVolumeRequest)
	want := map[string]string{LabelName: "pvc-0b1e5c3a", LabelFS: "xfs", LabelPVCName: "data", LabelPVCNamespace: "db"}
	for k, val := range want {
		if r.Labels[k] != val {
			t.Errorf("label %s = %q, want %q (labels %v)", k, r.Labels[k], val, r.Labels)
		}
	}
	if len(r.Labels) != len(want) {
		t.Errorf("labels %v, want %v", r.Labels, want)
	}
	if r.Qos.GetMaxReadIops() != 500 || r.Qos.GetMaxWriteIops() != 500 || r.Qos.MaxReadBytesPerSecond != nil {
		t.Errorf("qos sent: %v", r.Qos)
	}
	if _, err := f.ctrl.CreateVolume(ctx, req); err != nil {
		t.Errorf("same request again: %v", err)
	}
	req.Parameters["fs"] = "ext4"
	_, err = f.ctrl.CreateVolume(ctx, req)
	wantCode(t, "same name, another filesystem", err, codes.AlreadyExists, "another size, source or parameters")
	req.Parameters["fs"] = "xfs"
	req.CapacityRange = &csi.CapacityRange{RequiredBytes: 2 << 30}
	_, err = f.ctrl.CreateVolume(ctx, req)
	wantCode(t, "same name, larger", err, codes.AlreadyExists, "another size")

	// A volume made outside CSI under that name is not taken over.
	f.api.SetVolume(&stratav1.Volume{Name: "by-hand", SizeBytes: 1 << 30, Node: "node-1", State: "ready"})
	_, err = f.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "by-hand", VolumeCapabilities: mountCap("")})
	wantCode(t, "name of a volume made by hand", err, codes.AlreadyExists, "was not made for")
}

func TestCreateVolumeRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	topo := func(node, zone string) *csi.TopologyRequirement {
		seg := map[string]string{TopologyNode: node}
		if zone != "" {
			seg[TopologyZone] = zone
		}
		return &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: seg}}}
	}
	for _, c := range []struct {
		name   string
		params map[string]string
		topo   *csi.TopologyRequirement
		caps   []*csi.VolumeCapability
		code   codes.Code
		msg    string
	}{
		{"repl 4", map[string]string{"repl": "4"}, nil, nil, codes.InvalidArgument, "1, 2 or 3"},
		{"unknown parameter", map[string]string{"iops": "5"}, nil, nil, codes.InvalidArgument, "unknown parameter"},
		{"fs and fs_type differ", map[string]string{"fs": "xfs"}, nil, mountCap("ext4"), codes.InvalidArgument, "differ"},
		{"another zone", map[string]string{"zones": "b,c"}, nil, nil, codes.ResourceExhausted, "in none of them"},
		{"another node", nil, topo("node-2", ""), nil, codes.ResourceExhausted, "no requisite topology"},
		{"another zone in the topology", nil, topo("node-1", "b"), nil, codes.ResourceExhausted, "no requisite topology"},
		{"no capabilities", nil, nil, []*csi.VolumeCapability{}, codes.InvalidArgument, "capabilities are required"},
	} {
		caps := c.caps
		if caps == nil {
			caps = mountCap("")
		}
		_, err := f.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", Parameters: c.params, AccessibilityRequirements: c.topo, VolumeCapabilities: caps})
		wantCode(t, c.name, err, c.code, c.msg)
	}
	if len(f.api.Requests()) > 0 && f.api.LastRequest("/CreateVolume") != nil {
		t.Error("a refused request reached the API")
	}
	if _, err := f.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", AccessibilityRequirements: topo("node-1", "a"), VolumeCapabilities: mountCap("")}); err != nil {
		t.Errorf("this node's topology: %v", err)
	}
}

// TestCloneOfAVolume: the driver snapshots the source for the clone, the
// clone keeps the source's filesystem, the source cannot be deleted while a
// snapshot of its own is there, and deleting the clone removes the
// driver's snapshot.
func TestCloneOfAVolume(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src, err := f.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "src", VolumeCapabilities: mountCap("xfs"), CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	fromVolume := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "src"}}}
	_, err = f.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "copy", VolumeCapabilities: mountCap("ext4"), VolumeContentSource: fromVolume})
	wantCode(t, "clone with another filesystem", err, codes.InvalidArgument, "keeps its source's")
	clone, err := f.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "copy", VolumeCapabilities: mountCap(""), VolumeContentSource: fromVolume})
	if err != nil {
		t.Fatal(err)
	}
	if clone.GetVolume().GetCapacityBytes() != src.GetVolume().GetCapacityBytes() || clone.GetVolume().GetVolumeContext()["fs"] != "xfs" {
		t.Errorf("clone: %v", clone.GetVolume())
	}
	if clone.GetVolume().GetContentSource().GetVolume().GetVolumeId() != "src" {
		t.Errorf("clone's content source: %v", clone.GetVolume().GetContentSource())
	}
	list, err := f.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: "src"})
	if err != nil || len(list.GetEntries()) != 1 || !strings.Contains(list.GetEntries()[0].GetSnapshot().GetSnapshotId(), "@"+cloneSnapshotPrefix) {
		t.Fatalf("snapshots of the source: %v %v", list, err)
	}
	// Again: the same clone, no second snapshot.
	if _, err := f.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "copy", VolumeCapabilities: mountCap(""), VolumeContentSource: fromVolume}); err != nil {
		t.Errorf("clone again: %v", err)
	}

	snap, err := f.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "Before-Upgrade", SourceVolumeId: "src"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "src"})
	wantCode(t, "delete of a volume with a snapshot", err, codes.FailedPrecondition, snap.GetSnapshot().GetSnapshotId())
	if _, err := f.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "copy"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := f.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: "src"}); len(list.GetEntries()) != 0 {
		t.Errorf("the clone's snapshot outlived the clone: %v", list.GetEntries())
	}
	if _, err := f.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "src"}); err != nil {
		t.Errorf("delete of the source: %v", err)
	}
}

func TestCapacityAndProbe(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	resp, err := f.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil || resp.GetAvailableCapacity() != 90<<30 || resp.GetMaximumVolumeSize().GetValue() != maxVolumeSize {
		t.Errorf("capacity: %v %v", resp, err)
	}
	for name, req := range map[string]*csi.GetCapacityRequest{
		"another zone":   {Parameters: map[string]string{"zones": "b"}},
		"another node":   {AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyNode: "node-2"}}},
		"multi-node use": {VolumeCapabilities: []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}, AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}}},
	} {
		if resp, err := f.ctrl.GetCapacity(ctx, req); err != nil || resp.GetAvailableCapacity() != 0 {
			t.Errorf("%s: %v %v, want 0", name, resp, err)
		}
	}
	if resp, err := f.id.Probe(ctx, &csi.ProbeRequest{}); err != nil || !resp.GetReady().GetValue() {
		t.Errorf("probe: %v %v", resp, err)
	}
	f.api.FailWith("/GetStatus", status.Error(codes.Unavailable, "down"))
	if resp, err := f.id.Probe(ctx, &csi.ProbeRequest{}); err != nil || resp.GetReady().GetValue() {
		t.Errorf("probe with the API down: %v %v, want not ready", resp, err)
	}
}
