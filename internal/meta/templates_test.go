package meta

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestTemplatesAndClones(t *testing.T) {
	ctx := context.Background()
	s := open(t, embeddedConfig(t))
	defer s.Close()

	tpl, err := s.CreateTemplate(ctx, Template{Name: "crm", Source: "db", Rules: "engine: postgres\n", Keep: 2, Created: time.Now().UTC(), Building: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTemplate(ctx, Template{Name: "crm"}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second create: %v", err)
	}
	stale := tpl
	tpl.Building = 0
	tpl.Versions = append(tpl.Versions, TemplateVersion{Number: 1, Volume: "tpl-crm-v1", Snapshot: "masked",
		Tables: []MaskedTable{{Name: "public.customers", Rows: 10, Columns: 3}}})
	if tpl, err = s.UpdateTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateTemplate(ctx, stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("update from a stale read: %v", err)
	}
	got, err := s.GetTemplate(ctx, "crm")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := got.Latest(); !ok || v.Volume != "tpl-crm-v1" || v.Tables[0].Rows != 10 || got.Building != 0 {
		t.Fatalf("read back %+v", got)
	}
	if _, ok := got.Version(2); ok {
		t.Fatal("version 2 exists")
	}

	c, err := s.CreateClone(ctx, Clone{Name: "dev1", Template: "crm", Version: 1, Tenant: "team-a", IdleExpiry: time.Hour, Created: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	c.Protected = true
	if c, err = s.UpdateClone(ctx, c); err != nil {
		t.Fatal(err)
	}
	cs, err := s.ListClones(ctx)
	if err != nil || len(cs) != 1 || !cs[0].Protected || cs[0].IdleExpiry != time.Hour || cs[0].Rev != c.Rev {
		t.Fatalf("list clones: %+v %v", cs, err)
	}
	if err := s.DeleteClone(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetClone(ctx, "dev1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("clone after delete: %v", err)
	}
	if err := s.DeleteTemplate(ctx, got); err != nil {
		t.Fatal(err)
	}
	if ts, err := s.ListTemplates(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("templates after delete: %v %v", ts, err)
	}
}
