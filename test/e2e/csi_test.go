package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// csiNode is a node started with --csi-endpoint and clients of its driver.
type csiNode struct {
	*node
	ctrl    csi.ControllerClient
	nodeSvc csi.NodeClient
	id      string // the CSI node ID
	// work is a directory for staging and target paths; what is still
	// mounted there when the test ends (it failed) is unmounted before the
	// node stops.
	work string
	sock string
}

func newCSINode(t *testing.T) *csiNode {
	t.Helper()
	needRoot(t)
	needTools(t, "mkfs.ext4", "mkfs.xfs", "blkid", "resize2fs", "e2fsck", "xfs_growfs")
	work, dir := t.TempDir(), t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	n := newNodeAt(t, dir, filepath.Join(dir, "data"), "--csi-endpoint", "unix://"+sock, "--node-name", "n1", "--labels", "zone=z1")
	t.Cleanup(func() { unmountUnder(t, work) })
	waitForSocket(t, n, sock)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &csiNode{node: n, ctrl: csi.NewControllerClient(conn), nodeSvc: csi.NewNodeClient(conn), id: "n1", work: work, sock: sock}
}

func mountCapability(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	}
}

func blockCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	}
}

const rwo = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER

// create makes a volume through the controller and returns its ID.
func (c *csiNode) create(t *testing.T, name string, size int64, caps *csi.VolumeCapability, params map[string]string, src *csi.VolumeContentSource) string {
	t.Helper()
	resp, err := c.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{
		Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{caps}, Parameters: params, VolumeContentSource: src,
	})
	if err != nil {
		t.Fatalf("CreateVolume %s: %v\n%s", name, err, c.log())
	}
	return resp.GetVolume().GetVolumeId()
}

func (c *csiNode) stage(t *testing.T, id, staging string, caps *csi.VolumeCapability) {
	t.Helper()
	if _, err := c.nodeSvc.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: caps}); err != nil {
		t.Fatalf("NodeStageVolume %s: %v\n%s", id, err, c.log())
	}
}

func (c *csiNode) publish(t *testing.T, id, staging, target string, caps *csi.VolumeCapability, readOnly bool) {
	t.Helper()
	if _, err := c.nodeSvc.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{
		VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: caps, Readonly: readOnly,
	}); err != nil {
		t.Fatalf("NodePublishVolume %s at %s: %v\n%s", id, target, err, c.log())
	}
}

func (c *csiNode) unpublish(t *testing.T, id, target string) {
	t.Helper()
	if _, err := c.nodeSvc.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume %s: %v", target, err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("%s is still there after NodeUnpublishVolume: %v", target, err)
	}
}

func (c *csiNode) unstage(t *testing.T, id, staging string) {
	t.Helper()
	if _, err := c.nodeSvc.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume %s: %v", id, err)
	}
}

func wantCSICode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
}

// TestCSIFilesystemVolumes drives the driver as kubelet and the sidecars
// would, on real mounts: a volume staged once and published at two
// targets (one read-only), statistics, a snapshot restored and a volume
// cloned with the data in them, expansion of xfs online and of ext4 while
// unstaged, the refusals a single-writer volume and a busy staging path
// get, and deletion.
func TestCSIFilesystemVolumes(t *testing.T) {
	c := newCSINode(t)
	ctx := context.Background()
	dir := c.work
	staging, rw, ro := filepath.Join(dir, "staging"), filepath.Join(dir, "pod1", "vol"), filepath.Join(dir, "pod2", "vol")
	for _, d := range []string{staging, filepath.Dir(rw), filepath.Dir(ro)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	capRW := mountCapability(rwo)
	id := c.create(t, "pvc-data", 320<<20, capRW, map[string]string{"fs": "xfs", "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db"}, nil)
	if out := c.run("volume", "inspect", id); !strings.Contains(out, "csi.storage.k8s.io/pvc/name=data") || !strings.Contains(out, "csi.strata.io/fs=xfs") {
		t.Fatalf("the volume does not record its claim:\n%s", out)
	}
	if _, err := c.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: c.id, VolumeCapability: capRW}); err != nil {
		t.Fatal(err)
	}
	c.stage(t, id, staging, capRW)
	c.publish(t, id, staging, rw, capRW, false)
	c.publish(t, id, staging, ro, capRW, true)
	payload := bytes.Repeat([]byte("strata csi\n"), 10000)
	if err := os.WriteFile(filepath.Join(rw, "f"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(ro, "f")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("the read-only target does not show the file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(ro, "g"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to the read-only target: %v, want EROFS", err)
	}
	_, err := c.nodeSvc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: ro, VolumeCapability: capRW})
	wantCSICode(t, "publish read-write where it is read-only", err, codes.AlreadyExists)

	stats, err := c.nodeSvc.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: rw})
	if err != nil {
		t.Fatal(err)
	}
	bytesUsage, inodes := stats.GetUsage()[0], stats.GetUsage()[1]
	before := c.total(t, id, rw)
	if bytesUsage.GetUnit() != csi.VolumeUsage_BYTES || bytesUsage.GetTotal() < 250<<20 || bytesUsage.GetUsed() < int64(len(payload)) ||
		inodes.GetUnit() != csi.VolumeUsage_INODES || inodes.GetTotal() == 0 || stats.GetVolumeCondition().GetAbnormal() {
		t.Fatalf("stats: %v", stats)
	}

	// A snapshot and a clone, taken while the volume is in use: they hold
	// what was written (the driver syncs the filesystem first).
	snap, err := c.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	restored := c.create(t, "pvc-restored", 320<<20, capRW, nil, &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshot().GetSnapshotId()}}})
	cloned := c.create(t, "pvc-cloned", 320<<20, capRW, nil, &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}})
	for _, v := range []string{restored, cloned} {
		st, target := filepath.Join(dir, v+"-staging"), filepath.Join(dir, v)
		os.Mkdir(st, 0o750)
		c.stage(t, v, st, capRW)
		c.publish(t, v, st, target, capRW, false)
		if got, err := os.ReadFile(filepath.Join(target, "f")); err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("%s does not hold the file: %v", v, err)
		}
		c.unpublish(t, v, target)
		c.unstage(t, v, st)
	}

	// Another volume cannot be staged where this one is.
	other := c.create(t, "pvc-other", 64<<20, capRW, nil, nil)
	_, err = c.nodeSvc.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: other, StagingTargetPath: staging, VolumeCapability: capRW})
	wantCSICode(t, "stage of another volume at a busy staging path", err, codes.FailedPrecondition)

	// xfs grows online, while published.
	exp, err := c.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 640 << 20}, VolumeCapability: capRW})
	if err != nil || exp.GetCapacityBytes() != 640<<20 || !exp.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume: %v %v", exp, err)
	}
	if _, err := c.nodeSvc.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: rw, CapacityRange: &csi.CapacityRange{RequiredBytes: 640 << 20}}); err != nil {
		t.Fatal(err)
	}
	if total := c.total(t, id, rw); total < 2*before-before/4 {
		t.Fatalf("xfs is %d bytes after expansion from 320 to 640MiB (was %d)", total, before)
	}

	// Deleting a volume with a snapshot is refused; the snapshot first.
	for _, target := range []string{rw, ro} {
		c.unpublish(t, id, target)
	}
	c.unstage(t, id, staging)
	_, err = c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	wantCSICode(t, "delete of a volume with a snapshot", err, codes.FailedPrecondition)
	if _, err := c.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{cloned, restored, id, other} {
		if _, err := c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v}); err != nil {
			t.Fatalf("DeleteVolume %s: %v", v, err)
		}
	}
	if out := c.run("snapshot", "list"); strings.Contains(out, "csi-clone-") {
		t.Fatalf("the snapshot taken for the clone outlived it:\n%s", out)
	}
}

// TestCSIExt4GrowsWhileUnstaged expands an ext4 volume while it is not
// staged: the next stage grows the filesystem (no CAP_SYS_RESOURCE needed),
// and a single-writer volume is refused a second target.
func TestCSIExt4GrowsWhileUnstaged(t *testing.T) {
	c := newCSINode(t)
	ctx := context.Background()
	dir := c.work
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "target")
	os.Mkdir(staging, 0o750)
	caps := mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)
	id := c.create(t, "pvc-e4", 64<<20, caps, nil, nil)
	c.stage(t, id, staging, caps)
	c.publish(t, id, staging, target, caps, false)
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := c.total(t, id, target)
	_, err := c.nodeSvc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target + "2", VolumeCapability: caps})
	wantCSICode(t, "second target of a single-writer volume", err, codes.FailedPrecondition)
	c.unpublish(t, id, target)
	c.unstage(t, id, staging)

	if _, err := c.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 256 << 20}}); err != nil {
		t.Fatal(err)
	}
	c.stage(t, id, staging, caps)
	c.publish(t, id, staging, target, caps, false)
	if _, err := c.nodeSvc.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target}); err != nil {
		t.Fatalf("NodeExpandVolume of a filesystem that has grown already: %v", err)
	}
	if after := c.total(t, id, target); after < 3*before {
		t.Fatalf("ext4 is %d bytes after growing from 64 to 256MiB (was %d)", after, before)
	}
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "kept" {
		t.Fatalf("file after growth: %q %v", b, err)
	}
	c.unpublish(t, id, target)
	c.unstage(t, id, staging)
	if _, err := c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}

	// The socket goes with the node; one a crash left is replaced.
	c.stop()
	if _, err := os.Stat(c.sock); !os.IsNotExist(err) {
		t.Fatalf("CSI socket left after the node stopped: %v", err)
	}
	if err := os.WriteFile(c.sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := c.nodeSvc.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
		if err == nil {
			if seg := info.GetAccessibleTopology().GetSegments(); info.GetNodeId() != "n1" || seg["topology.strata.io/zone"] != "z1" {
				t.Fatalf("NodeGetInfo: %v", info)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the driver does not answer after a restart over a stale socket: %v\n%s", err, c.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCSIBlockVolume publishes a raw block volume: the target is the
// device, what is written there is the volume's (read back through a clone
// and NBD), expansion grows the device, and the stats report its size.
func TestCSIBlockVolume(t *testing.T) {
	needTools(t, "qemu-io")
	c := newCSINode(t)
	ctx := context.Background()
	dir := c.work
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "pod", "dev")
	os.Mkdir(staging, 0o750)
	caps := blockCapability()
	id := c.create(t, "pvc-raw", 32<<20, caps, nil, nil)
	c.stage(t, id, staging, caps)
	c.publish(t, id, staging, target, caps, false)
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{0xa5}, 1<<20)
	if _, err := f.WriteAt(payload, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	if _, err := c.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}, VolumeCapability: caps}); err != nil {
		t.Fatal(err)
	}
	// The stats measure the published device itself.
	if n := c.total(t, id, target); n != 64<<20 {
		t.Fatalf("the published device is %d bytes after expansion to 64MiB", n)
	}

	snap, err := c.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "raw-snap", SourceVolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	clone := c.create(t, "pvc-raw-copy", 64<<20, caps, nil, &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshot().GetSnapshotId()}}})
	qemuIO(t, c.uri(clone), "read -P 0xa5 4M 1M", "read -P 0 0 4M")

	c.unpublish(t, id, target)
	c.unstage(t, id, staging)
	if entries, _ := os.ReadDir(staging); len(entries) != 0 {
		t.Fatalf("staging directory not empty after unstage: %v", entries)
	}
	for _, req := range []*csi.DeleteSnapshotRequest{{SnapshotId: snap.GetSnapshot().GetSnapshotId()}} {
		if _, err := c.ctrl.DeleteSnapshot(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []string{clone, id} {
		if _, err := c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v}); err != nil {
			t.Fatalf("DeleteVolume %s: %v", v, err)
		}
	}
}

// total is the size of the filesystem or device of volume id at path, as
// NodeGetVolumeStats reports it.
func (c *csiNode) total(t *testing.T, id, path string) int64 {
	t.Helper()
	st, err := c.nodeSvc.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: path})
	if err != nil {
		t.Fatalf("NodeGetVolumeStats %s: %v", path, err)
	}
	return st.GetUsage()[0].GetTotal()
}
