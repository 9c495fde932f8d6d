package e2e

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// The dev/test workflow with real databases: a production database on a
// Strata volume, a masked template of it, a developer's clone with a
// server running on it, a migration tried and rolled back, expiry.

// dbUser is the system user a database server runs as.
type dbUser struct{ uid, gid uint32 }

func lookupDBUser(t *testing.T, name string) dbUser {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("no %s user (make test-deps installs the database packages)", name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return dbUser{uint32(uid), uint32(gid)}
}

// runAs runs a program as u and fails the test if it fails.
func runAs(t *testing.T, u dbUser, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sharedDir is a directory database users can traverse (t.TempDir is
// private to root).
func sharedDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "strata-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o711)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// postgres is a PostgreSQL server the test runs on a mounted volume.
type postgres struct {
	t    *testing.T
	bin  string
	data string
	sock string
	u    dbUser
	up   bool
}

func postgresBinaries(t *testing.T) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		t.Skip("PostgreSQL is not installed (make test-deps installs it)")
	}
	return filepath.Dir(bins[len(bins)-1])
}

func newPostgres(t *testing.T, dataDir string) *postgres {
	t.Helper()
	pg := &postgres{t: t, bin: postgresBinaries(t), data: dataDir, sock: sharedDir(t), u: lookupDBUser(t, "postgres")}
	os.Chown(pg.sock, int(pg.u.uid), int(pg.u.gid))
	t.Cleanup(pg.stop)
	return pg
}

func (pg *postgres) initdb() {
	pg.t.Helper()
	if err := os.MkdirAll(pg.data, 0o700); err != nil {
		pg.t.Fatal(err)
	}
	os.Chmod(filepath.Dir(pg.data), 0o755)
	os.Chown(pg.data, int(pg.u.uid), int(pg.u.gid))
	runAs(pg.t, pg.u, filepath.Join(pg.bin, "initdb"), "-D", pg.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
}

func (pg *postgres) start() {
	pg.t.Helper()
	runAs(pg.t, pg.u, filepath.Join(pg.bin, "pg_ctl"), "-D", pg.data, "-w", "-l", filepath.Join(pg.sock, "log"),
		"-o", "-c listen_addresses= -c unix_socket_directories="+pg.sock, "start")
	pg.up = true
}

func (pg *postgres) stop() {
	if pg.up {
		pg.up = false
		runAs(pg.t, pg.u, filepath.Join(pg.bin, "pg_ctl"), "-D", pg.data, "-w", "-m", "fast", "stop")
	}
}

func (pg *postgres) conn(db string) *pgx.Conn {
	pg.t.Helper()
	c, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s user=postgres dbname=%s sslmode=disable", pg.sock, db))
	if err != nil {
		pg.t.Fatal(err)
	}
	return c
}

func (pg *postgres) exec(db, sql string) {
	pg.t.Helper()
	c := pg.conn(db)
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql); err != nil {
		pg.t.Fatalf("%.200s: %v", sql, err)
	}
}

func (pg *postgres) int(db, sql string, args ...any) int64 {
	pg.t.Helper()
	c := pg.conn(db)
	defer c.Close(context.Background())
	var n int64
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		pg.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (pg *postgres) strings(db, sql string) []string {
	pg.t.Helper()
	c := pg.conn(db)
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), sql)
	if err != nil {
		pg.t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		pg.t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// volumeHash reads the whole volume over NBD and returns its SHA-256.
func volumeHash(t *testing.T, n *node, vol string) string {
	t.Helper()
	cmd := exec.Command("nbdcopy", n.uri(vol), "-")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, out); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nbdcopy %s: %v", vol, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

const shopMask = `engine: postgres
data_dir: pgdata
salt_secret: prod-mask
tables:
  public.customers:
    full_name: fake_name
    email: fake_email
    phone: fake_phone
    card_number: redact
    notes: "null"
  public.orders:
    customer_email: fake_email
`

// TestMaskedTemplatePostgres is the whole workflow with PostgreSQL, at a
// few hundred thousand rows.
func TestMaskedTemplatePostgres(t *testing.T) {
	needRoot(t)
	needTools(t, "nbdcopy", "mkfs.ext4")
	postgresBinaries(t)
	const customers, orders = 200000, 400000
	work := sharedDir(t)
	n := newNodeAt(t, t.TempDir(), filepath.Join(work, "data"), "--clone-check-interval", "1s")

	// Production: customers and orders (a foreign key to customers, and
	// the customer's email again) on a volume of its own.
	n.run("volume", "create", "prod", "--size", "2GiB")
	prodDir := filepath.Join(work, "prod")
	n.run("volume", "mount", "prod", prodDir)
	prod := newPostgres(t, filepath.Join(prodDir, "pgdata"))
	prod.initdb()
	prod.start()
	start := time.Now()
	prod.exec("postgres", "CREATE DATABASE shop")
	prod.exec("shop", fmt.Sprintf(`
CREATE TABLE customers (id serial PRIMARY KEY, full_name text NOT NULL, email text NOT NULL UNIQUE, phone text,
  card_number text, notes text, created date NOT NULL DEFAULT current_date);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), customer_email text NOT NULL,
  amount numeric(10,2) NOT NULL);
INSERT INTO customers (full_name, email, phone, card_number, notes)
  SELECT 'Customer ' || g || ' Family' || (g %% 1000), 'customer' || g || '@shop.example', '+44 20 ' || lpad(g::text, 8, '0'),
    '4000 ' || lpad((g %% 10000)::text, 4, '0') || ' 0000 ' || lpad((g %% 9973)::text, 4, '0'),
    CASE WHEN g %% 4 = 0 THEN 'called on ' || g END
  FROM generate_series(1, %d) g;
INSERT INTO orders (customer_id, customer_email, amount)
  SELECT c.id, c.email, (g %% 50000) / 100.0 FROM generate_series(1, %d) g JOIN customers c ON c.id = 1 + g %% %d;
CHECKPOINT;`, customers, orders, customers))
	t.Logf("production database loaded in %s", time.Since(start).Round(time.Millisecond))
	// Original values to look for in the clone later.
	originals := map[string][]string{}
	var all []string
	for _, col := range []string{"email", "full_name", "phone"} {
		originals[col] = prod.strings("shop", "SELECT "+col+" FROM customers ORDER BY random() LIMIT 300")
		all = append(all, originals[col]...)
	}
	joined := prod.int("shop", `SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id AND c.email = o.customer_email`)
	if joined != orders {
		t.Fatalf("fixture: %d orders join", joined)
	}
	prod.stop()
	n.run("volume", "unmount", prodDir)
	prodHash := volumeHash(t, n, "prod")

	salt := filepath.Join(work, "salt")
	if err := os.WriteFile(salt, []byte("a secret salt for the tests"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.run("secret", "set", "prod-mask", "--from-file", salt)
	rules := filepath.Join(work, "shop-mask.yaml")

	// A rule naming a missing column: nothing is published, the working
	// clone is removed, the server's log is kept.
	if err := os.WriteFile(rules, []byte(strings.Replace(shopMask, "card_number", "card_no", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	e := n.fail("template", "create", "shop", "--from", "prod", "--mask", rules)
	for _, w := range []string{"template shop version 1 was not published", "the working clone was removed", `table public.customers has no column "card_no"`} {
		if !strings.Contains(e, w) {
			t.Errorf("failed create says %q, not %q", e, w)
		}
	}
	logPath := regexp.MustCompile(`server log: (\S+\.log)`).FindStringSubmatch(e)
	if logPath == nil {
		t.Fatalf("no server log in %q", e)
	}
	if b, err := os.ReadFile(logPath[1]); err != nil || !strings.Contains(string(b), "database system is ready to accept connections") {
		t.Errorf("server log %s: %v\n%s", logPath[1], err, b)
	}
	if out := n.run("template", "list"); strings.Contains(out, "shop") {
		t.Errorf("a failed template is listed:\n%s", out)
	}
	if out := n.run("volume", "list"); strings.Contains(out, "tpl-") {
		t.Errorf("the working clone of a failed template stays:\n%s", out)
	}

	// The template.
	if err := os.WriteFile(rules, []byte(shopMask), 0o644); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	out := n.run("template", "create", "shop", "--from", "prod", "--mask", rules, "--keep", "2")
	t.Logf("template of %d customers and %d orders made in %s: %s", customers, orders, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if !strings.Contains(out, "published template shop version 1") || !strings.Contains(out, fmt.Sprintf("%d rows", customers+orders)) {
		t.Fatalf("create said %q", out)
	}
	if got := volumeHash(t, n, "prod"); got != prodHash {
		t.Fatal("making the template changed the production volume")
	}
	if out := n.run("snapshot", "list", "prod"); strings.Contains(out, "prod@") {
		t.Fatalf("the template left snapshots on production:\n%s", out)
	}
	// The version's volume and snapshot change only through the template.
	for _, args := range [][]string{{"volume", "delete", "tpl-shop-v1"}, {"snapshot", "delete", "tpl-shop-v1@masked"}} {
		if e := n.fail(args...); !strings.Contains(e, "it belongs to template shop") || !strings.Contains(e, "strata template delete shop") {
			t.Errorf("strata %s: %q", strings.Join(args, " "), e)
		}
	}

	// A developer clones it once it is granted to her tenant, and runs a
	// server on the clone.
	alice := strings.TrimSpace(n.run("user", "create", "alice", "--role", "developer", "--tenant", "team-a"))
	as := func(args ...string) string {
		n.t.Helper()
		return n.run(append([]string{"--token", alice}, args...)...)
	}
	if e := n.fail("--token", alice, "clone", "create", "alice-shop", "--template", "shop"); !strings.Contains(e, "not granted to tenant team-a") {
		t.Errorf("clone before the grant: %q", e)
	}
	if e := n.fail("--token", alice, "template", "grant", "shop", "--tenant", "team-a"); !strings.Contains(e, "templates are granted by admins") {
		t.Errorf("grant as a developer: %q", e)
	}
	if out := n.run("template", "grant", "shop", "--tenant", "team-a"); out != "granted template shop to tenant team-a (granted to: team-a)\n" {
		t.Errorf("grant said %q", out)
	}
	start = time.Now()
	as("clone", "create", "alice-shop", "--template", "shop", "--ttl", "8h", "--idle-expiry", "2h")
	t.Logf("clone made in %s", time.Since(start).Round(time.Millisecond))
	if out := as("clone", "list"); !regexp.MustCompile(`alice-shop\s+shop@1\s+team-a\s+(7h5\d|8h00)m\s+(1h5\d|2h00)m\s+active`).MatchString(out) {
		t.Errorf("clone list:\n%s", out)
	}
	cloneDir := filepath.Join(work, "clone")
	as("volume", "mount", "alice-shop", cloneDir)
	dev := newPostgres(t, filepath.Join(cloneDir, "pgdata"))
	dev.start()
	for _, tc := range []struct {
		sql  string
		want int64
	}{
		{`SELECT count(*) FROM customers`, customers},
		{`SELECT count(*) FROM orders`, orders},
		{`SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id AND c.email = o.customer_email`, orders},
		{`SELECT count(*) FROM customers WHERE email LIKE '%@shop.example' OR phone LIKE '+44%' OR card_number ~ '[0-9]' OR notes IS NOT NULL`, 0},
		{`SELECT count(*) FROM customers WHERE email = ANY($1) OR full_name = ANY($1) OR phone = ANY($1)`, 0},
		{`SELECT count(*) FROM orders WHERE customer_email = ANY($1)`, 0},
	} {
		var args []any
		if strings.Contains(tc.sql, "$1") {
			args = []any{all}
		}
		if got := dev.int("shop", tc.sql, args...); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.sql, got, tc.want)
		}
	}

	// The iterative workflow: snapshot, try a migration, roll it back.
	dev.stop()
	as("volume", "unmount", cloneDir)
	as("snapshot", "create", "alice-shop", "--name", "before-migration")
	as("volume", "mount", "alice-shop", cloneDir)
	dev.start()
	dev.exec("shop", `ALTER TABLE customers ADD COLUMN loyalty_points int NOT NULL DEFAULT 0;
		UPDATE customers SET loyalty_points = id % 100; DROP TABLE orders;`)
	if got := dev.int("shop", `SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'`); got != 1 {
		t.Fatalf("the migration did not run")
	}
	dev.stop()
	as("volume", "unmount", cloneDir)
	as("volume", "revert", "alice-shop", "--to", "before-migration")
	as("volume", "mount", "alice-shop", cloneDir)
	dev.start()
	if got := dev.int("shop", `SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'`); got != 0 {
		t.Errorf("the migration survived the revert")
	}
	if got := dev.int("shop", `SELECT count(*) FROM orders`); got != orders {
		t.Errorf("%d orders after the revert", got)
	}
	dev.stop()
	as("volume", "unmount", cloneDir)

	// Reset, extend, delete; a clone with a short TTL expires on its own.
	as("clone", "reset", "alice-shop")
	if out := as("clone", "extend", "alice-shop", "--ttl", "3d", "--idle-expiry", "0"); !strings.Contains(out, "expires at") {
		t.Errorf("extend said %q", out)
	}
	as("clone", "create", "alice-brief", "--template", "shop", "--ttl", "2s")
	deadline := time.Now().Add(30 * time.Second)
	for strings.Contains(as("clone", "list"), "alice-brief") {
		if time.Now().After(deadline) {
			t.Fatalf("a clone with a 2 s TTL is still there after 30 s:\n%s", n.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if e := n.fail("template", "delete", "shop"); !strings.Contains(e, "alice-shop") {
		t.Errorf("delete of a template with a clone: %q", e)
	}
	// Revoked: no new clone, and her clone stays hers to delete.
	if out := n.run("template", "revoke", "shop", "--tenant", "team-a"); !strings.Contains(out, "revoked the grant of template shop to tenant team-a") ||
		!strings.Contains(out, "alice-shop") {
		t.Errorf("revoke said %q", out)
	}
	if e := n.fail("--token", alice, "clone", "create", "alice-again", "--template", "shop"); !strings.Contains(e, "not granted to tenant team-a") {
		t.Errorf("clone after the revoke: %q", e)
	}
	as("clone", "delete", "alice-shop")
	n.run("template", "delete", "shop")

	// Production, after all this, is byte for byte what it was, and its
	// server still finds its own data.
	if got := volumeHash(t, n, "prod"); got != prodHash {
		t.Fatal("the production volume changed")
	}
	n.run("volume", "mount", "prod", prodDir)
	prod.start()
	for col, vals := range originals {
		if got := prod.int("shop", "SELECT count(*) FROM customers WHERE "+col+" = ANY($1)", vals); got != int64(len(vals)) {
			t.Errorf("production finds %d of its %d sampled values of %s", got, len(vals), col)
		}
	}
	prod.stop()
	n.run("volume", "unmount", prodDir)
}

// TestMaskedTemplateMariaDB: the same with MariaDB, smaller.
func TestMaskedTemplateMariaDB(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mariadb-install-db", "mariadbd")
	u := lookupDBUser(t, "mysql")
	const customers = 20000
	work := sharedDir(t)
	n := newNodeAt(t, t.TempDir(), filepath.Join(work, "data"))
	n.run("volume", "create", "shopdb", "--size", "1GiB")
	prodDir := filepath.Join(work, "prod")
	n.run("volume", "mount", "shopdb", prodDir)
	os.Chmod(prodDir, 0o755)
	data := filepath.Join(prodDir, "mysql")
	tool(t, "mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=mysql", "--skip-test-db")
	sock := sharedDir(t)
	os.Chown(sock, int(u.uid), int(u.gid))
	my := startMariaDB(t, u, data, sock)
	for _, q := range []string{
		`CREATE DATABASE shop`,
		`CREATE TABLE shop.customers (id INT PRIMARY KEY, full_name VARCHAR(100) NOT NULL, email VARCHAR(120) NOT NULL UNIQUE, phone VARCHAR(30))`,
		fmt.Sprintf(`INSERT INTO shop.customers SELECT seq, CONCAT('Customer ', seq), CONCAT('customer', seq, '@shop.example'), CONCAT('+44 20 ', LPAD(seq, 8, '0')) FROM shop.seq_1_to_%d`, customers),
	} {
		if _, err := my.db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	my.stop()
	n.run("volume", "unmount", prodDir)

	salt := filepath.Join(work, "salt")
	os.WriteFile(salt, []byte("another salt"), 0o600)
	n.run("secret", "set", "shop-mask", "--from-file", salt)
	rules := filepath.Join(work, "rules.yaml")
	os.WriteFile(rules, []byte("engine: mysql\ndata_dir: mysql\nsalt_secret: shop-mask\ntables:\n  shop.customers:\n    full_name: fake_name\n    email: fake_email\n    phone: fake_phone\n"), 0o644)
	out := n.run("template", "create", "shop", "--from", "shopdb", "--mask", rules)
	if !strings.Contains(out, "MariaDB") {
		t.Errorf("create said %q", out)
	}
	n.run("clone", "create", "qa", "--template", "shop")
	cloneDir := filepath.Join(work, "clone")
	n.run("volume", "mount", "qa", cloneDir)
	sock2 := sharedDir(t)
	os.Chown(sock2, int(u.uid), int(u.gid))
	qa := startMariaDB(t, u, filepath.Join(cloneDir, "mysql"), sock2)
	var left, rows int64
	if err := qa.db.QueryRow(`SELECT COUNT(*), SUM(email LIKE '%shop.example' OR full_name LIKE 'Customer %' OR phone LIKE '+44%') FROM shop.customers`).Scan(&rows, &left); err != nil {
		t.Fatal(err)
	}
	if rows != customers || left != 0 {
		t.Errorf("the clone has %d customers, %d with original values", rows, left)
	}
	qa.stop()
	n.run("volume", "unmount", cloneDir)
}

type mariadb struct {
	t    *testing.T
	cmd  *exec.Cmd
	db   *sql.DB
	done chan struct{}
}

func startMariaDB(t *testing.T, u dbUser, data, sock string) *mariadb {
	t.Helper()
	cmd := exec.Command("mariadbd", "--no-defaults", "--datadir="+data, "--socket="+filepath.Join(sock, "s"),
		"--pid-file="+filepath.Join(sock, "pid"), "--skip-networking", "--skip-grant-tables", "--log-error="+filepath.Join(sock, "log"))
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &mariadb{t: t, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(m.done) }()
	t.Cleanup(m.stop)
	cfg := mysqldrv.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", filepath.Join(sock, "s")
	c, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.db = sql.OpenDB(c)
	deadline := time.Now().Add(time.Minute)
	for m.db.Ping() != nil {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(sock, "log"))
			t.Fatalf("mariadbd did not start:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m
}

func (m *mariadb) stop() {
	if m.db == nil {
		return
	}
	m.db.Close()
	m.db = nil
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(time.Minute):
		m.cmd.Process.Kill()
		<-m.done
		m.t.Error("mariadbd did not stop within a minute")
	}
}
