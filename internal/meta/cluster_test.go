package meta

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestDecideJoin(t *testing.T) {
	started := func(name, ip string) Member {
		return Member{Name: name, PeerURLs: []string{"http://" + ip + ":7422"}, ClientURLs: []string{"http://" + ip + ":7421"}}
	}
	unstarted := func(ip string) Member { return Member{PeerURLs: []string{"http://" + ip + ":7422"}} }
	const peer4 = "http://127.0.0.4:7422"
	for _, tc := range []struct {
		name    string
		members []Member
		node    string
		peer    string
		want    JoinAction
		wantErr error
	}{
		{"second node becomes a member", []Member{started("n1", "127.0.0.1")}, "n4", peer4, JoinAsNewMember, nil},
		{"third node becomes a member", []Member{started("n1", "127.0.0.1"), started("n2", "127.0.0.2")}, "n4", peer4, JoinAsNewMember, nil},
		{"fourth node is a client", []Member{started("n1", "127.0.0.1"), started("n2", "127.0.0.2"), started("n3", "127.0.0.3")}, "n4", peer4, JoinAsClient, nil},
		{"a node that offers no member is a client", []Member{started("n1", "127.0.0.1")}, "n4", "", JoinAsClient, nil},
		{"retry after the member was added", []Member{started("n1", "127.0.0.1"), unstarted("127.0.0.4")}, "n4", peer4, JoinAsAddedMember, nil},
		{"retry with three members, one of them ours", []Member{started("n1", "127.0.0.1"), started("n2", "127.0.0.2"), unstarted("127.0.0.4")}, "n4", peer4, JoinAsAddedMember, nil},
		{"a learner is catching up", []Member{started("n1", "127.0.0.1"), {Name: "n2", Learner: true, PeerURLs: []string{"http://127.0.0.2:7422"}}}, "n4", peer4, 0, errdefs.ErrUnavailable},
		{"another member has not started", []Member{started("n1", "127.0.0.1"), unstarted("127.0.0.2")}, "n4", peer4, 0, errdefs.ErrUnavailable},
		{"another member has not started, client", []Member{started("n1", "127.0.0.1"), started("n2", "127.0.0.2"), unstarted("127.0.0.3")}, "n4", peer4, 0, errdefs.ErrUnavailable},
		{"name of a started member", []Member{started("n1", "127.0.0.1"), started("n4", "127.0.0.2")}, "n4", peer4, 0, errdefs.ErrAlreadyExists},
		{"name of a started member, as a client", []Member{started("n4", "127.0.0.1")}, "n4", "", 0, errdefs.ErrAlreadyExists},
		{"peer URL of a started member", []Member{started("n1", "127.0.0.4")}, "n4", peer4, 0, errdefs.ErrAlreadyExists},
		{"loopback member, remote cluster", []Member{started("n1", "10.0.0.1")}, "n4", peer4, 0, errdefs.ErrFailedPrecondition},
		{"remote member, loopback cluster", []Member{started("n1", "127.0.0.1")}, "n4", "http://10.0.0.4:7422", 0, errdefs.ErrFailedPrecondition},
		{"remote members", []Member{started("n1", "10.0.0.1")}, "n4", "http://10.0.0.4:7422", JoinAsNewMember, nil},
		{"host names are not judged", []Member{started("n1", "127.0.0.1")}, "n4", "http://node4.example:7422", JoinAsNewMember, nil},
		{"loopback client of a remote cluster", []Member{started("n1", "10.0.0.1"), started("n2", "10.0.0.2"), started("n3", "10.0.0.3")}, "n4", peer4, JoinAsClient, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecideJoin(tc.members, tc.node, tc.peer)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("DecideJoin = %v, %v; want an error wrapping %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DecideJoin = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestInitialCluster(t *testing.T) {
	ms := []Member{
		{Name: "n1", PeerURLs: []string{"http://127.0.0.1:7422"}},
		{Name: "n2", PeerURLs: []string{"http://127.0.0.2:7422"}},
		{PeerURLs: []string{"http://127.0.0.3:7422"}},
	}
	got := InitialCluster(ms, "n3", "http://127.0.0.3:7422")
	if want := "n1=http://127.0.0.1:7422,n2=http://127.0.0.2:7422,n3=http://127.0.0.3:7422"; got != want {
		t.Fatalf("InitialCluster = %q, want %q", got, want)
	}
}

func TestClientURLsLeaveLearnersOut(t *testing.T) {
	ms := []Member{
		{Name: "n1", ClientURLs: []string{"http://127.0.0.1:7421"}},
		{Name: "n2", ClientURLs: []string{"http://127.0.0.2:7421"}, Learner: true},
		{PeerURLs: []string{"http://127.0.0.3:7422"}},
	}
	if got := ClientURLs(ms); !slices.Equal(got, []string{"http://127.0.0.1:7421"}) {
		t.Fatalf("ClientURLs = %v", got)
	}
}

func TestMembershipFile(t *testing.T) {
	dir := t.TempDir()
	if m, err := LoadMembership(dir); m != nil || err != nil {
		t.Fatalf("no file: %v, %v", m, err)
	}
	want := Membership{ClusterID: "c1", Node: "n2", EtcdMember: true, PeerURL: "http://127.0.0.2:7422", ClientURL: "http://127.0.0.2:7421",
		InitialCluster: "n1=http://127.0.0.1:7422,n2=http://127.0.0.2:7422", Endpoints: []string{"http://127.0.0.1:7421"},
		JoinedVia: "127.0.0.1:7420", Joined: time.Now().UTC().Truncate(time.Second)}
	if err := SaveMembership(dir, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, MembershipFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v", fi, err)
	}
	got, err := LoadMembership(dir)
	if err != nil || got.ClusterID != want.ClusterID || got.InitialCluster != want.InitialCluster || !got.Joined.Equal(want.Joined) || !slices.Equal(got.Endpoints, want.Endpoints) {
		t.Fatalf("loaded %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"{", `{"clusterId":"c1","node":"n2","etcdMember":true}`, `{"clusterId":"c1","node":"n2"}`} {
		os.WriteFile(filepath.Join(dir, MembershipFile), []byte(bad), 0o600)
		if _, err := LoadMembership(dir); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("load of %s: %v, want a failed precondition", bad, err)
		}
	}
}

func TestJoinTokenIsMadeOnce(t *testing.T) {
	s := open(t, embeddedConfig(t))
	defer s.Close()
	ctx := context.Background()
	toks := make([]string, 8)
	var wg sync.WaitGroup
	for i := range toks {
		wg.Go(func() {
			tok, err := s.JoinToken(ctx)
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		})
	}
	wg.Wait()
	if len(toks[0]) != 64 {
		t.Fatalf("token %q", toks[0])
	}
	for _, tok := range toks {
		if tok != toks[0] {
			t.Fatalf("tokens differ: %q", toks)
		}
	}
}

// TestPresence: a node is online while its lease lives; Close makes it
// offline at once; a node whose client is gone goes offline once its
// lease expires.
func TestPresence(t *testing.T) {
	cfg := embeddedConfig(t)
	s := open(t, cfg)
	defer s.Close()
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		if _, err := s.PutNode(ctx, Node{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	online := func() []string {
		t.Helper()
		nodes, err := s.OnlineNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		return names
	}
	pa, err := s.KeepPresence(ctx, "a", 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	// b's presence is kept by a client of its own, which dies.
	other := open(t, Config{Endpoints: s.Endpoints()})
	pb, err := other.KeepPresence(ctx, "b", 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := s.KeepPresence(ctx, "c", 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := online(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("online %v", got)
	}
	// Alive past its TTL: the lease is renewed.
	time.Sleep(3 * time.Second)
	if got := online(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("online after the TTL %v", got)
	}
	pc.Close()
	if got := online(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("online after c's Close %v", got)
	}
	other.Close() // b's lease is no longer renewed
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(online(), []string{"a"}) {
		if time.Now().After(deadline) {
			t.Fatalf("online 10s after b's client went: %v", online())
		}
		time.Sleep(100 * time.Millisecond)
	}
	pb.Close()
	nodes, states, err := s.NodeStates(ctx)
	if err != nil || len(nodes) != 3 || !states["a"] || states["b"] || states["c"] {
		t.Fatalf("NodeStates = %v, %v, %v", nodes, states, err)
	}
}

// TestThreeMembersSurviveLossOfOne builds a cluster the way nodes join
// (AdmitNode adds a learner, the member starts with the initial cluster it
// was given and Open promotes it), checks that a fourth node is a client, then stops one member
// and checks that the other two still read and write, and that the
// stopped one catches up when it comes back.
func TestThreeMembersSurviveLossOfOne(t *testing.T) {
	ctx := context.Background()
	cfgs := make([]Config, 3)
	stores := make([]*Store, 3)
	for i := range cfgs {
		cfgs[i] = embeddedConfig(t)
		cfgs[i].Name = []string{"n1", "n2", "n3"}[i]
	}
	stores[0] = open(t, cfgs[0])
	for i := 1; i < 3; i++ {
		var adm Admission
		deadline := time.Now().Add(30 * time.Second)
		for {
			var err error
			adm, err = stores[0].AdmitNode(ctx, cfgs[i].Name, cfgs[i].PeerURL)
			if err == nil {
				break
			}
			// A member that just started must be connected for a
			// while before etcd takes another.
			if !errors.Is(err, errdefs.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("admit %s: %v", cfgs[i].Name, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if adm.Action != JoinAsNewMember || adm.InitialCluster == "" {
			t.Fatalf("admit %s: %+v", cfgs[i].Name, adm)
		}
		cfgs[i].InitialCluster = adm.InitialCluster
		stores[i] = open(t, cfgs[i])
	}
	defer func() {
		for _, s := range stores {
			if s != nil {
				s.Close()
			}
		}
	}()
	adm, err := stores[1].AdmitNode(ctx, "n4", freeURL(t))
	if err != nil || adm.Action != JoinAsClient || len(adm.Endpoints) != 3 {
		t.Fatalf("admit n4: %+v, %v", adm, err)
	}
	if _, err := stores[2].AdmitNode(ctx, "n2", freeURL(t)); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("admit n2 again: %v", err)
	}
	ms, err := stores[2].Members(ctx)
	if err != nil || len(ms) != 3 {
		t.Fatalf("members: %v, %v", ms, err)
	}
	client := open(t, Config{Endpoints: adm.Endpoints})
	defer client.Close()

	// n1, the founder, goes; n2, n3 and the client carry on.
	stores[0].Close()
	stores[0] = nil
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := stores[1].CreateVolume(wctx, Volume{Name: "v", Size: 4096, Node: "n2", State: StateReady}); err != nil {
		t.Fatalf("write with one member down: %v", err)
	}
	if _, err := stores[2].GetVolume(wctx, "v"); err != nil {
		t.Fatalf("read on n3: %v", err)
	}
	if _, err := client.GetVolume(wctx, "v"); err != nil {
		t.Fatalf("read on the client: %v", err)
	}
	// n1 comes back from its data and sees what was written without it.
	stores[0] = open(t, cfgs[0])
	if _, err := stores[0].GetVolume(wctx, "v"); err != nil {
		t.Fatalf("read on n1 after its restart: %v", err)
	}
}
