package server

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

const mib = 1 << 20

func TestVolumesOverGRPC(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	vc, sc := n.vols(), n.snaps()

	// Sizes are rounded up to 4 KiB.
	v := must[*pb.Volume](t, "create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "a", SizeBytes: 1000000}))
	if v.SizeBytes != 1003520 || v.State != "ready" || v.Node != "node1" || v.Layers != 1 || v.CreatedAt == nil {
		t.Fatalf("created volume: %v", v)
	}
	// Idempotent: same spec (before or after rounding) returns the volume.
	for _, sz := range []int64{1000000, 1003520} {
		again := must[*pb.Volume](t, "create again")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "a", SizeBytes: sz}))
		if !again.CreatedAt.AsTime().Equal(v.CreatedAt.AsTime()) || again.SizeBytes != v.SizeBytes {
			t.Fatalf("create again returned %v, want %v", again, v)
		}
	}
	_, err := vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "a", SizeBytes: 2 * mib})
	wantCode(t, "create with another size", err, codes.AlreadyExists)

	for _, tc := range []struct {
		name string
		size int64
	}{
		{"", mib}, {"Upper", mib}, {"under_score", mib}, {"-dash", mib}, {strings.Repeat("x", 64), mib},
		{"ok", 0}, {"ok", -4096}, {"ok", MaxVolumeSize + 1},
	} {
		_, err := vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: tc.name, SizeBytes: tc.size})
		wantCode(t, "create "+tc.name, err, codes.InvalidArgument)
	}

	got := must[*pb.Volume](t, "get")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "a"}))
	if got.Name != "a" || got.SizeBytes != 1003520 {
		t.Fatalf("get: %v", got)
	}
	_, err = vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "nope"})
	wantCode(t, "get missing", err, codes.NotFound)

	// Resize: grow, same size, shrink refused, missing volume.
	v = must[*pb.Volume](t, "grow")(vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "a", SizeBytes: 2 * mib}))
	if v.SizeBytes != 2*mib {
		t.Fatalf("grown size %d", v.SizeBytes)
	}
	must[*pb.Volume](t, "resize to same size")(vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "a", SizeBytes: 2 * mib}))
	_, err = vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "a", SizeBytes: mib})
	wantCode(t, "shrink", err, codes.FailedPrecondition)
	_, err = vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "nope", SizeBytes: mib})
	wantCode(t, "resize missing", err, codes.NotFound)
	_, err = vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "a", SizeBytes: 0})
	wantCode(t, "resize to 0", err, codes.InvalidArgument)

	// Snapshots.
	s1 := must[*pb.Snapshot](t, "snapshot")(sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "a", Name: "s1"}))
	if s1.SizeBytes != 2*mib || s1.Volume != "a" || s1.Name != "s1" {
		t.Fatalf("snapshot: %v", s1)
	}
	_, err = sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "a", Name: "s1"})
	wantCode(t, "duplicate snapshot", err, codes.AlreadyExists)
	_, err = sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "a", Name: "Bad@name"})
	wantCode(t, "bad snapshot name", err, codes.InvalidArgument)
	_, err = sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "nope"})
	wantCode(t, "snapshot of missing volume", err, codes.NotFound)
	must[*pb.Volume](t, "grow after snapshot")(vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "a", SizeBytes: 3 * mib}))
	gen := must[*pb.Snapshot](t, "generated snapshot")(sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "a"}))
	if !regexp.MustCompile(`^snap-\d{8}-\d{6}(-\d+)?$`).MatchString(gen.Name) || gen.SizeBytes != 3*mib {
		t.Fatalf("generated snapshot: %v", gen)
	}
	list := must[*pb.ListSnapshotsResponse](t, "list snapshots")(sc.ListSnapshots(ctx, &pb.ListSnapshotsRequest{Volume: "a"}))
	if len(list.Snapshots) != 2 || list.Snapshots[0].Name != "s1" || list.Snapshots[1].Name != gen.Name {
		t.Fatalf("snapshots: %v", list.Snapshots)
	}
	_, err = sc.ListSnapshots(ctx, &pb.ListSnapshotsRequest{Volume: "nope"})
	wantCode(t, "list snapshots of missing volume", err, codes.NotFound)

	// Clones.
	c := must[*pb.Volume](t, "clone")(vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "a@s1", Name: "c"}))
	if c.Parent != "a@s1" || c.SizeBytes != 2*mib || c.State != "ready" {
		t.Fatalf("clone: %v", c)
	}
	c2 := must[*pb.Volume](t, "clone again through create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "c", FromSnapshot: "a@s1"}))
	if !c2.CreatedAt.AsTime().Equal(c.CreatedAt.AsTime()) {
		t.Fatalf("idempotent clone made a new volume: %v", c2)
	}
	_, err = vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "a@s1", Name: "c", SizeBytes: 4 * mib})
	wantCode(t, "clone with another size", err, codes.AlreadyExists)
	_, err = vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "a@missing", Name: "d"})
	wantCode(t, "clone of a missing snapshot", err, codes.NotFound)
	_, err = vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "nope@s1", Name: "d"})
	wantCode(t, "clone of a missing volume", err, codes.NotFound)
	for _, src := range []string{"a", "a@", "@s1", "a@s1@x", "A@s1"} {
		_, err = vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: src, Name: "d"})
		wantCode(t, "clone of "+src, err, codes.InvalidArgument)
	}
	_, err = vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "a@s1", Name: "d", SizeBytes: mib})
	wantCode(t, "clone smaller than its snapshot", err, codes.InvalidArgument)
	bigger := must[*pb.Volume](t, "bigger clone")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "d", FromSnapshot: "a@s1", SizeBytes: 4 * mib}))
	if bigger.SizeBytes != 4*mib {
		t.Fatalf("bigger clone: %v", bigger)
	}

	vl := must[*pb.ListVolumesResponse](t, "list")(vc.ListVolumes(ctx, &pb.ListVolumesRequest{}))
	var names []string
	for _, v := range vl.Volumes {
		names = append(names, v.Name)
		if v.Name == "a" && v.SnapshotCount != 2 {
			t.Fatalf("a has %d snapshots, want 2", v.SnapshotCount)
		}
	}
	if strings.Join(names, ",") != "a,c,d" {
		t.Fatalf("volumes: %v", names)
	}
	all := must[*pb.ListSnapshotsResponse](t, "list all snapshots")(sc.ListSnapshots(ctx, &pb.ListSnapshotsRequest{}))
	if len(all.Snapshots) != 2 || all.Snapshots[0].Clones != 2 {
		t.Fatalf("all snapshots: %v", all.Snapshots)
	}

	// Revert goes back to the snapshot's size; the chain reverts only to
	// its latest snapshot.
	must[*pb.Volume](t, "grow before revert")(vc.ResizeVolume(ctx, &pb.ResizeVolumeRequest{Name: "a", SizeBytes: 4 * mib}))
	_, err = vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "a", Snapshot: "s1"})
	wantCode(t, "revert past a later snapshot", err, codes.FailedPrecondition)
	if v = must[*pb.Volume](t, "get after a refused revert")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "a"})); v.SizeBytes != 4*mib {
		t.Fatalf("size after a refused revert %d, want %d", v.SizeBytes, 4*mib)
	}
	if rec, _ := n.meta.GetVolume(context.Background(), "a"); rec.Size != 4*mib {
		t.Fatalf("recorded size after a refused revert %d, want %d", rec.Size, 4*mib)
	}
	v = must[*pb.Volume](t, "revert")(vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "a", Snapshot: gen.Name}))
	if v.SizeBytes != 3*mib {
		t.Fatalf("reverted size %d, want %d", v.SizeBytes, 3*mib)
	}
	if rec, _ := n.meta.GetVolume(context.Background(), "a"); rec.Size != 3*mib {
		t.Fatalf("recorded size after revert %d, want %d", rec.Size, 3*mib)
	}
	_, err = vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "a", Snapshot: "missing"})
	wantCode(t, "revert to a missing snapshot", err, codes.NotFound)
	_, err = vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "nope", Snapshot: "s1"})
	wantCode(t, "revert of a missing volume", err, codes.NotFound)

	exp := must[*pb.ExportVolumeResponse](t, "export")(vc.ExportVolume(ctx, &pb.ExportVolumeRequest{Name: "a"}))
	if exp.Uri != "nbd://"+n.nbdAddr+"/a" {
		t.Fatalf("export uri %q", exp.Uri)
	}
	_, err = vc.ExportVolume(ctx, &pb.ExportVolumeRequest{Name: "nope"})
	wantCode(t, "export of a missing volume", err, codes.NotFound)

	// Deleting a snapshot that clones use keeps its data for them.
	ds := must[*pb.DeleteSnapshotResponse](t, "delete snapshot")(sc.DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{Volume: "a", Name: "s1"}))
	if ds.KeptForClones != 2 {
		t.Fatalf("kept for clones: %d, want 2", ds.KeptForClones)
	}
	_, err = sc.DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{Volume: "a", Name: "s1"})
	wantCode(t, "delete a deleted snapshot", err, codes.NotFound)
	_, err = vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "a", Snapshot: "s1"})
	wantCode(t, "revert to a deleted snapshot", err, codes.NotFound)

	st := must[*pb.Status](t, "status")(n.cluster().GetStatus(ctx, &pb.GetStatusRequest{}))
	if st.VolumeCount != 3 || st.SnapshotCount != 1 || len(st.ClusterId) != 32 || len(st.Nodes) != 1 ||
		st.Nodes[0].State != "online" || st.Nodes[0].NbdAddress != n.nbdAddr || st.Nodes[0].PoolCapacityBytes <= 0 || len(st.EtcdEndpoints) != 1 {
		t.Fatalf("status: %v", st)
	}

	for _, name := range []string{"c", "d", "a"} {
		must[*pb.DeleteVolumeResponse](t, "delete "+name)(vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: name}))
	}
	_, err = vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "a"})
	wantCode(t, "delete a deleted volume", err, codes.NotFound)
	if ok, _ := n.agent.Exists("a"); ok {
		t.Fatal("chain of a deleted volume is still in the pool")
	}
	if snaps, _ := n.meta.ListSnapshots(context.Background(), "a"); len(snaps) != 0 {
		t.Fatalf("snapshot records of a deleted volume: %v", snaps)
	}
	// The name can be used again.
	must[*pb.Volume](t, "create again after delete")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "a", SizeBytes: mib}))
}

func TestGeneratedSnapshotNames(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "v", SizeBytes: mib}))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := []string{"snap-20260102-030405", "snap-20260102-030405-2", "snap-20260102-030405-3"}
	for _, w := range want {
		got, err := n.srv.snapshotName(context.Background(), "v", at)
		if err != nil || got != w {
			t.Fatalf("generated %q (%v), want %q", got, err, w)
		}
		must[*pb.Snapshot](t, "snapshot")(n.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "v", Name: got}))
	}
}

func TestAuth(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	for _, tc := range []struct {
		name string
		md   []string
	}{
		{"no token", nil},
		{"wrong token", []string{"authorization", "Bearer wrong"}},
		{"empty bearer", []string{"authorization", "Bearer "}},
		{"basic auth", []string{"authorization", "Basic " + testToken}},
		{"bare token", []string{"authorization", testToken}},
	} {
		ctx := bg
		if tc.md != nil {
			ctx = metadata.AppendToOutgoingContext(bg, tc.md...)
		}
		_, err := n.vols().ListVolumes(ctx, &pb.ListVolumesRequest{})
		wantCode(t, "grpc "+tc.name, err, codes.Unauthenticated)
		_, err = n.cluster().GetStatus(ctx, &pb.GetStatusRequest{})
		wantCode(t, "grpc status "+tc.name, err, codes.Unauthenticated)
	}
	if _, err := n.vols().ListVolumes(authed(bg), &pb.ListVolumesRequest{}); err != nil {
		t.Fatalf("good token: %v", err)
	}
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if code := n.rest("GET", "/v1/volumes", "", nil, &e); code != http.StatusUnauthorized || e.Code != int(codes.Unauthenticated) || e.Message == "" {
		t.Fatalf("rest without token: %d %+v", code, e)
	}
	if code := n.rest("GET", "/v1/volumes", "wrong", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("rest with a wrong token: %d", code)
	}
	if code := n.rest("POST", "/v1/volumes", "", map[string]any{"name": "x", "sizeBytes": mib}, nil); code != http.StatusUnauthorized {
		t.Fatalf("rest create without token: %d", code)
	}
	// A token of an unknown role may do nothing.
	if _, err := n.meta.CreateToken(bg, meta.HashToken("auditor-token"), "auditor"); err != nil {
		t.Fatal(err)
	}
	n.srv.tokens.invalidate()
	_, err := n.vols().ListVolumes(metadata.AppendToOutgoingContext(bg, "authorization", "Bearer auditor-token"), &pb.ListVolumesRequest{})
	wantCode(t, "unknown role", err, codes.PermissionDenied)

	// The API description needs no token.
	var doc map[string]any
	if code := n.rest("GET", "/openapi.json", "", nil, &doc); code != http.StatusOK || doc["swagger"] != "2.0" {
		t.Fatalf("openapi.json: %d %v", code, doc["swagger"])
	}
}

func TestREST(t *testing.T) {
	n := newNode(t)
	type volume struct {
		Name              string   `json:"name"`
		SizeBytes         string   `json:"sizeBytes"`
		Parent            string   `json:"parent"`
		State             string   `json:"state"`
		ExportConnections int      `json:"exportConnections"`
		Mounts            []string `json:"mounts"`
	}
	var v volume
	if code := n.rest("POST", "/v1/volumes", testToken, map[string]any{"name": "r", "sizeBytes": mib}, &v); code != 200 || v.Name != "r" || v.SizeBytes != "1048576" || v.State != "ready" {
		t.Fatalf("create: %d %+v", code, v)
	}
	if code := n.rest("POST", "/v1/volumes", testToken, map[string]any{"name": "r", "sizeBytes": mib}, &v); code != 200 {
		t.Fatalf("create again: %d", code)
	}
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if code := n.rest("POST", "/v1/volumes", testToken, map[string]any{"name": "r", "sizeBytes": 2 * mib}, &e); code != http.StatusConflict || !strings.Contains(e.Message, "already exists") {
		t.Fatalf("create with another spec: %d %+v", code, e)
	}
	if code := n.rest("POST", "/v1/volumes", testToken, map[string]any{"name": "Bad", "sizeBytes": mib}, &e); code != http.StatusBadRequest || !strings.Contains(e.Message, "dns label") && !strings.Contains(e.Message, "DNS label") {
		t.Fatalf("create with a bad name: %d %+v", code, e)
	}
	if code := n.rest("POST", "/v1/volumes", testToken, map[string]any{"name": "z", "sizeBytes": 0}, &e); code != http.StatusBadRequest {
		t.Fatalf("create with size 0: %d %+v", code, e)
	}
	if code := n.rest("GET", "/v1/volumes/r", testToken, nil, &v); code != 200 || v.Name != "r" {
		t.Fatalf("get: %d %+v", code, v)
	}
	if code := n.rest("GET", "/v1/volumes/nope", testToken, nil, &e); code != http.StatusNotFound {
		t.Fatalf("get missing: %d %+v", code, e)
	}
	if code := n.rest("POST", "/v1/volumes/r:resize", testToken, map[string]any{"sizeBytes": 2 * mib}, &v); code != 200 || v.SizeBytes != "2097152" {
		t.Fatalf("resize: %d %+v", code, v)
	}
	if code := n.rest("POST", "/v1/volumes/r:resize", testToken, map[string]any{"sizeBytes": mib}, &e); code != http.StatusBadRequest || !strings.Contains(e.Message, "shrink") {
		t.Fatalf("shrink: %d %+v", code, e)
	}
	var sn struct {
		Volume, Name, SizeBytes string
	}
	if code := n.rest("POST", "/v1/volumes/r/snapshots", testToken, map[string]any{"name": "s"}, &sn); code != 200 || sn.Name != "s" || sn.Volume != "r" {
		t.Fatalf("snapshot: %d %+v", code, sn)
	}
	var sl struct {
		Snapshots []struct{ Name string } `json:"snapshots"`
	}
	if code := n.rest("GET", "/v1/snapshots?volume=r", testToken, nil, &sl); code != 200 || len(sl.Snapshots) != 1 {
		t.Fatalf("list snapshots: %d %+v", code, sl)
	}
	if code := n.rest("POST", "/v1/volumes:clone", testToken, map[string]any{"source": "r@s", "name": "rc"}, &v); code != 200 || v.Parent != "r@s" {
		t.Fatalf("clone: %d %+v", code, v)
	}
	if code := n.rest("POST", "/v1/volumes:clone", testToken, map[string]any{"source": "r@nope", "name": "rd"}, &e); code != http.StatusNotFound {
		t.Fatalf("clone of a missing snapshot: %d %+v", code, e)
	}
	if code := n.rest("POST", "/v1/volumes/r:revert", testToken, map[string]any{"snapshot": "s"}, &v); code != 200 || v.SizeBytes != "2097152" {
		t.Fatalf("revert: %d %+v", code, v)
	}
	var vl struct {
		Volumes []volume `json:"volumes"`
	}
	if code := n.rest("GET", "/v1/volumes", testToken, nil, &vl); code != 200 || len(vl.Volumes) != 2 || vl.Volumes[0].Mounts == nil {
		t.Fatalf("list: %d %+v", code, vl)
	}
	var exp struct{ URI string }
	if code := n.rest("GET", "/v1/volumes/r/export", testToken, nil, &exp); code != 200 || exp.URI != "nbd://"+n.nbdAddr+"/r" {
		t.Fatalf("export: %d %+v", code, exp)
	}
	var st struct {
		ClusterID   string `json:"clusterId"`
		VolumeCount int    `json:"volumeCount"`
	}
	if code := n.rest("GET", "/v1/status", testToken, nil, &st); code != 200 || st.ClusterID == "" || st.VolumeCount != 2 {
		t.Fatalf("status: %d %+v", code, st)
	}
	if code := n.rest("POST", "/v1/mounts:unmount", testToken, map[string]any{"target": "/nothing/here"}, &e); code != http.StatusNotFound {
		t.Fatalf("unmount of nothing: %d %+v", code, e)
	}
	if code := n.rest("POST", "/v1/volumes/r:mount", testToken, map[string]any{"target": "relative/dir"}, &e); code != http.StatusBadRequest {
		t.Fatalf("mount at a relative path: %d %+v", code, e)
	}
	if code := n.rest("POST", "/v1/volumes/r:mount", testToken, map[string]any{"target": "/mnt/x", "fsType": "ntfs"}, &e); code != http.StatusBadRequest {
		t.Fatalf("mount with a bad fs: %d %+v", code, e)
	}
	var ds struct {
		KeptForClones int `json:"keptForClones"`
	}
	if code := n.rest("DELETE", "/v1/volumes/r/snapshots/s", testToken, nil, &ds); code != 200 || ds.KeptForClones != 1 {
		t.Fatalf("delete snapshot: %d %+v", code, ds)
	}
	for _, name := range []string{"rc", "r"} {
		if code := n.rest("DELETE", "/v1/volumes/"+name, testToken, nil, nil); code != 200 {
			t.Fatalf("delete %s: %d", name, code)
		}
	}
	if code := n.rest("DELETE", "/v1/volumes/r", testToken, nil, &e); code != http.StatusNotFound {
		t.Fatalf("delete a deleted volume: %d %+v", code, e)
	}
}

// TestExportRefusalsAndRevert drives a volume through a real NBD
// connection: delete and revert are refused while it is open, and after a
// revert a new connection reads the snapshot's data, not the engine's.
func TestExportRefusalsAndRevert(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	vc, sc := n.vols(), n.snaps()
	must[*pb.Volume](t, "create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "e", SizeBytes: mib}))

	if _, err := dialNBD(n.nbdAddr, "missing"); err == nil {
		t.Fatal("nbd export of a missing volume was accepted")
	}
	cl, err := dialNBD(n.nbdAddr, "e")
	if err != nil {
		t.Fatal(err)
	}
	if cl.size != mib {
		t.Fatalf("nbd size %d", cl.size)
	}
	old := bytes.Repeat([]byte("old!"), 1024)
	if err := cl.WriteAt(old, 8192); err != nil {
		t.Fatal(err)
	}
	if err := cl.Flush(); err != nil {
		t.Fatal(err)
	}
	v := must[*pb.Volume](t, "get")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "e"}))
	if v.ExportConnections != 1 {
		t.Fatalf("export connections %d, want 1", v.ExportConnections)
	}
	// A snapshot while exported is taken at a quiet point.
	must[*pb.Snapshot](t, "snapshot while exported")(sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "e", Name: "s"}))
	if err := cl.WriteAt(bytes.Repeat([]byte("new!"), 1024), 8192); err != nil {
		t.Fatal(err)
	}

	_, err = vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "e"})
	wantCode(t, "delete while exported", err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), "nbd connection") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	_, err = vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "e", Snapshot: "s"})
	wantCode(t, "revert while exported", err, codes.FailedPrecondition)
	// The refused delete left the volume as it was.
	v = must[*pb.Volume](t, "get after refusal")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "e"}))
	if v.State != "ready" {
		t.Fatalf("state after a refused delete: %q", v.State)
	}

	cl2, err := dialNBD(n.nbdAddr, "e")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two connections", func() bool {
		v, err := vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "e"})
		return err == nil && v.ExportConnections == 2
	})
	cl.Close()
	cl2.Close()
	waitFor(t, "connections to end", func() bool {
		v, err := vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "e"})
		return err == nil && v.ExportConnections == 0
	})

	must[*pb.Volume](t, "revert")(vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "e", Snapshot: "s"}))
	cl, err = dialNBD(n.nbdAddr, "e")
	if err != nil {
		t.Fatal(err)
	}
	got, err := cl.ReadAt(8192, len(old))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) {
		t.Fatalf("after revert read %q..., want %q...", got[:8], old[:8])
	}
	cl.Close()
	waitFor(t, "connection to end", func() bool {
		v, err := vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "e"})
		return err == nil && v.ExportConnections == 0
	})
	must[*pb.DeleteVolumeResponse](t, "delete when idle")(vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "e"}))
}

// TestRestart stops a node and starts it again on the same directory:
// volumes, snapshots, clones, data and the token survive.
func TestRestart(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	must[*pb.Volume](t, "create")(n.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "p", SizeBytes: mib}))
	cl, err := dialNBD(n.nbdAddr, "p")
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Repeat([]byte{0xA5}, 4096)
	second := bytes.Repeat([]byte{0x5A}, 4096)
	if err := cl.WriteAt(first, 0); err != nil {
		t.Fatal(err)
	}
	must[*pb.Snapshot](t, "snapshot")(n.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "p", Name: "s"}))
	if err := cl.WriteAt(second, 0); err != nil {
		t.Fatal(err)
	}
	if err := cl.Flush(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	must[*pb.Volume](t, "clone")(n.vols().CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "p@s", Name: "q"}))
	before := must[*pb.Status](t, "status")(n.cluster().GetStatus(ctx, &pb.GetStatusRequest{}))

	n.restart()

	after := must[*pb.Status](t, "status after restart")(n.cluster().GetStatus(ctx, &pb.GetStatusRequest{}))
	if after.ClusterId != before.ClusterId || after.VolumeCount != 2 || after.SnapshotCount != 1 {
		t.Fatalf("status after restart: %v (before %v)", after, before)
	}
	q := must[*pb.Volume](t, "get clone")(n.vols().GetVolume(ctx, &pb.GetVolumeRequest{Name: "q"}))
	if q.Parent != "p@s" || q.State != "ready" {
		t.Fatalf("clone after restart: %v", q)
	}
	snaps := must[*pb.ListSnapshotsResponse](t, "snapshots")(n.snaps().ListSnapshots(ctx, &pb.ListSnapshotsRequest{Volume: "p"}))
	if len(snaps.Snapshots) != 1 || snaps.Snapshots[0].Name != "s" || snaps.Snapshots[0].Clones != 1 {
		t.Fatalf("snapshots after restart: %v", snaps.Snapshots)
	}
	for _, c := range []struct {
		vol  string
		want []byte
	}{{"p", second}, {"q", first}} {
		cl, err := dialNBD(n.nbdAddr, c.vol)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cl.ReadAt(0, 4096)
		cl.Close()
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("%s after restart: %x... (%v), want %x...", c.vol, got[:4], err, c.want[:4])
		}
	}
}

// TestReconcile plants the states a crash leaves between the steps of each
// operation and checks that a restart finishes or undoes every one.
func TestReconcile(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	ctx := authed(bg)
	now := time.Now().UTC()
	rec := func(name string, size int64, state string) meta.Volume {
		t.Helper()
		v, err := n.meta.CreateVolume(bg, meta.Volume{Name: name, Size: size, Node: "node1", Created: now, State: state})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Crashed after the record, before the chain.
	rec("ghost", mib, meta.StateCreating)
	// Crashed after the chain, before the record said ready.
	if _, err := n.agent.Create("half", mib); err != nil {
		t.Fatal(err)
	}
	rec("half", mib, meta.StateCreating)
	// Crashed after the record said deleting, before the chain went.
	if _, err := n.agent.Create("doomed", mib); err != nil {
		t.Fatal(err)
	}
	rec("doomed", mib, meta.StateDeleting)
	// A snapshot recorded but not taken, one taken but not recorded as
	// ready, one whose delete was interrupted.
	must[*pb.Volume](t, "create")(n.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "sv", SizeBytes: mib}))
	if _, err := n.meta.CreateSnapshot(bg, meta.Snapshot{Volume: "sv", Name: "nosnap", Created: now, State: meta.StateCreating}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.agent.Snapshot("sv", "taken"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.meta.CreateSnapshot(bg, meta.Snapshot{Volume: "sv", Name: "taken", Created: now, State: meta.StateCreating}); err != nil {
		t.Fatal(err)
	}
	must[*pb.Snapshot](t, "snapshot")(n.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "sv", Name: "gone"}))
	sn, err := n.meta.GetSnapshot(bg, "sv", "gone")
	if err != nil {
		t.Fatal(err)
	}
	sn.State = meta.StateDeleting
	if _, err := n.meta.UpdateSnapshot(bg, sn); err != nil {
		t.Fatal(err)
	}
	// A resize recorded but not applied.
	must[*pb.Volume](t, "create")(n.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "grow", SizeBytes: mib}))
	gv, err := n.meta.GetVolume(bg, "grow")
	if err != nil {
		t.Fatal(err)
	}
	gv.Size = 2 * mib
	if _, err := n.meta.UpdateVolume(bg, gv); err != nil {
		t.Fatal(err)
	}
	// A revert whose smaller size was recorded but which never happened.
	must[*pb.Volume](t, "create")(n.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "rv", SizeBytes: 2 * mib}))
	rv, err := n.meta.GetVolume(bg, "rv")
	if err != nil {
		t.Fatal(err)
	}
	rv.Size = mib
	if _, err := n.meta.UpdateVolume(bg, rv); err != nil {
		t.Fatal(err)
	}
	// A chain no record lists.
	if _, err := n.agent.Create("orphan", mib); err != nil {
		t.Fatal(err)
	}

	n.restart()

	_, err = n.vols().GetVolume(ctx, &pb.GetVolumeRequest{Name: "ghost"})
	wantCode(t, "interrupted create without a chain", err, codes.NotFound)
	half := must[*pb.Volume](t, "interrupted create with a chain")(n.vols().GetVolume(ctx, &pb.GetVolumeRequest{Name: "half"}))
	if half.State != "ready" {
		t.Fatalf("half-made volume: %v", half)
	}
	_, err = n.vols().GetVolume(ctx, &pb.GetVolumeRequest{Name: "doomed"})
	wantCode(t, "interrupted delete", err, codes.NotFound)
	if ok, _ := n.agent.Exists("doomed"); ok {
		t.Fatal("chain of an interrupted delete is still there")
	}
	snaps := must[*pb.ListSnapshotsResponse](t, "snapshots")(n.snaps().ListSnapshots(ctx, &pb.ListSnapshotsRequest{Volume: "sv"}))
	if len(snaps.Snapshots) != 1 || snaps.Snapshots[0].Name != "taken" || snaps.Snapshots[0].SizeBytes != mib {
		t.Fatalf("snapshots after reconcile: %v", snaps.Snapshots)
	}
	if has, _ := n.agent.HasSnapshot("sv", "gone"); has {
		t.Fatal("snapshot of an interrupted delete is still in the chain")
	}
	g := must[*pb.Volume](t, "interrupted resize")(n.vols().GetVolume(ctx, &pb.GetVolumeRequest{Name: "grow"}))
	if g.SizeBytes != 2*mib {
		t.Fatalf("interrupted resize: size %d, want %d", g.SizeBytes, 2*mib)
	}
	if rv, err := n.meta.GetVolume(bg, "rv"); err != nil || rv.Size != 2*mib {
		t.Fatalf("interrupted revert: recorded size %d (%v), want the chain's %d", rv.Size, err, 2*mib)
	}
	if ok, _ := n.agent.Exists("orphan"); !ok {
		t.Fatal("an unrecorded chain was removed")
	}
	_, err = n.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "orphan", SizeBytes: mib})
	wantCode(t, "create over an unrecorded chain", err, codes.FailedPrecondition)
	if _, err := dialNBD(n.nbdAddr, "orphan"); err == nil {
		t.Fatal("an unrecorded chain is exported over nbd")
	}
	vl := must[*pb.ListVolumesResponse](t, "list")(n.vols().ListVolumes(ctx, &pb.ListVolumesRequest{}))
	for _, v := range vl.Volumes {
		if v.State != "ready" {
			t.Fatalf("volume %s is %s after reconcile", v.Name, v.State)
		}
	}
}

// TestMount mounts a volume through FUSE and a loop device (root only):
// delete and revert are refused while it is mounted, and stopping the node
// unmounts it.
func TestMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	for _, tool := range []string{"mkfs.ext4", "blkid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	n := newNode(t)
	ctx := authed(context.Background())
	vc := n.vols()
	must[*pb.Volume](t, "create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "m", SizeBytes: 64 * mib}))
	must[*pb.Snapshot](t, "snapshot")(n.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "m", Name: "s"}))
	target := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	mr, err := vc.MountVolume(ctx, &pb.MountVolumeRequest{Name: "m", Target: target})
	if err != nil {
		t.Skipf("mount is not possible here: %v", err)
	}
	if mr.FsType != "ext4" || !strings.HasPrefix(mr.Device, "/dev/loop") {
		t.Fatalf("mount: %v", mr)
	}
	if err := os.WriteFile(filepath.Join(mr.Target, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	v := must[*pb.Volume](t, "get")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "m"}))
	if len(v.Mounts) != 1 || v.Mounts[0] != mr.Target {
		t.Fatalf("mounts: %v", v.Mounts)
	}
	_, err = vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "m"})
	wantCode(t, "delete while mounted", err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), "mounted at") || !strings.Contains(err.Error(), "unmount") {
		t.Fatalf("refusal does not say what to do: %v", err)
	}
	_, err = vc.RevertVolume(ctx, &pb.RevertVolumeRequest{Name: "m", Snapshot: "s"})
	wantCode(t, "revert while mounted", err, codes.FailedPrecondition)
	um := must[*pb.UnmountVolumeResponse](t, "unmount")(vc.UnmountVolume(ctx, &pb.UnmountVolumeRequest{Target: target}))
	if um.Volume != "m" {
		t.Fatalf("unmount: %v", um)
	}
	_, err = vc.UnmountVolume(ctx, &pb.UnmountVolumeRequest{Target: target})
	wantCode(t, "unmount again", err, codes.NotFound)

	// Mounted again (over REST this time), the file is there; stopping
	// the node unmounts it.
	var rm struct {
		Target, FsType, Device string
	}
	if code := n.rest("POST", "/v1/volumes/m:mount", testToken, map[string]any{"target": target}, &rm); code != http.StatusOK || rm.FsType != "ext4" {
		t.Fatalf("mount over rest: %d %+v", code, rm)
	}
	mr.Target = rm.Target
	if b, err := os.ReadFile(filepath.Join(mr.Target, "hello")); err != nil || string(b) != "hi" {
		t.Fatalf("file after remount: %q %v", b, err)
	}
	if code := n.rest("POST", "/v1/volumes/m:mount", testToken, map[string]any{"target": target}, &rm); code != http.StatusOK {
		t.Fatalf("mount again at the same target: %d %+v", code, rm)
	}
	must[*pb.Volume](t, "create m2")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "m2", SizeBytes: 64 * mib}))
	_, err = vc.MountVolume(ctx, &pb.MountVolumeRequest{Name: "m2", Target: target})
	wantCode(t, "mount of another volume at a busy target", err, codes.FailedPrecondition)
	n.stop()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), " "+mr.Target+" ") {
		t.Fatalf("%s is still mounted after the node stopped", mr.Target)
	}
	n.start()
	must[*pb.DeleteVolumeResponse](t, "delete after unmount")(n.vols().DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "m"}))
}

// TestConcurrentCalls: identical creates all return the one volume, and
// snapshots with generated names taken at once all get distinct names.
func TestConcurrentCalls(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	const k = 8
	var wg sync.WaitGroup
	created := make([]*pb.Volume, k)
	errs := make([]error, k)
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created[i], errs[i] = n.vols().CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "same", SizeBytes: mib})
		}()
	}
	wg.Wait()
	for i := range k {
		if errs[i] != nil || !created[i].CreatedAt.AsTime().Equal(created[0].CreatedAt.AsTime()) {
			t.Fatalf("create %d: %v %v", i, created[i], errs[i])
		}
	}
	names := make([]string, k)
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sn, err := n.snaps().CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "same"})
			if err != nil {
				errs[i] = err
				return
			}
			names[i] = sn.Name
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range k {
		if errs[i] != nil || seen[names[i]] {
			t.Fatalf("snapshot %d: %q %v (names %v)", i, names[i], errs[i], names)
		}
		seen[names[i]] = true
	}
}

func TestVolumeLabels(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	vc, sc := n.vols(), n.snaps()

	labels := map[string]string{"csi.storage.k8s.io/pvc/name": "data", "team": "a b"}
	v := must[*pb.Volume](t, "create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "l", SizeBytes: mib, Labels: labels}))
	if !maps.Equal(v.Labels, labels) {
		t.Fatalf("created labels %v, want %v", v.Labels, labels)
	}
	must[*pb.Volume](t, "create again")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "l", SizeBytes: mib, Labels: labels}))
	_, err := vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "l", SizeBytes: mib, Labels: map[string]string{"team": "b"}})
	wantCode(t, "create with other labels", err, codes.AlreadyExists)

	many := map[string]string{}
	for i := range 33 {
		many[fmt.Sprint("k", i)] = "v"
	}
	for _, bad := range []map[string]string{
		{"": "v"}, {"a b": "v"}, {"é": "v"}, {strings.Repeat("k", 254): "v"},
		{"k": strings.Repeat("v", 254)}, {"k": "line\nbreak"}, many,
	} {
		_, err := vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "bad", SizeBytes: mib, Labels: bad})
		wantCode(t, fmt.Sprint("labels ", len(bad)), err, codes.InvalidArgument)
	}

	// Clones take their own labels, not the parent's.
	must[*pb.Snapshot](t, "snapshot")(sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "l", Name: "s"}))
	c := must[*pb.Volume](t, "clone")(vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "l@s", Name: "lc", Labels: map[string]string{"k": "v"}}))
	if !maps.Equal(c.Labels, map[string]string{"k": "v"}) {
		t.Fatalf("clone labels %v", c.Labels)
	}

	// Labels survive a restart and show in list.
	n.restart()
	list := must[*pb.ListVolumesResponse](t, "list")(n.vols().ListVolumes(ctx, &pb.ListVolumesRequest{}))
	for _, v := range list.Volumes {
		if v.Name == "l" && !maps.Equal(v.Labels, labels) {
			t.Fatalf("listed labels after restart %v", v.Labels)
		}
	}
}
