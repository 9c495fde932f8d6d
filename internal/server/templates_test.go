package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

// pgCluster is a PostgreSQL server run by a test on a mounted volume.
type pgCluster struct {
	t    *testing.T
	bin  string // directory of the server binaries
	data string
	sock string
	uid  uint32
	gid  uint32
}

// postgresBin finds the newest PostgreSQL server binaries, or skips.
func postgresBin(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, FUSE, the database server as another user)")
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		t.Skip("PostgreSQL is not installed (make test-deps installs it)")
	}
	return filepath.Dir(bins[len(bins)-1])
}

// sharedDir makes a directory the postgres user can traverse (t.TempDir
// is private to root).
func sharedDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "strata-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o711)
	t.Cleanup(func() { os.Remove(d) })
	return d
}

// newPG makes a cluster in dir/pgdata (dir is a mounted volume) and
// starts it with its socket in a directory of its own.
func newPG(t *testing.T, dir string) *pgCluster {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skip("no postgres user")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	pg := &pgCluster{t: t, bin: postgresBin(t), data: filepath.Join(dir, "pgdata"), sock: sharedDir(t), uid: uint32(uid), gid: uint32(gid)}
	os.Chown(pg.sock, uid, gid)
	os.Chmod(dir, 0o755)
	if err := os.Mkdir(pg.data, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(pg.data, uid, gid)
	pg.run("initdb", "-D", pg.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
	pg.start()
	return pg
}

func (pg *pgCluster) run(tool string, args ...string) {
	pg.t.Helper()
	cmd := exec.Command(filepath.Join(pg.bin, tool), args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: pg.uid, Gid: pg.gid, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		pg.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
}

func (pg *pgCluster) start() {
	pg.t.Helper()
	pg.run("pg_ctl", "-D", pg.data, "-w", "-l", filepath.Join(pg.sock, "log"), "-o",
		"-c listen_addresses= -c unix_socket_directories="+pg.sock+"", "start")
	pg.t.Cleanup(pg.stop)
}

func (pg *pgCluster) stop() {
	if _, err := os.Stat(filepath.Join(pg.data, "postmaster.pid")); err == nil {
		pg.run("pg_ctl", "-D", pg.data, "-w", "-m", "fast", "stop")
	}
}

func (pg *pgCluster) conn(db string) *pgx.Conn {
	pg.t.Helper()
	c, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s user=postgres dbname=%s sslmode=disable", pg.sock, db))
	if err != nil {
		pg.t.Fatal(err)
	}
	pg.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (pg *pgCluster) exec(db, sql string) {
	pg.t.Helper()
	if _, err := pg.conn(db).Exec(context.Background(), sql); err != nil {
		pg.t.Fatalf("%s: %v", sql, err)
	}
}

func (pg *pgCluster) count(db, sql string) int64 {
	pg.t.Helper()
	var n int64
	if err := pg.conn(db).QueryRow(context.Background(), sql).Scan(&n); err != nil {
		pg.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

const shopRules = `engine: postgres
data_dir: pgdata
salt_secret: prod-mask
tables:
  public.customers:
    full_name: fake_name
    email: fake_email
    card_number: redact
  public.orders:
    customer_email: fake_email
`

// TestTemplateWithPostgres makes a masked template of a running
// production PostgreSQL on a volume, clones it as a developer, and runs a
// server on the clone; a rule naming a missing column publishes nothing.
func TestTemplateWithPostgres(t *testing.T) {
	postgresBin(t)
	n := newNode(t)
	bg := context.Background()
	admin := authed(bg)
	must[*pb.Volume](t, "create prod")(n.vols().CreateVolume(admin, &pb.CreateVolumeRequest{Name: "prod", SizeBytes: 1 << 30}))
	prodDir := filepath.Join(sharedDir(t), "prod")
	must[*pb.MountVolumeResponse](t, "mount prod")(n.vols().MountVolume(admin, &pb.MountVolumeRequest{Name: "prod", Target: prodDir}))
	t.Cleanup(func() { n.vols().UnmountVolume(admin, &pb.UnmountVolumeRequest{Target: prodDir}) })
	prod := newPG(t, prodDir)
	prod.exec("postgres", "CREATE DATABASE shop")
	prod.exec("shop", `CREATE TABLE customers (id serial PRIMARY KEY, full_name text, email text UNIQUE, card_number text);
		CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id), customer_email text);
		INSERT INTO customers (full_name, email, card_number) SELECT 'Person ' || g, 'user' || g || '@corp.example', '4111-' || g FROM generate_series(1, 2000) g;
		INSERT INTO orders (customer_id, customer_email) SELECT 1 + g % 2000, 'user' || (1 + g % 2000) || '@corp.example' FROM generate_series(1, 4000) g;`)
	tc := n.templates()

	// No salt secret yet.
	_, err := tc.CreateTemplate(admin, &pb.CreateTemplateRequest{Name: "shop", Source: "prod", Rules: shopRules})
	wantCode(t, "create without the secret", err, codes.FailedPrecondition)
	if _, err := n.meta.PutSecret(bg, "prod-mask", []byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}

	// A rule naming a missing column: nothing published, the working
	// clone and the source's snapshot gone, the server's log kept.
	_, err = tc.CreateTemplate(admin, &pb.CreateTemplateRequest{Name: "shop", Source: "prod", Rules: strings.Replace(shopRules, "card_number", "card_numbr", 1)})
	wantCode(t, "create with a missing column", err, codes.InvalidArgument)
	msg := status.Convert(err).Message()
	for _, w := range []string{"template shop version 1 was not published", "the working clone was removed", `table public.customers has no column "card_numbr"`, "server log: "} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not say %q", msg, w)
		}
	}
	logPath := strings.Fields(msg[strings.Index(msg, "server log: ")+len("server log: "):])[0]
	logPath = strings.TrimRight(logPath, "):;")
	if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "database system is ready to accept connections") || !strings.Contains(string(b), "nothing was published") {
		t.Errorf("server log %s: %v\n%s", logPath, err, b)
	}
	_, err = tc.GetTemplate(admin, &pb.GetTemplateRequest{Name: "shop"})
	wantCode(t, "get a template whose creation failed", err, codes.NotFound)
	vols := must[*pb.ListVolumesResponse](t, "list")(n.vols().ListVolumes(admin, &pb.ListVolumesRequest{}))
	if names := volumeNames(vols.Volumes); !slices.Equal(names, []string{"prod"}) {
		t.Fatalf("volumes after a failed template: %v", names)
	}
	if sn := must[*pb.ListSnapshotsResponse](t, "snapshots")(n.snaps().ListSnapshots(admin, &pb.ListSnapshotsRequest{})); len(sn.Snapshots) != 0 {
		t.Fatalf("snapshots after a failed template: %v", sn.Snapshots)
	}

	// The template, from the running production server.
	tpl := must[*pb.Template](t, "create template")(tc.CreateTemplate(admin, &pb.CreateTemplateRequest{Name: "shop", Source: "prod", Rules: shopRules, Keep: 1}))
	if len(tpl.Versions) != 1 {
		t.Fatalf("template %v", tpl)
	}
	v1 := tpl.Versions[0]
	if v1.Number != 1 || v1.Volume != "tpl-shop-v1" || v1.Database != "shop" || len(v1.Tables) != 2 || v1.Tables[0].Rows != 2000 || v1.Tables[1].Rows != 4000 || v1.SampledValues < 200 {
		t.Fatalf("version 1: %v", v1)
	}
	if sn := must[*pb.ListSnapshotsResponse](t, "snapshots")(n.snaps().ListSnapshots(admin, &pb.ListSnapshotsRequest{Volume: "prod"})); len(sn.Snapshots) != 0 {
		t.Fatalf("the source keeps snapshots: %v", sn.Snapshots)
	}

	// A developer's clone, and a server on it.
	must[*pb.Template](t, "grant")(tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "shop", Tenant: "team-a"}))
	alice := n.addUser("alice", meta.RoleDeveloper, "team-a")
	c := must[*pb.Clone](t, "clone")(n.clones().CreateClone(alice, &pb.CreateCloneRequest{Name: "alice-shop", Template: "shop", TtlSeconds: 3600}))
	if c.Tenant != "team-a" || c.Version != 1 {
		t.Fatalf("clone %v", c)
	}
	cloneDir := filepath.Join(sharedDir(t), "clone")
	must[*pb.MountVolumeResponse](t, "mount clone")(n.vols().MountVolume(alice, &pb.MountVolumeRequest{Name: "alice-shop", Target: cloneDir}))
	dev := &pgCluster{t: t, bin: prod.bin, data: filepath.Join(cloneDir, "pgdata"), sock: sharedDir(t), uid: prod.uid, gid: prod.gid}
	os.Chown(dev.sock, int(dev.uid), int(dev.gid))
	dev.start()
	if got := dev.count("shop", `SELECT count(*) FROM customers WHERE email LIKE '%corp.example' OR full_name LIKE 'Person %' OR card_number ~ '[0-9]'`); got != 0 {
		t.Errorf("%d customers of the clone keep original values", got)
	}
	if got := dev.count("shop", `SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id AND c.email = o.customer_email`); got != 4000 {
		t.Errorf("%d of 4000 orders join their customer by email", got)
	}
	dev.stop()
	must[*pb.UnmountVolumeResponse](t, "unmount clone")(n.vols().UnmountVolume(alice, &pb.UnmountVolumeRequest{Target: cloneDir}))
	// Production is as it was.
	if got := prod.count("shop", `SELECT count(*) FROM customers WHERE email LIKE '%corp.example'`); got != 2000 {
		t.Errorf("production has %d original emails of 2000", got)
	}

	// Refresh from production's current data; version 1 stays while the
	// clone uses it, though keep is 1.
	prod.exec("shop", `INSERT INTO customers (full_name, email, card_number) VALUES ('New Person', 'new@corp.example', '4111-0')`)
	tpl = must[*pb.Template](t, "refresh")(tc.RefreshTemplate(admin, &pb.RefreshTemplateRequest{Name: "shop"}))
	if len(tpl.Versions) != 2 || tpl.Versions[1].Number != 2 || tpl.Versions[1].Tables[0].Rows != 2001 || tpl.Versions[0].Clones != 1 {
		t.Fatalf("after refresh: %v", tpl)
	}
	c = must[*pb.Clone](t, "reset to latest")(n.clones().ResetClone(alice, &pb.ResetCloneRequest{Name: "alice-shop", Latest: true}))
	if c.Version != 2 {
		t.Fatalf("reset clone %v", c)
	}
	// Version 1 is unused now: the next refresh drops it.
	tpl = must[*pb.Template](t, "refresh")(tc.RefreshTemplate(admin, &pb.RefreshTemplateRequest{Name: "shop"}))
	if len(tpl.Versions) != 2 || tpl.Versions[0].Number != 2 || tpl.Versions[1].Number != 3 {
		t.Fatalf("after the second refresh: %v", tpl)
	}
	if _, err := n.meta.GetVolume(bg, "tpl-shop-v1"); err == nil {
		t.Fatal("the volume of a dropped version stays")
	}

	// Delete: refused while the clone exists, unless forced.
	_, err = tc.DeleteTemplate(admin, &pb.DeleteTemplateRequest{Name: "shop"})
	wantCode(t, "delete a template with clones", err, codes.FailedPrecondition)
	resp := must[*pb.DeleteTemplateResponse](t, "delete --force")(tc.DeleteTemplate(admin, &pb.DeleteTemplateRequest{Name: "shop", Force: true}))
	if !slices.Equal(resp.OrphanedClones, []string{"alice-shop"}) {
		t.Fatalf("orphans %v", resp.OrphanedClones)
	}
	_, err = n.clones().ResetClone(alice, &pb.ResetCloneRequest{Name: "alice-shop"})
	wantCode(t, "reset an orphan", err, codes.PermissionDenied) // the grant went with the template
	if _, err := n.meta.GetVolume(bg, "tpl-shop-v3"); err == nil {
		t.Fatal("the versions' volumes stay after delete")
	}
	// The orphan still reads its data.
	must[*pb.MountVolumeResponse](t, "mount clone")(n.vols().MountVolume(alice, &pb.MountVolumeRequest{Name: "alice-shop", Target: cloneDir}))
	if _, err := os.Stat(filepath.Join(cloneDir, "pgdata", "PG_VERSION")); err != nil {
		t.Fatal(err)
	}
	must[*pb.UnmountVolumeResponse](t, "unmount clone")(n.vols().UnmountVolume(alice, &pb.UnmountVolumeRequest{Target: cloneDir}))
}

// TestTemplateVersionsAreProtected: the volume of a template version, and
// its sealed snapshot, are changed only through the template: deleting,
// reverting or resizing them, or deleting the snapshot, is refused and
// says what to use instead. Clones of versions are ordinary volumes.
func TestTemplateVersionsAreProtected(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	admin := authed(bg)
	fakeTemplate(t, n, "crm", 2)
	vc, sc := n.vols(), n.snaps()

	refused := func(what string, err error, words ...string) {
		t.Helper()
		wantCode(t, what, err, codes.FailedPrecondition)
		msg := status.Convert(err).Message()
		for _, w := range append(words, "it belongs to template crm", "strata template refresh crm --keep N", "strata template delete crm") {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", what, msg, w)
			}
		}
	}
	_, err := vc.DeleteVolume(admin, &pb.DeleteVolumeRequest{Name: "crm-b1"})
	refused("delete", err, "cannot delete volume crm-b1", "version 1, which clones are made from (crm-b1@masked)")
	_, err = vc.RevertVolume(admin, &pb.RevertVolumeRequest{Name: "crm-b2", Snapshot: templateSnapshot})
	refused("revert", err, "cannot revert volume crm-b2", "version 2")
	_, err = vc.ResizeVolume(admin, &pb.ResizeVolumeRequest{Name: "crm-b1", SizeBytes: 32 * mib})
	refused("resize", err, "cannot resize volume crm-b1")
	_, err = sc.DeleteSnapshot(admin, &pb.DeleteSnapshotRequest{Volume: "crm-b1", Name: templateSnapshot})
	refused("delete the snapshot", err, "cannot delete snapshot crm-b1@masked")
	// Over REST, the same.
	var e struct{ Message string }
	if code := n.rest("DELETE", "/v1/volumes/crm-b2", testToken, nil, &e); code != http.StatusBadRequest || !strings.Contains(e.Message, "strata template delete crm") {
		t.Errorf("rest delete: %d %+v", code, e)
	}

	// Nothing changed.
	for _, v := range []string{"crm-b1", "crm-b2"} {
		got := must[*pb.Volume](t, "get")(vc.GetVolume(admin, &pb.GetVolumeRequest{Name: v}))
		if got.SizeBytes != 16*mib || got.SnapshotCount != 1 || got.State != meta.StateReady {
			t.Errorf("volume %s after the refusals: %v", v, got)
		}
	}

	// Other snapshots of a version's volume, and clones, are the caller's.
	must[*pb.Snapshot](t, "snapshot")(sc.CreateSnapshot(admin, &pb.CreateSnapshotRequest{Volume: "crm-b1", Name: "extra"}))
	must[*pb.DeleteSnapshotResponse](t, "delete another snapshot")(sc.DeleteSnapshot(admin, &pb.DeleteSnapshotRequest{Volume: "crm-b1", Name: "extra"}))
	must[*pb.Clone](t, "clone")(n.clones().CreateClone(admin, &pb.CreateCloneRequest{Name: "qa", Template: "crm"}))
	must[*pb.Volume](t, "resize a clone")(vc.ResizeVolume(admin, &pb.ResizeVolumeRequest{Name: "qa", SizeBytes: 32 * mib}))
	must[*pb.DeleteVolumeResponse](t, "delete a clone")(vc.DeleteVolume(admin, &pb.DeleteVolumeRequest{Name: "qa"}))

	// The working clone of a version being made.
	must[*pb.Volume](t, "create")(vc.CreateVolume(admin, &pb.CreateVolumeRequest{Name: "tpl-orders-v3", SizeBytes: 16 * mib}))
	if _, err := n.meta.CreateTemplate(bg, meta.Template{Name: "orders", Source: "prod", Building: 3}); err != nil {
		t.Fatal(err)
	}
	_, err = vc.DeleteVolume(admin, &pb.DeleteVolumeRequest{Name: "tpl-orders-v3"})
	wantCode(t, "delete a working clone", err, codes.FailedPrecondition)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "the working clone of version 3, being made") {
		t.Errorf("delete a working clone: %q", msg)
	}

	// The template's own calls change them: delete takes the versions.
	must[*pb.DeleteTemplateResponse](t, "delete the template")(n.templates().DeleteTemplate(admin, &pb.DeleteTemplateRequest{Name: "crm"}))
	for _, v := range []string{"crm-b1", "crm-b2"} {
		if _, err := n.meta.GetVolume(bg, v); err == nil {
			t.Errorf("volume %s stays after the template was deleted", v)
		}
	}
}

// TestTemplateBuildLeavesOthersNamesAlone: a version whose working clone's
// name, or its source snapshot's, is taken is not made, and what has the
// name is left as it was (a failed build removes what has the names).
func TestTemplateBuildLeavesOthersNamesAlone(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	admin := authed(bg)
	vc, sc, tc := n.vols(), n.snaps(), n.templates()
	if _, err := n.meta.PutSecret(bg, "prod-mask", []byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	must[*pb.Volume](t, "create prod")(vc.CreateVolume(admin, &pb.CreateVolumeRequest{Name: "prod", SizeBytes: 16 * mib}))
	must[*pb.Volume](t, "create")(vc.CreateVolume(admin, &pb.CreateVolumeRequest{Name: "tpl-shop-v1", SizeBytes: 16 * mib}))
	writeNBD(t, n, "tpl-shop-v1", 0, []byte("keep me"))

	_, err := tc.CreateTemplate(admin, &pb.CreateTemplateRequest{Name: "shop", Source: "prod", Rules: shopRules})
	wantCode(t, "create with the working clone's name taken", err, codes.FailedPrecondition)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "a volume named tpl-shop-v1 exists") {
		t.Errorf("create says %q", msg)
	}
	if got := string(readNBD(t, n, "tpl-shop-v1")); got != "keep me" {
		t.Fatalf("the volume that had the name reads %q", got)
	}
	must[*pb.DeleteVolumeResponse](t, "delete")(vc.DeleteVolume(admin, &pb.DeleteVolumeRequest{Name: "tpl-shop-v1"}))

	must[*pb.Snapshot](t, "snapshot")(sc.CreateSnapshot(admin, &pb.CreateSnapshotRequest{Volume: "prod", Name: "tpl-shop-v1"}))
	_, err = tc.CreateTemplate(admin, &pb.CreateTemplateRequest{Name: "shop", Source: "prod", Rules: shopRules})
	wantCode(t, "create with the source snapshot's name taken", err, codes.FailedPrecondition)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "snapshot prod@tpl-shop-v1 exists") {
		t.Errorf("create says %q", msg)
	}
	if _, err := n.meta.GetSnapshot(bg, "prod", "tpl-shop-v1"); err != nil {
		t.Fatalf("the snapshot that had the name: %v", err)
	}
	if _, err := n.meta.GetTemplate(bg, "shop"); err == nil {
		t.Fatal("a template without a version stays")
	}
}
