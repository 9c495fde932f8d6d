package server

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

// each returns f of every element of xs.
func each[T any](xs []T, f func(T) string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

func grantTenants(t *pb.Template) []string {
	return each(t.Grants, (*pb.TemplateGrant).GetTenant)
}

func templateNames(ts []*pb.Template) []string {
	return each(ts, (*pb.Template).GetName)
}

// TestGrantAndRevokeTemplate: an admin grants a template to a tenant and
// its developers see and clone it; after a revoke they do neither, and
// their clone stays theirs. Developers and viewers grant nothing.
func TestGrantAndRevokeTemplate(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	admin := authed(bg)
	fakeTemplate(t, n, "crm", 1)
	alice := n.addUser("alice", meta.RoleDeveloper, "team-a")
	viewer := n.addUser("carol", meta.RoleViewer, "")
	tc, cc := n.templates(), n.clones()

	// Not granted yet: alice sees nothing and clones nothing.
	_, err := cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "alice-crm", Template: "crm"})
	wantDenied(t, "clone before the grant", err, "not granted to tenant team-a")
	if l := must[*pb.ListTemplatesResponse](t, "list")(tc.ListTemplates(alice, &pb.ListTemplatesRequest{})); len(l.Templates) != 0 {
		t.Fatalf("alice lists %v before the grant", templateNames(l.Templates))
	}

	// Only admins grant and revoke.
	_, err = tc.GrantTemplate(alice, &pb.GrantTemplateRequest{Name: "crm", Tenant: "team-a"})
	wantDenied(t, "developer grants", err, "developer alice of tenant team-a may not call TemplateService.GrantTemplate: templates are granted by admins")
	_, err = tc.RevokeTemplate(alice, &pb.RevokeTemplateRequest{Name: "crm", Tenant: "team-b"})
	wantDenied(t, "developer revokes", err, "TemplateService.RevokeTemplate")
	_, err = tc.GrantTemplate(viewer, &pb.GrantTemplateRequest{Name: "crm", Tenant: "team-a"})
	wantDenied(t, "viewer grants", err, "viewer carol may not call TemplateService.GrantTemplate: viewers have read-only access")

	// Refused requests.
	_, err = tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "nope", Tenant: "team-a"})
	wantCode(t, "grant of a missing template", err, codes.NotFound)
	for _, bad := range []string{"", "Team_A", strings.Repeat("t", 64)} {
		_, err = tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "crm", Tenant: bad})
		wantCode(t, "grant to tenant "+bad, err, codes.InvalidArgument)
	}
	_, err = tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "CRM", Tenant: "team-a"})
	wantCode(t, "grant of an invalid template name", err, codes.InvalidArgument)

	// The grant, idempotent.
	tpl := must[*pb.Template](t, "grant")(tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "crm", Tenant: "team-a"}))
	if got := grantTenants(tpl); !slices.Equal(got, []string{"team-a"}) || tpl.Grants[0].GrantedAt.AsTime().IsZero() {
		t.Fatalf("after the grant: %v", tpl.Grants)
	}
	first := tpl.Grants[0].GrantedAt.AsTime()
	tpl = must[*pb.Template](t, "grant again")(tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "crm", Tenant: "team-a"}))
	if len(tpl.Grants) != 1 || !tpl.Grants[0].GrantedAt.AsTime().Equal(first) {
		t.Fatalf("granting again changed the grant: %v", tpl.Grants)
	}
	must[*pb.Template](t, "grant team-b")(tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "crm", Tenant: "team-b"}))

	// Who sees which grants: admins and viewers all, a developer its own.
	for _, c := range []struct {
		who  string
		ctx  context.Context
		want []string
	}{{"admin", admin, []string{"team-a", "team-b"}}, {"viewer", viewer, []string{"team-a", "team-b"}}, {"alice", alice, []string{"team-a"}}} {
		got := must[*pb.Template](t, "get")(tc.GetTemplate(c.ctx, &pb.GetTemplateRequest{Name: "crm"}))
		if !slices.Equal(grantTenants(got), c.want) {
			t.Errorf("%s sees the grants %v, want %v", c.who, grantTenants(got), c.want)
		}
		l := must[*pb.ListTemplatesResponse](t, "list")(tc.ListTemplates(c.ctx, &pb.ListTemplatesRequest{}))
		if len(l.Templates) != 1 || !slices.Equal(grantTenants(l.Templates[0]), c.want) {
			t.Errorf("%s lists %v", c.who, l.Templates)
		}
	}

	// Granted: alice clones it.
	must[*pb.Clone](t, "clone after the grant")(cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "alice-crm", Template: "crm"}))

	// Revoked: alice neither sees nor clones it, nor resets her clone,
	// which stays hers.
	tpl = must[*pb.Template](t, "revoke")(tc.RevokeTemplate(admin, &pb.RevokeTemplateRequest{Name: "crm", Tenant: "team-a"}))
	if got := grantTenants(tpl); !slices.Equal(got, []string{"team-b"}) {
		t.Fatalf("after the revoke: %v", got)
	}
	_, err = cc.CreateClone(alice, &pb.CreateCloneRequest{Name: "alice-crm-2", Template: "crm"})
	wantDenied(t, "clone after the revoke", err, `may not clone template "crm": it is not granted to tenant team-a`)
	_, err = cc.ResetClone(alice, &pb.ResetCloneRequest{Name: "alice-crm"})
	wantDenied(t, "reset after the revoke", err, "not granted to tenant team-a")
	_, err = tc.GetTemplate(alice, &pb.GetTemplateRequest{Name: "crm"})
	wantDenied(t, "get after the revoke", err, "not granted")
	if l := must[*pb.ListTemplatesResponse](t, "list")(tc.ListTemplates(alice, &pb.ListTemplatesRequest{})); len(l.Templates) != 0 {
		t.Errorf("alice lists %v after the revoke", templateNames(l.Templates))
	}
	if c := must[*pb.Clone](t, "get her clone")(cc.GetClone(alice, &pb.GetCloneRequest{Name: "alice-crm"})); c.Tenant != "team-a" {
		t.Errorf("her clone after the revoke: %v", c)
	}
	if got := string(readNBD(t, n, "alice-crm")); got != "version 1" {
		t.Errorf("her clone reads %q after the revoke", got)
	}

	// Revoking what is not granted is NotFound, and says what is.
	_, err = tc.RevokeTemplate(admin, &pb.RevokeTemplateRequest{Name: "crm", Tenant: "team-a"})
	wantCode(t, "revoke again", err, codes.NotFound)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "template crm is not granted to tenant team-a (it is granted to team-b)") {
		t.Errorf("revoke again says %q", msg)
	}
	_, err = tc.RevokeTemplate(admin, &pb.RevokeTemplateRequest{Name: "nope", Tenant: "team-a"})
	wantCode(t, "revoke on a missing template", err, codes.NotFound)

	// Over REST.
	var rt struct {
		Grants []struct{ Tenant string } `json:"grants"`
	}
	if code := n.rest("POST", "/v1/templates/crm:grant", testToken, map[string]any{"tenant": "team-c"}, &rt); code != http.StatusOK || len(rt.Grants) != 2 || rt.Grants[1].Tenant != "team-c" {
		t.Errorf("rest grant: %d %+v", code, rt)
	}
	if code := n.rest("POST", "/v1/templates/crm:grant", "token-of-alice", map[string]any{"tenant": "team-a"}, nil); code != http.StatusForbidden {
		t.Errorf("rest grant as a developer: %d", code)
	}
	if code := n.rest("POST", "/v1/templates/crm:revoke", testToken, map[string]any{"tenant": "team-c"}, &rt); code != http.StatusOK || len(rt.Grants) != 1 {
		t.Errorf("rest revoke: %d %+v", code, rt)
	}
	if code := n.rest("POST", "/v1/templates/crm:revoke", testToken, map[string]any{"tenant": "team-c"}, nil); code != http.StatusNotFound {
		t.Errorf("rest revoke again: %d", code)
	}

	// Deleting the template takes its grants.
	must[*pb.DeleteTemplateResponse](t, "delete")(tc.DeleteTemplate(admin, &pb.DeleteTemplateRequest{Name: "crm", Force: true}))
	if gs, err := n.meta.ListGrants(bg, ""); err != nil || len(gs) != 0 {
		t.Errorf("grants after the template was deleted: %v, %v", gs, err)
	}
	_, err = tc.GrantTemplate(admin, &pb.GrantTemplateRequest{Name: "crm", Tenant: "team-a"})
	wantCode(t, "grant of a deleted template", err, codes.NotFound)
}
