package mask

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/jackc/pgx/v5"

	"github.com/strata-storage/strata/internal/errdefs"
)

// These tests run real PostgreSQL and MariaDB servers on data directories
// in a temporary directory (no Strata volume: the API server's tests do
// that), as root, the way the node daemon runs them.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the database server runs as the data directory's owner)")
	}
}

// workspace makes a directory tree the database user can traverse:
// DIR/fs (the "volume's filesystem") and DIR/w (the work directory).
func workspace(t *testing.T) (root, work string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mask-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root, work = filepath.Join(dir, "fs"), filepath.Join(dir, "w")
	for _, d := range []string{dir, root, work} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o711)
	}
	return root, work
}

func logFile(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("STRATA_TEST_LOG") != "" {
			b, _ := os.ReadFile(f.Name())
			t.Logf("server log:\n%s", b)
		}
		f.Close()
	})
	return f
}

func lookupOwner(t *testing.T, name string) owner {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("no %s user: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return owner{uid: uint32(uid), gid: uint32(gid), name: name}
}

// runTool runs a program as o and fails the test if it fails.
func runTool(t *testing.T, o owner, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: o.uid, Gid: o.gid, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

const pgRules = `engine: postgres
data_dir: pgdata
salt_secret: prod-mask
tables:
  public.customers:
    full_name: fake_name
    email: fake_email
    phone: fake_phone
    card_number: redact
    notes: "null"
    city: shuffle
    address: fake_address
    tax_id: hash
  public.orders:
    customer_email: fake_email
`

// pgFixture makes a PostgreSQL cluster in root/pgdata with a database
// "shop": customers, and orders that reference them by id and repeat
// their email.
func pgFixture(t *testing.T, root, work string, rows int) {
	t.Helper()
	pg := lookupOwner(t, "postgres")
	bin, _, err := findPostgres(context.Background(), 15)
	if err != nil {
		bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
		if len(bins) == 0 {
			t.Skip("PostgreSQL is not installed (make test-deps installs it)")
		}
		bin = bins[len(bins)-1]
	}
	data := filepath.Join(root, "pgdata")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(data, int(pg.uid), int(pg.gid))
	runTool(t, pg, filepath.Join(filepath.Dir(bin), "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
	execPG(t, root, work, "postgres", `CREATE DATABASE shop`)
	execPG(t, root, work, "shop", fmt.Sprintf(`
CREATE TABLE customers (id serial PRIMARY KEY, full_name text NOT NULL, email varchar(120) UNIQUE NOT NULL,
  phone text, card_number text, notes text, city text, address text, tax_id varchar(40), created date);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id),
  customer_email varchar(120) NOT NULL, amount numeric(10,2));
INSERT INTO customers (full_name, email, phone, card_number, notes, city, address, tax_id, created)
  SELECT 'Person ' || g || ' Surname' || (g %% 97), 'user' || g || '@corp.example', '+33 6 ' || lpad(g::text, 8, '0'),
    '4111 1111 ' || lpad(g::text, 4, '0') || ' 1111', CASE WHEN g %% 3 = 0 THEN 'prefers email, account ' || g END,
    'City' || (g %% 50), g || ' Real Street, Paris', 'TAX-' || lpad(g::text, 9, '0'), date '2020-01-01' + g %% 1000
  FROM generate_series(1, %d) g;
INSERT INTO orders (customer_id, customer_email, amount)
  SELECT c.id, c.email, (g %% 1000) / 10.0 FROM generate_series(1, %d) g JOIN customers c ON c.id = 1 + g %% %d;
CREATE TABLE audit (at timestamptz DEFAULT now(), what text);
CREATE FUNCTION audit_customers() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO audit (what) VALUES (OLD.email); RETURN NEW; END$$;
CREATE TRIGGER customers_audit AFTER UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION audit_customers();
ANALYZE;`, rows, rows*2, rows))
}

// execPG starts the cluster in root/pgdata, runs sql in database db, and
// stops it cleanly.
func execPG(t *testing.T, root, work, db, sql string) {
	t.Helper()
	withPG(t, root, work, db, func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	})
}

func withPG(t *testing.T, root, work, db string, fn func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx := context.Background()
	log := logFile(t, work)
	rules := &Rules{Engine: EnginePostgres, DataDir: "pgdata", Database: db}
	job := &Job{Rules: rules, Root: root, WorkDir: work, Log: log, StartTimeout: time.Minute}
	pg := &postgres{job: job, dataDir: filepath.Join(root, "pgdata"), logf: func(string, ...any) {}}
	if err := pg.prepare(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := pg.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fn(ctx, d.(*pgdb).conn)
	d.close()
	if err := pg.stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func queryStrings(t *testing.T, conn *pgx.Conn, sql string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func mustParse(t *testing.T, src string) *Rules {
	t.Helper()
	r, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRunPostgres(t *testing.T) {
	needRoot(t)
	rows := 20000
	if n, _ := strconv.Atoi(os.Getenv("STRATA_TEST_ROWS")); n > 0 {
		rows = n
	}
	root, work := workspace(t)
	pgFixture(t, root, work, rows)

	// A second copy of the same data, to show that masking it again gives
	// the same fakes (a refresh).
	root2, work2 := workspace(t)
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "pgdata"), root2).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}

	job := Job{Rules: mustParse(t, pgRules), Secret: []byte("s3cret"), Root: root, WorkDir: work, Log: logFile(t, work)}
	start := time.Now()
	rep, err := Run(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("masked %d customers and %d orders in %s: %+v", rows, 2*rows, time.Since(start), rep.Steps)
	if rep.Database != "shop" || !strings.HasPrefix(rep.Server, "PostgreSQL ") || len(rep.Tables) != 2 ||
		rep.Tables[0].Rows != int64(rows) || rep.Tables[1].Rows != int64(2*rows) || rep.Sampled < 500 {
		t.Fatalf("report %+v", rep)
	}
	// The write-ahead log was reset: one segment is left.
	if wal, _ := filepath.Glob(filepath.Join(root, "pgdata", "pg_wal", "0*")); len(wal) != 1 {
		t.Errorf("pg_wal holds %d segments after the reset", len(wal))
	}

	var emails []string
	withPG(t, root, work, "shop", func(ctx context.Context, conn *pgx.Conn) {
		if n := queryInt(t, conn, `SELECT count(*) FROM customers WHERE email LIKE '%@corp.example' OR full_name LIKE 'Person %'
				OR phone LIKE '+33%' OR card_number ~ '[0-9]' OR notes IS NOT NULL OR address LIKE '%Real Street%' OR tax_id LIKE 'TAX-%'`); n != 0 {
			t.Errorf("%d customers keep original values", n)
		}
		if n := queryInt(t, conn, `SELECT count(*) FROM orders WHERE customer_email LIKE '%@corp.example'`); n != 0 {
			t.Errorf("%d orders keep original emails", n)
		}
		// Joins on the masked email match as before.
		if n := queryInt(t, conn, `SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id AND c.email = o.customer_email`); n != int64(2*rows) {
			t.Errorf("%d of %d orders join their customer by email", n, 2*rows)
		}
		// The trigger did not run: the audit table saw no original.
		if n := queryInt(t, conn, `SELECT count(*) FROM audit`); n != 0 {
			t.Errorf("the audit trigger ran %d times", n)
		}
		// Shuffle keeps the values, moves them.
		if n := queryInt(t, conn, `SELECT count(DISTINCT city) FROM customers`); n != 50 {
			t.Errorf("%d cities after the shuffle, want 50", n)
		}
		if n := queryInt(t, conn, `SELECT count(*) FROM customers WHERE city = 'City' || (id % 50)`); n > int64(rows/10) {
			t.Errorf("%d of %d customers kept their city", n, rows)
		}
		// Statistics were gathered again from masked data.
		for _, v := range queryStrings(t, conn, `SELECT coalesce(most_common_vals::text, '') || coalesce(histogram_bounds::text, '') FROM pg_stats WHERE tablename IN ('customers', 'orders')`) {
			if strings.Contains(v, "corp.example") || strings.Contains(v, "Person ") {
				t.Errorf("pg_stats keeps original values: %.100s", v)
			}
		}
		emails = queryStrings(t, conn, `SELECT email FROM customers ORDER BY id`)
		for _, e := range emails[:5] {
			if !regexp.MustCompile(`^[a-z]+\.[a-z]+[0-9]{4}@example\.(com|net|org)$`).MatchString(e) {
				t.Errorf("fake email %q", e)
			}
		}
	})

	// The second copy, masked with the same secret, gets the same fakes.
	job2 := Job{Rules: mustParse(t, pgRules), Secret: []byte("s3cret"), Root: root2, WorkDir: work2, Log: logFile(t, work2)}
	if _, err := Run(context.Background(), job2); err != nil {
		t.Fatal(err)
	}
	withPG(t, root2, work2, "shop", func(ctx context.Context, conn *pgx.Conn) {
		again := queryStrings(t, conn, `SELECT email FROM customers ORDER BY id`)
		if strings.Join(again, ",") != strings.Join(emails, ",") {
			t.Errorf("masking the same data again gave other fakes")
		}
	})
}

func TestRunPostgresRefusesBadRules(t *testing.T) {
	needRoot(t)
	root, work := workspace(t)
	pgFixture(t, root, work, 100)
	for _, tc := range []struct {
		name, rules, step string
		want              []string
	}{
		{"missing column", strings.Replace(pgRules, "card_number: redact", "card_numbr: redact", 1), StepRules,
			[]string{`table public.customers has no column "card_numbr"`, "its columns: id, full_name, email"}},
		{"missing table", strings.Replace(pgRules, "public.orders:", "public.order:", 1), StepRules,
			[]string{"no table public.order", "tables in public: audit, customers, orders"}},
		{"not text", strings.Replace(pgRules, "notes: \"null\"", "created: fake_name", 1), StepRules,
			[]string{"column public.customers.created is date; fake_name needs a text column"}},
		{"not null", strings.Replace(pgRules, "notes: \"null\"", "full_name: \"null\"", 1), "mask rules", nil},
		{"null on not null", strings.Replace(pgRules, "full_name: fake_name", "full_name: \"null\"", 1), StepRules,
			[]string{"public.customers.full_name is NOT NULL"}},
		{"wrong engine", strings.Replace(pgRules, "engine: postgres", "engine: mysql", 1), StepPrepare,
			[]string{"it looks like PostgreSQL"}},
		{"no data dir", strings.Replace(pgRules, "data_dir: pgdata", "data_dir: pg", 1), StepPrepare,
			[]string{"data_dir pg: no such directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := Parse([]byte(tc.rules))
			if tc.step == "mask rules" {
				if err == nil {
					t.Fatal("rules with a column twice were accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log := logFile(t, work)
			_, err = Run(context.Background(), Job{Rules: rules, Secret: []byte("x"), Root: root, WorkDir: work, Log: log})
			var se *StepError
			if !errors.As(err, &se) || se.Step != tc.step {
				t.Fatalf("error %v, want a failure of step %q", err, tc.step)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// The server is gone and the data untouched.
			if out, _ := exec.Command("pgrep", "-f", filepath.Join(root, "pgdata")).Output(); len(out) > 0 {
				t.Fatalf("a server still runs: %s", out)
			}
		})
	}
	withPG(t, root, work, "shop", func(ctx context.Context, conn *pgx.Conn) {
		if n := queryInt(t, conn, `SELECT count(*) FROM customers WHERE email LIKE '%@corp.example'`); n != 100 {
			t.Errorf("refused runs changed the data: %d original emails left of 100", n)
		}
	})
}

const myRules = `engine: mysql
data_dir: mysql-data
salt_secret: prod-mask
tables:
  shop.customers:
    full_name: fake_name
    email: fake_email
    phone: fake_phone
    card_number: redact
    notes: "null"
    city: shuffle
  shop.orders:
    customer_email: fake_email
`

func TestRunMariaDB(t *testing.T) {
	needRoot(t)
	install, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		t.Skip("MariaDB is not installed (make test-deps installs it)")
	}
	my := lookupOwner(t, "mysql")
	root, work := workspace(t)
	data := filepath.Join(root, "mysql-data")
	if out, err := exec.Command(install, "--no-defaults", "--datadir="+data, "--user=mysql", "--auth-root-authentication-method=normal",
		"--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	os.Chown(data, int(my.uid), int(my.gid))
	const rows = 20000
	withMy(t, root, work, func(ctx context.Context, d *mydb) {
		for _, q := range []string{
			`CREATE DATABASE shop`,
			`CREATE TABLE shop.customers (id INT PRIMARY KEY, full_name VARCHAR(100) NOT NULL, email VARCHAR(120) NOT NULL UNIQUE,
				phone VARCHAR(30), card_number VARCHAR(30), notes TEXT, city VARCHAR(40)) CHARACTER SET utf8mb4`,
			`CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, customer_email VARCHAR(120) NOT NULL,
				FOREIGN KEY (customer_id) REFERENCES shop.customers(id)) CHARACTER SET latin1`,
			fmt.Sprintf(`INSERT INTO shop.customers SELECT seq, CONCAT('Person ', seq), CONCAT('User', seq, '@Corp.example'),
				CONCAT('+33 6 ', LPAD(seq, 8, '0')), CONCAT('4111 ', LPAD(seq, 4, '0')), IF(seq %% 3 = 0, CONCAT('note ', seq), NULL),
				CONCAT('City', seq %% 50) FROM shop.seq_1_to_%d`, rows),
			// Orders spell the email in lower case: the join below is
			// case-insensitive, as MySQL's default collations are.
			fmt.Sprintf(`INSERT INTO shop.orders (customer_id, customer_email) SELECT 1 + seq %% %d, CONCAT('user', 1 + seq %% %d, '@corp.example') FROM shop.seq_1_to_%d`, rows, rows, 2*rows),
		} {
			if _, err := d.conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	})
	start := time.Now()
	rep, err := Run(context.Background(), Job{Rules: mustParse(t, myRules), Secret: []byte("s3cret"), Root: root, WorkDir: work, Log: logFile(t, work)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("masked %d customers and %d orders in %s: %+v", rows, 2*rows, time.Since(start), rep.Steps)
	if !strings.HasPrefix(rep.Server, "MariaDB ") || len(rep.Tables) != 2 || rep.Tables[1].Rows != 2*rows || rep.Sampled < 300 {
		t.Fatalf("report %+v", rep)
	}
	withMy(t, root, work, func(ctx context.Context, d *mydb) {
		count := func(q string) int64 {
			var n int64
			if err := d.conn.QueryRowContext(ctx, q).Scan(&n); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return n
		}
		if n := count(`SELECT COUNT(*) FROM shop.customers WHERE email LIKE '%corp.example' OR full_name LIKE 'Person%' OR phone LIKE '+33%' OR card_number REGEXP '[0-9]' OR notes IS NOT NULL`); n != 0 {
			t.Errorf("%d customers keep original values", n)
		}
		if n := count(`SELECT COUNT(*) FROM shop.orders o JOIN shop.customers c ON c.id = o.customer_id AND c.email = o.customer_email`); n != 2*rows {
			t.Errorf("%d of %d orders join their customer by email", n, 2*rows)
		}
		if n := count(`SELECT COUNT(DISTINCT city) FROM shop.customers`); n != 50 {
			t.Errorf("%d cities after the shuffle", n)
		}
	})
}

func withMy(t *testing.T, root, work string, fn func(ctx context.Context, d *mydb)) {
	t.Helper()
	ctx := context.Background()
	job := &Job{Rules: &Rules{Engine: EngineMySQL, DataDir: "mysql-data"}, Root: root, WorkDir: work, Log: logFile(t, work), StartTimeout: time.Minute}
	my := &mysql{job: job, dataDir: filepath.Join(root, "mysql-data"), logf: func(string, ...any) {}}
	if err := my.prepare(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := my.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fn(ctx, d.(*mydb))
	d.close()
	if err := my.stop(ctx); err != nil {
		t.Fatal(err)
	}
}
