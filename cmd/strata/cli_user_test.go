package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/meta"
)

// cliIn runs the CLI in-process with stdin, against api with token.
func cliIn(t *testing.T, api, token, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"--api", api, "--token", token}, args...))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

var tokenLine = regexp.MustCompile(`^[0-9a-f]{64}\n$`)

// cliNode is a real node (runUp, in a directory of the test's) for tests of
// the CLI against it.
type cliNode struct {
	t   *testing.T
	dir string
	o   upOptions
	cfg client.Config
}

// newCLINode starts a node that stops when the test ends.
func newCLINode(t *testing.T) *cliNode {
	t.Helper()
	isolate(t)
	dir := t.TempDir()
	o := upOptions{
		dataDir:       filepath.Join(dir, "data"),
		apiAddr:       "127.0.0.1:0",
		nbdAddr:       "127.0.0.1:0",
		etcdClientURL: upFreeURL(t),
		etcdPeerURL:   upFreeURL(t),
		nodeName:      "n1",
		configPath:    filepath.Join(dir, "cfg", "config.yaml"),
		logLevel:      "error",
	}
	cfg, _, stop := runUpUntilConfig(t, o)
	t.Cleanup(func() { stop() })
	return &cliNode{t: t, dir: dir, o: o, cfg: cfg}
}

// as runs the CLI with token.
func (n *cliNode) as(token string, args ...string) (string, error) {
	n.t.Helper()
	out, _, err := cliIn(n.t, n.cfg.API, token, "", args...)
	return out, err
}

// admin runs the CLI with the admin token and fails the test if it fails.
func (n *cliNode) admin(args ...string) string {
	n.t.Helper()
	out, err := n.as(n.cfg.Token, args...)
	if err != nil {
		n.t.Fatalf("strata %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// wantErr runs the CLI with token and expects an error mentioning want.
func (n *cliNode) wantErr(token, want string, args ...string) {
	n.t.Helper()
	if _, err := n.as(token, args...); err == nil || !strings.Contains(err.Error(), want) {
		n.t.Errorf("strata %s: %v, want an error mentioning %q", strings.Join(args, " "), err, want)
	}
}

// TestUserAndSecretCommands drives strata user and strata secret against a
// real node: tokens printed once work with their role and tenant at once,
// rotation and deletion revoke them, a developer's refusals are clear, and
// secret values go in from stdin or a file and never come out.
func TestUserAndSecretCommands(t *testing.T) {
	n := newCLINode(t)
	dir, o, cfg := n.dir, n.o, n.cfg
	as, admin, wantErr := n.as, n.admin, n.wantErr

	// Users: the token alone on stdout, the warning on stderr.
	out, stderr, err := cliIn(t, cfg.API, cfg.Token, "", "user", "create", "alice", "--role", "developer", "--tenant", "team-a")
	if err != nil || !tokenLine.MatchString(out) || !strings.Contains(stderr, "shown only this once") || !strings.Contains(stderr, "alice (developer of tenant team-a)") {
		t.Fatalf("user create: %v\nstdout %q\nstderr %q", err, out, stderr)
	}
	alice := strings.TrimSpace(out)
	bob := strings.TrimSpace(admin("user", "create", "bob", "--role", "viewer"))
	wantErr(cfg.Token, `user "alice" already exists`, "user", "create", "alice", "--role", "viewer")
	wantErr(cfg.Token, "a developer needs a tenant", "user", "create", "carol", "--role", "developer")
	wantErr(cfg.Token, "only developers have a tenant", "user", "create", "carol", "--role", "viewer", "--tenant", "team-a")
	wantErr(cfg.Token, `role "owner" is not admin, developer or viewer`, "user", "create", "carol", "--role", "owner")
	list := admin("user", "list")
	if lines := strings.Split(strings.TrimSpace(list), "\n"); len(lines) != 3 ||
		!regexp.MustCompile(`^NAME +ROLE +TENANT +CREATED +TOKEN-CREATED$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^alice +developer +team-a +\d{4}-`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^bob +viewer +- +\d{4}-`).MatchString(lines[2]) {
		t.Errorf("user list:\n%s", list)
	}
	if strings.Contains(list, alice) || strings.Contains(admin("user", "list", "-o", "json"), alice) {
		t.Error("user list shows a token")
	}

	// The developer's token works at once, confined to its tenant.
	if out, err := as(alice, "user", "whoami"); err != nil || !regexp.MustCompile(`User: +alice\nRole: +developer\nTenant: +team-a\n`).MatchString(out) {
		t.Errorf("whoami as alice: %v\n%s", err, out)
	}
	admin("volume", "create", "prod", "--size", "1MiB")
	wantErr(alice, "developer alice of tenant team-a may not call VolumeService.CreateVolume: a tenant's volumes are made only as clones of the templates granted to it",
		"volume", "create", "mine", "--size", "1MiB")
	wantErr(alice, `developer alice of tenant team-a may not read volume "prod": it belongs to no tenant`, "volume", "inspect", "prod")
	wantErr(alice, `may not export volume "prod"`, "volume", "export", "prod")
	wantErr(alice, `may not snapshot volume "prod"`, "snapshot", "create", "prod")
	wantErr(alice, "may not call UserService.CreateUser", "user", "create", "mallory", "--role", "admin")
	wantErr(alice, "may not call SecretService.SetSecret", "secret", "set", "x", "--from-file", "/etc/hostname")
	if out, err := as(alice, "volume", "list"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("volume list as alice: %v\n%s", err, out)
	}
	// A volume of her tenant (as cloning a granted template makes one).
	store, err := meta.Open(context.Background(), meta.Config{Endpoints: []string{o.etcdClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	admin("volume", "create", "dev-a", "--size", "1MiB")
	rec, err := store.GetVolume(context.Background(), "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	rec.Tenant = "team-a"
	if _, err := store.UpdateVolume(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if out, err := as(alice, "volume", "list"); err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "\ndev-a ") {
		t.Errorf("volume list as alice: %v\n%s", err, out)
	}
	if out, err := as(alice, "volume", "inspect", "dev-a"); err != nil || !regexp.MustCompile(`\nTenant: +team-a\n`).MatchString(out) {
		t.Errorf("volume inspect dev-a as alice: %v\n%s", err, out)
	}
	if out := admin("volume", "inspect", "prod"); !regexp.MustCompile(`\nTenant: +-\n`).MatchString(out) {
		t.Errorf("volume inspect prod:\n%s", out)
	}
	admin("snapshot", "create", "dev-a", "--name", "before")
	if _, err := as(alice, "volume", "revert", "dev-a", "--to", "before"); err != nil {
		t.Errorf("revert of her own volume: %v", err)
	}

	// Rotation and deletion revoke tokens at once.
	out, stderr, err = cliIn(t, cfg.API, cfg.Token, "", "user", "rotate", "alice")
	if err != nil || !tokenLine.MatchString(out) || strings.TrimSpace(out) == alice || !strings.Contains(stderr, "the old one no longer works") {
		t.Fatalf("user rotate: %v\nstdout %q\nstderr %q", err, out, stderr)
	}
	wantErr(alice, "invalid token", "user", "whoami")
	alice = strings.TrimSpace(out)
	if _, err := as(alice, "user", "whoami"); err != nil {
		t.Errorf("whoami with the rotated token: %v", err)
	}
	if out := admin("user", "delete", "alice"); out != "deleted user alice; its token no longer works\n" {
		t.Errorf("user delete printed %q", out)
	}
	wantErr(alice, "invalid token", "user", "whoami")
	wantErr(cfg.Token, `user "alice": not found`, "user", "delete", "alice")

	// Secrets: from stdin (one final newline dropped) or a file (as is).
	out, _, err = cliIn(t, cfg.API, cfg.Token, "pepper-from-stdin\n", "secret", "set", "mask-salt")
	if err != nil || out != "set secret mask-salt (17B)\n" {
		t.Fatalf("secret set from stdin: %v, %q", err, out)
	}
	file := filepath.Join(dir, "salt")
	if err := os.WriteFile(file, []byte("pepper-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := admin("secret", "set", "file-salt", "--from-file", file); out != "set secret file-salt (17B)\n" {
		t.Errorf("secret set --from-file printed %q", out)
	}
	for name, want := range map[string]string{"mask-salt": "pepper-from-stdin", "file-salt": "pepper-from-file\n"} {
		if sec, err := store.GetSecret(context.Background(), name); err != nil || string(sec.Value) != want {
			t.Errorf("secret %s holds %q (%v), want %q", name, sec.Value, err, want)
		}
	}
	list = admin("secret", "list")
	if lines := strings.Split(strings.TrimSpace(list), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME ") ||
		!strings.HasPrefix(lines[1], "file-salt ") || !strings.HasPrefix(lines[2], "mask-salt ") {
		t.Errorf("secret list:\n%s", list)
	}
	js := admin("secret", "list", "-o", "json")
	var parsed struct {
		Secrets []map[string]any `json:"secrets"`
	}
	if err := json.Unmarshal([]byte(js), &parsed); err != nil || len(parsed.Secrets) != 2 {
		t.Errorf("secret list -o json: %v\n%s", err, js)
	}
	for _, s := range []string{list, js} {
		if strings.Contains(s, "pepper") || strings.Contains(s, "value") {
			t.Errorf("secret list shows a value:\n%s", s)
		}
	}
	// A viewer lists secrets and sets none.
	if out, err := as(bob, "secret", "list"); err != nil || !strings.Contains(out, "mask-salt") {
		t.Errorf("secret list as a viewer: %v\n%s", err, out)
	}
	wantErr(bob, "viewer bob may not call SecretService.SetSecret: viewers have read-only access", "secret", "set", "mask-salt", "--from-file", file)
	if out := admin("secret", "delete", "mask-salt"); out != "deleted secret mask-salt\n" {
		t.Errorf("secret delete printed %q", out)
	}
	wantErr(cfg.Token, `secret "mask-salt": not found`, "secret", "delete", "mask-salt")
}

// TestUserAndSecretRefusedBeforeAnyCall: mistakes fail at once with a
// message naming them; the address given is not even listening.
func TestUserAndSecretRefusedBeforeAnyCall(t *testing.T) {
	isolate(t)
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, maxSecretSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"user", "create", "alice"}, "--role is required"},
		{"", []string{"user", "create", "Alice", "--role", "viewer"}, `user name "Alice"`},
		{"", []string{"user", "create", "alice", "--role", "developer", "--tenant", "Team_A"}, `tenant name "Team_A"`},
		{"", []string{"user", "create"}, "expects NAME"},
		{"", []string{"user", "delete"}, "expects NAME"},
		{"", []string{"user", "rotate", "a", "b"}, "expects NAME, got 2 arguments"},
		{"", []string{"user", "list", "-o", "xml"}, "unknown output format"},
		{"", []string{"user", "whoami", "me"}, "expects no arguments"},
		{"", []string{"user", "frob"}, "unknown command"},
		{"", []string{"secret", "set"}, "expects NAME"},
		{"", []string{"secret", "set", "Bad", "--from-file", big}, `secret name "Bad"`},
		{"", []string{"secret", "set", "salt"}, "the value read from stdin is empty"},
		{"\n", []string{"secret", "set", "salt"}, "the value read from stdin is empty"},
		{"", []string{"secret", "set", "salt", "--from-file", "/nonexistent/salt"}, "reading the value from /nonexistent/salt"},
		{"", []string{"secret", "set", "salt", "--from-file", big}, "larger than 64KiB"},
		{strings.Repeat("x", maxSecretSize+1), []string{"secret", "set", "salt"}, "larger than 64KiB"},
		{"", []string{"secret", "list", "-o", "xml"}, "unknown output format"},
		{"", []string{"secret", "delete", "A"}, `secret name "A"`},
	} {
		_, _, err := cliIn(t, "127.0.0.1:1", "t", tc.stdin, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("strata %s: %v, want an error mentioning %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
