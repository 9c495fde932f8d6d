package meta

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestUsersAndTheirTokens(t *testing.T) {
	ctx := context.Background()
	s := open(t, embeddedConfig(t))
	defer s.Close()

	h1, h2 := HashToken("one"), HashToken("two")
	u, err := s.CreateUser(ctx, User{Name: "alice", Role: RoleDeveloper, Tenant: "team-a", TokenHash: h1})
	if err != nil || u.Rev == 0 || u.Created.IsZero() {
		t.Fatalf("create: %v, %+v", err, u)
	}
	if _, err := s.CreateUser(ctx, User{Name: "alice", Role: RoleViewer, TokenHash: h2}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("create again: %v", err)
	}
	if _, err := s.CreateUser(ctx, User{Name: "bob", Role: RoleViewer, TokenHash: "short"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("create with a bad hash: %v", err)
	}
	toks, err := s.ListTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].Hash != h1 || toks[0].User != "alice" || toks[0].Role != RoleDeveloper || toks[0].Tenant != "team-a" {
		t.Fatalf("tokens after create: %+v, %v", toks, err)
	}

	// A rotation replaces the token; a stale revision is a conflict.
	u2, err := s.ReplaceUserToken(ctx, u, h2)
	if err != nil || u2.TokenHash != h2 {
		t.Fatalf("rotate: %v, %+v", err, u2)
	}
	if _, err := s.ReplaceUserToken(ctx, u, HashToken("three")); !errors.Is(err, ErrConflict) {
		t.Fatalf("rotate at a stale revision: %v", err)
	}
	toks, _ = s.ListTokens(ctx)
	if len(toks) != 1 || toks[0].Hash != h2 || toks[0].User != "alice" {
		t.Fatalf("tokens after rotate: %+v", toks)
	}
	got, err := s.GetUser(ctx, "alice")
	if err != nil || got.TokenHash != h2 || got.Rev != u2.Rev || !got.Created.Equal(u.Created) {
		t.Fatalf("get: %+v, %v", got, err)
	}

	if err := s.DeleteUser(ctx, u); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete at a stale revision: %v", err)
	}
	if err := s.DeleteUser(ctx, u2); err != nil {
		t.Fatal(err)
	}
	if toks, _ := s.ListTokens(ctx); len(toks) != 0 {
		t.Fatalf("tokens after delete: %+v", toks)
	}
	if users, err := s.ListUsers(ctx); err != nil || len(users) != 0 {
		t.Fatalf("users after delete: %+v, %v", users, err)
	}
	if _, err := s.GetUser(ctx, "alice"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

// TestGrants: a grant exists only with its template: granting a missing
// template is NotFound, and deleting a template removes its grants.
func TestGrants(t *testing.T) {
	ctx := context.Background()
	s := open(t, embeddedConfig(t))
	defer s.Close()

	if _, err := s.PutGrant(ctx, "orders", "team-a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("grant of a missing template: %v", err)
	}
	orders, err := s.CreateTemplate(ctx, Template{Name: "orders", Created: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTemplate(ctx, Template{Name: "orders-eu", Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	g, err := s.PutGrant(ctx, "orders", "team-a")
	if err != nil || g.Created.IsZero() || g.Rev == 0 {
		t.Fatalf("grant: %+v, %v", g, err)
	}
	again, err := s.PutGrant(ctx, "orders", "team-a")
	if err != nil || !again.Created.Equal(g.Created) || again.Rev != g.Rev {
		t.Fatalf("grant again: %+v, %v", again, err)
	}
	s.PutGrant(ctx, "orders", "team-b")
	s.PutGrant(ctx, "orders-eu", "team-a")
	if gs, _ := s.ListGrants(ctx, "orders"); len(gs) != 2 || gs[0].Tenant != "team-a" || gs[1].Tenant != "team-b" {
		t.Fatalf("grants of orders: %+v", gs)
	}
	if gs, _ := s.ListGrants(ctx, ""); len(gs) != 3 {
		t.Fatalf("every grant: %+v", gs)
	}
	if ok, err := s.HasGrant(ctx, "orders", "team-c"); ok || err != nil {
		t.Fatalf("HasGrant of a tenant without one: %v, %v", ok, err)
	}
	if err := s.DeleteGrant(ctx, "orders", "team-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGrant(ctx, "orders", "team-b"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("revoke again: %v", err)
	}

	// Deleting the template takes its grants; a template made again under
	// the name starts with none.
	if err := s.DeleteTemplate(ctx, Template{Name: "orders", Rev: orders.Rev - 1}); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete at a stale revision: %v", err)
	}
	if err := s.DeleteTemplate(ctx, orders); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTemplate(ctx, orders); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	if gs, _ := s.ListGrants(ctx, ""); len(gs) != 1 || gs[0].Template != "orders-eu" {
		t.Fatalf("grants after the template was deleted: %+v", gs)
	}
	if _, err := s.PutGrant(ctx, "orders", "team-a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("grant of a deleted template: %v", err)
	}
	if _, err := s.CreateTemplate(ctx, Template{Name: "orders", Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.HasGrant(ctx, "orders", "team-a"); ok || err != nil {
		t.Fatalf("a template made again inherits a grant: %v, %v", ok, err)
	}
}

func TestSecrets(t *testing.T) {
	ctx := context.Background()
	s := open(t, embeddedConfig(t))
	defer s.Close()

	sec, err := s.PutSecret(ctx, "mask-salt", []byte("s3cret\x00bytes"))
	if err != nil || sec.Value != nil || sec.Created.IsZero() {
		t.Fatalf("put: %+v, %v", sec, err)
	}
	got, err := s.GetSecret(ctx, "mask-salt")
	if err != nil || !bytes.Equal(got.Value, []byte("s3cret\x00bytes")) {
		t.Fatalf("get: %+v, %v", got, err)
	}
	again, err := s.PutSecret(ctx, "mask-salt", []byte("new"))
	if err != nil || !again.Created.Equal(sec.Created) || !again.Updated.After(sec.Updated) && !again.Updated.Equal(sec.Updated) {
		t.Fatalf("replace: %+v, %v", again, err)
	}
	if got, _ := s.GetSecret(ctx, "mask-salt"); string(got.Value) != "new" {
		t.Fatalf("value after replace: %q", got.Value)
	}
	list, err := s.ListSecrets(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "mask-salt" || list[0].Value != nil {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if err := s.DeleteSecret(ctx, "mask-salt"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSecret(ctx, "mask-salt"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := s.DeleteSecret(ctx, "mask-salt"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
}
