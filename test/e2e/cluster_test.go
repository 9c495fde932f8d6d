package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clusterTTL is the nodes' presence lease in TestCluster: a killed node
// shows offline this long after its death (and a little more).
const clusterTTL = 3 * time.Second

// clusterNode starts `strata up --ip IP` as node name, with more flags.
// Its services listen on IP's default ports, which is why the cluster
// test's addresses, 127.0.3.x, are used by no other test.
func clusterNode(t *testing.T, ip, name string, extra ...string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, bin: strataBinary(t), dir: dir, dataDir: filepath.Join(dir, "data"), ip: ip,
		api: ip + ":7420", nbd: ip + ":10809", replica: ip + ":7425", etcdC: ip + ":7421", etcdP: ip + ":7422",
		extra: append([]string{"--node-name", name, "--node-ttl", clusterTTL.String()}, extra...)}
	n.start()
	t.Cleanup(n.stop)
	return n
}

// needAddresses skips the test when an address it needs is in use.
func needAddresses(t *testing.T, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Skipf("%s is not free (another cluster running?): %v", a, err)
		}
		ln.Close()
	}
}

type clusterNodeView struct {
	Name           string            `json:"name"`
	State          string            `json:"state"`
	APIAddress     string            `json:"apiAddress"`
	ReplicaAddress string            `json:"replicaAddress"`
	EtcdMember     bool              `json:"etcdMember"`
	Labels         map[string]string `json:"labels"`
	PoolCapacity   string            `json:"poolCapacityBytes"`
}

// nodeList runs `strata node list -o json` on n.
func nodeList(n *node) map[string]clusterNodeView {
	n.t.Helper()
	var resp struct{ Nodes []clusterNodeView }
	if err := json.Unmarshal([]byte(n.run("node", "list", "-o", "json")), &resp); err != nil {
		n.t.Fatalf("node list -o json: %v", err)
	}
	out := map[string]clusterNodeView{}
	for _, v := range resp.Nodes {
		out[v.Name] = v
	}
	return out
}

// waitNodeState polls n's node list until node is in state.
func waitNodeState(t *testing.T, n *node, node, state string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if nodeList(n)[node].State == state {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s is not %s on %s after %s:\n%s", node, state, n.api, within, n.run("node", "list"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCluster runs four real nodes on 127.0.3.1-4: the first founds the
// cluster, a join with a wrong token is refused and joins nothing, the
// next two join as etcd members and the fourth as an etcd client. It kills
// a member with SIGKILL and checks that the cluster still answers on the
// others, that the dead node shows offline once its lease expires, and
// that it comes back online when restarted without --join.
func TestCluster(t *testing.T) {
	ips := []string{"127.0.3.1", "127.0.3.2", "127.0.3.3", "127.0.3.4"}
	for _, ip := range ips {
		needAddresses(t, ip+":7420", ip+":7421", ip+":7422", ip+":7425", ip+":10809")
	}
	start := time.Now()
	c1 := clusterNode(t, ips[0], "c1", "--label", "zone=a", "--label", "rack=r1")
	token := strings.TrimSpace(c1.run("cluster", "token"))
	if len(token) != 64 {
		t.Fatalf("cluster token %q", token)
	}
	join := []string{"--join", c1.api, "--join-token", token}

	// A wrong token: a clear error, nothing joined, nothing left behind.
	bad := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c1.bin, "up", "--ip", ips[3], "--node-name", "intruder", "--data-dir", filepath.Join(bad, "data"),
		"--config", filepath.Join(bad, "config.yaml"), "--join", c1.api, "--join-token", "not-the-token")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "error: join: the cluster at "+c1.api+" refused the join token") ||
		strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("join with a wrong token: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(bad, "data", "cluster.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused join left cluster.json: %v", err)
	}
	if nodes := nodeList(c1); len(nodes) != 1 {
		t.Fatalf("nodes after a refused join: %v", nodes)
	}

	c2 := clusterNode(t, ips[1], "c2", append([]string{"--labels", "zone=b,rack=r1"}, join...)...)
	c3 := clusterNode(t, ips[2], "c3", append([]string{"--label", "zone=c"}, join...)...)
	// The fourth joins through c2, as an etcd client.
	c4 := clusterNode(t, ips[3], "c4", "--label", "zone=c", "--join", c2.api, "--join-token", token)
	t.Logf("4 nodes up in %s", time.Since(start).Round(time.Millisecond))

	nodes := nodeList(c2)
	if len(nodes) != 4 {
		t.Fatalf("node list: %v", nodes)
	}
	for i, want := range []struct {
		name, zone string
		member     bool
	}{{"c1", "a", true}, {"c2", "b", true}, {"c3", "c", true}, {"c4", "c", false}} {
		v := nodes[want.name]
		if v.State != "online" || v.Labels["zone"] != want.zone || v.EtcdMember != want.member ||
			v.APIAddress != ips[i]+":7420" || v.ReplicaAddress != ips[i]+":7425" || v.PoolCapacity == "0" {
			t.Errorf("%s: %+v", want.name, v)
		}
	}
	if v := nodes["c1"]; v.Labels["rack"] != "r1" {
		t.Errorf("c1's labels: %v", v.Labels)
	}
	table := c4.run("node", "list")
	if !strings.Contains(table, "ETCD") || strings.Count(table, " member ") != 3 || !strings.Contains(table, "rack=r1,zone=a") {
		t.Errorf("node list:\n%s", table)
	}
	if st := c4.run("status"); strings.Count(st, "online") != 4 || !strings.Contains(st, "http://127.0.3.3:7421") {
		t.Errorf("status on the client node:\n%s", st)
	}

	// c1, the founder, dies; c2, c3 and c4 carry on.
	c1.kill9()
	killed := time.Now()
	c2.run("volume", "create", "after-loss", "--size", "16MiB", "--nodes", "c2")
	if list := c3.run("volume", "list"); !strings.Contains(list, "after-loss") {
		t.Fatalf("volume list on c3 after c1's loss:\n%s", list)
	}
	if list := c4.run("volume", "list"); !strings.Contains(list, "after-loss") {
		t.Fatalf("volume list on c4 after c1's loss:\n%s", list)
	}
	waitNodeState(t, c3, "c1", "offline", clusterTTL+20*time.Second)
	t.Logf("c1 offline %s after its SIGKILL (lease TTL %s)", time.Since(killed).Round(time.Millisecond), clusterTTL)

	// c1 comes back without --join (it founded the cluster); c3 is
	// restarted with its --join, which is then a no-op.
	c1.start()
	waitNodeState(t, c2, "c1", "online", 30*time.Second)
	if list := c1.run("volume", "list"); !strings.Contains(list, "after-loss") {
		t.Fatalf("volume list on c1 after its restart:\n%s", list)
	}
	c3.stop()
	c3.start()
	nodes = nodeList(c1)
	for _, name := range []string{"c1", "c2", "c3", "c4"} {
		if nodes[name].State != "online" {
			t.Errorf("after the restarts, %s: %+v", name, nodes[name])
		}
	}
	if !strings.Contains(c3.log(), "--join is ignored") {
		t.Errorf("c3's restart with --join does not say it is ignored:\n%s", c3.log())
	}
	c2.run("volume", "delete", "after-loss")
}
