package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/meta"
)

// TestTemplateGrantCommands drives strata template grant and revoke
// against a real node: a developer clones a template once it is granted
// to its tenant and no more once revoked, its clone staying; inspect shows
// the grants; developers grant nothing.
func TestTemplateGrantCommands(t *testing.T) {
	n := newCLINode(t)
	cfg, as, admin, wantErr := n.cfg, n.as, n.admin, n.wantErr

	// A template whose version is a plain volume's snapshot (making a real
	// one needs a database: see test/e2e).
	admin("volume", "create", "crm-v1", "--size", "1MiB")
	admin("snapshot", "create", "crm-v1", "--name", "masked")
	store, err := meta.Open(context.Background(), meta.Config{Endpoints: []string{n.o.etcdClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Now().UTC()
	if _, err := store.CreateTemplate(context.Background(), meta.Template{Name: "crm", Source: "prod", Created: now,
		Versions: []meta.TemplateVersion{{Number: 1, Volume: "crm-v1", Snapshot: "masked", Created: now}}}); err != nil {
		t.Fatal(err)
	}
	alice := strings.TrimSpace(admin("user", "create", "alice", "--role", "developer", "--tenant", "team-a"))

	wantErr(alice, "not granted to tenant team-a", "clone", "create", "alice-crm", "--template", "crm")
	wantErr(alice, "developer alice of tenant team-a may not call TemplateService.GrantTemplate: templates are granted by admins",
		"template", "grant", "crm", "--tenant", "team-a")
	if out := admin("template", "inspect", "crm"); !regexp.MustCompile(`\nGranted to: +-\n`).MatchString(out) {
		t.Errorf("inspect before any grant:\n%s", out)
	}

	if out := admin("template", "grant", "crm", "--tenant", "team-a"); out != "granted template crm to tenant team-a (granted to: team-a)\n" {
		t.Errorf("grant printed %q", out)
	}
	if out := admin("template", "grant", "crm", "--tenant", "team-a"); out != "granted template crm to tenant team-a (granted to: team-a)\n" {
		t.Errorf("grant again printed %q", out)
	}
	if out := admin("template", "grant", "crm", "--tenant", "team-b"); out != "granted template crm to tenant team-b (granted to: team-a, team-b)\n" {
		t.Errorf("second grant printed %q", out)
	}
	wantErr(cfg.Token, `template "nope": not found`, "template", "grant", "nope", "--tenant", "team-a")
	if out := admin("template", "inspect", "crm"); !regexp.MustCompile(`\nGranted to: +team-a, team-b\n`).MatchString(out) {
		t.Errorf("inspect as admin:\n%s", out)
	}
	if out, err := as(alice, "template", "inspect", "crm"); err != nil || !regexp.MustCompile(`\nGranted to: +team-a\n`).MatchString(out) {
		t.Errorf("inspect as alice: %v\n%s", err, out)
	}
	if out := admin("template", "inspect", "crm", "-o", "json"); !strings.Contains(out, `"tenant": "team-b"`) || !strings.Contains(out, `"grantedAt"`) {
		t.Errorf("inspect -o json:\n%s", out)
	}

	// Granted: alice clones it. Revoked: she does not, and her clone stays.
	if _, err := as(alice, "clone", "create", "alice-crm", "--template", "crm"); err != nil {
		t.Fatalf("clone after the grant: %v", err)
	}
	if out := admin("template", "revoke", "crm", "--tenant", "team-a"); out != "revoked the grant of template crm to tenant team-a (granted to: team-b); "+
		"the tenant's 1 clone(s) of it stay until they expire or are deleted: alice-crm\n" {
		t.Errorf("revoke printed %q", out)
	}
	wantErr(alice, "not granted to tenant team-a", "clone", "create", "alice-crm-2", "--template", "crm")
	if out, err := as(alice, "clone", "list"); err != nil || !strings.Contains(out, "alice-crm ") {
		t.Errorf("clone list as alice after the revoke: %v\n%s", err, out)
	}
	wantErr(cfg.Token, "template crm is not granted to tenant team-a (it is granted to team-b)", "template", "revoke", "crm", "--tenant", "team-a")
	if out := admin("template", "revoke", "crm", "--tenant", "team-b"); out != "revoked the grant of template crm to tenant team-b (granted to: -)\n" {
		t.Errorf("last revoke printed %q", out)
	}

	// The version's volume goes only with the template.
	wantErr(cfg.Token, "cannot delete volume crm-v1: it belongs to template crm", "volume", "delete", "crm-v1")
}

// TestTemplateGrantRefusedBeforeAnyCall: mistakes in grant and revoke fail
// at once; the address given is not even listening.
func TestTemplateGrantRefusedBeforeAnyCall(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"template", "grant", "crm"}, "--tenant is required"},
		{[]string{"template", "grant", "crm", "--tenant", "Team_A"}, `tenant name "Team_A"`},
		{[]string{"template", "grant", "CRM", "--tenant", "team-a"}, `template name "CRM"`},
		{[]string{"template", "grant", "--tenant", "team-a"}, "expects NAME"},
		{[]string{"template", "revoke", "crm"}, "--tenant is required"},
		{[]string{"template", "revoke", "crm", "x", "--tenant", "team-a"}, "expects NAME, got 2 arguments"},
	} {
		_, _, err := cliIn(t, "127.0.0.1:1", "t", "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("strata %s: %v, want an error mentioning %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
