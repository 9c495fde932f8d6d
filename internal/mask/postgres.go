package mask

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/strata-storage/strata/internal/errdefs"
)

// minPostgres is the oldest PostgreSQL major version Run drives (the
// settings it overrides exist from 12 on).
const minPostgres = 12

// postgres runs a PostgreSQL cluster's data directory with settings that
// keep it private and quick: no TCP listener, a socket in the work
// directory, trust authentication on that socket only, no WAL archiving,
// no replication connections out, no logging of statements (the log is
// kept), no fsync (nothing is published unless the server stops cleanly).
type postgres struct {
	job     *Job
	dataDir string
	logf    func(string, ...any)

	own   owner
	major int
	bin   string
	ver   string
	sock  string
	conf  string // config file to use, when the data directory has none
	proc  *process
	users []string
}

const pgPort = 5432

func (pg *postgres) version() string { return pg.ver }

func (pg *postgres) prepare(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(pg.dataDir, "PG_VERSION"))
	if err != nil {
		hint := ""
		if _, err := os.Stat(filepath.Join(pg.dataDir, "mysql")); err == nil {
			hint = " (it looks like MySQL or MariaDB: engine: mysql)"
		}
		return fmt.Errorf("data_dir %s holds no PostgreSQL cluster: no PG_VERSION file%s: %w", pg.job.Rules.DataDir, hint, errdefs.ErrInvalidArgument)
	}
	ver := strings.TrimSpace(string(b))
	pg.major, err = strconv.Atoi(ver)
	if err != nil || pg.major < minPostgres {
		return fmt.Errorf("data_dir %s is PostgreSQL %s; masking needs PostgreSQL %d or later: %w", pg.job.Rules.DataDir, ver, minPostgres, errdefs.ErrFailedPrecondition)
	}
	if pg.own, err = ownerOf(pg.dataDir); err != nil {
		return err
	}
	if pg.own.uid == 0 {
		return fmt.Errorf("data_dir %s is owned by root, and PostgreSQL does not run as root: %w", pg.job.Rules.DataDir, errdefs.ErrFailedPrecondition)
	}
	if pg.bin, pg.ver, err = findPostgres(ctx, pg.major); err != nil {
		return err
	}
	pg.logf("server %s (%s), as uid %d (%s)", pg.bin, pg.ver, pg.own.uid, pg.own.name)

	// The snapshot was taken under a running server: its lock file names a
	// process of the production host. Standby settings would make the
	// copy follow production; it starts as a primary instead.
	for _, f := range []string{"postmaster.pid", "standby.signal", "recovery.signal"} {
		if err := os.Remove(filepath.Join(pg.dataDir, f)); err == nil {
			pg.logf("removed %s from the copy", f)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	pg.sock = filepath.Join(pg.job.WorkDir, "s")
	if err := privateDir(pg.sock, pg.own); err != nil {
		return err
	}
	w := pg.job.WorkDir
	if err := writeShared(filepath.Join(w, "pg_hba.conf"), []byte("local all all trust\n")); err != nil {
		return err
	}
	if err := writeShared(filepath.Join(w, "pg_ident.conf"), nil); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(pg.dataDir, "postgresql.conf")); errors.Is(err, os.ErrNotExist) {
		// Debian keeps the configuration in /etc: start from the defaults.
		pg.conf = filepath.Join(w, "postgresql.conf")
		if err := writeShared(pg.conf, nil); err != nil {
			return err
		}
	}
	pg.users = []string{"postgres", pg.own.name}
	if u := pg.job.Rules.User; u != "" {
		pg.users = []string{u}
	}
	pg.users = slices.Compact(pg.users)
	return nil
}

var pgVersionRE = regexp.MustCompile(`\(PostgreSQL\) ([0-9]+)(\.[0-9]+)?`)

// findPostgres finds the postgres binary of the major version: in Debian's
// and the PGDG packages' places, then in PATH.
func findPostgres(ctx context.Context, major int) (string, string, error) {
	m := strconv.Itoa(major)
	cands := []string{"/usr/lib/postgresql/" + m + "/bin/postgres", "/usr/pgsql-" + m + "/bin/postgres", "/usr/local/pgsql/bin/postgres"}
	if p, err := exec.LookPath("postgres"); err == nil {
		cands = append(cands, p)
	}
	var found []string
	for _, c := range cands {
		if _, err := os.Stat(c); err != nil {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(vctx, c, "--version").Output()
		cancel()
		sm := pgVersionRE.FindStringSubmatch(string(out))
		if err != nil || sm == nil {
			continue
		}
		if sm[1] == m {
			return c, "PostgreSQL " + sm[1] + sm[2], nil
		}
		found = append(found, fmt.Sprintf("%s at %s", sm[1], c))
	}
	others, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	found = append(found, others...)
	msg := "none"
	if len(found) > 0 {
		msg = strings.Join(slices.Compact(found), ", ")
	}
	return "", "", fmt.Errorf("the data directory is PostgreSQL %d, and this node has no PostgreSQL %d server (found: %s); install it (Debian: apt-get install postgresql-%d): %w",
		major, major, msg, major, errdefs.ErrFailedPrecondition)
}

func (pg *postgres) start(ctx context.Context) (database, error) {
	w := pg.job.WorkDir
	args := []string{"-D", pg.dataDir}
	set := func(kv ...string) {
		for _, s := range kv {
			args = append(args, "-c", s)
		}
	}
	if pg.conf != "" {
		set("config_file=" + pg.conf)
	}
	set("listen_addresses=", "unix_socket_directories="+pg.sock, "unix_socket_permissions=0700",
		"port="+strconv.Itoa(pgPort),
		"hba_file="+filepath.Join(w, "pg_hba.conf"), "ident_file="+filepath.Join(w, "pg_ident.conf"),
		// Nothing leaves the node: no archiving, no replication from or to it.
		"archive_mode=off", "max_logical_replication_workers=0", "primary_conninfo=", "restore_command=",
		// A production configuration may not fit this node.
		"shared_buffers=128MB", "huge_pages=off", "ssl=off", "external_pid_file=",
		"lc_messages=C", "cluster_name=strata-mask",
		// The copy is thrown away unless the server stops cleanly.
		"fsync=off", "synchronous_commit=off", "full_page_writes=off", "wal_recycle=off",
		"autovacuum=off", "jit=off",
		// The log is kept: no statement text and no error details, which
		// could hold original values.
		"logging_collector=off", "log_destination=stderr", "log_statement=none",
		"log_min_duration_statement=-1", "log_min_error_statement=panic", "log_error_verbosity=terse",
	)
	var err error
	pg.proc, err = startProcess(pg.bin, args, pg.own, w, pg.job.Log)
	if err != nil {
		return nil, err
	}
	var db *pgdb
	err = pg.proc.waitReady(ctx, pg.ver, pg.job.StartTimeout, func(ctx context.Context) error {
		var err error
		db, err = pg.connect(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// connect connects as the first of pg.users that exists, to the rules'
// database or the one database the cluster holds besides postgres.
func (pg *postgres) connect(ctx context.Context) (*pgdb, error) {
	dial := func(user, db string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig("sslmode=disable")
		if err != nil {
			return nil, err
		}
		cfg.Host, cfg.Port, cfg.User, cfg.Database, cfg.Password = pg.sock, pgPort, user, db, ""
		cfg.Fallbacks = nil
		cfg.RuntimeParams = map[string]string{"application_name": "strata-mask"}
		return pgx.ConnectConfig(ctx, cfg)
	}
	want := pg.job.Rules.Database
	first := want
	if first == "" {
		first = "postgres"
	}
	var conn *pgx.Conn
	var user string
	var errs []string
	for _, u := range pg.users {
		var err error
		conn, err = dial(u, first)
		if err != nil && want == "" && pgCode(err) == "3D000" {
			conn, err = dial(u, "template1") // "postgres" was dropped
		}
		if err == nil {
			user = u
			break
		}
		if code := pgCode(err); code != "28000" && code != "28P01" {
			return nil, err // not up yet, or another problem
		}
		errs = append(errs, oneLine(err.Error()))
	}
	if conn == nil {
		return nil, permanent(fmt.Errorf("no role to connect as (%s); name one with user: in the rules: %w", strings.Join(errs, "; "), errdefs.ErrFailedPrecondition))
	}
	if want == "" {
		rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate AND datname <> 'postgres' ORDER BY 1`)
		if err != nil {
			conn.Close(ctx)
			return nil, err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			conn.Close(ctx)
			return nil, err
		}
		switch len(names) {
		case 0:
			want = "postgres"
		case 1:
			want = names[0]
		default:
			conn.Close(ctx)
			return nil, permanent(fmt.Errorf("the cluster holds databases %s: name the one to mask with database: in the rules: %w", strings.Join(names, ", "), errdefs.ErrInvalidArgument))
		}
	}
	if conn.Config().Database != want {
		conn.Close(ctx)
		var err error
		if conn, err = dial(user, want); err != nil {
			if pgCode(err) == "3D000" {
				return nil, permanent(fmt.Errorf("the cluster has no database %q: %w", want, errdefs.ErrInvalidArgument))
			}
			return nil, err
		}
	}
	return &pgdb{conn: conn, name: want}, nil
}

func (pg *postgres) stop(ctx context.Context) error {
	// SIGINT: fast shutdown, which ends with a checkpoint.
	return pg.proc.stop(ctx, syscall.SIGINT, pg.ver)
}

func (pg *postgres) kill() { pg.proc.kill() }

// finish drops the write-ahead log, which holds production's recent
// changes (pg_resetwal, safe after a clean stop), and the server logs the
// production server left in the data directory.
func (pg *postgres) finish(ctx context.Context) error {
	reset := filepath.Join(filepath.Dir(pg.bin), "pg_resetwal")
	if _, err := os.Stat(reset); err != nil {
		return fmt.Errorf("%s is missing: the write-ahead log, which holds original values, cannot be dropped: %w", reset, errdefs.ErrFailedPrecondition)
	}
	if err := runAs(ctx, reset, []string{"-D", pg.dataDir}, pg.own, pg.job.WorkDir, pg.job.Log); err != nil {
		return err
	}
	n, err := removeFiles(filepath.Join(pg.dataDir, "log"), filepath.Join(pg.dataDir, "pg_log"))
	if n > 0 {
		pg.logf("removed %d server log files of production", n)
	}
	return err
}

// removeFiles removes the regular files directly in dirs (missing dirs are fine).
func removeFiles(dirs ...string) (int, error) {
	n := 0
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				if err := os.Remove(filepath.Join(d, e.Name())); err != nil {
					return n, err
				}
				n++
			}
		}
	}
	return n, nil
}

// pgCode returns the SQLSTATE of a PostgreSQL error, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// pgdb is a connection to the PostgreSQL server.
type pgdb struct {
	conn *pgx.Conn
	name string
}

func (d *pgdb) dbName() string { return d.name }
func (d *pgdb) close() error   { return d.conn.Close(context.Background()) }

func pgIdent(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

func (d *pgdb) describe(ctx context.Context, t Table) ([]columnInfo, error) {
	var oid uint32
	err := d.conn.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		rows, err := d.conn.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1 LIMIT 30`, t.Schema)
		if err != nil {
			return nil, err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, err
		}
		there := "schema " + t.Schema + " has no tables"
		if len(names) > 0 {
			there = "tables in " + t.Schema + ": " + strings.Join(names, ", ")
		}
		return nil, fmt.Errorf("database %s has no table %s (%s): %w", d.name, t, there, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	rows, err := d.conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory = 'S',
			NOT a.attnotnull, CASE WHEN t.typcategory = 'S' AND a.atttypmod > 4 THEN a.atttypmod - 4 ELSE 0 END,
			a.attgenerated <> ''
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, oid)
	if err != nil {
		return nil, err
	}
	var cols []columnInfo
	for rows.Next() {
		var c columnInfo
		if err := rows.Scan(&c.name, &c.typ, &c.text, &c.nullable, &c.maxLen, &c.generated); err != nil {
			rows.Close()
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func (d *pgdb) count(ctx context.Context, t Table) (int64, error) {
	var n int64
	err := d.conn.QueryRow(ctx, "SELECT count(*) FROM "+pgIdent(t.Schema, t.Name)).Scan(&n)
	return n, err
}

func (d *pgdb) sample(ctx context.Context, t Table, col string, n int) ([]string, error) {
	c := pgIdent(col)
	rows, err := d.conn.Query(ctx, fmt.Sprintf("SELECT %s::text FROM %s WHERE %s IS NOT NULL AND length(%s::text) >= %d ORDER BY random() LIMIT %d",
		c, pgIdent(t.Schema, t.Name), c, c, MinSampleLength, n))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (d *pgdb) find(ctx context.Context, t Table, cols []string, values [][]string) ([][]int64, error) {
	var exprs []string
	args := make([]any, len(values))
	for i, v := range values {
		args[i] = v
	}
	for _, c := range cols {
		for i := range values {
			exprs = append(exprs, fmt.Sprintf("count(*) FILTER (WHERE %s::text = ANY($%d::text[]))", pgIdent(c), i+1))
		}
	}
	return countMatrix(d.conn.QueryRow(ctx, "SELECT "+strings.Join(exprs, ", ")+" FROM "+pgIdent(t.Schema, t.Name), args...).Scan, len(cols), len(values))
}

// mask applies the plan in one transaction with triggers and foreign-key
// checks off (session_replication_role = replica): audit triggers would
// copy the originals elsewhere, and the keys stay consistent because equal
// values get equal fakes. Value transformers run as lookup tables (each
// distinct value computed once, loaded with COPY) hash-joined in one
// UPDATE per table; shuffles permute values by row position.
func (d *pgdb) mask(ctx context.Context, m *Masker, plan []tablePlan, logf func(string, ...any)) error {
	tx, err := d.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
		return err
	}
	tmp := 0
	for _, p := range plan {
		start := time.Now()
		tbl := pgIdent(p.table.Schema, p.table.Name)
		var sets, nonNull, joins, fakes []string
		for _, c := range p.columns {
			col := pgIdent(c.Name)
			switch {
			case c.Transform == Shuffle:
				tmp++
				t0 := time.Now()
				if err := d.shuffle(ctx, tx, m, p.table, c, tmp); err != nil {
					return fmt.Errorf("shuffle %s.%s: %w", p.table, c.Name, err)
				}
				logf("shuffled %s.%s in %s", p.table, c.Name, time.Since(t0).Round(time.Millisecond))
			case c.Transform == Null:
				sets = append(sets, col+" = NULL")
				nonNull = append(nonNull, "s."+col+" IS NOT NULL")
			case c.Transform.valueMapped():
				tmp++
				name := fmt.Sprintf("strata_map_%d", tmp)
				t0 := time.Now()
				n, err := d.loadMap(ctx, tx, m, p.table, c, name)
				if err != nil {
					return fmt.Errorf("%s.%s: %w", p.table, c.Name, err)
				}
				logf("computed %d fakes for %s.%s (%s) in %s", n, p.table, c.Name, c.Transform, time.Since(t0).Round(time.Millisecond))
				joins = append(joins, fmt.Sprintf("LEFT JOIN pg_temp.%s m%d ON m%d.orig = s.%s::text", name, tmp, tmp, col))
				fakes = append(fakes, fmt.Sprintf("m%d.fake AS f%d", tmp, tmp))
				sets = append(sets, fmt.Sprintf("%s = j.f%d", col, tmp))
				nonNull = append(nonNull, "s."+col+" IS NOT NULL")
			}
		}
		if len(sets) > 0 {
			// One pass: the rows joined (by hash) to their fakes, then to
			// themselves by physical position.
			q := fmt.Sprintf("UPDATE %s AS t SET %s FROM (SELECT s.tableoid AS toid, s.ctid AS id%s FROM %s s %s WHERE %s) j WHERE t.tableoid = j.toid AND t.ctid = j.id",
				tbl, strings.Join(sets, ", "), strings.Join(prepend(", ", fakes), ""), tbl, strings.Join(joins, " "), strings.Join(nonNull, " OR "))
			tag, err := tx.Exec(ctx, q)
			if err != nil {
				return fmt.Errorf("update %s: %w", p.table, pgErr(err))
			}
			logf("masked %s: %d rows updated in %s", p.table, tag.RowsAffected(), time.Since(start).Round(time.Millisecond))
		}
	}
	return tx.Commit(ctx)
}

// loadMap fills temporary table name with (original, fake) for every
// distinct value of the column.
func (d *pgdb) loadMap(ctx context.Context, tx pgx.Tx, m *Masker, t Table, c plannedColumn, name string) (int, error) {
	if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (orig text PRIMARY KEY, fake text) ON COMMIT DROP", name)); err != nil {
		return 0, err
	}
	col := pgIdent(c.Name)
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT DISTINCT %s::text FROM %s WHERE %s IS NOT NULL", col, pgIdent(t.Schema, t.Name), col))
	if err != nil {
		return 0, err
	}
	origs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	fakes := m.values(c.Transform, origs, c.info.maxLen)
	src := make([][]any, len(origs))
	for i, o := range origs {
		src[i] = []any{o, fakes[i]}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{name}, []string{"orig", "fake"}, pgx.CopyFromRows(src)); err != nil {
		return 0, err
	}
	_, err = tx.Exec(ctx, "ANALYZE pg_temp."+name)
	return len(origs), err
}

// shuffle permutes the column's values among the table's rows.
func (d *pgdb) shuffle(ctx context.Context, tx pgx.Tx, m *Masker, t Table, c plannedColumn, n int) error {
	col := pgIdent(c.Name)
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT tableoid::text, ctid::text, %s::text FROM %s ORDER BY tableoid, ctid", col, pgIdent(t.Schema, t.Name)))
	if err != nil {
		return err
	}
	var toids, tids, ids []string
	var vals []*string
	for rows.Next() {
		var toid, tid string
		var v *string
		if err := rows.Scan(&toid, &tid, &v); err != nil {
			rows.Close()
			return err
		}
		toids, tids, ids, vals = append(toids, toid), append(tids, tid), append(ids, toid+":"+tid), append(vals, v)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	perm := m.shuffled(t.String()+"."+c.Name, ids)
	name := fmt.Sprintf("strata_shuffle_%d", n)
	if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (toid text, tid text, v text) ON COMMIT DROP", name)); err != nil {
		return err
	}
	src := make([][]any, len(ids))
	for i := range ids {
		src[i] = []any{toids[i], tids[i], vals[perm[i]]}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{name}, []string{"toid", "tid", "v"}, pgx.CopyFromRows(src)); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, fmt.Sprintf("UPDATE %s AS t SET %s = s.v::%s FROM pg_temp.%s s WHERE t.tableoid = s.toid::oid AND t.ctid = s.tid::tid",
		pgIdent(t.Schema, t.Name), col, c.info.typ, name))
	return pgErr(err)
}

func prepend(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}

// pgErr keeps a PostgreSQL error's message and constraint but not its
// detail, which can quote original values.
func pgErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.ConstraintName != "" {
			msg += " (constraint " + pe.ConstraintName + ")"
		}
		return fmt.Errorf("%s (SQLSTATE %s)", msg, pe.Code)
	}
	return err
}

// scrub rewrites the masked tables (VACUUM FULL: the old row versions and
// index entries, which hold the originals, go with the old files),
// re-gathers their statistics (pg_statistic keeps common values and
// histograms) and rewrites pg_statistic, then checkpoints.
func (d *pgdb) scrub(ctx context.Context, tables []Table) error {
	var stmts []string
	for _, t := range tables {
		stmts = append(stmts, "VACUUM (FULL, ANALYZE) "+pgIdent(t.Schema, t.Name))
	}
	stmts = append(stmts, "VACUUM (FULL) pg_catalog.pg_statistic", "CHECKPOINT")
	for _, s := range stmts {
		if _, err := d.conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, pgErr(err))
		}
	}
	return nil
}
