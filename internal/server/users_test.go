package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

func (n *testNode) users() pb.UserServiceClient     { return pb.NewUserServiceClient(n.conn) }
func (n *testNode) secrets() pb.SecretServiceClient { return pb.NewSecretServiceClient(n.conn) }

// TestUsers: an admin makes users whose tokens work at once with their
// role and tenant; names, roles and tenants are checked; rotation and
// deletion revoke a token at once.
func TestUsers(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	admin := authed(bg)
	uc := n.users()

	cr := must[*pb.CreateUserResponse](t, "create alice")(uc.CreateUser(admin, &pb.CreateUserRequest{Name: "alice", Role: "developer", Tenant: "team-a"}))
	if len(cr.Token) != 64 || cr.User.Name != "alice" || cr.User.Role != "developer" || cr.User.Tenant != "team-a" || cr.User.CreatedAt == nil {
		t.Fatalf("create: %v", cr)
	}
	alice := withToken(bg, cr.Token)
	me := must[*pb.User](t, "whoami")(uc.WhoAmI(alice, &pb.WhoAmIRequest{}))
	if me.Name != "alice" || me.Role != "developer" || me.Tenant != "team-a" {
		t.Fatalf("whoami of alice: %v", me)
	}
	if me := must[*pb.User](t, "whoami admin")(uc.WhoAmI(admin, &pb.WhoAmIRequest{})); me.Name != "admin" || me.Role != "admin" || me.Tenant != "" {
		t.Fatalf("whoami of the admin token: %v", me)
	}
	// Only the token's hash is stored.
	for _, tok := range must[[]meta.Token](t, "tokens")(n.meta.ListTokens(bg)) {
		if strings.Contains(tok.Hash, cr.Token) {
			t.Fatal("the token itself is stored")
		}
	}
	_, err := uc.CreateUser(admin, &pb.CreateUserRequest{Name: "alice", Role: "developer", Tenant: "team-a"})
	wantCode(t, "create again", err, codes.AlreadyExists)

	for _, tc := range []struct {
		req  *pb.CreateUserRequest
		want string
	}{
		{&pb.CreateUserRequest{Name: "Bob", Role: "viewer"}, "DNS label"},
		{&pb.CreateUserRequest{Name: "", Role: "viewer"}, "must not be empty"},
		{&pb.CreateUserRequest{Name: "admin", Role: "admin"}, "admin token that strata up makes"},
		{&pb.CreateUserRequest{Name: "bob", Role: "root"}, `role "root" is not admin, developer or viewer`},
		{&pb.CreateUserRequest{Name: "bob"}, "role must be given"},
		{&pb.CreateUserRequest{Name: "bob", Role: "developer"}, "a developer needs a tenant"},
		{&pb.CreateUserRequest{Name: "bob", Role: "developer", Tenant: "Team_A"}, "tenant name"},
		{&pb.CreateUserRequest{Name: "bob", Role: "viewer", Tenant: "team-a"}, "only developers have a tenant"},
		{&pb.CreateUserRequest{Name: "bob", Role: "admin", Tenant: "team-a"}, "only developers have a tenant"},
	} {
		_, err := uc.CreateUser(admin, tc.req)
		wantCode(t, "create "+tc.req.String(), err, codes.InvalidArgument)
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create %v: %v, want it to mention %q", tc.req, err, tc.want)
		}
	}

	vr := must[*pb.CreateUserResponse](t, "create viewer")(uc.CreateUser(admin, &pb.CreateUserRequest{Name: "carol", Role: "viewer"}))
	carol := withToken(bg, vr.Token)
	ar := must[*pb.CreateUserResponse](t, "create admin")(uc.CreateUser(admin, &pb.CreateUserRequest{Name: "dave", Role: "admin"}))
	dave := withToken(bg, ar.Token)
	must[*pb.Volume](t, "a second admin creates a volume")(n.vols().CreateVolume(dave, &pb.CreateVolumeRequest{Name: "v", SizeBytes: mib}))

	list := must[*pb.ListUsersResponse](t, "list")(uc.ListUsers(carol, &pb.ListUsersRequest{}))
	if len(list.Users) != 3 || list.Users[0].Name != "alice" || list.Users[1].Name != "carol" || list.Users[2].Name != "dave" {
		t.Fatalf("users: %v", list.Users)
	}

	// Neither a developer nor a viewer manages users.
	for who, ctx := range map[string]context.Context{"developer alice of tenant team-a": alice, "viewer carol": carol} {
		_, err := uc.CreateUser(ctx, &pb.CreateUserRequest{Name: "eve", Role: "admin"})
		wantDenied(t, who+" creates a user", err, who+" may not call UserService.CreateUser")
		_, err = uc.RotateUserToken(ctx, &pb.RotateUserTokenRequest{Name: "dave"})
		wantDenied(t, who+" rotates a token", err, "UserService.RotateUserToken")
		_, err = uc.DeleteUser(ctx, &pb.DeleteUserRequest{Name: "dave"})
		wantDenied(t, who+" deletes a user", err, "UserService.DeleteUser")
	}
	_, err = uc.ListUsers(alice, &pb.ListUsersRequest{})
	wantDenied(t, "developer lists users", err, "UserService.ListUsers")

	// Rotation: the old token stops working at once, the new one works.
	rr := must[*pb.RotateUserTokenResponse](t, "rotate")(uc.RotateUserToken(admin, &pb.RotateUserTokenRequest{Name: "alice"}))
	if rr.Token == cr.Token || len(rr.Token) != 64 || rr.User.Tenant != "team-a" {
		t.Fatalf("rotate: %v", rr)
	}
	_, err = uc.WhoAmI(alice, &pb.WhoAmIRequest{})
	wantCode(t, "old token after rotate", err, codes.Unauthenticated)
	alice = withToken(bg, rr.Token)
	must[*pb.User](t, "new token")(uc.WhoAmI(alice, &pb.WhoAmIRequest{}))

	// Deletion: the token stops working at once.
	must[*pb.DeleteUserResponse](t, "delete")(uc.DeleteUser(admin, &pb.DeleteUserRequest{Name: "alice"}))
	_, err = uc.WhoAmI(alice, &pb.WhoAmIRequest{})
	wantCode(t, "token after delete", err, codes.Unauthenticated)
	_, err = uc.DeleteUser(admin, &pb.DeleteUserRequest{Name: "alice"})
	wantCode(t, "delete again", err, codes.NotFound)
	_, err = uc.RotateUserToken(admin, &pb.RotateUserTokenRequest{Name: "alice"})
	wantCode(t, "rotate a missing user", err, codes.NotFound)
	_, err = uc.DeleteUser(admin, &pb.DeleteUserRequest{Name: "admin"})
	wantCode(t, "delete the admin token", err, codes.NotFound)
	if !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("delete admin does not say what admin is: %v", err)
	}
	// The name is free again.
	must[*pb.CreateUserResponse](t, "create alice again")(uc.CreateUser(admin, &pb.CreateUserRequest{Name: "alice", Role: "viewer"}))

	// Tokens over REST: made, used and refused like over gRPC.
	var made struct {
		User  struct{ Name, Role, Tenant string }
		Token string
	}
	if code := n.rest("POST", "/v1/users", testToken, map[string]any{"name": "frank", "role": "developer", "tenant": "team-b"}, &made); code != http.StatusOK || len(made.Token) != 64 {
		t.Fatalf("rest create: %d %+v", code, made)
	}
	var who struct{ Name, Role, Tenant string }
	if code := n.rest("GET", "/v1/whoami", made.Token, nil, &who); code != http.StatusOK || who.Name != "frank" || who.Tenant != "team-b" {
		t.Fatalf("rest whoami: %d %+v", code, who)
	}
	var e struct{ Message string }
	if code := n.rest("POST", "/v1/users", made.Token, map[string]any{"name": "mallory", "role": "admin"}, &e); code != http.StatusForbidden || !strings.Contains(e.Message, "developer frank of tenant team-b") {
		t.Fatalf("rest create by a developer: %d %+v", code, e)
	}
	if code := n.rest("DELETE", "/v1/users/frank", testToken, nil, nil); code != http.StatusOK {
		t.Fatalf("rest delete: %d", code)
	}
	if code := n.rest("GET", "/v1/whoami", made.Token, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("rest whoami after delete: %d", code)
	}
}

// TestSecrets: secrets are set, replaced, listed (names and dates only) and
// deleted by admins; no response carries a value; meta.GetSecret returns it.
func TestSecrets(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	admin := authed(bg)
	sc := n.secrets()
	const value = "pepper-0123456789"

	s1 := must[*pb.Secret](t, "set")(sc.SetSecret(admin, &pb.SetSecretRequest{Name: "mask-salt", Value: []byte(value)}))
	if s1.Name != "mask-salt" || s1.CreatedAt == nil || strings.Contains(s1.String(), value) {
		t.Fatalf("set: %v", s1)
	}
	must[*pb.Secret](t, "replace")(sc.SetSecret(admin, &pb.SetSecretRequest{Name: "mask-salt", Value: []byte(value + "2")}))
	sec, err := n.meta.GetSecret(bg, "mask-salt")
	if err != nil || string(sec.Value) != value+"2" {
		t.Fatalf("meta.GetSecret: %q, %v", sec.Value, err)
	}
	list := must[*pb.ListSecretsResponse](t, "list")(sc.ListSecrets(admin, &pb.ListSecretsRequest{}))
	if len(list.Secrets) != 1 || list.Secrets[0].Name != "mask-salt" || !list.Secrets[0].CreatedAt.AsTime().Equal(s1.CreatedAt.AsTime()) {
		t.Fatalf("list: %v", list)
	}
	for _, tc := range []struct {
		name  string
		value []byte
		want  string
	}{
		{"Bad", []byte("x"), "DNS label"},
		{"empty", nil, "the value is empty"},
		{"big", make([]byte, MaxSecretSize+1), "more than the 64KiB"},
	} {
		_, err := sc.SetSecret(admin, &pb.SetSecretRequest{Name: tc.name, Value: tc.value})
		wantCode(t, "set "+tc.name, err, codes.InvalidArgument)
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("set %s: %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	must[*pb.Secret](t, "set the largest value")(sc.SetSecret(admin, &pb.SetSecretRequest{Name: "big", Value: make([]byte, MaxSecretSize)}))

	// REST: values go in base64 and never come back.
	var rs map[string]any
	if code := n.rest("PUT", "/v1/secrets/api-key", testToken, map[string]any{"value": "c2VjcmV0LXZhbHVl"}, &rs); code != http.StatusOK || rs["name"] != "api-key" {
		t.Fatalf("rest set: %d %v", code, rs)
	}
	var rl map[string]any
	if code := n.rest("GET", "/v1/secrets", testToken, nil, &rl); code != http.StatusOK {
		t.Fatalf("rest list: %d", code)
	}
	for _, s := range rl["secrets"].([]any) {
		if _, ok := s.(map[string]any)["value"]; ok {
			t.Fatalf("rest list shows a value: %v", s)
		}
	}
	if sec, _ := n.meta.GetSecret(bg, "api-key"); string(sec.Value) != "secret-value" {
		t.Fatalf("value set over rest: %q", sec.Value)
	}

	// Viewers list; developers and viewers change nothing.
	viewer := n.addUser("carol", meta.RoleViewer, "")
	dev := n.addUser("alice", meta.RoleDeveloper, "team-a")
	must[*pb.ListSecretsResponse](t, "viewer lists")(sc.ListSecrets(viewer, &pb.ListSecretsRequest{}))
	_, err = sc.ListSecrets(dev, &pb.ListSecretsRequest{})
	wantDenied(t, "developer lists", err, "developer alice of tenant team-a may not call SecretService.ListSecrets")
	for _, ctx := range []context.Context{viewer, dev} {
		_, err = sc.SetSecret(ctx, &pb.SetSecretRequest{Name: "mask-salt", Value: []byte("mine")})
		wantDenied(t, "set", err, "SecretService.SetSecret")
		_, err = sc.DeleteSecret(ctx, &pb.DeleteSecretRequest{Name: "mask-salt"})
		wantDenied(t, "delete", err, "SecretService.DeleteSecret")
	}
	if code := n.rest("PUT", "/v1/secrets/mask-salt", "token-of-alice", map[string]any{"value": "bWluZQ=="}, nil); code != http.StatusForbidden {
		t.Fatalf("rest set by a developer: %d", code)
	}

	must[*pb.DeleteSecretResponse](t, "delete")(sc.DeleteSecret(admin, &pb.DeleteSecretRequest{Name: "mask-salt"}))
	_, err = sc.DeleteSecret(admin, &pb.DeleteSecretRequest{Name: "mask-salt"})
	wantCode(t, "delete again", err, codes.NotFound)
}
