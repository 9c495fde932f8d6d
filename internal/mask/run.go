package mask

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Job is one masking run over a database directory.
type Job struct {
	Rules *Rules
	// Secret is the value of the rules' salt secret.
	Secret []byte
	// Root is the root of the filesystem that holds the database (the
	// working clone, mounted); Rules.DataDir is relative to it.
	Root string
	// Trim runs fstrim on Root at the end, so that the blocks of deleted
	// files (old table files, the write-ahead log) read as zeroes rather
	// than as the production data they held. Set it for a filesystem of
	// its own (a mounted volume).
	Trim bool
	// WorkDir is a private directory for the server's socket and the
	// files Run writes; the database's user must be able to traverse it
	// (mode 0711). It must be short: unix socket paths are at most 107 bytes.
	WorkDir string
	// Log receives the database server's output and Run's own account of
	// each step. It must be an *os.File to take the server's output.
	Log *os.File
	// Samples is how many original values are sampled from each masked
	// column for the check (DefaultSamples when 0).
	Samples int
	// StartTimeout bounds the server's start, crash recovery included
	// (DefaultStartTimeout when 0).
	StartTimeout time.Duration
}

// Defaults of Job.
const (
	DefaultSamples      = 100
	DefaultStartTimeout = 10 * time.Minute
	// MinSampleLength: shorter values say nothing about anyone and could
	// match other data by chance, so they are not sampled.
	MinSampleLength = 6
	stopTimeout     = 5 * time.Minute
)

// Report says what a run did.
type Report struct {
	// Server is the database server that ran, e.g. "PostgreSQL 15.18".
	Server string
	// Database is the PostgreSQL database the tables are in.
	Database string
	Tables   []TableReport
	// Sampled is the number of distinct original values that were
	// sampled before masking and found nowhere after.
	Sampled int
	// Steps lists the steps and how long each took.
	Steps []StepTime
}

// TableReport is one masked table.
type TableReport struct {
	Name    string
	Rows    int64
	Columns int
}

// StepTime is one step of a run.
type StepTime struct {
	Step     string
	Duration time.Duration
}

// Steps of a run, as StepError and Report name them.
const (
	StepPrepare = "prepare"
	StepStart   = "start the database server"
	StepRules   = "check the rules against the database"
	StepSample  = "sample original values"
	StepMask    = "mask"
	StepCheck   = "check"
	StepScrub   = "scrub"
	StepStop    = "stop the database server"
	StepFinish  = "finish"
	StepTrim    = "trim"
)

// StepError says which step of a run failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// engine drives one kind of database server.
type engine interface {
	// prepare checks the data directory, finds the server binary and
	// writes what the server needs into the work directory.
	prepare(ctx context.Context) error
	// start starts the server and returns once it accepts connections.
	start(ctx context.Context) (database, error)
	// stop stops the server cleanly: an error when it does not exit
	// cleanly in time (it is then killed).
	stop(ctx context.Context) error
	// kill stops the server at once (after a failure).
	kill()
	// finish runs after a clean stop (removing what still holds originals).
	finish(ctx context.Context) error
	// version names the server, e.g. "PostgreSQL 15.18".
	version() string
}

// database is a connection to the running server.
type database interface {
	// describe returns the columns of table t, errdefs.ErrNotFound (with
	// the names there are) when it does not exist.
	describe(ctx context.Context, t Table) ([]columnInfo, error)
	count(ctx context.Context, t Table) (int64, error)
	// sample returns up to n values of column col (as text) of at least
	// MinSampleLength characters.
	sample(ctx context.Context, t Table, col string, n int) ([]string, error)
	// mask applies the plan.
	mask(ctx context.Context, m *Masker, plan []tablePlan, logf func(string, ...any)) error
	// find counts, for each column of cols and each list of values, the
	// rows whose column holds one of the values: counts[col][list].
	find(ctx context.Context, t Table, cols []string, values [][]string) ([][]int64, error)
	// scrub removes what still holds original values after the masking
	// committed (old row versions, statistics).
	scrub(ctx context.Context, tables []Table) error
	// dbName is the database connected to (PostgreSQL).
	dbName() string
	close() error
}

// columnInfo is a column as the database describes it.
type columnInfo struct {
	name     string
	typ      string // as the database writes it: "character varying(40)"
	text     bool   // a character type
	nullable bool
	maxLen   int // in characters; 0 when unbounded
	// generated columns cannot be written.
	generated bool
}

// tablePlan is what masking does to one table.
type tablePlan struct {
	table   Table
	columns []plannedColumn
	// search lists the text columns the check looks for originals in.
	search []string
}

type plannedColumn struct {
	Column
	info columnInfo
}

// Run masks the database of job: start its server, check the rules
// against it, sample, mask, check, scrub, stop it cleanly, and trim the
// filesystem. On error the server is stopped (killed if need be) and the
// error is a *StepError; the database is then half-masked and must be
// thrown away.
func Run(ctx context.Context, job Job) (Report, error) {
	var rep Report
	r := &runner{job: job, rep: &rep}
	if job.Samples == 0 {
		r.job.Samples = DefaultSamples
	}
	if job.StartTimeout == 0 {
		r.job.StartTimeout = DefaultStartTimeout
	}
	m, err := NewMasker(job.Secret)
	if err != nil {
		return rep, &StepError{StepPrepare, err}
	}
	r.masker = m
	err = r.run(ctx)
	if err != nil {
		r.logf("failed: %v", err)
	} else {
		r.logf("done")
	}
	return rep, err
}

type runner struct {
	job    Job
	rep    *Report
	masker *Masker
	eng    engine
	db     database
}

func (r *runner) logf(format string, args ...any) {
	if r.job.Log != nil {
		fmt.Fprintf(r.job.Log, "%s strata-mask: %s\n", time.Now().UTC().Format("2006-01-02 15:04:05.000 UTC"), fmt.Sprintf(format, args...))
	}
}

// do runs one step, timing it and naming it in its error.
func (r *runner) do(name string, fn func() error) error {
	r.logf("%s", name)
	start := time.Now()
	err := fn()
	r.rep.Steps = append(r.rep.Steps, StepTime{name, time.Since(start)})
	if err != nil {
		var se *StepError
		if errors.As(err, &se) {
			return err
		}
		return &StepError{name, err}
	}
	return nil
}

func (r *runner) run(ctx context.Context) (retErr error) {
	rules := r.job.Rules
	dataDir := filepath.Join(r.job.Root, rules.DataDir)
	err := r.do(StepPrepare, func() error {
		st, err := os.Stat(dataDir)
		if err != nil {
			return fmt.Errorf("data_dir %s: no such directory in the volume's filesystem: %w", rules.DataDir, errdefs.ErrInvalidArgument)
		}
		if !st.IsDir() {
			return fmt.Errorf("data_dir %s is not a directory: %w", rules.DataDir, errdefs.ErrInvalidArgument)
		}
		switch rules.Engine {
		case EnginePostgres:
			r.eng = &postgres{job: &r.job, dataDir: dataDir, logf: r.logf}
		case EngineMySQL:
			r.eng = &mysql{job: &r.job, dataDir: dataDir, logf: r.logf}
		default:
			return fmt.Errorf("engine %q: %w", rules.Engine, errdefs.ErrInvalidArgument)
		}
		return r.eng.prepare(ctx)
	})
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if r.db != nil {
			r.db.close()
		}
		if !stopped {
			// After a failure: a quick clean stop, else kill.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if err := r.eng.stop(sctx); err != nil {
				r.logf("the server did not stop cleanly: %v", err)
			}
			cancel()
			r.eng.kill()
		}
	}()
	if err := r.do(StepStart, func() error {
		db, err := r.eng.start(ctx)
		r.db = db
		return err
	}); err != nil {
		return err
	}
	r.rep.Server = r.eng.version()
	r.rep.Database = r.db.dbName()
	if r.rep.Database != "" {
		r.logf("%s is up; database %q", r.rep.Server, r.rep.Database)
	}

	var plan []tablePlan
	if err := r.do(StepRules, func() (err error) {
		plan, err = r.plan(ctx)
		return err
	}); err != nil {
		return err
	}

	type source struct {
		name   string
		values []string
	}
	var sources []source
	before := map[string]int64{}
	if err := r.do(StepSample, func() error {
		seen := map[string]bool{}
		for _, p := range plan {
			n, err := r.db.count(ctx, p.table)
			if err != nil {
				return fmt.Errorf("count rows of %s: %w", p.table, err)
			}
			before[p.table.String()] = n
			for _, c := range p.columns {
				if !c.Transform.removesOriginals() {
					continue
				}
				vals, err := r.db.sample(ctx, p.table, c.Name, r.job.Samples)
				if err != nil {
					return fmt.Errorf("sample %s.%s: %w", p.table, c.Name, err)
				}
				var keep []string
				for _, v := range vals {
					if utf8.RuneCountInString(v) >= MinSampleLength && !seen[v] {
						seen[v] = true
						keep = append(keep, v)
					}
				}
				if len(keep) > 0 {
					sources = append(sources, source{p.table.String() + "." + c.Name, keep})
				}
			}
		}
		r.rep.Sampled = len(seen)
		r.logf("sampled %d distinct original values from %d columns", len(seen), len(sources))
		return nil
	}); err != nil {
		return err
	}

	if err := r.do(StepMask, func() error { return r.db.mask(ctx, r.masker, plan, r.logf) }); err != nil {
		return err
	}

	if err := r.do(StepCheck, func() error {
		values := make([][]string, len(sources))
		for i, s := range sources {
			values[i] = s.values
		}
		var problems []string
		for _, p := range plan {
			n, err := r.db.count(ctx, p.table)
			if err != nil {
				return fmt.Errorf("count rows of %s: %w", p.table, err)
			}
			if n != before[p.table.String()] {
				problems = append(problems, fmt.Sprintf("%s had %d rows before masking and %d after", p.table, before[p.table.String()], n))
			}
			r.rep.Tables = append(r.rep.Tables, TableReport{Name: p.table.String(), Rows: n, Columns: len(p.columns)})
			if len(sources) == 0 || len(p.search) == 0 {
				continue
			}
			counts, err := r.db.find(ctx, p.table, p.search, values)
			if err != nil {
				return fmt.Errorf("search %s for original values: %w", p.table, err)
			}
			for ci, col := range p.search {
				for si, s := range sources {
					if counts[ci][si] > 0 {
						problems = append(problems, fmt.Sprintf("original values sampled from %s are still in %s.%s (%d rows)", s.name, p.table, col, counts[ci][si]))
					}
				}
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s: %w", strings.Join(problems, "; "), errdefs.ErrFailedPrecondition)
		}
		r.logf("no sampled original value is left; row counts are unchanged")
		return nil
	}); err != nil {
		return err
	}

	if err := r.do(StepScrub, func() error {
		tables := make([]Table, len(plan))
		for i, p := range plan {
			tables[i] = p.table
		}
		return r.db.scrub(ctx, tables)
	}); err != nil {
		return err
	}
	r.db.close()
	r.db = nil
	if err := r.do(StepStop, func() error { return r.eng.stop(ctx) }); err != nil {
		stopped = true // stop kills what does not exit
		return err
	}
	stopped = true
	if err := r.do(StepFinish, func() error { return r.eng.finish(ctx) }); err != nil {
		return err
	}
	if !r.job.Trim {
		return nil
	}
	return r.do(StepTrim, func() error { return trim(ctx, r.job.Root, r.logf) })
}

// plan checks the rules against the database's catalog: every table and
// column exists, and each transformer suits its column.
func (r *runner) plan(ctx context.Context) ([]tablePlan, error) {
	var plans []tablePlan
	var problems []string
	for _, t := range r.job.Rules.Tables {
		cols, err := r.db.describe(ctx, t)
		if errors.Is(err, errdefs.ErrNotFound) {
			problems = append(problems, err.Error())
			continue
		}
		if err != nil {
			return nil, err
		}
		byName := map[string]columnInfo{}
		var names []string
		p := tablePlan{table: t}
		for _, c := range cols {
			byName[c.name] = c
			names = append(names, c.name)
			if c.text {
				p.search = append(p.search, c.name)
			}
		}
		for _, c := range t.Columns {
			info, ok := byName[c.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("table %s has no column %q (its columns: %s)", t, c.Name, strings.Join(names, ", ")))
				continue
			}
			switch {
			case c.Transform == Keep:
			case info.generated:
				problems = append(problems, fmt.Sprintf("column %s.%s is generated from other columns: mask those, and keep it", t, c.Name))
			case c.Transform.valueMapped() && !info.text:
				problems = append(problems, fmt.Sprintf("column %s.%s is %s; %s needs a text column (char, varchar, text)", t, c.Name, info.typ, c.Transform))
			case c.Transform == Null && !info.nullable:
				problems = append(problems, fmt.Sprintf("column %s.%s is NOT NULL, so null cannot apply (use redact or a fake)", t, c.Name))
			}
			p.columns = append(p.columns, plannedColumn{Column: c, info: info})
		}
		plans = append(plans, p)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %w", strings.Join(problems, "; "), errdefs.ErrInvalidArgument)
	}
	return plans, nil
}

// countMatrix scans one row of cols*lists counts, column by column, into
// counts[col][list].
func countMatrix(scan func(dest ...any) error, cols, lists int) ([][]int64, error) {
	flat := make([]int64, cols*lists)
	dest := make([]any, len(flat))
	for i := range flat {
		dest[i] = &flat[i]
	}
	if err := scan(dest...); err != nil {
		return nil, err
	}
	out := make([][]int64, cols)
	for ci := range out {
		out[ci] = flat[ci*lists : (ci+1)*lists]
	}
	return out, nil
}

// valueMapped says whether the transformer maps each value to another by a
// function of the value alone (so it runs as a lookup table); these need a
// text column.
func (t Transform) valueMapped() bool {
	switch t {
	case FakeName, FakeEmail, FakePhone, FakeAddress, Hash, Redact:
		return true
	}
	return false
}

// removesOriginals says whether no original value of the column may remain
// after the transformer ran: the check samples such columns.
func (t Transform) removesOriginals() bool { return t.valueMapped() || t == Null }

// shuffled returns, for rows identified by ids (in a fixed order), which
// row's value each row gets: row i takes the value of row perm[i]. The
// permutation is a keyed function of the column and the ids.
func (m *Masker) shuffled(column string, ids []string) []int {
	type rk struct {
		key [32]byte
		i   int
	}
	keys := make([]rk, len(ids))
	for i, id := range ids {
		keys[i] = rk{m.ShuffleKey(column, id), i}
	}
	slices.SortFunc(keys, func(a, b rk) int { return strings.Compare(string(a.key[:]), string(b.key[:])) })
	perm := make([]int, len(ids))
	for i, k := range keys {
		perm[k.i] = i
	}
	return perm
}

// trim discards the filesystem's free blocks, so that the blocks of
// deleted files (old table files, logs) read as zeroes rather than as the
// production data they held.
func trim(ctx context.Context, root string, logf func(string, ...any)) error {
	path, err := exec.LookPath("fstrim")
	if err != nil {
		return fmt.Errorf("fstrim is not installed (util-linux): %w", errdefs.ErrFailedPrecondition)
	}
	out, err := exec.CommandContext(ctx, path, "-v", root).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fstrim %s: %v: %s", root, err, oneLine(string(out)))
	}
	logf("%s", strings.TrimSpace(string(out)))
	return nil
}

// lastLines returns the last n lines of the file at path, joined with " | ",
// for an error message.
func lastLines(f *os.File, n int) string {
	if f == nil {
		return ""
	}
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-8192, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(string(buf), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "strata-mask:") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
