package server

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

// TestEveryMethodHasAnAccessRule: every method of every service in the API
// descriptors has a line in methodAccess (deny by default means a method
// without one is refused to everyone, admins included), and no line names a
// method that does not exist.
func TestEveryMethodHasAnAccessRule(t *testing.T) {
	known := map[string]bool{}
	svcs := pb.File_strata_v1_strata_proto.Services()
	for i := range svcs.Len() {
		sd := svcs.Get(i)
		ms := sd.Methods()
		for j := range ms.Len() {
			m := "/" + string(sd.FullName()) + "/" + string(ms.Get(j).Name())
			known[m] = true
			if _, ok := methodAccess[m]; !ok {
				t.Errorf("%s has no access rule: add it to methodAccess in access.go", m)
			}
		}
	}
	if len(known) < 19 {
		t.Fatalf("found only %d methods in the descriptors", len(known))
	}
	for m := range methodAccess {
		if !known[m] {
			t.Errorf("methodAccess has a rule for %s, which the API does not have", m)
		}
	}
	if err := authorizeMethod(Caller{User: AdminUser, Role: meta.RoleAdmin}, "/strata.v1.VolumeService/Frobnicate"); status.Code(toStatus(err)) != codes.PermissionDenied {
		t.Errorf("a method without a rule is not refused to admins: %v", err)
	}
}

// withToken makes ctx carry token.
func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// addUser stores a user and its token directly in etcd, the way CreateUser
// does, and returns a context that calls as it.
func (n *testNode) addUser(name, role, tenant string) context.Context {
	n.t.Helper()
	token := "token-of-" + name
	if _, err := n.meta.CreateUser(context.Background(), meta.User{Name: name, Role: role, Tenant: tenant, TokenHash: meta.HashToken(token)}); err != nil {
		n.t.Fatalf("user %s: %v", name, err)
	}
	n.srv.tokens.invalidate()
	return withToken(context.Background(), token)
}

// setTenant gives volume name to tenant, as making a clone of a template
// for a developer does.
func (n *testNode) setTenant(name, tenant string) {
	n.t.Helper()
	ctx := context.Background()
	rec, err := n.meta.GetVolume(ctx, name)
	if err != nil {
		n.t.Fatal(err)
	}
	rec.Tenant = tenant
	if _, err := n.meta.UpdateVolume(ctx, rec); err != nil {
		n.t.Fatal(err)
	}
}

// wantDenied fails the test unless err is PermissionDenied with a message
// that mentions each of words.
func wantDenied(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	wantCode(t, what, err, codes.PermissionDenied)
	msg := status.Convert(err).Message()
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: message %q does not mention %q", what, msg, w)
		}
	}
}

// tenantFixture makes, as admin: production volume prod with snapshot
// prod@s1, volume dev-a of tenant team-a and dev-b of tenant team-b (each
// with a snapshot s1).
func tenantFixture(t *testing.T, n *testNode) {
	t.Helper()
	admin := authed(context.Background())
	for _, v := range []string{"prod", "dev-a", "dev-b"} {
		must[*pb.Volume](t, "create "+v)(n.vols().CreateVolume(admin, &pb.CreateVolumeRequest{Name: v, SizeBytes: 16 * mib}))
		must[*pb.Snapshot](t, "snapshot "+v)(n.snaps().CreateSnapshot(admin, &pb.CreateSnapshotRequest{Volume: v, Name: "s1"}))
	}
	n.setTenant("dev-a", "team-a")
	n.setTenant("dev-b", "team-b")
}

func volumeNames(vs []*pb.Volume) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

func snapshotNames(ss []*pb.Snapshot) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Volume+"@"+s.Name)
	}
	return out
}

// TestDeveloperIsConfinedToItsTenant tries every call a developer may not
// make, on a production volume and on another tenant's, and expects a
// permission error that says who was refused what; then it makes the calls
// a developer may make on its own tenant's volume.
func TestDeveloperIsConfinedToItsTenant(t *testing.T) {
	n := newNode(t)
	tenantFixture(t, n)
	dev := n.addUser("alice", meta.RoleDeveloper, "team-a")
	vc, sc, cc := n.vols(), n.snaps(), n.cluster()

	// Lists show only the tenant's volumes and snapshots.
	list := must[*pb.ListVolumesResponse](t, "list")(vc.ListVolumes(dev, &pb.ListVolumesRequest{}))
	if got := volumeNames(list.Volumes); !slices.Equal(got, []string{"dev-a"}) {
		t.Errorf("developer's volume list: %v, want [dev-a]", got)
	}
	snaps := must[*pb.ListSnapshotsResponse](t, "list snapshots")(sc.ListSnapshots(dev, &pb.ListSnapshotsRequest{}))
	if got := snapshotNames(snaps.Snapshots); !slices.Equal(got, []string{"dev-a@s1"}) {
		t.Errorf("developer's snapshot list: %v, want [dev-a@s1]", got)
	}
	st := must[*pb.Status](t, "status")(cc.GetStatus(dev, &pb.GetStatusRequest{}))
	if st.VolumeCount != 1 || st.SnapshotCount != 1 || len(st.Nodes) != 1 {
		t.Errorf("developer's status counts %d volumes, %d snapshots, %d nodes; want 1, 1, 1", st.VolumeCount, st.SnapshotCount, len(st.Nodes))
	}

	// Every call on a volume of no tenant, or of another tenant, is refused.
	for _, tc := range []struct {
		vol, why string
	}{
		{"prod", "it belongs to no tenant"},
		{"dev-b", "it belongs to another tenant"},
	} {
		v := tc.vol
		for _, c := range []struct {
			what, verb string
			call       func() error
		}{
			{"get", "read", func() error { _, err := vc.GetVolume(dev, &pb.GetVolumeRequest{Name: v}); return err }},
			{"export", "export", func() error { _, err := vc.ExportVolume(dev, &pb.ExportVolumeRequest{Name: v}); return err }},
			{"mount", "mount", func() error {
				_, err := vc.MountVolume(dev, &pb.MountVolumeRequest{Name: v, Target: filepath.Join(t.TempDir(), "m")})
				return err
			}},
			{"map", "map", func() error { _, err := vc.MapVolume(dev, &pb.MapVolumeRequest{Name: v}); return err }},
			{"unmap", "unmap", func() error { _, err := vc.UnmapVolume(dev, &pb.UnmapVolumeRequest{Name: v}); return err }},
			{"snapshot", "snapshot", func() error {
				_, err := sc.CreateSnapshot(dev, &pb.CreateSnapshotRequest{Volume: v, Name: "mine"})
				return err
			}},
			{"list snapshots", "list the snapshots of", func() error {
				_, err := sc.ListSnapshots(dev, &pb.ListSnapshotsRequest{Volume: v})
				return err
			}},
			{"delete snapshot", "delete a snapshot of", func() error {
				_, err := sc.DeleteSnapshot(dev, &pb.DeleteSnapshotRequest{Volume: v, Name: "s1"})
				return err
			}},
			{"delete", "delete", func() error { _, err := vc.DeleteVolume(dev, &pb.DeleteVolumeRequest{Name: v}); return err }},
			{"revert", "revert", func() error {
				_, err := vc.RevertVolume(dev, &pb.RevertVolumeRequest{Name: v, Snapshot: "s1"})
				return err
			}},
			{"resize", "resize", func() error {
				_, err := vc.ResizeVolume(dev, &pb.ResizeVolumeRequest{Name: v, SizeBytes: 32 * mib})
				return err
			}},
		} {
			wantDenied(t, c.what+" "+v, c.call(), "developer alice of tenant team-a may not "+c.verb+` volume "`+v+`"`, tc.why)
		}
		// Calls that no developer may make, whatever the volume.
		_, err := vc.CloneVolume(dev, &pb.CloneVolumeRequest{Source: v + "@s1", Name: "copy-of-" + v})
		wantDenied(t, "clone "+v, err, "developer alice of tenant team-a may not call VolumeService.CloneVolume", "templates granted")
		_, err = vc.CreateVolume(dev, &pb.CreateVolumeRequest{Name: "copy-of-" + v, FromSnapshot: v + "@s1"})
		wantDenied(t, "create from "+v, err, "CreateVolume")
		_, err = vc.UpdateVolume(dev, &pb.UpdateVolumeRequest{Name: v, Qos: &pb.QosLimits{MaxReadIops: new(int64(0))}})
		wantDenied(t, "update "+v, err, "UpdateVolume", "QoS")
	}
	_, err := vc.CreateVolume(dev, &pb.CreateVolumeRequest{Name: "plain", SizeBytes: mib})
	wantDenied(t, "create a plain volume", err, "developer alice of tenant team-a may not call VolumeService.CreateVolume")
	_, err = vc.UpdateVolume(dev, &pb.UpdateVolumeRequest{Name: "dev-a", Qos: &pb.QosLimits{MaxReadIops: new(int64(0))}})
	wantDenied(t, "update its own volume's limits", err, "QoS limits are set by admins")
	_, err = cc.SetSetting(dev, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxIOPS, Value: "off"})
	wantDenied(t, "set a setting", err, "ClusterService.SetSetting")
	_, err = cc.GetSettings(dev, &pb.GetSettingsRequest{})
	wantDenied(t, "get settings", err, "ClusterService.GetSettings")

	// Nothing was changed by the refused calls.
	admin := authed(context.Background())
	all := must[*pb.ListVolumesResponse](t, "admin list")(vc.ListVolumes(admin, &pb.ListVolumesRequest{}))
	if got := volumeNames(all.Volumes); !slices.Equal(got, []string{"dev-a", "dev-b", "prod"}) {
		t.Fatalf("volumes after the refused calls: %v", got)
	}
	for _, v := range all.Volumes {
		if v.SizeBytes != 16*mib || v.SnapshotCount != 1 {
			t.Errorf("volume %s changed: %v", v.Name, v)
		}
	}

	// A missing volume is NotFound, as for anyone.
	_, err = vc.GetVolume(dev, &pb.GetVolumeRequest{Name: "missing"})
	wantCode(t, "get a missing volume", err, codes.NotFound)

	// What a developer may do with its tenant's volume: the iterative
	// workflow of snapshot, change, revert; export; grow; delete.
	if v := must[*pb.Volume](t, "get own")(vc.GetVolume(dev, &pb.GetVolumeRequest{Name: "dev-a"})); v.Name != "dev-a" {
		t.Fatalf("get own: %v", v)
	}
	must[*pb.Snapshot](t, "snapshot own")(sc.CreateSnapshot(dev, &pb.CreateSnapshotRequest{Volume: "dev-a", Name: "before-migration"}))
	must[*pb.Volume](t, "resize own")(vc.ResizeVolume(dev, &pb.ResizeVolumeRequest{Name: "dev-a", SizeBytes: 32 * mib}))
	must[*pb.ListSnapshotsResponse](t, "list own snapshots")(sc.ListSnapshots(dev, &pb.ListSnapshotsRequest{Volume: "dev-a"}))
	if v := must[*pb.Volume](t, "revert own")(vc.RevertVolume(dev, &pb.RevertVolumeRequest{Name: "dev-a", Snapshot: "before-migration"})); v.SizeBytes != 16*mib {
		t.Fatalf("revert own: %v", v)
	}
	exp := must[*pb.ExportVolumeResponse](t, "export own")(vc.ExportVolume(dev, &pb.ExportVolumeRequest{Name: "dev-a"}))
	if !strings.HasSuffix(exp.Uri, "/dev-a") {
		t.Fatalf("export own: %v", exp)
	}
	must[*pb.DeleteSnapshotResponse](t, "delete own snapshot")(sc.DeleteSnapshot(dev, &pb.DeleteSnapshotRequest{Volume: "dev-a", Name: "before-migration"}))

	// Over REST, the same refusals and permissions.
	token := "token-of-alice"
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if code := n.rest("GET", "/v1/volumes/prod", token, nil, &e); code != http.StatusForbidden || e.Code != int(codes.PermissionDenied) || !strings.Contains(e.Message, "belongs to no tenant") {
		t.Errorf("rest get prod: %d %+v", code, e)
	}
	if code := n.rest("GET", "/v1/volumes/prod/export", token, nil, &e); code != http.StatusForbidden {
		t.Errorf("rest export prod: %d %+v", code, e)
	}
	if code := n.rest("POST", "/v1/volumes", token, map[string]any{"name": "x", "sizeBytes": mib}, &e); code != http.StatusForbidden {
		t.Errorf("rest create: %d %+v", code, e)
	}
	var rl struct {
		Volumes []struct{ Name string } `json:"volumes"`
	}
	if code := n.rest("GET", "/v1/volumes", token, nil, &rl); code != http.StatusOK || len(rl.Volumes) != 1 || rl.Volumes[0].Name != "dev-a" {
		t.Errorf("rest list: %d %+v", code, rl)
	}

	// A developer without a tenant reaches nothing.
	lost := n.addUser("nobody", meta.RoleDeveloper, "")
	list = must[*pb.ListVolumesResponse](t, "list without tenant")(vc.ListVolumes(lost, &pb.ListVolumesRequest{}))
	if len(list.Volumes) != 0 {
		t.Errorf("a developer without a tenant lists %v", volumeNames(list.Volumes))
	}
	_, err = vc.GetVolume(lost, &pb.GetVolumeRequest{Name: "prod"})
	wantDenied(t, "get without tenant", err, "belongs to no tenant")

	must[*pb.DeleteVolumeResponse](t, "delete own")(vc.DeleteVolume(dev, &pb.DeleteVolumeRequest{Name: "dev-a"}))
}

// TestDeveloperMountsAndMapsOnlyItsOwn: with root and FUSE, a developer
// maps its tenant's volume, and may not unmount a production volume that an
// admin mounted.
func TestDeveloperMountsAndMapsOnlyItsOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mapping needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	n := newNode(t)
	tenantFixture(t, n)
	dev := n.addUser("alice", meta.RoleDeveloper, "team-a")
	admin := authed(context.Background())
	vc := n.vols()

	mr := must[*pb.MapVolumeResponse](t, "map own")(vc.MapVolume(dev, &pb.MapVolumeRequest{Name: "dev-a"}))
	if !strings.HasPrefix(mr.Device, "/dev/loop") {
		t.Fatalf("map own: %v", mr)
	}
	_, err := vc.UnmapVolume(dev, &pb.UnmapVolumeRequest{Name: "prod"})
	wantDenied(t, "unmap prod", err, `may not unmap volume "prod"`)
	must[*pb.UnmapVolumeResponse](t, "unmap own")(vc.UnmapVolume(dev, &pb.UnmapVolumeRequest{Name: "dev-a"}))

	target := filepath.Join(t.TempDir(), "prod")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.MountVolume(admin, &pb.MountVolumeRequest{Name: "prod", Target: target}); err != nil {
		t.Skipf("mount is not possible here: %v", err)
	}
	_, err = vc.UnmountVolume(dev, &pb.UnmountVolumeRequest{Target: target})
	wantDenied(t, "unmount prod", err, `developer alice of tenant team-a may not unmount volume "prod"`)
	must[*pb.UnmountVolumeResponse](t, "admin unmounts")(vc.UnmountVolume(admin, &pb.UnmountVolumeRequest{Target: target}))
}

// TestViewerOnlyReads: a viewer reads every volume's metadata, snapshots,
// status and settings, and is refused every change and every call that
// gives access to data.
func TestViewerOnlyReads(t *testing.T) {
	n := newNode(t)
	tenantFixture(t, n)
	viewer := n.addUser("auditor", meta.RoleViewer, "")
	vc, sc, cc := n.vols(), n.snaps(), n.cluster()

	list := must[*pb.ListVolumesResponse](t, "list")(vc.ListVolumes(viewer, &pb.ListVolumesRequest{}))
	if got := volumeNames(list.Volumes); !slices.Equal(got, []string{"dev-a", "dev-b", "prod"}) {
		t.Errorf("viewer's volume list: %v", got)
	}
	must[*pb.Volume](t, "get")(vc.GetVolume(viewer, &pb.GetVolumeRequest{Name: "prod"}))
	if s := must[*pb.ListSnapshotsResponse](t, "snapshots")(sc.ListSnapshots(viewer, &pb.ListSnapshotsRequest{})); len(s.Snapshots) != 3 {
		t.Errorf("viewer's snapshot list: %v", snapshotNames(s.Snapshots))
	}
	must[*pb.ListSnapshotsResponse](t, "snapshots of prod")(sc.ListSnapshots(viewer, &pb.ListSnapshotsRequest{Volume: "prod"}))
	if st := must[*pb.Status](t, "status")(cc.GetStatus(viewer, &pb.GetStatusRequest{})); st.VolumeCount != 3 || st.SnapshotCount != 3 {
		t.Errorf("viewer's status: %v", st)
	}
	must[*pb.GetSettingsResponse](t, "settings")(cc.GetSettings(viewer, &pb.GetSettingsRequest{}))

	for _, c := range []struct {
		what string
		call func() error
	}{
		{"VolumeService.CreateVolume", func() error {
			_, err := vc.CreateVolume(viewer, &pb.CreateVolumeRequest{Name: "x", SizeBytes: mib})
			return err
		}},
		{"VolumeService.CloneVolume", func() error {
			_, err := vc.CloneVolume(viewer, &pb.CloneVolumeRequest{Source: "prod@s1", Name: "x"})
			return err
		}},
		{"VolumeService.DeleteVolume", func() error { _, err := vc.DeleteVolume(viewer, &pb.DeleteVolumeRequest{Name: "prod"}); return err }},
		{"VolumeService.ResizeVolume", func() error {
			_, err := vc.ResizeVolume(viewer, &pb.ResizeVolumeRequest{Name: "prod", SizeBytes: 32 * mib})
			return err
		}},
		{"VolumeService.RevertVolume", func() error {
			_, err := vc.RevertVolume(viewer, &pb.RevertVolumeRequest{Name: "prod", Snapshot: "s1"})
			return err
		}},
		{"VolumeService.ExportVolume", func() error { _, err := vc.ExportVolume(viewer, &pb.ExportVolumeRequest{Name: "prod"}); return err }},
		{"VolumeService.MountVolume", func() error {
			_, err := vc.MountVolume(viewer, &pb.MountVolumeRequest{Name: "prod", Target: "/mnt/x"})
			return err
		}},
		{"VolumeService.UnmountVolume", func() error {
			_, err := vc.UnmountVolume(viewer, &pb.UnmountVolumeRequest{Target: "/mnt/x"})
			return err
		}},
		{"VolumeService.MapVolume", func() error { _, err := vc.MapVolume(viewer, &pb.MapVolumeRequest{Name: "prod"}); return err }},
		{"VolumeService.UnmapVolume", func() error { _, err := vc.UnmapVolume(viewer, &pb.UnmapVolumeRequest{Name: "prod"}); return err }},
		{"VolumeService.UpdateVolume", func() error {
			_, err := vc.UpdateVolume(viewer, &pb.UpdateVolumeRequest{Name: "prod", Qos: &pb.QosLimits{MaxReadIops: new(int64(0))}})
			return err
		}},
		{"SnapshotService.CreateSnapshot", func() error {
			_, err := sc.CreateSnapshot(viewer, &pb.CreateSnapshotRequest{Volume: "prod"})
			return err
		}},
		{"SnapshotService.DeleteSnapshot", func() error {
			_, err := sc.DeleteSnapshot(viewer, &pb.DeleteSnapshotRequest{Volume: "prod", Name: "s1"})
			return err
		}},
		{"ClusterService.SetSetting", func() error {
			_, err := cc.SetSetting(viewer, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxIOPS, Value: "off"})
			return err
		}},
	} {
		wantDenied(t, c.what, c.call(), "viewer auditor may not call "+c.what, "read-only")
	}
}

// TestAuthorizeTemplate: the checks the template and clone calls make.
// Developers read and clone only the templates granted to their tenant.
func TestAuthorizeTemplate(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	if _, err := n.meta.CreateTemplate(bg, meta.Template{Name: "orders"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.meta.PutGrant(bg, "orders", "team-a"); err != nil {
		t.Fatal(err)
	}
	admin := withCaller(bg, Caller{User: AdminUser, Role: meta.RoleAdmin})
	viewer := withCaller(bg, Caller{User: "carol", Role: meta.RoleViewer})
	devA := withCaller(bg, Caller{User: "alice", Role: meta.RoleDeveloper, Tenant: "team-a"})
	devB := withCaller(bg, Caller{User: "bob", Role: meta.RoleDeveloper, Tenant: "team-b"})
	for _, tc := range []struct {
		ctx            context.Context
		template, verb string
		want           string // "" when allowed, else part of the refusal
	}{
		{admin, "orders", "delete", ""},
		{admin, "users", actClone, ""},
		{viewer, "orders", actRead, ""},
		{viewer, "orders", actClone, "viewers have read-only access"},
		{devA, "orders", actRead, ""},
		{devA, "orders", actClone, ""},
		{devA, "orders", "delete", "developers only read and clone templates"},
		{devA, "users", actClone, `developer alice of tenant team-a may not clone template "users": it is not granted to tenant team-a`},
		{devB, "orders", actRead, "not granted to tenant team-b"},
		{bg, "orders", actRead, "anonymous"},
	} {
		err := n.srv.authorizeTemplate(tc.ctx, tc.template, tc.verb)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %s of %s: %v", CallerFrom(tc.ctx), tc.verb, tc.template, err)
		case tc.want != "" && (status.Code(toStatus(err)) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %s of %s: %v, want a refusal mentioning %q", CallerFrom(tc.ctx), tc.verb, tc.template, err, tc.want)
		}
	}
	for ctx, want := range map[context.Context][]string{
		devA: {"orders"}, devB: nil, viewer: {"orders", "users"},
	} {
		see, err := n.srv.templateFilter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tpl := range []string{"orders", "users"} {
			if see(tpl) {
				got = append(got, tpl)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s sees templates %v, want %v", CallerFrom(ctx), got, want)
		}
	}
}
