package mask

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/strata-storage/strata/internal/errdefs"
)

// mysql runs a MySQL or MariaDB data directory privately: no TCP
// listener (--skip-networking), a socket in the work directory, no grant
// tables (only that socket reaches it), no binary log, no replication
// threads, no event scheduler, none of the node's option files.
type mysql struct {
	job     *Job
	dataDir string
	logf    func(string, ...any)

	own  owner
	bin  string
	ver  string
	sock string
	proc *process
}

func (my *mysql) version() string { return my.ver }

func (my *mysql) prepare(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(my.dataDir, "mysql")); err != nil {
		hint := ""
		if _, err := os.Stat(filepath.Join(my.dataDir, "PG_VERSION")); err == nil {
			hint = " (it looks like PostgreSQL: engine: postgres)"
		}
		return fmt.Errorf("data_dir %s holds no MySQL or MariaDB data directory: no mysql system database%s: %w", my.job.Rules.DataDir, hint, errdefs.ErrInvalidArgument)
	}
	var err error
	if my.own, err = ownerOf(my.dataDir); err != nil {
		return err
	}
	if my.bin, my.ver, err = findMySQL(ctx); err != nil {
		return err
	}
	my.logf("server %s (%s), as uid %d (%s)", my.bin, my.ver, my.own.uid, my.own.name)
	my.sock = filepath.Join(my.job.WorkDir, "s")
	if err := privateDir(my.sock, my.own); err != nil {
		return err
	}
	return privateDir(filepath.Join(my.job.WorkDir, "tmp"), my.own)
}

var mysqlVersionRE = regexp.MustCompile(`Ver ([0-9][0-9.]*)(-MariaDB)?`)

func findMySQL(ctx context.Context) (string, string, error) {
	var cands []string
	for _, n := range []string{"mariadbd", "mysqld"} {
		if p, err := exec.LookPath(n); err == nil {
			cands = append(cands, p)
		}
	}
	cands = append(cands, "/usr/sbin/mariadbd", "/usr/sbin/mysqld", "/usr/libexec/mysqld")
	for _, c := range cands {
		if _, err := os.Stat(c); err != nil {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(vctx, c, "--no-defaults", "--version").Output()
		cancel()
		sm := mysqlVersionRE.FindStringSubmatch(string(out))
		if err != nil || sm == nil {
			continue
		}
		if sm[2] != "" {
			return c, "MariaDB " + sm[1], nil
		}
		return c, "MySQL " + sm[1], nil
	}
	return "", "", fmt.Errorf("this node has no MySQL or MariaDB server (mariadbd or mysqld); install one (Debian: apt-get install mariadb-server): %w", errdefs.ErrFailedPrecondition)
}

func (my *mysql) start(ctx context.Context) (database, error) {
	w := my.job.WorkDir
	args := []string{
		"--no-defaults",
		"--datadir=" + my.dataDir,
		"--socket=" + filepath.Join(my.sock, "mysqld.sock"),
		"--pid-file=" + filepath.Join(my.sock, "mysqld.pid"),
		"--tmpdir=" + filepath.Join(w, "tmp"),
		"--skip-networking", "--skip-grant-tables", "--skip-slave-start", "--skip-log-bin",
		"--event-scheduler=DISABLED",
		"--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=0",
		"--general-log=0", "--slow-query-log=0",
	}
	if my.own.uid == 0 {
		args = append(args, "--user=root")
	}
	var err error
	my.proc, err = startProcess(my.bin, args, my.own, w, my.job.Log)
	if err != nil {
		return nil, err
	}
	cfg := mysqldrv.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = filepath.Join(my.sock, "mysqld.sock")
	if err := cfg.Apply(mysqldrv.Charset("utf8mb4", "")); err != nil {
		return nil, err
	}
	connector, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	var conn *sql.Conn
	err = my.proc.waitReady(ctx, my.ver, my.job.StartTimeout, func(ctx context.Context) error {
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		if err := c.PingContext(ctx); err != nil {
			c.Close()
			return err
		}
		conn = c
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &mydb{db: db, conn: conn}, nil
}

func (my *mysql) stop(ctx context.Context) error {
	return my.proc.stop(ctx, syscall.SIGTERM, my.ver)
}

func (my *mysql) kill() { my.proc.kill() }

// binlogRE matches binary and relay log files, which hold every change
// production made; master.info holds the credentials of its primary.
var binlogRE = regexp.MustCompile(`^([A-Za-z0-9_.-]+-bin|binlog|[A-Za-z0-9_.-]+-relay-bin)\.([0-9]{6}|index)$|^(master|relay-log|multi-master)\.info$`)

// finish removes the binary and relay logs production left in the data
// directory.
func (my *mysql) finish(ctx context.Context) error {
	ents, err := os.ReadDir(my.dataDir)
	if err != nil {
		return err
	}
	n := 0
	for _, e := range ents {
		if e.Type().IsRegular() && binlogRE.MatchString(e.Name()) {
			if err := os.Remove(filepath.Join(my.dataDir, e.Name())); err != nil {
				return err
			}
			n++
		}
	}
	if n > 0 {
		my.logf("removed %d binary log and replication files of production", n)
	}
	return nil
}

// mydb is one connection to the MySQL server (temporary tables belong to
// a connection).
type mydb struct {
	db   *sql.DB
	conn *sql.Conn
}

func (d *mydb) dbName() string { return "" }

func (d *mydb) close() error {
	d.conn.Close()
	return d.db.Close()
}

func myIdent(parts ...string) string {
	q := make([]string, len(parts))
	for i, p := range parts {
		q[i] = "`" + strings.ReplaceAll(p, "`", "``") + "`"
	}
	return strings.Join(q, ".")
}

var myTextTypes = map[string]bool{"char": true, "varchar": true, "tinytext": true, "text": true, "mediumtext": true, "longtext": true}

func (d *mydb) describe(ctx context.Context, t Table) ([]columnInfo, error) {
	var n int
	if err := d.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_TYPE = 'BASE TABLE'`,
		t.Schema, t.Name).Scan(&n); err != nil {
		return nil, err
	}
	if n == 0 {
		rows, err := d.conn.QueryContext(ctx, `SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1 LIMIT 30`, t.Schema)
		if err != nil {
			return nil, err
		}
		names, err := scanStrings(rows)
		if err != nil {
			return nil, err
		}
		there := "database " + t.Schema + " has no tables or does not exist"
		if len(names) > 0 {
			there = "tables in " + t.Schema + ": " + strings.Join(names, ", ")
		}
		return nil, fmt.Errorf("there is no table %s (%s): %w", t, there, errdefs.ErrNotFound)
	}
	rows, err := d.conn.QueryContext(ctx, `SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE = 'YES',
			COALESCE(CHARACTER_MAXIMUM_LENGTH, 0), EXTRA LIKE '%GENERATED%'
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, t.Schema, t.Name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []columnInfo
	for rows.Next() {
		var c columnInfo
		var dataType string
		var maxLen int64
		if err := rows.Scan(&c.name, &c.typ, &dataType, &c.nullable, &maxLen, &c.generated); err != nil {
			return nil, err
		}
		c.text = myTextTypes[strings.ToLower(dataType)]
		if c.text && maxLen < 1<<20 {
			c.maxLen = int(maxLen)
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (d *mydb) count(ctx context.Context, t Table) (int64, error) {
	var n int64
	err := d.conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+myIdent(t.Schema, t.Name)).Scan(&n)
	return n, err
}

func (d *mydb) sample(ctx context.Context, t Table, col string, n int) ([]string, error) {
	c := myIdent(col)
	rows, err := d.conn.QueryContext(ctx, fmt.Sprintf("SELECT CONVERT(%s USING utf8mb4) FROM %s WHERE %s IS NOT NULL AND CHAR_LENGTH(%s) >= %d ORDER BY RAND() LIMIT %d",
		c, myIdent(t.Schema, t.Name), c, c, MinSampleLength, n))
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

func (d *mydb) find(ctx context.Context, t Table, cols []string, values [][]string) ([][]int64, error) {
	var exprs []string
	var args []any
	for _, c := range cols {
		for _, vs := range values {
			exprs = append(exprs, fmt.Sprintf("COALESCE(SUM(CONVERT(%s USING utf8mb4) IN (%s)), 0)", myIdent(c), strings.TrimSuffix(strings.Repeat("?,", len(vs)), ",")))
			for _, v := range vs {
				args = append(args, v)
			}
		}
	}
	return countMatrix(d.conn.QueryRowContext(ctx, "SELECT "+strings.Join(exprs, ", ")+" FROM "+myIdent(t.Schema, t.Name), args...).Scan, len(cols), len(values))
}

// mask applies the plan with foreign-key checks off (equal values get
// equal fakes, so keys stay consistent). Value transformers run as lookup
// tables keyed by the SHA-256 of each distinct value (whatever the
// column's collation), joined in one UPDATE per table.
func (d *mydb) mask(ctx context.Context, m *Masker, plan []tablePlan, logf func(string, ...any)) error {
	if _, err := d.conn.ExecContext(ctx, "SET SESSION foreign_key_checks = 0, SESSION sql_mode = 'STRICT_ALL_TABLES'"); err != nil {
		return err
	}
	tmp := 0
	for _, p := range plan {
		start := time.Now()
		// Temporary tables live in the current database.
		if _, err := d.conn.ExecContext(ctx, "USE "+myIdent(p.table.Schema)); err != nil {
			return err
		}
		var joins, sets []string
		for _, c := range p.columns {
			col := myIdent(c.Name)
			switch {
			case c.Transform == Shuffle:
				tmp++
				if err := d.shuffle(ctx, m, p.table, c, tmp); err != nil {
					return fmt.Errorf("shuffle %s.%s: %w", p.table, c.Name, err)
				}
			case c.Transform == Null:
				sets = append(sets, "t."+col+" = NULL")
			case c.Transform.valueMapped():
				tmp++
				name := fmt.Sprintf("strata_map_%d", tmp)
				if err := d.loadMap(ctx, m, p.table, c, name); err != nil {
					return fmt.Errorf("%s.%s: %w", p.table, c.Name, err)
				}
				joins = append(joins, fmt.Sprintf("LEFT JOIN %s AS m%d ON m%d.h = UNHEX(SHA2(CONVERT(t.%s USING utf8mb4), 256))", name, tmp, tmp, col))
				sets = append(sets, fmt.Sprintf("t.%s = m%d.fake", col, tmp))
			}
		}
		if len(sets) > 0 {
			res, err := d.conn.ExecContext(ctx, fmt.Sprintf("UPDATE %s AS t %s SET %s", myIdent(p.table.Schema, p.table.Name), strings.Join(joins, " "), strings.Join(sets, ", ")))
			if err != nil {
				return fmt.Errorf("update %s: %w", p.table, myErr(err))
			}
			n, _ := res.RowsAffected()
			logf("masked %s: %d rows changed in %s", p.table, n, time.Since(start).Round(time.Millisecond))
		}
	}
	return nil
}

const myBatch = 1000

// insertRows inserts rows into table in batches.
func (d *mydb) insertRows(ctx context.Context, table string, cols []string, rows [][]any) error {
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + ")"
	for i := 0; i < len(rows); i += myBatch {
		batch := rows[i:min(i+myBatch, len(rows))]
		args := make([]any, 0, len(batch)*len(cols))
		for _, r := range batch {
			args = append(args, r...)
		}
		q := fmt.Sprintf("INSERT INTO %s (%s) VALUES %s", table, strings.Join(cols, ", "), strings.TrimSuffix(strings.Repeat(row+",", len(batch)), ","))
		if _, err := d.conn.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

func (d *mydb) loadMap(ctx context.Context, m *Masker, t Table, c plannedColumn, name string) error {
	if _, err := d.conn.ExecContext(ctx, fmt.Sprintf("CREATE TEMPORARY TABLE %s (h BINARY(32) PRIMARY KEY, fake LONGTEXT CHARACTER SET utf8mb4)", name)); err != nil {
		return err
	}
	col := myIdent(c.Name)
	rows, err := d.conn.QueryContext(ctx, fmt.Sprintf("SELECT DISTINCT CONVERT(%s USING utf8mb4) COLLATE utf8mb4_bin FROM %s WHERE %s IS NOT NULL", col, myIdent(t.Schema, t.Name), col))
	if err != nil {
		return err
	}
	origs, err := scanStrings(rows)
	if err != nil {
		return err
	}
	fakes := m.values(c.Transform, origs, c.info.maxLen)
	src := make([][]any, len(origs))
	for i, o := range origs {
		h := sha256.Sum256([]byte(o))
		src[i] = []any{h[:], fakes[i]}
	}
	return d.insertRows(ctx, name, []string{"h", "fake"}, src)
}

// shuffle permutes the column's values among the rows; rows are told
// apart by their primary key.
func (d *mydb) shuffle(ctx context.Context, m *Masker, t Table, c plannedColumn, n int) error {
	key, err := d.primaryKey(ctx, t)
	if err != nil {
		return err
	}
	keyCols := make([]string, len(key))
	for i, k := range key {
		keyCols[i] = "CAST(" + myIdent(k) + " AS CHAR)"
	}
	rows, err := d.conn.QueryContext(ctx, fmt.Sprintf("SELECT %s, %s FROM %s ORDER BY %s", strings.Join(keyCols, ", "), myIdent(c.Name),
		myIdent(t.Schema, t.Name), strings.Join(quoteAll(key), ", ")))
	if err != nil {
		return err
	}
	var keys [][]string
	var ids []string
	var vals [][]byte
	for rows.Next() {
		k := make([]string, len(key))
		var v []byte
		dest := make([]any, 0, len(key)+1)
		for i := range k {
			dest = append(dest, &k[i])
		}
		dest = append(dest, &v)
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return err
		}
		keys, ids, vals = append(keys, k), append(ids, strings.Join(k, "\x00")), append(vals, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	perm := m.shuffled(t.String()+"."+c.Name, ids)
	name := fmt.Sprintf("strata_shuffle_%d", n)
	var defs, cols, conds []string
	for i, k := range key {
		defs = append(defs, fmt.Sprintf("k%d VARCHAR(255) CHARACTER SET utf8mb4", i))
		cols = append(cols, fmt.Sprintf("k%d", i))
		conds = append(conds, fmt.Sprintf("t.%s = s.k%d", myIdent(k), i))
	}
	if _, err := d.conn.ExecContext(ctx, fmt.Sprintf("CREATE TEMPORARY TABLE %s (%s, v LONGBLOB)", name, strings.Join(defs, ", "))); err != nil {
		return err
	}
	src := make([][]any, len(ids))
	for i := range ids {
		r := make([]any, 0, len(key)+1)
		for _, k := range keys[i] {
			r = append(r, k)
		}
		src[i] = append(r, vals[perm[i]])
	}
	if err := d.insertRows(ctx, name, append(cols, "v"), src); err != nil {
		return err
	}
	_, err = d.conn.ExecContext(ctx, fmt.Sprintf("UPDATE %s AS t JOIN %s AS s ON %s SET t.%s = s.v",
		myIdent(t.Schema, t.Name), name, strings.Join(conds, " AND "), myIdent(c.Name)))
	return myErr(err)
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = myIdent(n)
	}
	return out
}

func (d *mydb) primaryKey(ctx context.Context, t Table) ([]string, error) {
	rows, err := d.conn.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`, t.Schema, t.Name)
	if err != nil {
		return nil, err
	}
	key, err := scanStrings(rows)
	if err != nil {
		return nil, err
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("table %s has no primary key, which shuffle needs on MySQL: %w", t, errdefs.ErrFailedPrecondition)
	}
	return key, nil
}

// myErr keeps a MySQL error's number and message.
func myErr(err error) error {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		return fmt.Errorf("%s (error %d)", me.Message, me.Number)
	}
	return err
}

// scrub rebuilds the masked tables (OPTIMIZE: old row versions go with
// the old files), drops column statistics that keep values (MariaDB's
// mysql.column_stats, MySQL's histograms), and asks for a slow shutdown,
// which purges the undo logs.
func (d *mydb) scrub(ctx context.Context, tables []Table) error {
	for _, t := range tables {
		// MariaDB keeps min and max values per column; MySQL 8 has histograms.
		d.conn.ExecContext(ctx, "DELETE FROM mysql.column_stats WHERE db_name = ? AND table_name = ?", t.Schema, t.Name)
		rows, err := d.conn.QueryContext(ctx, "OPTIMIZE TABLE "+myIdent(t.Schema, t.Name))
		if err != nil {
			return fmt.Errorf("optimize %s: %w", t, myErr(err))
		}
		for rows.Next() {
			var tbl, op, typ, text string
			if err := rows.Scan(&tbl, &op, &typ, &text); err != nil {
				rows.Close()
				return err
			}
			if strings.EqualFold(typ, "error") {
				rows.Close()
				return fmt.Errorf("optimize %s: %s", t, text)
			}
		}
		rows.Close()
	}
	_, err := d.conn.ExecContext(ctx, "SET GLOBAL innodb_fast_shutdown = 0")
	return myErr(err)
}
