package server

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

func (n *testNode) clones() pb.CloneServiceClient       { return pb.NewCloneServiceClient(n.conn) }
func (n *testNode) templates() pb.TemplateServiceClient { return pb.NewTemplateServiceClient(n.conn) }

// fakeTemplate records template name with versions made of plain volumes
// (no database, no masking): version i is volume NAME-bI@masked, whose
// first block holds "version i".
func fakeTemplate(t *testing.T, n *testNode, name string, versions int) {
	t.Helper()
	admin := authed(context.Background())
	tpl := meta.Template{Name: name, Source: "prod", Created: time.Now().UTC()}
	for i := 1; i <= versions; i++ {
		vol := name + "-b" + string(rune('0'+i))
		must[*pb.Volume](t, "create")(n.vols().CreateVolume(admin, &pb.CreateVolumeRequest{Name: vol, SizeBytes: 16 * mib}))
		writeNBD(t, n, vol, 0, []byte("version "+string(rune('0'+i))))
		must[*pb.Snapshot](t, "snapshot")(n.snaps().CreateSnapshot(admin, &pb.CreateSnapshotRequest{Volume: vol, Name: templateSnapshot}))
		tpl.Versions = append(tpl.Versions, meta.TemplateVersion{Number: i, Volume: vol, Snapshot: templateSnapshot, Created: time.Now().UTC()})
	}
	if _, err := n.meta.CreateTemplate(context.Background(), tpl); err != nil {
		t.Fatal(err)
	}
}

// disconnected waits until volume vol has no NBD connection.
func disconnected(t *testing.T, n *testNode, vol string) {
	t.Helper()
	waitFor(t, "the nbd connections of "+vol+" to close", func() bool {
		st, err := n.agent.Status(vol)
		return err != nil || st.Connections == 0
	})
}

// withNBD runs fn on an NBD connection to vol, and waits for the server to
// see it closed.
func withNBD(t *testing.T, n *testNode, vol string, fn func(c *nbdClient) error) {
	t.Helper()
	c, err := dialNBD(n.nbdAddr, vol)
	if err != nil {
		t.Fatal(err)
	}
	err = fn(c)
	c.Close()
	disconnected(t, n, vol)
	if err != nil {
		t.Fatal(err)
	}
}

func writeNBD(t *testing.T, n *testNode, vol string, off int64, p []byte) {
	t.Helper()
	buf := make([]byte, 4096)
	copy(buf, p)
	withNBD(t, n, vol, func(c *nbdClient) error {
		if err := c.WriteAt(buf, off); err != nil {
			return err
		}
		return c.Flush()
	})
}

func readNBD(t *testing.T, n *testNode, vol string) []byte {
	t.Helper()
	var b []byte
	withNBD(t, n, vol, func(c *nbdClient) (err error) {
		b, err = c.ReadAt(0, 16)
		return err
	})
	return bytes.TrimRight(b, "\x00")
}

func cloneNames(cs []*pb.Clone) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestCloneLifecycle(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	admin := authed(bg)
	fakeTemplate(t, n, "crm", 2)
	must[*pb.Template](t, "grant")(n.templates().GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "crm", Tenant: "team-a"}))
	alice := n.addUser("alice", meta.RoleDeveloper, "team-a")
	bob := n.addUser("bob", meta.RoleDeveloper, "team-b")
	cc := n.clones()

	// A developer clones a granted template: the latest version, owned by
	// its tenant, with the clone-default limits.
	must[*pb.Setting](t, "setting")(n.cluster().SetSetting(admin, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxIOPS, Value: "500"}))
	c := must[*pb.Clone](t, "create clone")(cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "alice-dev", Template: "crm", TtlSeconds: 3600, IdleExpirySeconds: 600}))
	if c.Tenant != "team-a" || c.Owner != "alice" || c.Version != 2 || c.Volume.Tenant != "team-a" || c.Volume.Parent != "crm-b2@masked" ||
		c.ExpiresAt == nil || c.IdleExpiresAt == nil || c.Volume.Qos.GetMaxReadIops() != 500 || c.Expired != "" {
		t.Fatalf("clone %v", c)
	}
	if got := string(readNBD(t, n, "alice-dev")); got != "version 2" {
		t.Fatalf("clone reads %q", got)
	}
	// The same request again returns it; another spec is refused.
	must[*pb.Clone](t, "create again")(cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "alice-dev", Template: "crm", Version: 2}))
	_, err := cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "alice-dev", Template: "crm", Version: 1})
	wantCode(t, "create with another version", err, codes.AlreadyExists)
	_, err = cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "other", Template: "crm", Version: 7})
	wantCode(t, "missing version", err, codes.NotFound)
	_, err = cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "other", Template: "crm", Tenant: "team-b"})
	wantDenied(t, "clone for another tenant", err, "tenant")
	_, err = cc.CreateClone(bob, &pb.CreateCloneRequest{Name: "bob-dev", Template: "crm"})
	wantDenied(t, "clone of a template not granted", err, "not granted to tenant team-b")
	_, err = cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "other", Template: "crm", TtlSeconds: -1})
	wantCode(t, "negative ttl", err, codes.InvalidArgument)

	// Admin clones: version 1, protected, no tenant unless given.
	must[*pb.Clone](t, "admin clone")(cc.CreateClone(admin, &pb.CreateCloneRequest{Name: "qa", Template: "crm", Version: 1, Protected: true, TtlSeconds: 60}))
	must[*pb.Clone](t, "admin clone for team-b")(cc.CreateClone(admin, &pb.CreateCloneRequest{Name: "bob-dev", Template: "crm", Tenant: "team-b", IdleExpirySeconds: 60}))
	if got := string(readNBD(t, n, "qa")); got != "version 1" {
		t.Fatalf("clone of version 1 reads %q", got)
	}

	// Each developer sees its tenant's clones; the admin sees all.
	for _, tc := range []struct {
		ctx  context.Context
		want []string
	}{{alice, []string{"alice-dev"}}, {bob, []string{"bob-dev"}}, {admin, []string{"alice-dev", "bob-dev", "qa"}}} {
		l := must[*pb.ListClonesResponse](t, "list")(cc.ListClones(tc.ctx, &pb.ListClonesRequest{}))
		if got := cloneNames(l.Clones); !slices.Equal(got, tc.want) {
			t.Errorf("list: %v, want %v", got, tc.want)
		}
	}
	_, err = cc.GetClone(bob, &pb.GetCloneRequest{Name: "alice-dev"})
	wantDenied(t, "get another tenant's clone", err)
	_, err = cc.DeleteClone(bob, &pb.DeleteCloneRequest{Name: "alice-dev"})
	wantDenied(t, "delete another tenant's clone", err)

	// Reset drops the clone's writes and can move it to another version.
	writeNBD(t, n, "alice-dev", 0, []byte("scribbled"))
	c = must[*pb.Clone](t, "reset")(cc.ResetClone(alice, &pb.ResetCloneRequest{Name: "alice-dev"}))
	if got := string(readNBD(t, n, "alice-dev")); got != "version 2" || c.Version != 2 || c.Volume.Tenant != "team-a" || c.Volume.Qos.GetMaxReadIops() != 500 {
		t.Fatalf("after reset: reads %q, clone %v", got, c)
	}
	c = must[*pb.Clone](t, "reset to 1")(cc.ResetClone(alice, &pb.ResetCloneRequest{Name: "alice-dev", Version: 1}))
	if got := string(readNBD(t, n, "alice-dev")); got != "version 1" || c.Version != 1 {
		t.Fatalf("after reset to 1: reads %q, clone %v", got, c)
	}
	// A clone in use cannot be reset.
	nc, err := dialNBD(n.nbdAddr, "alice-dev")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cc.ResetClone(alice, &pb.ResetCloneRequest{Name: "alice-dev", Latest: true})
	wantCode(t, "reset in use", err, codes.FailedPrecondition)

	// The controller: alice-dev (TTL 1h, idle 10m) is in use; bob-dev is
	// idle after a minute; qa is protected.
	now := time.Now()
	if got := n.srv.expireClones(bg, now.Add(30*time.Second)); len(got) != 0 {
		t.Fatalf("deleted %v before anything expired", got)
	}
	if got := n.srv.expireClones(bg, now.Add(2*time.Minute)); !slices.Equal(got, []string{"bob-dev"}) {
		t.Fatalf("after 2 minutes deleted %v, want bob-dev (idle)", got)
	}
	// I/O restarts the idle clock: alice-dev read just now.
	if got := n.srv.expireClones(bg, time.Now().Add(9*time.Minute)); len(got) != 0 {
		t.Fatalf("deleted %v before the idle expiry", got)
	}
	l := must[*pb.ListClonesResponse](t, "list")(cc.ListClones(admin, &pb.ListClonesRequest{}))
	if got := cloneNames(l.Clones); !slices.Equal(got, []string{"alice-dev", "qa"}) {
		t.Fatalf("clones after expiry: %v", got)
	}
	// Past its TTL but in use: kept until released.
	if got := n.srv.expireClones(bg, now.Add(2*time.Hour)); len(got) != 0 {
		t.Fatalf("deleted %v while in use", got)
	}
	nc.Close()
	disconnected(t, n, "alice-dev")
	// Extending moves the TTL from now.
	c = must[*pb.Clone](t, "extend")(cc.ExtendClone(alice, &pb.ExtendCloneRequest{Name: "alice-dev", TtlSeconds: 3 * 3600}))
	if c.ExpiresAt.AsTime().Before(now.Add(2*time.Hour)) || c.IdleExpirySeconds != 600 {
		t.Fatalf("extended clone %v", c)
	}
	if got := n.srv.expireClones(bg, now.Add(2*time.Hour)); !slices.Equal(got, []string{"alice-dev"}) {
		// idle: 2 h without I/O
		t.Fatalf("at 2h deleted %v, want alice-dev (idle)", got)
	}
	if got := n.srv.expireClones(bg, now.Add(1000*time.Hour)); len(got) != 0 {
		t.Fatalf("deleted %v: qa is protected", got)
	}
	c = must[*pb.Clone](t, "unprotect")(cc.ExtendClone(admin, &pb.ExtendCloneRequest{Name: "qa", TtlSeconds: 60, Protected: new(bool)}))
	if c.Protected {
		t.Fatal("still protected")
	}
	if got := n.srv.expireClones(bg, now.Add(time.Hour)); !slices.Equal(got, []string{"qa"}) {
		t.Fatalf("deleted %v, want qa", got)
	}
	if _, err := n.meta.GetVolume(bg, "qa"); err == nil {
		t.Fatal("the volume of an expired clone is still there")
	}

	// A clone deleted as a volume loses its record at the next pass.
	must[*pb.Clone](t, "clone")(cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "gone", Template: "crm"}))
	must[*pb.DeleteVolumeResponse](t, "delete volume")(n.vols().DeleteVolume(alice, &pb.DeleteVolumeRequest{Name: "gone"}))
	n.srv.expireClones(bg, time.Now().Add(time.Hour))
	if _, err := n.meta.GetClone(bg, "gone"); err == nil {
		t.Fatal("the record of a clone whose volume was deleted stays")
	}
	// DeleteClone.
	must[*pb.Clone](t, "clone")(cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "short", Template: "crm"}))
	must[*pb.DeleteCloneResponse](t, "delete clone")(cc.DeleteClone(alice, &pb.DeleteCloneRequest{Name: "short"}))
	_, err = cc.GetClone(alice, &pb.GetCloneRequest{Name: "short"})
	wantCode(t, "get deleted clone", err, codes.NotFound)
}

// TestCloneControllerRuns: the controller loop of the server deletes an
// expired clone on its own.
func TestCloneControllerRuns(t *testing.T) {
	n := newNode(t)
	n.stop()
	n.cloneExpiry = 50 * time.Millisecond
	n.start()
	fakeTemplate(t, n, "crm", 1)
	admin := authed(context.Background())
	must[*pb.Clone](t, "clone")(n.clones().CreateClone(admin, &pb.CreateCloneRequest{Name: "brief", Template: "crm", TtlSeconds: 1}))
	waitFor(t, "the clone to expire", func() bool {
		_, err := n.meta.GetVolume(context.Background(), "brief")
		return err != nil
	})
}
