package mask

import (
	"errors"
	"strings"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

const exampleRules = `engine: postgres          # or mysql
data_dir: pgdata          # where the database files are
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

func TestParseExample(t *testing.T) {
	r, err := Parse([]byte(exampleRules))
	if err != nil {
		t.Fatal(err)
	}
	if r.Engine != EnginePostgres || r.DataDir != "pgdata" || r.SaltSecret != "prod-mask" || len(r.Tables) != 2 {
		t.Fatalf("parsed %+v", r)
	}
	c := r.Tables[0]
	if c.String() != "public.customers" || len(c.Columns) != 5 {
		t.Fatalf("first table %+v", c)
	}
	// The file's order is kept.
	want := []Column{{"full_name", FakeName}, {"email", FakeEmail}, {"phone", FakePhone}, {"card_number", Redact}, {"notes", Null}}
	for i, col := range c.Columns {
		if col != want[i] {
			t.Errorf("column %d = %+v, want %+v", i, col, want[i])
		}
	}
	if o := r.Tables[1]; o.String() != "public.orders" || o.Columns[0] != (Column{"customer_email", FakeEmail}) {
		t.Fatalf("second table %+v", o)
	}
}

func TestParseAccepts(t *testing.T) {
	for name, src := range map[string]string{
		"unquoted null": "engine: postgres\ndata_dir: ./db/../pgdata/\nsalt_secret: s\ntables:\n  public.t:\n    a: null\n",
		"mysql":         "engine: mysql\ndata_dir: mysql\nsalt_secret: s\ntables:\n  shop.customers:\n    email: fake_email\n    id: keep\n    c: shuffle\n    d: hash\n    e: fake_address\n",
		"root data dir": "engine: postgres\ndata_dir: .\nsalt_secret: s\ndatabase: shop\nuser: admin\ntables:\n  public.t:\n    a: redact\n",
	} {
		t.Run(name, func(t *testing.T) {
			r, err := Parse([]byte(src))
			if err != nil {
				t.Fatal(err)
			}
			if name == "unquoted null" && (r.DataDir != "pgdata" || r.Tables[0].Columns[0].Transform != Null) {
				t.Fatalf("parsed %+v", r)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	head := "engine: postgres\ndata_dir: pgdata\nsalt_secret: s\n"
	for _, tc := range []struct {
		name, src string
		want      []string // substrings of the error
	}{
		{"empty", "", []string{"empty"}},
		{"not a mapping", "- a\n", []string{"line 1", "mapping"}},
		{"bad yaml", "engine: [\n", []string{"mask rules:"}},
		{"nothing", "tables:\n  public.t:\n    a: keep\n", []string{"engine is required", "data_dir is required", "salt_secret is required"}},
		{"engine", "engine: oracle\ndata_dir: d\nsalt_secret: s\ntables:\n  a.b:\n    c: keep\n", []string{`engine "oracle" is not supported`}},
		{"absolute data dir", "engine: postgres\ndata_dir: /var/lib/postgresql\nsalt_secret: s\ntables:\n  a.b:\n    c: keep\n", []string{"must be relative"}},
		{"escaping data dir", "engine: postgres\ndata_dir: a/../../x\nsalt_secret: s\ntables:\n  a.b:\n    c: keep\n", []string{"leaves the volume"}},
		{"bad secret name", "engine: postgres\ndata_dir: d\nsalt_secret: Prod_Mask\ntables:\n  a.b:\n    c: keep\n", []string{"salt_secret", "DNS label"}},
		{"unknown key", head + "table:\n  a.b:\n    c: keep\n", []string{`line 4: unknown key "table"`, "tables is required"}},
		{"unqualified table", head + "tables:\n  customers:\n    email: fake_email\n", []string{"line 5", `table "customers" must be written SCHEMA.TABLE`}},
		{"unknown transformer", head + "tables:\n  public.customers:\n    full_name: fake_nam\n", []string{"line 6", "public.customers.full_name", `unknown transformer "fake_nam"`, "fake_name, fake_email"}},
		{"missing transformer", head + "tables:\n  public.customers:\n    full_name:\n", []string{"no transformer"}},
		{"column twice", head + "tables:\n  public.t:\n    a: keep\n    a: hash\n", []string{"line 7", "given twice"}},
		{"table without columns", head + "tables:\n  public.t: {}\n", []string{"must map each column"}},
		{"bad column", head + "tables:\n  public.t:\n    \"a b\": keep\n", []string{`column "a b"`}},
		{"database with mysql", "engine: mysql\ndata_dir: d\nsalt_secret: s\ndatabase: x\ntables:\n  a.b:\n    c: keep\n", []string{"database is for postgres"}},
		{"no tables", head + "tables: {}\n", []string{"at least one table"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src))
			if err == nil {
				t.Fatal("parsed, want an error")
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v does not wrap ErrInvalidArgument", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
