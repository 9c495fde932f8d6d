package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

func TestCheckJoinToken(t *testing.T) {
	const tok = "0123456789abcdef"
	for _, tc := range []struct {
		want, given string
		ok          bool
		msg         string
	}{
		{tok, tok, true, ""},
		{tok, " " + tok + "\n", true, ""},
		{tok, "", false, "no join token given"},
		{tok, tok[:15], false, "wrong join token"},
		{tok, tok + "0", false, "wrong join token"},
		{tok, strings.ToUpper(tok), false, "wrong join token"},
		{"", "", false, "no join token given"},
		{"", "x", false, "wrong join token"},
	} {
		err := checkJoinToken(tc.want, tc.given)
		if tc.ok != (err == nil) || (err != nil && (!errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), tc.msg))) {
			t.Errorf("checkJoinToken(%q, %q) = %v", tc.want, tc.given, err)
		}
	}
}

// TestJoinCluster: JoinCluster alone goes through without an API token and
// is authenticated by the join token; GetJoinToken is an admin's.
func TestJoinCluster(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	cc := n.cluster()

	_, err := cc.GetJoinToken(bg, &pb.GetJoinTokenRequest{})
	wantCode(t, "join token without an API token", err, codes.Unauthenticated)
	viewer := n.addUser("carol", meta.RoleViewer, "")
	_, err = cc.GetJoinToken(viewer, &pb.GetJoinTokenRequest{})
	wantCode(t, "join token as a viewer", err, codes.PermissionDenied)
	tok := must[*pb.JoinToken](t, "join token")(cc.GetJoinToken(authed(bg), &pb.GetJoinTokenRequest{})).Token
	if len(tok) != 64 {
		t.Fatalf("join token %q", tok)
	}
	// The exemption is JoinCluster's only.
	_, err = cc.GetStatus(bg, &pb.GetStatusRequest{})
	wantCode(t, "status without an API token", err, codes.Unauthenticated)

	members := func() int {
		t.Helper()
		ms, err := n.meta.Members(bg)
		if err != nil {
			t.Fatal(err)
		}
		return len(ms)
	}
	peer := freeURL(t)
	for _, bad := range []string{"", "wrong", tok[:63], testToken} {
		_, err := cc.JoinCluster(bg, &pb.JoinClusterRequest{Token: bad, Node: "node2", EtcdPeerUrl: peer, EtcdClientUrl: freeURL(t)})
		wantCode(t, "join with token "+bad, err, codes.Unauthenticated)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "join token") {
			t.Errorf("join with token %q: %q does not say what is wrong", bad, msg)
		}
	}
	if got := members(); got != 1 {
		t.Fatalf("%d etcd members after refused joins", got)
	}
	_, err = cc.JoinCluster(bg, &pb.JoinClusterRequest{Token: tok, Node: "a/b"})
	wantCode(t, "join with a bad name", err, codes.InvalidArgument)
	_, err = cc.JoinCluster(bg, &pb.JoinClusterRequest{Token: tok, Node: "node2", EtcdPeerUrl: "127.0.0.2:7422"})
	wantCode(t, "join with a bad peer url", err, codes.InvalidArgument)

	// A node offering no member joins as a client.
	st := must[*pb.Status](t, "status")(cc.GetStatus(authed(bg), &pb.GetStatusRequest{}))
	resp := must[*pb.JoinClusterResponse](t, "join")(cc.JoinCluster(bg, &pb.JoinClusterRequest{Token: tok, Node: "node2"}))
	if resp.ClusterId != st.ClusterId || len(resp.EtcdEndpoints) != 1 || resp.EtcdEndpoints[0] != n.etcdClient || resp.EtcdInitialCluster != "" {
		t.Fatalf("join: %v", resp)
	}
	// So does one over REST, without an API token.
	var out map[string]any
	if code := n.rest(http.MethodPost, "/v1/cluster:join", "", map[string]string{"token": tok, "node": "node3"}, &out); code != http.StatusOK || out["clusterId"] != st.ClusterId {
		t.Fatalf("REST join: %d %v", code, out)
	}
	if code := n.rest(http.MethodPost, "/v1/cluster:join", "", map[string]string{"token": "wrong", "node": "node3"}, nil); code != http.StatusUnauthorized {
		t.Fatalf("REST join with a wrong token: %d", code)
	}

	// The name of an online node is taken.
	p, err := n.meta.KeepPresence(bg, "node1", 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = cc.JoinCluster(bg, &pb.JoinClusterRequest{Token: tok, Node: "node1"})
	wantCode(t, "join as an online node", err, codes.AlreadyExists)
	if got := members(); got != 1 {
		t.Fatalf("%d etcd members after joins as clients", got)
	}
}

// TestStatusNodeStates: a node is online while its presence lease lives,
// shows its replica address and whether it runs an etcd member.
func TestStatusNodeStates(t *testing.T) {
	n := newNode(t)
	bg := context.Background()
	for _, nd := range []meta.Node{
		{Name: "node2", Addresses: map[string]string{"api": "127.0.0.2:7420", "replica": "127.0.0.2:7425"}, Heartbeat: time.Now()},
		{Name: "node3", Addresses: map[string]string{"api": "127.0.0.3:7420"}, Heartbeat: time.Now()},
		// The harness's etcd member is named "default".
		{Name: "default", Labels: map[string]string{"zone": "a"}, Heartbeat: time.Now()},
	} {
		if _, err := n.meta.PutNode(bg, nd); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"node2", "default"} {
		p, err := n.meta.KeepPresence(bg, name, 5*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
	}
	st := must[*pb.Status](t, "status")(n.cluster().GetStatus(authed(bg), &pb.GetStatusRequest{}))
	got := map[string]*pb.Node{}
	for _, nd := range st.Nodes {
		got[nd.Name] = nd
	}
	if nd := got["node1"]; nd == nil || nd.State != "online" || nd.EtcdMember {
		t.Errorf("node1 (this node, no lease in this harness): %v", nd)
	}
	if nd := got["node2"]; nd == nil || nd.State != "online" || nd.ReplicaAddress != "127.0.0.2:7425" || nd.EtcdMember {
		t.Errorf("node2: %v", nd)
	}
	if nd := got["node3"]; nd == nil || nd.State != "offline" {
		t.Errorf("node3 (no lease): %v", nd)
	}
	if nd := got["default"]; nd == nil || nd.State != "online" || !nd.EtcdMember || nd.Labels["zone"] != "a" {
		t.Errorf("default (the etcd member's name): %v", nd)
	}
	if len(st.EtcdEndpoints) != 1 || st.EtcdEndpoints[0] != n.etcdClient {
		t.Errorf("etcd endpoints %v", st.EtcdEndpoints)
	}
}
