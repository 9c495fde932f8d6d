package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

type changedFlags map[string]bool

func (c changedFlags) Changed(name string) bool { return c[name] }

func TestApplyIP(t *testing.T) {
	o := upOptions{ip: "127.0.3.7", apiAddr: "127.0.0.1:7420", nbdAddr: "127.0.0.1:10809", replicaAddr: "127.0.0.1:7425",
		etcdClientURL: meta.DefaultClientURL, etcdPeerURL: "http://10.1.1.1:9999"}
	if err := applyIP(changedFlags{"etcd-peer-url": true}, &o); err != nil {
		t.Fatal(err)
	}
	if o.apiAddr != "127.0.3.7:7420" || o.nbdAddr != "127.0.3.7:10809" || o.replicaAddr != "127.0.3.7:7425" ||
		o.etcdClientURL != "http://127.0.3.7:7421" || o.etcdPeerURL != "http://10.1.1.1:9999" {
		t.Fatalf("after --ip: %+v", o)
	}
	o = upOptions{ip: "fd00::5"}
	if err := applyIP(nil, &o); err != nil || o.apiAddr != "[fd00::5]:7420" || o.etcdPeerURL != "http://[fd00::5]:7422" {
		t.Fatalf("IPv6: %v %+v", err, o)
	}
	for _, bad := range []string{"0.0.0.0", "node1", "::"} {
		o := upOptions{ip: bad}
		if err := applyIP(nil, &o); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "--ip") {
			t.Errorf("--ip %s: %v", bad, err)
		}
	}
	o = upOptions{apiAddr: "x"}
	if err := applyIP(nil, &o); err != nil || o.apiAddr != "x" {
		t.Fatalf("no --ip: %v %+v", err, o)
	}
}

func TestMergeLabels(t *testing.T) {
	got, err := mergeLabels(map[string]string{"zone": "a"}, []string{"rack=r1", "ssd=", "zone=a"})
	if err != nil || len(got) != 3 || got["zone"] != "a" || got["rack"] != "r1" || got["ssd"] != "" {
		t.Fatalf("merge: %v %v", got, err)
	}
	if got, err := mergeLabels(nil, nil); got != nil || err != nil {
		t.Fatalf("none: %v %v", got, err)
	}
	for _, tc := range []struct {
		labels map[string]string
		list   []string
		msg    string
	}{
		{nil, []string{"zone"}, "want KEY=VALUE"},
		{nil, []string{"=a"}, "non-empty key"},
		{nil, []string{"zone=a", "zone=b"}, "given twice"},
		{map[string]string{"zone": "a"}, []string{"zone=b"}, "given twice"},
	} {
		if _, err := mergeLabels(tc.labels, tc.list); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("mergeLabels(%v, %v) = %v, want %q", tc.labels, tc.list, err, tc.msg)
		}
	}
}

func TestCheckJoinAddresses(t *testing.T) {
	for _, tc := range []struct {
		join, peer string
		ok         bool
	}{
		{"127.0.0.1:7420", "http://127.0.0.2:7422", true},
		{"10.0.0.1:7420", "http://10.0.0.2:7422", true},
		{"10.0.0.1:7420", "http://127.0.0.1:7422", false},
		{"10.0.0.1:7420", "http://localhost:7422", false},
		{"node1.example:7420", "http://127.0.0.1:7422", true}, // not judged
		{"[fd00::1]:7420", "http://[::1]:7422", false},
	} {
		if err := checkJoinAddresses(tc.join, tc.peer); (err == nil) != tc.ok {
			t.Errorf("checkJoinAddresses(%s, %s) = %v", tc.join, tc.peer, err)
		}
	}
}

// TestStoreConfigRefusals: the ways to misuse --join fail before anything
// is started or joined, and say why.
func TestStoreConfigRefusals(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	base := func(t *testing.T) upOptions {
		return upOptions{dataDir: t.TempDir(), nodeName: "n2", etcdPeerURL: "http://127.0.0.2:7422", etcdClientURL: "http://127.0.0.2:7421"}
	}
	joined := meta.Membership{ClusterID: "c1", Node: "n2", EtcdMember: true, PeerURL: "http://127.0.0.2:7422",
		InitialCluster: "n1=http://127.0.0.1:7422,n2=http://127.0.0.2:7422", Endpoints: []string{"http://127.0.0.1:7421"}}

	o := base(t)
	o.join, o.etcdEndpoints = "127.0.0.1:7420", []string{"http://127.0.0.1:2379"}
	if _, _, err := storeConfig(ctx, o, log); err == nil || !strings.Contains(err.Error(), "--join and --etcd-endpoints exclude each other") {
		t.Errorf("--join with --etcd-endpoints: %v", err)
	}
	o = base(t)
	o.join = "127.0.0.1:7420"
	if _, _, err := storeConfig(ctx, o, log); err == nil || !strings.Contains(err.Error(), "--join needs --join-token") {
		t.Errorf("--join without a token: %v", err)
	}
	o = base(t)
	o.join, o.joinToken = "127.0.0.1:7420", "t"
	os.MkdirAll(filepath.Join(o.dataDir, "etcd", "data", "member"), 0o700)
	if _, _, err := storeConfig(ctx, o, log); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "empty --data-dir") {
		t.Errorf("--join on a node that founded a cluster: %v", err)
	}

	// A node that joined restarts from what it remembers.
	o = base(t)
	if err := meta.SaveMembership(o.dataDir, joined); err != nil {
		t.Fatal(err)
	}
	o.join = "127.0.0.1:7420" // ignored
	cfg, m, err := storeConfig(ctx, o, log)
	if err != nil || m == nil || cfg.InitialCluster != joined.InitialCluster || cfg.Name != "n2" || len(cfg.Endpoints) != 0 {
		t.Fatalf("restart of a member: %+v %v %v", cfg, m, err)
	}
	o.nodeName = "n3"
	if _, _, err := storeConfig(ctx, o, log); err == nil || !strings.Contains(err.Error(), "--node-name n2") {
		t.Errorf("restart with another name: %v", err)
	}
	o = base(t)
	meta.SaveMembership(o.dataDir, joined)
	o.etcdPeerURL = "http://127.0.0.9:7422"
	if _, _, err := storeConfig(ctx, o, log); err == nil || !strings.Contains(err.Error(), "same --ip or --etcd-peer-url") {
		t.Errorf("restart with another peer URL: %v", err)
	}
	o = base(t)
	meta.SaveMembership(o.dataDir, joined)
	o.etcdEndpoints = []string{"http://127.0.0.1:2379"}
	if _, _, err := storeConfig(ctx, o, log); err == nil || !strings.Contains(err.Error(), "--etcd-endpoints") {
		t.Errorf("restart with --etcd-endpoints: %v", err)
	}
	client := joined
	client.EtcdMember, client.PeerURL, client.InitialCluster = false, "", ""
	o = base(t)
	meta.SaveMembership(o.dataDir, client)
	if cfg, _, err := storeConfig(ctx, o, log); err != nil || len(cfg.Endpoints) != 1 || cfg.External {
		t.Errorf("restart of a client: %+v %v", cfg, err)
	}
}

// TestJoinInProcess joins a second node to a first with the real runUp,
// lists the nodes, restarts the second (its --join is then a no-op), and
// checks that a wrong token joins nothing.
func TestJoinInProcess(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	o1 := upOptions{
		dataDir: filepath.Join(dir, "n1"), apiAddr: "127.0.0.1:0", nbdAddr: "127.0.0.1:0",
		etcdClientURL: upFreeURL(t), etcdPeerURL: upFreeURL(t), nodeName: "n1",
		configPath: filepath.Join(dir, "n1.yaml"), logLevel: "error", nodeTTL: 2 * time.Second,
		labels: map[string]string{"zone": "a"},
	}
	cfg1, out1, stop1 := runUpUntilConfig(t, o1)
	t.Cleanup(func() { stop1() })
	if !strings.Contains(out1.String(), "--join "+cfg1.API) {
		t.Errorf("the first node does not say how to add nodes:\n%s", out1)
	}
	tok, _, err := cliIn(t, cfg1.API, cfg1.Token, "", "cluster", "token")
	if err != nil || !tokenLine.MatchString(tok) {
		t.Fatalf("cluster token: %v %q", err, tok)
	}

	o2 := o1
	o2.dataDir, o2.nodeName, o2.configPath = filepath.Join(dir, "n2"), "n2", filepath.Join(dir, "n2.yaml")
	o2.etcdClientURL, o2.etcdPeerURL = upFreeURL(t), upFreeURL(t)
	o2.labels = map[string]string{"zone": "b"}
	o2.join, o2.joinToken = cfg1.API, "wrong"
	err = runUp(context.Background(), o2, io.Discard)
	if !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "refused the join token") {
		t.Fatalf("join with a wrong token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(o2.dataDir, meta.MembershipFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused join left %s: %v", meta.MembershipFile, err)
	}

	o2.joinToken = strings.TrimSpace(tok)
	cfg2, _, stop2 := runUpUntilConfig(t, o2)
	m, err := meta.LoadMembership(o2.dataDir)
	if err != nil || m == nil || !m.EtcdMember || m.JoinedVia != cfg1.API {
		t.Fatalf("membership of n2: %+v %v", m, err)
	}

	list := func(api, token string) []map[string]any {
		t.Helper()
		out, _, err := cliIn(t, api, token, "", "node", "list", "-o", "json")
		if err != nil {
			t.Fatalf("node list: %v", err)
		}
		var resp struct{ Nodes []map[string]any }
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("node list -o json: %v\n%s", err, out)
		}
		return resp.Nodes
	}
	nodes := list(cfg2.API, cfg1.Token) // admin tokens are the cluster's
	if len(nodes) != 2 {
		t.Fatalf("nodes: %v", nodes)
	}
	for i, want := range []string{"a", "b"} {
		nd := nodes[i]
		if nd["state"] != "online" || nd["etcdMember"] != true || nd["labels"].(map[string]any)["zone"] != want || nd["replicaAddress"] == "" {
			t.Errorf("node %d: %v", i, nd)
		}
	}
	table, _, err := cliIn(t, cfg1.API, cfg1.Token, "", "node", "list")
	if err != nil || !regexp.MustCompile(`(?m)^NAME +STATE +LABELS +API +REPLICA +ETCD +CAPACITY +ALLOCATED +AVAILABLE\nn1 +online +zone=a +127\.0\.0\.1:\d+ +127\.0\.0\.1:\d+ +member +`).MatchString(table) {
		t.Errorf("node list: %v\n%s", err, table)
	}
	if yml, _, err := cliIn(t, cfg1.API, cfg1.Token, "", "node", "list", "-o", "yaml"); err != nil || !strings.Contains(yml, "nodes:\n- ") {
		t.Errorf("node list -o yaml: %v\n%s", err, yml)
	}

	// n2 restarts, --join still given: a no-op.
	if err := stop2(); err != nil {
		t.Fatalf("stop n2: %v", err)
	}
	cfg2, _, stop2 = runUpUntilConfig(t, o2)
	t.Cleanup(func() { stop2() })
	for _, nd := range list(cfg2.API, cfg2.Token) {
		if nd["state"] != "online" {
			t.Errorf("after n2's restart: %v", nd)
		}
	}
	m2, _ := meta.LoadMembership(o2.dataDir)
	if !m2.Joined.Equal(m.Joined) {
		t.Errorf("the restart joined again: %v, then %v", m.Joined, m2.Joined)
	}
}
