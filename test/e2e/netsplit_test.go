package e2e

// Network partitions of a replicated volume's cluster: three `strata up`
// processes in Docker containers (an image imported FROM scratch holding
// the static binary alone), each on two private networks: "etcd", which
// carries the etcd traffic between the members, and "data", which carries
// the API, NBD and replica traffic. `docker network disconnect` cuts a
// node off one of them. The writer and the CLI run on the host, which
// reaches the containers' addresses on both networks. Each test ends with
// every acknowledged write read back and `volume check` finding the
// replicas identical.

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dockerCluster is three nodes d1, d2 and d3 in containers.
type dockerCluster struct {
	t      *testing.T
	cli    string // the CLI on the host
	image  string
	prefix string // of the containers' and networks' names
	etcd   string // network names
	data   string
	nodes  []*dockerNode
	token  string
}

type dockerNode struct {
	name           string
	container      string
	etcdIP, dataIP string
	dir            string // bind-mounted as /data
}

func (n *dockerNode) api() string { return n.dataIP + ":7420" }
func (n *dockerNode) nbd() string { return n.dataIP + ":10809" }

// staticImage imports an image holding only the static strata binary (at
// /strata) and empty /tmp and /data directories.
func staticImage(t *testing.T, tag string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "strata")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../../cmd/strata")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return importImage(t, tag, func(tw *tar.Writer) {
		for _, d := range []string{"tmp/", "data/"} {
			tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o1777})
		}
		tw.WriteHeader(&tar.Header{Name: "strata", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
		tw.Write(data)
	})
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// newDockerCluster starts the three containers, d2 and d3 joining d1.
func newDockerCluster(t *testing.T) *dockerCluster {
	t.Helper()
	needTools(t, "docker")
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skip("no Docker engine answers (docker info failed)")
	}
	id := os.Getpid() % 200
	c := &dockerCluster{t: t, cli: strataBinary(t), prefix: fmt.Sprintf("strata-ns%d-", os.Getpid())}
	c.image = staticImage(t, "strata-e2e-static:"+fmt.Sprint(os.Getpid()))
	c.etcd, c.data = c.prefix+"etcd", c.prefix+"data"
	t.Cleanup(c.remove)
	docker(t, "network", "create", "--subnet", fmt.Sprintf("10.231.%d.0/24", id), c.etcd)
	docker(t, "network", "create", "--subnet", fmt.Sprintf("10.232.%d.0/24", id), c.data)
	for i := 1; i <= 3; i++ {
		n := &dockerNode{
			name:      fmt.Sprintf("d%d", i),
			container: fmt.Sprintf("%sd%d", c.prefix, i),
			etcdIP:    fmt.Sprintf("10.231.%d.%d", id, 10+i),
			dataIP:    fmt.Sprintf("10.232.%d.%d", id, 10+i),
			dir:       t.TempDir(),
		}
		c.nodes = append(c.nodes, n)
		args := []string{"create", "--name", n.container, "--network", c.etcd, "--ip", n.etcdIP,
			"-v", n.dir + ":/data", c.image,
			"/strata", "up", "--ip", n.dataIP, "--node-name", n.name, "--label", "zone=z" + fmt.Sprint(i),
			"--etcd-client-url", "http://" + n.etcdIP + ":7421", "--etcd-peer-url", "http://" + n.etcdIP + ":7422",
			"--data-dir", "/data/data", "--config", "/data/config.yaml", "--node-ttl", replTTL.String()}
		if i > 1 {
			args = append(args, "--join", c.nodes[0].api(), "--join-token", c.run("cluster", "token"))
		}
		docker(t, args...)
		docker(t, "network", "connect", "--ip", n.dataIP, c.data, n.container)
		docker(t, "start", n.container)
		c.waitUp(n)
	}
	c.waitOnline("d1", "d2", "d3")
	return c
}

// remove removes the containers and the networks.
func (c *dockerCluster) remove() {
	if c.t.Failed() {
		c.t.Logf("node logs:\n%s", c.logs())
	}
	for _, n := range c.nodes {
		exec.Command("docker", "rm", "-f", n.container).Run()
	}
	exec.Command("docker", "network", "rm", c.etcd, c.data).Run()
}

func (c *dockerCluster) logs() string {
	var b strings.Builder
	for _, n := range c.nodes {
		out, _ := exec.Command("docker", "logs", "--tail", "40", n.container).CombinedOutput()
		fmt.Fprintf(&b, "--- %s (%s) ---\n%s\n", n.name, n.container, out)
	}
	return b.String()
}

func (c *dockerCluster) node(name string) *dockerNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// try runs the CLI against node n's API (d1's when n is nil).
func (c *dockerCluster) try(n *dockerNode, args ...string) (string, string, error) {
	if n == nil {
		n = c.nodes[0]
	}
	cmd := exec.Command(c.cli, append([]string{"--api", n.api(), "--token", c.token}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+c.t.TempDir())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func (c *dockerCluster) run(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.try(nil, args...)
	if err != nil {
		c.t.Fatalf("strata %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return strings.TrimSpace(out)
}

// waitUp waits until node n answers (reading d1's admin token first).
func (c *dockerCluster) waitUp(n *dockerNode) {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if c.token == "" {
			if b, err := os.ReadFile(filepath.Join(c.nodes[0].dir, "data", "admin.token")); err == nil && len(b) > 0 {
				c.token = strings.TrimSpace(string(b))
			}
		}
		if c.token != "" {
			if _, _, err := c.try(n, "status"); err == nil {
				return
			}
		}
		if st := docker(c.t, "inspect", "-f", "{{.State.Running}}", n.container); st != "true" {
			c.t.Fatalf("%s exited:\n%s", n.name, c.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("%s does not answer after 90s:\n%s", n.name, c.logs())
}

// waitOnline waits until d1 sees the named nodes online.
func (c *dockerCluster) waitOnline(names ...string) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, err := c.try(nil, "node", "list")
		all := err == nil
		for _, name := range names {
			all = all && strings.Contains(out, name) && nodeState(out, name) == "online"
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nodes %v are not all online:\n%s\n%s", names, out, c.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeState returns the STATE column of node name in `node list` output.
func nodeState(list, name string) string {
	for _, l := range strings.Split(list, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == name {
			for _, s := range f {
				if s == "online" || s == "offline" {
					return s
				}
			}
		}
	}
	return ""
}

// inspect reads the volume through node n's API (d1's when nil).
func (c *dockerCluster) inspect(n *dockerNode, vol string) replVolume {
	c.t.Helper()
	out, errOut, err := c.try(n, "volume", "inspect", vol, "-o", "json")
	if err != nil {
		c.t.Fatalf("volume inspect %s: %v\n%s", vol, err, errOut)
	}
	var v replVolume
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		c.t.Fatalf("volume inspect %s -o json: %v", vol, err)
	}
	return v
}

// waitVolume polls the volume through node n until ok says yes.
func (c *dockerCluster) waitVolume(n *dockerNode, vol, what string, within time.Duration, ok func(replVolume) bool) replVolume {
	c.t.Helper()
	return pollVolume(c.t, vol, what, within, func() replVolume { return c.inspect(n, vol) }, c.logs, ok)
}

// check runs `volume check` through node n: the replicas on all three
// nodes must be identical.
func (c *dockerCluster) check(n *dockerNode, vol string) {
	c.t.Helper()
	out, errOut, err := c.try(n, "volume", "check", vol, "--region", "64KiB")
	if err != nil || !strings.Contains(out, "identical") || strings.Count(out, ", ") != 2 {
		c.t.Fatalf("volume check %s: %v\n%s%s", vol, err, out, errOut)
	}
	c.t.Logf("%s", strings.TrimSpace(out))
}

const netsplitVolSize = 32 << 20

// TestNetsplitIsolatesAReplica: d3, holding a replica, is cut off both
// networks during writes. After the replica timeout the engine leaves it
// out and writes go on; when d3 is connected again its replica catches up.
func TestNetsplitIsolatesAReplica(t *testing.T) {
	c := newDockerCluster(t)
	c.run("volume", "create", "ns", "--size", fmt.Sprint(netsplitVolSize), "--repl", "3")
	w := newReplWriter(t, "ns", netsplitVolSize, 4, 16)
	w.setAddr(c.node("d1").nbd())
	w.start()
	w.waitAcked(0, 2<<20, 30*time.Second, "writes before the partition")

	d3 := c.node("d3")
	docker(t, "network", "disconnect", c.data, d3.container)
	docker(t, "network", "disconnect", c.etcd, d3.container)
	at := w.ackedBytes.Load()
	c.waitVolume(nil, "ns", "degraded with d3 out", 60*time.Second, func(v replVolume) bool {
		return v.Degraded && v.mode("d3") == "out"
	})
	w.waitAcked(at, 2<<20, 30*time.Second, "writes with d3 cut off")

	docker(t, "network", "connect", "--ip", d3.etcdIP, c.etcd, d3.container)
	docker(t, "network", "connect", "--ip", d3.dataIP, c.data, d3.container)
	c.waitVolume(nil, "ns", "all in sync after d3's return", 90*time.Second, replVolume.allInSync)
	w.waitAcked(w.ackedBytes.Load(), 1<<20, 30*time.Second, "writes after the catch-up")
	w.halt()
	t.Logf("%d writes acknowledged (%d MiB), %d failed (first: %s), %d connections lost",
		w.acks.Load(), w.ackedBytes.Load()>>20, w.errnos.Load(), w.firstErrnoMsg(), w.dropped.Load())
	w.verify(c.node("d1").nbd(), everyAcked)
	c.check(nil, "ns")
}

// TestNetsplitIsolatesTheEngineFromEtcd: d1, the engine's node, loses the
// etcd network but keeps its clients and replicas. Its engine goes on
// writing at its epoch; d1 goes offline; the volume is attached to d2,
// whose epoch fences d1's engine on every replica: a write through d1 is
// refused and lands nowhere. d1 is connected again, and every write
// acknowledged through either engine reads back.
func TestNetsplitIsolatesTheEngineFromEtcd(t *testing.T) {
	c := newDockerCluster(t)
	d1, d2 := c.node("d1"), c.node("d2")
	// The writer keeps to the first netsplitVolSize bytes; the probe of
	// the stale engine goes in the last MiB, which nothing else writes.
	const probe = netsplitVolSize
	c.run("volume", "create", "ne", "--size", fmt.Sprint(netsplitVolSize+1<<20), "--repl", "3")
	w := newReplWriter(t, "ne", netsplitVolSize, 4, 16)
	w.setAddr(d1.nbd())
	w.start()
	w.waitAcked(0, 2<<20, 30*time.Second, "writes before the partition")
	before := c.inspect(d2, "ne")
	// A connection to d1's engine, for a write after the failover (a new
	// connection needs etcd to find the volume).
	stale, err := dialNBD(d1.nbd(), "ne")
	if err != nil {
		t.Fatalf("NBD connection to d1's engine: %v", err)
	}
	defer stale.Close()

	docker(t, "network", "disconnect", c.etcd, d1.container)
	at := w.ackedBytes.Load()
	w.waitAcked(at, 1<<20, 30*time.Second, "writes through d1's engine cut off etcd")
	// d1 is offline once its lease expires; d2 and d3 keep the quorum.
	deadline := time.Now().Add(replTTL + 30*time.Second)
	for {
		out, _, err := c.try(d2, "node", "list")
		if err == nil && nodeState(out, "d1") == "offline" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("d1 is not offline for d2:\n%s\n%s", out, c.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The failover: attach on d2. The writer moves there.
	w.halt()
	out, errOut, err := c.try(d2, "volume", "attach", "ne", "--node", "d2")
	if err != nil {
		t.Fatalf("attach on d2: %v\n%s%s\n%s", err, out, errOut, c.logs())
	}
	v := c.inspect(d2, "ne")
	if v.Node != "d2" || v.epoch() <= before.epoch() {
		t.Fatalf("after the attach on d2: %s (before: %s)", v, before)
	}
	// d1's engine is fenced: its write is refused and reaches no replica.
	mark := bytes.Repeat([]byte{0xd1}, replBlock)
	errno, err := stale.do(nbdCmdWrite, probe, mark, nil)
	if err == nil && errno == 0 {
		t.Fatal("a write through the stale engine on d1 was acknowledged after the failover")
	}
	t.Logf("the stale engine on d1 refused a write after the failover (NBD error %d, %v)", errno, err)
	w.setAddr(d2.nbd())
	w.start()
	w.waitAcked(w.ackedBytes.Load(), 2<<20, 30*time.Second, "writes through d2 after the failover")

	docker(t, "network", "connect", "--ip", d1.etcdIP, c.etcd, d1.container)
	c.waitVolume(d2, "ne", "all in sync after d1's return", 90*time.Second, replVolume.allInSync)
	w.halt()
	t.Logf("%d writes acknowledged (%d MiB), %d failed (first: %s), %d connections lost",
		w.acks.Load(), w.ackedBytes.Load()>>20, w.errnos.Load(), w.firstErrnoMsg(), w.dropped.Load())
	w.verify(d2.nbd(), everyAcked)
	// The stale engine's write landed on no replica.
	got := make([]byte, replBlock)
	rd, err := dialNBD(d2.nbd(), "ne")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if errno, err := rd.do(nbdCmdRead, probe, nil, got); err != nil || errno != 0 {
		t.Fatalf("read the probe block: %v %d", err, errno)
	}
	if !allZeroes(got) {
		t.Fatal("the stale engine's refused write is in the volume")
	}
	c.check(d2, "ne")
}
