// Package mask makes masked copies of databases: it starts the database
// server found in a directory (a working clone of a production volume,
// mounted on the node), replaces the values of the columns a rules file
// names with deterministic fakes, checks that no sampled original value is
// left, and stops the server cleanly.
//
// The transformers are pure functions of the value and a secret (keyed by
// HMAC-SHA256): the same original value becomes the same fake in every
// table and every run, so joins and foreign keys on masked columns still
// match, and nobody without the secret can map a fake back to its original.
package mask

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Engines the rules can name.
const (
	EnginePostgres = "postgres"
	EngineMySQL    = "mysql"
)

// Transform names a transformer.
type Transform string

// The transformers.
const (
	// FakeName: a made-up "First Last" name (syllables, not a real person's).
	FakeName Transform = "fake_name"
	// FakeEmail: first.last1234@example.com (or .net, .org); the original
	// is lower-cased and trimmed first, so addresses equal but for case get
	// the same fake.
	FakeEmail Transform = "fake_email"
	// FakePhone: 555-NNN-NNNN (+1 555-NNN-NNNN when the original starts
	// with +): the North American 555 area code is unassigned, so a fake is
	// never a real subscriber's number.
	FakePhone Transform = "fake_phone"
	// FakeAddress: "1234 Velen Road, Tarosa".
	FakeAddress Transform = "fake_address"
	// Hash: 32 hex digits of the keyed hash of the value.
	Hash Transform = "hash"
	// Redact: every letter and digit becomes X, the rest stays (the format
	// and length are kept).
	Redact Transform = "redact"
	// Null: the column becomes NULL (it must be nullable).
	Null Transform = "null"
	// Shuffle: the column's values are permuted among the rows (the
	// values are kept, their link to the rest of the row is not).
	Shuffle Transform = "shuffle"
	// Keep: the column is left as is (says it was reviewed).
	Keep Transform = "keep"
)

// Transforms lists every transformer, in the order the docs give them.
var Transforms = []Transform{FakeName, FakeEmail, FakePhone, FakeAddress, Hash, Redact, Null, Shuffle, Keep}

// Rules is a parsed and validated rules file.
type Rules struct {
	// Engine is EnginePostgres or EngineMySQL.
	Engine string
	// DataDir is where the database files are, relative to the root of the
	// volume's filesystem ("." for the root itself).
	DataDir string
	// SaltSecret names the stored secret the transformers are keyed with.
	SaltSecret string
	// Database is the PostgreSQL database that holds the tables; when
	// empty, the only database besides "postgres" (or "postgres" itself).
	// MySQL names the database in each table's name instead.
	Database string
	// User is the role (PostgreSQL) to connect as; "postgres", then the
	// name of the data directory's owner, when empty. MySQL runs without
	// grant tables and ignores it.
	User string
	// Tables in the order of the file.
	Tables []Table
}

// Table is one table's rules.
type Table struct {
	// Schema is the PostgreSQL schema or the MySQL database.
	Schema, Name string
	Columns      []Column
}

// String returns schema.table.
func (t Table) String() string { return t.Schema + "." + t.Name }

// Column is one column's rule.
type Column struct {
	Name      string
	Transform Transform
}

// identRE is what table, schema and column names may be: letters, digits,
// _ and $, not starting with a digit or $ (no quoting needed in either engine).
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// maxIdent is the longest name both engines take.
const maxIdent = 63

// Parse reads and validates a rules file. Every problem found is reported
// in one error (one line, "line N: ..." for each), wrapping
// errdefs.ErrInvalidArgument.
func Parse(data []byte) (*Rules, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("mask rules: the file is empty; it needs engine, data_dir, salt_secret and tables: %w", errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("mask rules: %s: %w", oneLine(err.Error()), errdefs.ErrInvalidArgument)
	}
	p := &parser{}
	r := p.rules(&doc)
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("mask rules: %s: %w", strings.Join(p.errs, "; "), errdefs.ErrInvalidArgument)
	}
	return r, nil
}

type parser struct{ errs []string }

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n != nil && n.Line > 0 {
		msg = fmt.Sprintf("line %d: %s", n.Line, msg)
	}
	p.errs = append(p.errs, msg)
}

func (p *parser) rules(doc *yaml.Node) *Rules {
	r := &Rules{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		p.errorf(nil, "the file is empty; it needs engine, data_dir, salt_secret and tables")
		return r
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		p.errorf(top, "the file must be a mapping of engine, data_dir, salt_secret and tables")
		return r
	}
	seen := map[string]bool{}
	var tables *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if seen[k.Value] {
			p.errorf(k, "%s is given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		switch k.Value {
		case "engine":
			r.Engine = p.scalar(k, v)
		case "data_dir":
			r.DataDir = p.scalar(k, v)
		case "salt_secret":
			r.SaltSecret = p.scalar(k, v)
		case "database":
			r.Database = p.scalar(k, v)
		case "user":
			r.User = p.scalar(k, v)
		case "tables":
			tables = v
		default:
			p.errorf(k, "unknown key %q (the keys are engine, data_dir, salt_secret, database, user, tables)", k.Value)
		}
	}
	switch r.Engine {
	case EnginePostgres, EngineMySQL:
	case "":
		p.errorf(top, "engine is required: postgres or mysql")
	default:
		p.errorf(top, "engine %q is not supported: use postgres or mysql (mysql also covers MariaDB)", r.Engine)
	}
	if r.DataDir == "" {
		p.errorf(top, "data_dir is required: where the database files are inside the volume's filesystem, e.g. pgdata")
	} else if d, err := cleanDataDir(r.DataDir); err != nil {
		p.errorf(top, "%v", err)
	} else {
		r.DataDir = d
	}
	if r.SaltSecret == "" {
		p.errorf(top, "salt_secret is required: the name of a stored secret (strata secret set NAME)")
	} else if err := errdefs.ValidateName("secret", r.SaltSecret); err != nil {
		p.errorf(top, "salt_secret: %s", strings.TrimSuffix(err.Error(), ": "+errdefs.ErrInvalidArgument.Error()))
	}
	if r.Database != "" && r.Engine == EngineMySQL {
		p.errorf(top, "database is for postgres; with mysql name the database in each table (DATABASE.TABLE)")
	}
	if r.Database != "" && !validIdent(r.Database) {
		p.errorf(top, "database %q is not a plain name (letters, digits, _ and $)", r.Database)
	}
	if tables == nil {
		p.errorf(top, "tables is required: a mapping of SCHEMA.TABLE to a mapping of column to transformer")
		return r
	}
	r.Tables = p.tables(tables, r.Engine)
	return r
}

func (p *parser) scalar(k, v *yaml.Node) string {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		p.errorf(v, "%s must be a single value", k.Value)
		return ""
	}
	return strings.TrimSpace(v.Value)
}

func (p *parser) tables(n *yaml.Node, engine string) []Table {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		p.errorf(n, "tables must map SCHEMA.TABLE to a mapping of column to transformer, and name at least one table")
		return nil
	}
	qualifier := "SCHEMA"
	if engine == EngineMySQL {
		qualifier = "DATABASE"
	}
	var out []Table
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		schema, name, ok := strings.Cut(k.Value, ".")
		if !ok || !validIdent(schema) || !validIdent(name) {
			p.errorf(k, "table %q must be written %s.TABLE of plain names (letters, digits, _ and $), e.g. public.customers", k.Value, qualifier)
			continue
		}
		if seen[k.Value] {
			p.errorf(k, "table %s is given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		t := Table{Schema: schema, Name: name}
		if v.Kind != yaml.MappingNode || len(v.Content) == 0 {
			p.errorf(v, "table %s must map each column to a transformer, e.g. email: fake_email", k.Value)
			continue
		}
		cols := map[string]bool{}
		for j := 0; j+1 < len(v.Content); j += 2 {
			ck, cv := v.Content[j], v.Content[j+1]
			if !validIdent(ck.Value) {
				p.errorf(ck, "column %q of %s is not a plain name (letters, digits, _ and $)", ck.Value, k.Value)
				continue
			}
			if cols[ck.Value] {
				p.errorf(ck, "column %s.%s is given twice", k.Value, ck.Value)
				continue
			}
			cols[ck.Value] = true
			tr, err := parseTransform(cv)
			if err != nil {
				p.errorf(cv, "column %s.%s: %v", k.Value, ck.Value, err)
				continue
			}
			t.Columns = append(t.Columns, Column{Name: ck.Value, Transform: tr})
		}
		out = append(out, t)
	}
	return out
}

// parseTransform reads a transformer name. An unquoted null is YAML's null,
// which is taken to mean the null transformer.
func parseTransform(n *yaml.Node) (Transform, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("the transformer must be one name (%s)", transformList())
	}
	if n.Tag == "!!null" {
		if n.Value == "null" || n.Value == "Null" || n.Value == "NULL" {
			return Null, nil
		}
		return "", fmt.Errorf("no transformer given (%s)", transformList())
	}
	t := Transform(strings.TrimSpace(n.Value))
	if slices.Contains(Transforms, t) {
		return t, nil
	}
	return "", fmt.Errorf("unknown transformer %q (%s)", n.Value, transformList())
}

func transformList() string {
	names := make([]string, len(Transforms))
	for i, t := range Transforms {
		names[i] = string(t)
	}
	return "one of " + strings.Join(names, ", ")
}

func validIdent(s string) bool { return len(s) <= maxIdent && identRE.MatchString(s) }

// cleanDataDir checks that dir stays inside the volume's filesystem.
func cleanDataDir(dir string) (string, error) {
	if strings.HasPrefix(dir, "/") {
		return "", fmt.Errorf("data_dir %q must be relative to the root of the volume's filesystem (e.g. pgdata, not /var/lib/postgresql/...)", dir)
	}
	c := path.Clean(dir)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("data_dir %q leaves the volume's filesystem", dir)
	}
	return c, nil
}

// oneLine joins the lines of a message (the CLI prints one-line errors).
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
